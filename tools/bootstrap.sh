#!/bin/sh
# Installs what `make demo` and `make test` need on a fresh Debian machine that has only
# python3 and make: uv (into .tools/), and Debian packages when run as root.
#   tools/bootstrap.sh            uv only
#   tools/bootstrap.sh postgres   also a PostgreSQL server for the store tests
#   tools/bootstrap.sh virt       also QEMU, LXC, sshd, busybox... for real VMs and containers
#   tools/bootstrap.sh net        also wireguard-go, wireguard-tools, openvpn, tcpdump (overlays)
set -eu
cd "$(dirname "$0")/.."
mkdir -p .tools/bin

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Debian packages: $*"
        if [ ! -f .tools/apt-updated ]; then
            apt-get update -qq && touch .tools/apt-updated
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        echo "bootstrap: please install the Debian packages: $* (needs root)" >&2
        return 1
    fi
}

# uv: use one on PATH, else install it from PyPI into a private venv.
if [ ! -x .tools/bin/uv ]; then
    if command -v uv >/dev/null 2>&1; then
        ln -sf "$(command -v uv)" .tools/bin/uv
    else
        if ! python3 -m venv .tools/venv >/dev/null 2>&1; then
            rm -rf .tools/venv
            apt_install python3-venv
            python3 -m venv .tools/venv
        fi
        .tools/venv/bin/python -m pip install --quiet --disable-pip-version-check uv
        ln -sf "$(pwd)/.tools/venv/bin/uv" .tools/bin/uv
    fi
fi

# install_missing WHAT PACKAGE:COMMAND...: apt-get the packages whose command is missing.
install_missing() {
    what=$1
    shift
    missing=""
    for pair in "$@"; do
        if ! PATH="$PATH:/usr/sbin:/sbin" command -v "${pair#*:}" >/dev/null 2>&1; then
            missing="$missing ${pair%%:*}"
        fi
    done
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086 # word splitting intended
        apt_install $missing || echo "bootstrap: $what will fail without:$missing" >&2
    fi
}

for extra in "$@"; do
    case "$extra" in
    postgres)
        if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
            apt_install postgresql || echo "bootstrap: PostgreSQL tests will fail without it" >&2
        fi
        ;;
    virt)
        # Real hypervisors, host access and the appliance build (apt-get download + dpkg -x).
        install_missing "VM and container tests" qemu-system-x86:qemu-system-x86_64 \
            qemu-utils:qemu-img lxc:lxc-start busybox-static:busybox openssh-server:sshd \
            openssh-client:ssh rsync:rsync kmod:depmod cpio:cpio iproute2:ip \
            e2fsprogs:mke2fs nftables:nft
        ;;
    net)
        # Overlay networks: the userspace WireGuard (kernels without the module), wg and
        # wg-quick, OpenVPN, and tcpdump for the tests' underlay captures.
        install_missing "overlay tests" wireguard-go:wireguard-go wireguard-tools:wg \
            openvpn:openvpn tcpdump:tcpdump
        ;;
    *) echo "bootstrap: unknown extra $extra" >&2; exit 2 ;;
    esac
done
