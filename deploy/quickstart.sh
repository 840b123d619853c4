#!/usr/bin/env bash
# outbox-relay quickstart: build the relay, run it against a throwaway
# PostgreSQL and a development Kafka cluster, write a burst of orders through
# the outbox, then check on the Kafka side that every event arrived.
#
#   sudo deploy/quickstart.sh
#
# For a fresh Debian 12 machine, run as root (it installs packages with
# apt-get when they are missing, and runs PostgreSQL as the postgres user).
# Everything it starts is stopped when it exits, success or not; nothing is
# left running and nothing is installed beside the Debian packages. Running
# it again is fine.
#
# Environment:
#   ORDERS=2000           orders to write (one outbox row each)
#   CLIENTS=4             concurrent pgbench writers
#   QUICKSTART_PGPORT=54339  port of the throwaway PostgreSQL (unix socket only)
#   DRAIN_TIMEOUT=60      seconds to wait for the relay to publish everything
#   KEEP=1                keep the work directory (logs, config, data) on success too
#
# Exit status: 0 when every event written is on Kafka, 1 otherwise.
set -Eeuo pipefail

ORDERS=${ORDERS:-2000}
CLIENTS=${CLIENTS:-4}
PG_PORT=${QUICKSTART_PGPORT:-54339}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
TOPIC=outbox.order

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build-quickstart
started=$SECONDS

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

[[ $ORDERS =~ ^[1-9][0-9]*$ ]] || die "ORDERS must be a positive integer"
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be a positive integer"
(( CLIENTS <= ORDERS )) || CLIENTS=$ORDERS
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts PostgreSQL as the postgres user)"

# ---------------------------------------------------------------- packages
# pgbench, initdb and pg_ctl come with the server package (postgresql-15 on
# Debian 12, pulled in by "postgresql"); kcat is an independent Kafka client
# used to read the topic back.
PACKAGES=(build-essential meson ninja-build pkg-config librdkafka-dev libpq-dev libconfig-dev
          postgresql kcat)
