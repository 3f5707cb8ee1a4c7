#!/usr/bin/env bash
# Prepare this checkout: OpenSSH from the package manager when missing, and a
# virtual environment in .venv with pamgate installed (editable).
#
#   scripts/setup.sh          runtime only (used by scripts/demo.sh)
#   scripts/setup.sh --test   runtime plus test tools (used by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
apt_packages=()
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
fi

command -v ssh >/dev/null 2>&1 || apt_packages+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || apt_packages+=(openssh-client)
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
    apt_packages+=(openssh-server)
fi

# The tests also drive the stock asciinema player.
if [ "${1:-}" = "--test" ] && ! command -v asciinema >/dev/null 2>&1; then
    apt_packages+=(asciinema)
fi
# ... and rsync, through the gateway (file transfer tests).
if [ "${1:-}" = "--test" ] && ! command -v rsync >/dev/null 2>&1; then
    apt_packages+=(rsync)
fi
# ... and openssl, for an RSA key too small for ssh-keygen (the sshd conformance suite).
if [ "${1:-}" = "--test" ] && ! command -v openssl >/dev/null 2>&1; then
    apt_packages+=(openssl)
fi
# ... and PuTTY's tools: pscp, whose SFTP downloads read ahead past the end of a file, and
# plink, one of the clients the human lane must work with.
if [ "${1:-}" = "--test" ] && { ! command -v pscp >/dev/null 2>&1 || ! command -v plink >/dev/null 2>&1; }; then
    apt_packages+=(putty-tools)
fi
# ... and HAProxy, the load balancer whose PROXY protocol headers the lanes read.
if [ "${1:-}" = "--test" ] && ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    apt_packages+=(haproxy)
fi

if [ ${#apt_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${apt_packages[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${apt_packages[@]}" >/dev/null
    else
        echo "setup: missing ${apt_packages[*]}: install them with your package manager" \
             "(e.g. 'sudo apt-get install ${apt_packages[*]}'), then run this again" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
echo "setup: installing pamgate${extras} into .venv" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
