#!/usr/bin/env bash
# The image and the compose demo, end to end on a real Docker engine: docs/container.md#checking-the-container.
#
#   tests/container/check.sh              build, `compose up`, check every service, `compose down -v`
#   tests/container/check.sh --stand-ins  the same where no image registry answers (see below)
#   tests/container/check.sh --keep       leave the stack running afterwards
#
# Checks, each with a time limit: the mailrules container turns healthy; Dovecot's folders fill
# (the daemon files the seeded mail through the compose network); Prometheus scrapes the daemon
# (target up, alert rules loaded and healthy, mail counted); Mailpit received the forwards;
# Grafana (when it runs) has the provisioned datasource and dashboard; `docker stop` ends the
# daemon with exit code 0 well within compose's 15 s grace; `docker compose down -v` cleans up.
#
# --stand-ins: on a machine that reaches Debian's archive and PyPI but no image registry, builds
# local images under the names the demo pins, when they are missing: python:3.11-slim-bookworm and
# debian:bookworm-slim from debootstrap (with the host's /usr/local/share/ca-certificates, for a
# TLS-inspecting proxy), prom/prometheus from Debian's prometheus, axllent/mailpit from a small
# SMTP sink (tests/container/stand-ins/). Grafana has no such stand-in: it is left out.
# Needs root (debootstrap) and Compose v2 or v1.29 (`docker-compose`).
#
# This is not part of `make test`: it needs a Docker engine, which the suite does not install.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/container"
COMPOSE_DIR="$ROOT/examples/compose"
PROJECT=mailrules-demo-check
STAND_INS=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --stand-ins) STAND_INS=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok   %s\n' "$*"; }
fail() { printf '   FAIL %s\n' "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 || fail "no Docker engine answers 'docker info'"

# Compose v2 (`docker compose`) reads compose.yaml as it is; v1.29 refuses its top-level `name:`,
# so it gets a copy without that line, next to the original (the relative paths stay right).
V1_COPY=""
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -p "$PROJECT" -f "$COMPOSE_DIR/compose.yaml")
elif command -v docker-compose >/dev/null 2>&1; then
    V1_COPY="$COMPOSE_DIR/.compose-v1-check.yaml"
    grep -v '^name:' "$COMPOSE_DIR/compose.yaml" >"$V1_COPY"
    COMPOSE=(docker-compose -p "$PROJECT" -f "$V1_COPY")
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi

cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "-- last log lines of each service:" >&2
        "${COMPOSE[@]}" logs --no-color --tail 20 >&2 2>&1 || true
    fi
    if [ "$KEEP" -eq 0 ]; then
        "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    [ -n "$V1_COPY" ] && rm -f "$V1_COPY"
    exit "$rc"
}
trap cleanup EXIT

# The image a service of compose.yaml pins, e.g. `pinned prometheus` -> prom/prometheus:v2.54.1.
pinned() {
    awk -v svc="  $1:" '$0 == svc {inside = 1; next} inside && /^  [a-z]/ {inside = 0}
                        inside && $1 == "image:" {print $2; exit}' "$COMPOSE_DIR/compose.yaml"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Polls `$@` every 2 s until it succeeds or `limit` seconds pass.
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${limit} s"
        sleep 2
    done
    ok "$what ($((SECONDS - deadline + limit)) s)"
}

if [ "$STAND_INS" -eq 1 ]; then
    say "stand-ins for the registry images"
    if ! have_image python:3.11-slim-bookworm || ! have_image debian:bookworm-slim; then
        command -v debootstrap >/dev/null || fail "--stand-ins needs debootstrap (apt-get install debootstrap)"
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
            bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
        chroot "$rootfs" update-ca-certificates >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - python:3.11-slim-bookworm >/dev/null
        docker tag python:3.11-slim-bookworm debian:bookworm-slim
        rm -rf "$rootfs"
        ok "python:3.11-slim-bookworm, debian:bookworm-slim (debootstrap bookworm; Debian's Python 3.11)"
    fi
    for svc in prometheus mailpit; do
        image=$(pinned "$svc")
        if ! have_image "$image"; then
            docker build -q -t "$image" "$HERE/stand-ins/$svc" >/dev/null
            ok "$image (tests/container/stand-ins/$svc)"
        fi
    done
    SERVICES=(dovecot mailpit mailrules seed prometheus)
