#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the test suite needs (Dovecot for the integration tests,
# openssl for test certificates, python3-venv for the virtual environment, prometheus for
# `promtool check metrics`). Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
minimal=false
if [ "${1:-}" = "--minimal" ]; then  # `make demo`: only what a virtual environment needs
    minimal=true
    shift
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if ! $minimal; then
    command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
fi
for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done

[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing ${need[*]} and no apt-get here; install them by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: need root (or sudo) to install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
fi
echo "install-system-deps: installing ${need[*]}"
# The packaged services must not start on install: the tests run their own private instances.
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the system-wide dovecot on install where no policy-rc.d forbids it; the tests
# never use it, and it would hold ports 143/993.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet dovecot 2>/dev/null; then
    $sudo systemctl stop dovecot || true
fi
# Likewise the Prometheus server that comes with promtool: the suite only needs the binary.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl stop prometheus || true
fi
