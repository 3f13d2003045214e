#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the test suite needs (Dovecot, Cyrus IMAP and PostgreSQL
# for the integration tests, openssl for test certificates, python3-venv for the virtual environment,
# prometheus for `promtool check metrics`). Idempotent: does nothing when everything is already there.
#
# Cyrus: Debian's `cyrus-imapd` (imapd, idled) conflicts with `dovecot-imapd` (both provide
# imap-server), so it is never installed: `cyrus-common` (master, tools), `cyrus-admin` and
# `sasl2-bin` (saslpasswd2) are installed normally, and the `cyrus-imapd` package of the same version
# is unpacked (`apt-get download` + `dpkg-deb -x`) into $MAILRULES_CYRUS_ROOT
# (default /opt/mailrules-test/cyrus-imapd), where tests/integration/cyrus.py finds imapd and idled.
# No apt operation here may remove a package: the script refuses instead.
set -euo pipefail

need=()
minimal=false
if [ "${1:-}" = "--minimal" ]; then  # `make demo`: only what a virtual environment needs
    minimal=true
    shift
fi
cyrus_root="${MAILRULES_CYRUS_ROOT:-/opt/mailrules-test/cyrus-imapd}"

installed() {  # dpkg's "installed" state (not just config files left after a removal)
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if ! $minimal; then
    command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    # Debian keeps initdb and pg_ctl off PATH, in /usr/lib/postgresql/<major>/bin.
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        || need+=(postgresql)
    for pkg in cyrus-common cyrus-admin sasl2-bin; do
        installed "$pkg" || need+=("$pkg")
    done
fi
for pkg in "$@"; do
    installed "$pkg" || need+=("$pkg")
done

# Cyrus's imapd: nothing to do when the system has it, or when the same version is already unpacked.
cyrus_version=""
unpack_cyrus=false
if ! $minimal && ! installed cyrus-imapd; then
    unpack_cyrus=true
    if installed cyrus-common && [ -x "$cyrus_root/usr/lib/cyrus/bin/imapd" ] \
        && [ "$(cat "$cyrus_root/.version" 2>/dev/null)" = "$(dpkg-query -W -f='${Version}' cyrus-common)" ]; then
        unpack_cyrus=false
    fi
fi

[ ${#need[@]} -eq 0 ] && ! $unpack_cyrus && exit 0

missing="${need[*]}"
$unpack_cyrus && missing="${missing:+$missing and }cyrus-imapd unpacked into $cyrus_root"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing $missing and no apt-get here; install them by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: need root (or sudo) for $missing" >&2; exit 1; }
    sudo="sudo"
fi
dovecot_before=false
installed dovecot-imapd && dovecot_before=true
export DEBIAN_FRONTEND=noninteractive
updated=false
work=""
policy=""
cleanup() {
    [ -z "$work" ] || rm -rf "$work"
    [ -z "$policy" ] || $sudo rm -f "$policy"
}
trap cleanup EXIT
# The packaged services must not start on install: the tests run their own private instances.
# Where no policy-rc.d exists, one that denies every start (exit 101, invoke-rc.d(8)) is in place
# for the duration of this script; deb-systemd-invoke and invoke-rc.d both honour it.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# install-system-deps (mailrules): no service starts; removed when it ends\nexit 101\n' \
        | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    policy=/usr/sbin/policy-rc.d
    $sudo chmod 755 "$policy"
fi

if [ ${#need[@]} -gt 0 ]; then
    echo "install-system-deps: installing ${need[*]}"
    $sudo apt-get update -qq
    updated=true
    # Simulate first: refuse anything that would remove a package (cyrus-imapd would remove Dovecot).
    removals=$(apt-get install -s --no-install-recommends "${need[@]}" | sed -n 's/^Remv \([^ ]*\).*/\1/p')
    if [ -n "$removals" ]; then
        echo "install-system-deps: installing ${need[*]} would remove: $removals; refusing" >&2
        exit 1
    fi
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# postgresql's postinst creates the system cluster `main` and starts it where policy-rc.d allows.
postgresql_now=false
[[ " ${need[*]} " == *" postgresql "* ]] && postgresql_now=true

if $unpack_cyrus; then
    version=$(dpkg-query -W -f='${Version}' cyrus-common)
    echo "install-system-deps: unpacking cyrus-imapd $version into $cyrus_root (not installed: it conflicts with dovecot-imapd)"
    work=$(mktemp -d)
    # apt downloads as the unprivileged _apt user where it exists; let it write here.
    if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
    if ! (cd "$work" && apt-get download -qq "cyrus-imapd=$version") >/dev/null; then
        $updated || { $sudo apt-get update -qq; updated=true; }
        (cd "$work" && apt-get download -qq "cyrus-imapd=$version") >/dev/null
    fi
    # Unpack beside the target, then swap, so an interrupted run never leaves a half tree behind.
    $sudo mkdir -p "$(dirname "$cyrus_root")"
    $sudo rm -rf "$cyrus_root.new"
    $sudo dpkg-deb -x "$work"/cyrus-imapd_*.deb "$cyrus_root.new"
    echo "$version" | $sudo tee "$cyrus_root.new/.version" >/dev/null
    $sudo rm -rf "$cyrus_root"
    $sudo mv "$cyrus_root.new" "$cyrus_root"
fi

# Services a policy-rc.d did not hold back (one that allowed them, or earlier runs). The tests
# never use them: the system dovecot and cyrus-imapd would hold ports 143/993 (cyrus-imapd's master
# also 110, 119, 4190), the Prometheus server comes with promtool, saslauthd with sasl2-bin and
# exim4 as cyrus-common's mail-transport-agent; the suite only needs their binaries.
if command -v systemctl >/dev/null 2>&1; then
    for service in dovecot prometheus cyrus-imapd saslauthd exim4; do
        if systemctl is-active --quiet "$service" 2>/dev/null; then
            $sudo systemctl stop "$service" || true
        fi
    done
    if $postgresql_now && systemctl is-active --quiet postgresql 2>/dev/null; then
        $sudo systemctl stop postgresql || true  # the tests initdb their own (tests/integration/postgres.py)
    fi
fi
if [ -s /run/cyrus-master.pid ] && [ -x /etc/init.d/cyrus-imapd ] \
    && kill -0 "$(cat /run/cyrus-master.pid)" 2>/dev/null; then
    $sudo /etc/init.d/cyrus-imapd stop || true  # no systemd: the init script started it
fi

if $dovecot_before && ! installed dovecot-imapd; then
    echo "install-system-deps: dovecot-imapd is no longer installed; reinstall it: apt-get install dovecot-imapd" >&2
    exit 1
fi