else
    SERVICES=(dovecot mailpit mailrules seed prometheus grafana)
fi

say "build and start: ${SERVICES[*]}"
step_log=$(mktemp)
"${COMPOSE[@]}" build >"$step_log" 2>&1 || { tail -40 "$step_log" >&2; fail "compose build"; }
ok "compose build"
"${COMPOSE[@]}" up -d "${SERVICES[@]}" >"$step_log" 2>&1 || { cat "$step_log" >&2; fail "compose up"; }
rm -f "$step_log"
ok "compose up"
container() { "${COMPOSE[@]}" ps -q "$1"; }

health_of() { docker inspect -f '{{.State.Health.Status}}' "$(container "$1")"; }
is_healthy() { [ "$(health_of "$1")" = healthy ]; }
wait_for 120 "dovecot healthy" is_healthy dovecot
wait_for 120 "mailrules healthy (HEALTHCHECK on /healthz)" is_healthy mailrules
user=$(docker exec "$(container mailrules)" id -u)
[ "$user" = 10001 ] && ok "mailrules runs as uid 10001" || fail "mailrules runs as uid $user"
seed_health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$(container seed)")
[ -z "$seed_health" ] && ok "seed has no healthcheck (it serves no /healthz)" || fail "seed reports health '$seed_health'"

say "the daemon files mail through the compose network"
# Messages in a folder of alice's other than INBOX: only a rule puts them there.
filed() {
    docker exec "$(container dovecot)" doveadm -f flow mailbox status -u alice@example.com messages '*' \
        | awk '$1 != "mailbox=INBOX" {split($2, m, "="); n += m[2]} END {print n + 0}'
}
has_filed() { [ "$(filed)" -gt 0 ]; }
wait_for 180 "messages filed out of alice's INBOX" has_filed
ok "$(filed) messages in alice's other folders"

say "Prometheus scrapes it"
query() {  # prints the first value of an instant query, or nothing
    curl -fsS --get --data-urlencode "query=$1" http://127.0.0.1:9090/api/v1/query |
        python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
target_up() { [ "$(query 'up{job="mailrules"}')" = 1 ]; }
counted() { v=$(query 'sum(mailrules_messages_processed_total)'); [ -n "$v" ] && [ "${v%.*}" -gt 0 ]; }
wait_for 90 "target mailrules:9464 up" target_up
wait_for 90 "mailrules_messages_processed_total > 0 in Prometheus" counted
rules=$(curl -fsS http://127.0.0.1:9090/api/v1/rules | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
print(f"{len(rules)} rules in {len(groups)} groups" + (f"; unhealthy: {bad}" if bad else ""))
')
case "$rules" in
    0\ *|*unhealthy*) fail "alert rules: $rules" ;;
    *) ok "alert rules loaded: $rules" ;;
esac

say "forwards reach Mailpit"
forwarded() {
    n=$(curl -fsS http://127.0.0.1:8025/api/v1/messages | python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')
    [ "$n" -gt 0 ]
}
wait_for 120 "Mailpit holds forwarded mail" forwarded

if [[ " ${SERVICES[*]} " == *" grafana "* ]]; then
    say "Grafana provisioning"
    wait_for 120 "Grafana /api/health" curl -fsS http://127.0.0.1:3000/api/health
    curl -fsS -u admin:admin http://127.0.0.1:3000/api/datasources | grep -q '"type":"prometheus"' ||
        fail "no Prometheus datasource provisioned"
    ok "Prometheus datasource provisioned"
    uid=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["uid"])' "$ROOT/examples/grafana/mailrules-dashboard.json")
    curl -fsS "http://127.0.0.1:3000/api/dashboards/uid/$uid" >/dev/null || fail "dashboard $uid not provisioned"
    ok "dashboard $uid provisioned (anonymous viewer can read it)"
fi

say "docker stop"
start=$SECONDS
docker stop -t 15 "$(container mailrules)" >/dev/null
took=$((SECONDS - start))
code=$(docker inspect -f '{{.State.ExitCode}}' "$(container mailrules)")
[ "$code" = 0 ] || fail "mailrules exited with $code on SIGTERM"
[ "$took" -lt 10 ] || fail "mailrules took ${took} s to stop (SIGKILL comes at 15 s)"
ok "SIGTERM through tini: exit 0 in ${took} s"

say "all checks passed"
