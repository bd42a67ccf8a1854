#!/bin/sh
# GET / of the Stratus appliance (busybox httpd serves / through cgi-bin/index.cgi when
# there is no index.html): who the guest is, its address and how long it has been up.
# {"name": <hostname>, "ip": <first IPv4 of the first NIC>, "uptime": <s>, "vmid": <VMID>}
PATH=/sbin:/bin:/usr/sbin:/usr/bin
STATE=/run/stratus

json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

nic="$(cat "$STATE/nic" 2>/dev/null)"
ip=""
if [ -n "$nic" ]; then
    ip="$(ip -o -4 addr show dev "$nic" 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')"
fi

if [ -f "$STATE/container" ]; then
    # /proc/uptime is the host's in a container: count from the start of our init (pid 1)
    uptime="$(awk -v start="$(awk '{ print $22 }' /proc/1/stat)" \
        '{ printf "%.2f", $1 - start / 100 }' /proc/uptime)"
else
    uptime="$(awk '{ printf "%.2f", $1 }' /proc/uptime)"
fi

printf 'Content-Type: application/json\r\n\r\n'
printf '{"name": "%s", "ip": "%s", "uptime": %s, "vmid": "%s"}\n' \
    "$(json_escape "$(hostname)")" "$ip" "$uptime" \
    "$(json_escape "$(cat "$STATE/vmid" 2>/dev/null)")"
