#!/bin/sh
# Stratus context init script, shipped as init.sh on every context CD-ROM (the source
# document's figure 2.1). An image without its own contextualization (and without
# cloud-init, which reads the NoCloud files beside this one) runs it from the CD-ROM at
# boot: it reads context.sh and sets the hostname, each NIC's address and the SSH key.
# The Stratus appliance does all this itself, then runs this with STRATUS_CONTEXTUALIZED=1.
[ "${STRATUS_CONTEXTUALIZED:-}" = 1 ] && exit 0
cd "$(dirname "$0")" || exit 1
. ./context.sh

[ -n "${SET_HOSTNAME:-}" ] && hostname "$SET_HOSTNAME"

prefix_of() {  # 255.255.255.0 -> 24
    bits=0
    for octet in $(echo "$1" | tr . ' '); do
        case $octet in
        255) bits=$((bits + 8)) ;; 254) bits=$((bits + 7)) ;; 252) bits=$((bits + 6)) ;;
        248) bits=$((bits + 5)) ;; 240) bits=$((bits + 4)) ;; 224) bits=$((bits + 3)) ;;
        192) bits=$((bits + 2)) ;; 128) bits=$((bits + 1)) ;;
        esac
    done
    echo "$bits"
}

n=0
while :; do
    eval "mac=\${ETH${n}_MAC:-}"
    [ -n "$mac" ] || break
    eval "ip=\${ETH${n}_IP:-} mask=\${ETH${n}_MASK:-255.255.255.0} gw=\${ETH${n}_GATEWAY:-}"
    for dev in /sys/class/net/*; do
        if [ "$(cat "$dev/address" 2>/dev/null)" = "$mac" ]; then
            name=${dev##*/}
            ip link set "$name" up
            [ -n "$ip" ] && ip addr add "$ip/$(prefix_of "$mask")" dev "$name"
            [ -n "$gw" ] && ip route replace default via "$gw"
        fi
    done
    n=$((n + 1))
done

if [ -n "${SSH_PUBLIC_KEY:-}" ]; then
    mkdir -p /root/.ssh && chmod 700 /root/.ssh
    echo "$SSH_PUBLIC_KEY" >> /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
fi
