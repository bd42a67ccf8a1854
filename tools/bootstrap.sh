#!/bin/sh
# Installs what `make demo` and `make test` need on a fresh Debian machine that has only
# python3 and make: uv (into .tools/), and Debian packages when run as root.
#   tools/bootstrap.sh            uv only
#   tools/bootstrap.sh postgres   also a PostgreSQL server for the store tests
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

for extra in "$@"; do
    case "$extra" in
    postgres)
        if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
            apt_install postgresql || echo "bootstrap: PostgreSQL tests will fail without it" >&2
        fi
        ;;
    *) echo "bootstrap: unknown extra $extra" >&2; exit 2 ;;
    esac
done