missing_pkgs=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_pkgs+=("$p")
done
if ((${#missing_pkgs[@]})); then
    say "installing ${missing_pkgs[*]}"
    command -v apt-get >/dev/null || die "missing ${missing_pkgs[*]} and no apt-get (this script targets Debian 12)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null
else
    say "packages: all present"
fi
# shellcheck disable=SC2012 # version-numbered folders, no odd names
PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG_BINDIR/pgbench" ] || die "pgbench not found under /usr/lib/postgresql/*/bin"
PSQL=$PG_BINDIR/psql
PGBENCH=$PG_BINDIR/pgbench

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/outbox-quickstart.XXXXXX)
chmod 755 "$WORK" # the postgres user must reach its socket and data below it
relay_pid='' mock_pid='' tail_pid='' pg_started=0 ok=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
        kill -TERM "$relay_pid"
        # The relay waits for in-flight acknowledgements (shutdown_timeout_ms, 30 s by default).
        for _ in $(seq 1 400); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$relay_pid" 2>/dev/null && kill -KILL "$relay_pid"
        wait "$relay_pid" 2>/dev/null
    fi
    if [ -n "$tail_pid" ]; then
        kill "$tail_pid" 2>/dev/null
        wait "$tail_pid" 2>/dev/null
    fi
    if [ -n "$mock_pid" ]; then
        kill -TERM "$mock_pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$mock_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$mock_pid" 2>/dev/null && kill -KILL "$mock_pid"
        wait "$mock_pid" 2>/dev/null
    fi
    if ((pg_started)); then
        PGPORT=$PG_PORT bash "$ROOT/tests/pg.sh" stop "$WORK/pg" >/dev/null 2>&1
    fi
    if ((ok)) && [ -z "${KEEP:-}" ]; then
        rm -rf "$WORK"
    else
        printf 'quickstart: logs, config and data kept in %s\n' "$WORK" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
# -Dwerror=false: the project builds with -Werror for development; a newer or
# older compiler's new warning must not stop a user's release build.
say "building into build-quickstart/ (release, no tests)"
if [ ! -f "$BUILD/meson-private/coredata.dat" ]; then
    rm -rf "$BUILD"
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dwerror=false -Dtests=false >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log" >&2; die "meson setup failed"; }
else
    meson configure "$BUILD" --buildtype=release -Dwerror=false -Dtests=false >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log" >&2; die "meson configure failed"; }
fi
ninja -C "$BUILD" >>"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; die "build failed"; }
RELAY=$BUILD/outbox-relay
MOCK=$BUILD/obx-mock-kafka
"$RELAY" --version

# ---------------------------------------------------------------- servers
say "starting a throwaway PostgreSQL (unix socket, port $PG_PORT)"
pg_started=1
SOCK=$(PGPORT=$PG_PORT PG_BINDIR=$PG_BINDIR bash "$ROOT/tests/pg.sh" start "$WORK/pg")
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PG_PORT" -U postgres "$@"; }
sql -d postgres -c 'CREATE DATABASE shop'
echo "socket $SOCK, database shop"

say "starting a development Kafka cluster (obx-mock-kafka)"
# setsid: a Ctrl-C in the terminal reaches this script, which then stops the
# background processes in order, rather than reaching them all at once.
setsid "$MOCK" >"$WORK/mock-kafka.out" 2>"$WORK/mock-kafka.log" &
mock_pid=$!
BOOT=''
for _ in $(seq 1 100); do
    BOOT=$(head -n 1 "$WORK/mock-kafka.out" 2>/dev/null || true)
    [ -n "$BOOT" ] && break
    kill -0 "$mock_pid" 2>/dev/null || { cat "$WORK/mock-kafka.log" >&2; die "obx-mock-kafka exited"; }
    sleep 0.1
done
[ -n "$BOOT" ] || die "obx-mock-kafka printed no bootstrap address"
echo "bootstrap $BOOT"

# ---------------------------------------------------------------- relay
CONF=$WORK/outbox-relay.conf
cat >"$CONF" <<EOF
# Written by deploy/quickstart.sh. Every key: config/outbox-relay.conf.
postgres:
{
  conninfo = "host=$SOCK port=$PG_PORT dbname=shop user=postgres";
  table = "public.outbox";
};
kafka:
{
  bootstrap_servers = "$BOOT";
  linger_ms = 5;
};
relay:
{
  poll_interval_ms = 500;
};
log:
{
  stats_interval_s = 2;
};
EOF

say "outbox-relay migrate (creates the outbox table, its trigger and helpers)"
"$RELAY" -c "$CONF" migrate
sql -d shop -c 'CREATE TABLE IF NOT EXISTS demo_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku text NOT NULL, qty int NOT NULL, placed_at timestamptz NOT NULL DEFAULT now())'

say "outbox-relay --check"
"$RELAY" -c "$CONF" --check

say "starting the relay (log: $WORK/relay.log, shown below with '| ')"
LOG=$WORK/relay.log
: >"$LOG"
setsid "$RELAY" -c "$CONF" 2>"$LOG" &
relay_pid=$!
tail -n +1 --pid="$relay_pid" -f "$LOG" > >(sed -u 's/^/  | /') &
tail_pid=$!
for _ in $(seq 1 100); do
    grep -q 'msg="postgres connected"' "$LOG" && break
    kill -0 "$relay_pid" 2>/dev/null || die "the relay exited (see $LOG)"
    sleep 0.1
done
grep -q 'role=leader' "$LOG" || die "the relay did not become leader (see $LOG)"

# ---------------------------------------------------------------- load
per_client=$(( (ORDERS + CLIENTS - 1) / CLIENTS ))
say "writing $((per_client * CLIENTS)) orders with pgbench ($CLIENTS clients x $per_client), each order row and its event in one transaction"
t0=$SECONDS
"$PGBENCH" -n -h "$SOCK" -p "$PG_PORT" -U postgres -c "$CLIENTS" -j 2 -t "$per_client" \
    -f "$ROOT/deploy/demo-orders.sql" shop >"$WORK/pgbench.log" 2>&1 ||
    { cat "$WORK/pgbench.log" >&2; die "pgbench failed"; }
grep -E 'number of transactions actually processed|number of failed|^tps' "$WORK/pgbench.log" | sed 's/^/   /'

say "waiting until the relay has published and marked every row (up to ${DRAIN_TIMEOUT}s)"
deadline=$((SECONDS + DRAIN_TIMEOUT))
while :; do
    unsent=$(sql -d shop -Atc 'SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL')
    [ "$unsent" -eq 0 ] && break
    kill -0 "$relay_pid" 2>/dev/null || die "the relay exited with $unsent rows unsent (see $LOG)"
    ((SECONDS < deadline)) || { echo "   timed out with $unsent rows unsent"; break; }
    sleep 0.5
done
((unsent > 0)) || echo "   all rows sent $((SECONDS - t0))s after pgbench started"

# One more stats line, so the summary shows the relay's view after the drain.
n_stats=$(grep -c 'msg=stats' "$LOG" || true)
for _ in $(seq 1 40); do
    (( $(grep -c 'msg=stats' "$LOG" || true) > n_stats )) && break
    sleep 0.1
done

# ---------------------------------------------------------------- verify
say "reading topic $TOPIC back from the beginning with kcat"
export LC_ALL=C # one collation for sort and comm
sql -d shop -Atc 'SELECT event_id FROM outbox' | sort >"$WORK/db-events.txt"
timeout 60 kcat -C -q -b "$BOOT" -t "$TOPIC" -o beginning -e -f '%h\n' >"$WORK/kafka-headers.txt" 2>"$WORK/kcat.log" ||
    { cat "$WORK/kcat.log" >&2; die "kcat could not read $TOPIC"; }
grep -o 'event_id=[0-9a-f-]*' "$WORK/kafka-headers.txt" | cut -d= -f2 | sort >"$WORK/kafka-events-all.txt" || true
sort -u "$WORK/kafka-events-all.txt" >"$WORK/kafka-events.txt"
echo "   first message's headers: $(head -n 1 "$WORK/kafka-headers.txt")"

written=$(wc -l <"$WORK/db-events.txt")
kafka_msgs=$(wc -l <"$WORK/kafka-events-all.txt")
published=$(wc -l <"$WORK/kafka-events.txt")
duplicates=$((kafka_msgs - published))
missing=$(comm -23 "$WORK/db-events.txt" "$WORK/kafka-events.txt" | wc -l)
unknown=$(comm -13 "$WORK/db-events.txt" "$WORK/kafka-events.txt" | wc -l)
read -r marked parked < <(sql -d shop -At -F ' ' -c \
    'SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE parked_at IS NOT NULL) FROM outbox')
stats=$(grep 'msg=stats' "$LOG" | tail -n 1 || true)

# Stop the relay now so its final line is part of the summary.
kill -TERM "$relay_pid"
wait "$relay_pid" && relay_rc=0 || relay_rc=$?
relay_pid=''
wait "$tail_pid" 2>/dev/null || true
tail_pid=''

row() { printf '   %-40s %s\n' "$1" "$2"; }
printf '\n==> summary\n'
row "events written (outbox rows)" "$written"
row "published (distinct event_ids on Kafka)" "$published"
row "marked sent in PostgreSQL" "$marked"
row "parked" "$parked"
row "missing (written, not on Kafka)" "$missing"
row "duplicates on Kafka" "$duplicates"
row "on Kafka but not in the outbox" "$unknown"
row "relay exit code after SIGTERM" "$relay_rc"
echo "   relay's last stats line:"
echo "   ${stats:-(none)}"
echo "   took $((SECONDS - started))s in all"

if ((missing > 0 || unknown > 0)); then
    echo "RESULT: FAIL: $missing event(s) missing on Kafka" >&2
    exit 1
fi
echo "RESULT: OK: every event written is on Kafka ($duplicates duplicate(s): publishing is at-least-once)"
ok=1
