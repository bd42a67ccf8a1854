#!/usr/bin/env bash
# The main job: real VMs and containers on this machine.
#   1. build the test appliance (cached in .tools/appliance after the first run)
#   2. start a daemon, register this machine as two QEMU host entries and one LXC host
#   3. register the appliance's images and two networks (QEMU user networking, and a
#      bridge inside a network namespace made for the demo, for the containers)
#   4. boot two containers and a QEMU VM from templates with CONTEXT, and fetch each
#      instance's own HTTP page: its name and IP come from its context
#   5. suspend and resume a container, live-migrate the VM between the two QEMU hosts
#   6. clean up: terminate everything, remove the namespace, stop the daemon
set -euo pipefail
cd "$(dirname "$0")/.."
STRATUS=(.venv/bin/stratus)
DATA=$(mktemp -d /tmp/stratus-demo.XXXXXX)
NETNS=stratus-demo-$$
APPLIANCE=${STRATUS_APPLIANCE_DIR:-$PWD/.tools/appliance}
export STRATUS_DATA_DIR=$DATA
unset STRATUS_URL STRATUS_TOKEN

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ stratus %s\033[0m\n' "$*" >&2; "${STRATUS[@]}" "$@"; }
json() { .venv/bin/python -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "Building the test appliance (Debian's cloud kernel + busybox; cached)"
run appliance build --out "$APPLIANCE"

step "Starting the daemon (data dir $DATA)"
"${STRATUS[@]}" serve --data-dir "$DATA" --listen 127.0.0.1:0 --monitor-interval 2 \
    --schedule-interval 0.5 >"$DATA/serve.out" 2>&1 &
PID=$!
cleanup() {
    set +e
    if kill -0 "$PID" 2>/dev/null; then
        for id in $("${STRATUS[@]}" vm list --json 2>/dev/null | json "' '.join(str(v['id']) for v in d if v['state'] not in ('DONE', 'FAILED'))"); do
            "${STRATUS[@]}" vm terminate "$id" --hard >/dev/null 2>&1
        done
        for id in $("${STRATUS[@]}" vm list --json 2>/dev/null | json "' '.join(str(v['id']) for v in d)"); do
            "${STRATUS[@]}" vm wait "$id" --state DONE --timeout 60 >/dev/null 2>&1
        done
        kill "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    ip netns del "$NETNS" 2>/dev/null
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do
    [ -s "$DATA/endpoint" ] && break
    kill -0 "$PID" 2>/dev/null || { cat "$DATA/serve.out"; exit 1; }
    sleep 0.1
done
echo "listening on $(cat "$DATA/endpoint")"

step "Registering this machine: two QEMU host entries (sharing storage) and an LXC host"
ip netns add "$NETNS"
run host add qemu-a --driver qemu --cpu 2 --memory 2G
run host add qemu-b --driver qemu --cpu 2 --memory 2G
run host add lxc-1 --driver lxc --cpu 2 --memory 2G --option "netns=$NETNS"
for host in qemu-a qemu-b lxc-1; do
    for _ in $(seq 60); do
        state=$("${STRATUS[@]}" host show "$host" --json | json "d['state']")
        [ "$state" = MONITORED ] && break
        sleep 0.5
    done
done
run host list

step "Registering the appliance images (copied into the image datastore, checksummed)"
run image register appliance --path "$APPLIANCE/appliance.qcow2" --type OS
run image register appliance-kernel --path "$APPLIANCE/vmlinuz" --type KERNEL
run image register appliance-initrd --path "$APPLIANCE/initrd.img" --type RAMDISK
run image register appliance-rootfs --path "$APPLIANCE/rootfs.tar.gz" --type OS
run image list

step "Creating the networks: QEMU user networking, and a bridge in namespace $NETNS"
cat >"$DATA/net-user.tmpl" <<EOF
NAME = "demo-user"
VN_MAD = "user"
NETWORK_ADDRESS = "192.168.150.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.150.1"
GUEST_PORTS = "80"
AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "10" ]
EOF
cat >"$DATA/net-bridge.tmpl" <<EOF
NAME = "demo-bridge"
BRIDGE = "stbr0"
NETNS = "$NETNS"
NETWORK_ADDRESS = "192.168.160.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.160.1"
AR = [ TYPE = "IP4", IP = "192.168.160.100", SIZE = "10" ]
EOF
run vnet create "$DATA/net-user.tmpl"
run vnet create "$DATA/net-bridge.tmpl"
run vnet list

CMDLINE=$(.venv/bin/python -c "import json; print(json.load(open('$APPLIANCE/manifest.json'))['cmdline'])")
cat >"$DATA/vm.tmpl" <<EOF
NAME = "web-vm"
CPU = 0.5
MEMORY = 256
DISK = [ IMAGE = "appliance" ]
NIC = [ NETWORK = "demo-user" ]
OS = [ KERNEL = "appliance-kernel", INITRD = "appliance-initrd", KERNEL_CMD = "$CMDLINE" ]
CONTEXT = [ NETWORK = "YES", SET_HOSTNAME = "\$NAME", TOKEN = "YES" ]
EOF
cat >"$DATA/ct.tmpl" <<EOF
NAME = "web-ct"
CPU = 0.2
MEMORY = 64
DISK = [ IMAGE = "appliance-rootfs" ]
NIC = [ NETWORK = "demo-bridge" ]
CONTEXT = [ NETWORK = "YES", SET_HOSTNAME = "\$NAME-\$VMID" ]
EOF

step "Booting two containers and a QEMU VM, each configured by its context"
cts=($(run vm create "$DATA/ct.tmpl" --count 2))
vm=$(run vm create "$DATA/vm.tmpl")
for id in "${cts[@]}" "$vm"; do
    "${STRATUS[@]}" vm wait "$id" --state RUNNING --timeout 180 >/dev/null
done
run vm list

page_ct() {  # a container's page, fetched inside the demo namespace
    local ip=$1
    for _ in $(seq 60); do
        timeout 3 ip netns exec "$NETNS" busybox wget -q -O- "http://$ip/" 2>/dev/null && return 0
        sleep 0.5
    done
    echo "no answer from $ip" >&2
    return 1
}
page_vm() {  # the VM's page, through its forwarded port on 127.0.0.1
    local id=$1 address
    address=$("${STRATUS[@]}" vm show "$id" --json | json "d['info']['ports']['80']")
    for _ in $(seq 120); do
        .venv/bin/python -c "import httpx,sys; print(httpx.get('http://$address/', timeout=2).text)" 2>/dev/null && return 0
        sleep 0.5
    done
    echo "no answer from $address" >&2
    return 1
}
lease_ip() {  # the address a VM leased on a network
    "${STRATUS[@]}" vnet show "$1" --json | json "[l['ip'] for l in d['leases'] if l.get('vm_id') == $2][0]"
}

step "Each instance answers with its own name and IP"
for id in "${cts[@]}"; do
    ip=$(lease_ip demo-bridge "$id")
    echo "container $id ($ip): $(page_ct "$ip")"
done
echo "VM $vm: $(page_vm "$vm")"
run vm show "$vm"

step "Suspending and resuming container ${cts[0]} (freeze / unfreeze)"
run vm suspend "${cts[0]}"
"${STRATUS[@]}" vm wait "${cts[0]}" --state SUSPENDED --timeout 30 >/dev/null
run vm resume "${cts[0]}"
"${STRATUS[@]}" vm wait "${cts[0]}" --state RUNNING --timeout 30 >/dev/null
echo "after resume: $(page_ct "$(lease_ip demo-bridge "${cts[0]}")")"

step "Live-migrating VM $vm to the other QEMU host: its uptime keeps counting"
echo "before: $(page_vm "$vm")"
from=$("${STRATUS[@]}" vm show "$vm" --json | json "d['host']")
to=$([ "$from" = qemu-a ] && echo qemu-b || echo qemu-a)
run vm migrate "$vm" "$to" --live
for _ in $(seq 240); do
    now=$("${STRATUS[@]}" vm show "$vm" --json | json "d['state'] + ' ' + str(d['host'])")
    [ "$now" = "RUNNING $to" ] && break
    sleep 0.5
done
echo "after (on $to): $(page_vm "$vm")"

step "The VM's console log (last lines)"
"${STRATUS[@]}" vm log "$vm" --bytes 600

step "Cleaning up"
for id in "${cts[@]}" "$vm"; do
    run vm terminate "$id"
done
for id in "${cts[@]}" "$vm"; do
    "${STRATUS[@]}" vm wait "$id" --state DONE --timeout 120 >/dev/null
done
run vnet show demo-user
echo "done"
