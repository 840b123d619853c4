#!/usr/bin/env bash
# outbox-relay quickstart: the whole order flow on one machine, then a check
# of every promise it makes.
#
#   sudo deploy/quickstart.sh
#
# It builds the project, starts a throwaway PostgreSQL and a development
# Kafka cluster, and runs the relay and the two reference consumers. Then
# obx-order-gen writes a flash sale (more demand than stock on a few hot
# skus): each order row and its OrderPlaced event in one transaction.
#
#   obx-order-gen ──OrderPlaced──▶ outbox ──relay──▶ outbox.order ──▶ obx-stock-consumer
#     deducts stock (never below zero) and writes StockDeducted or StockRejected
#     to its own outbox in the same transaction ──relay──▶ outbox.stock ──▶
#   obx-payment-consumer: captures the payment (ledger) or records the order
#     as cancelled, and writes PaymentCaptured ──relay──▶ outbox.payment
#
# When every order has an outcome it checks the invariants in PostgreSQL
# (the same queries as the flash-sale test, tests/integration/test_shop.c:
# th_shop_check in tests/support/shop.c) and reads the topics back with kcat,
# an independent Kafka client.
#
# For a fresh Debian 12 machine, run as root (it installs packages with
# apt-get when they are missing, and runs PostgreSQL as the postgres user).
# Everything it starts is stopped when it exits, success, failure or Ctrl-C;
# nothing is left running and nothing is installed beside the Debian
# packages. Running it again is fine.
#
# Environment:
#   ORDERS=2000              orders to write
#   CLIENTS=4                concurrent writers (obx-order-gen --clients)
#   SKUS=50                  skus sku-1..sku-N
#   STOCK=30                 initial stock of every sku
#   HOT_SKUS=10              80% of the orders go to sku-1..sku-N (the flash sale)
#   QUICKSTART_PGPORT=54339  port of the throwaway PostgreSQL (its unix socket and 127.0.0.1)
#   DRAIN_TIMEOUT=60         seconds to wait for every order to have an outcome
#   KEEP=1                   keep the work directory (logs, configs, data) on success too
#
# Exit status: 0 when every check passed, 1 otherwise, 130 on Ctrl-C.
set -Eeuo pipefail

ORDERS=${ORDERS:-2000}
CLIENTS=${CLIENTS:-4}
SKUS=${SKUS:-50}
STOCK=${STOCK:-30}
HOT_SKUS=${HOT_SKUS:-10}
PG_PORT=${QUICKSTART_PGPORT:-54339}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
TOPICS=(outbox.order outbox.stock outbox.payment)
PARTITIONS=4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build-quickstart
started=$SECONDS

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

for v in ORDERS CLIENTS SKUS STOCK HOT_SKUS PG_PORT DRAIN_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
((HOT_SKUS <= SKUS)) || die "HOT_SKUS must not exceed SKUS"
((CLIENTS <= ORDERS)) || CLIENTS=$ORDERS
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts PostgreSQL as the postgres user)"

# ---------------------------------------------------------------- packages
# psql, initdb and pg_ctl come with the server package (postgresql-15 on
# Debian 12, pulled in by "postgresql"); kcat is an independent Kafka client
# used to read the topics back.
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
[ -x "$PG_BINDIR/psql" ] || die "psql not found under /usr/lib/postgresql/*/bin"
PSQL=$PG_BINDIR/psql

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/outbox-quickstart.XXXXXX)
chmod 755 "$WORK" # the postgres user must reach its socket and data below it
relay_pid='' stock_pid='' payment_pid='' mock_pid='' pg_started=0 ok=0
tail_pids=()

# Stops one background process: SIGTERM, then SIGKILL after $2 seconds.
# Returns its exit status.
stop_proc() {
    local pid=$1 secs=$2 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < secs * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    set +e
    # Consumers first (they flush their batch), then the relay (it waits for
    # in-flight acknowledgements, shutdown_timeout_ms), then Kafka, then PostgreSQL.
    [ -n "$stock_pid" ] && stop_proc "$stock_pid" 20
    [ -n "$payment_pid" ] && stop_proc "$payment_pid" 20
    [ -n "$relay_pid" ] && stop_proc "$relay_pid" 40
    for pid in "${tail_pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    [ -n "$mock_pid" ] && stop_proc "$mock_pid" 5
    if ((pg_started)); then
        PGPORT=$PG_PORT bash "$ROOT/tests/pg.sh" stop "$WORK/pg" >/dev/null 2>&1
    fi
    if ((ok)) && [ -z "${KEEP:-}" ]; then
        rm -rf "$WORK"
    else
        printf 'quickstart: logs, configs and data kept in %s\n' "$WORK" >&2
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
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dwerror=false -Dtests=false -Dexamples=true >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log" >&2; die "meson setup failed"; }
else
    meson configure "$BUILD" --buildtype=release -Dwerror=false -Dtests=false -Dexamples=true >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log" >&2; die "meson configure failed"; }
fi
ninja -C "$BUILD" >>"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; die "build failed"; }
RELAY=$BUILD/outbox-relay
"$RELAY" --version

# ---------------------------------------------------------------- servers
say "starting a throwaway PostgreSQL (unix socket, port $PG_PORT)"
pg_started=1
SOCK=$(PGPORT=$PG_PORT PG_BINDIR=$PG_BINDIR bash "$ROOT/tests/pg.sh" start "$WORK/pg")
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PG_PORT" -U postgres "$@"; }
q() { sql -d shop -Atc "$1"; }
sql -d postgres -c 'CREATE DATABASE shop'
CONNINFO="host=$SOCK port=$PG_PORT dbname=shop user=postgres"
echo "   socket $SOCK, database shop"

say "starting a development Kafka cluster (obx-mock-kafka, topics ${TOPICS[*]}, $PARTITIONS partitions each)"
topic_args=()
for t in "${TOPICS[@]}"; do topic_args+=(--topic "$t:$PARTITIONS"); done
# setsid: a Ctrl-C in the terminal reaches this script, which then stops the
# background processes in order, rather than reaching them all at once.
setsid "$BUILD/obx-mock-kafka" "${topic_args[@]}" >"$WORK/mock-kafka.out" 2>"$WORK/mock-kafka.log" &
mock_pid=$!
BOOT=''
for _ in $(seq 1 100); do
    BOOT=$(head -n 1 "$WORK/mock-kafka.out" 2>/dev/null || true)
    [ -n "$BOOT" ] && break
    kill -0 "$mock_pid" 2>/dev/null || { cat "$WORK/mock-kafka.log" >&2; die "obx-mock-kafka exited"; }
    sleep 0.1
done
[ -n "$BOOT" ] || die "obx-mock-kafka printed no bootstrap address"
echo "   bootstrap $BOOT"

# ---------------------------------------------------------------- schema
RCONF=$WORK/outbox-relay.conf
cat >"$RCONF" <<EOF
# Written by deploy/quickstart.sh. Every key: config/outbox-relay.conf.
# Topics: outbox.\${aggregate_type} (the default topic_pattern).
postgres: { conninfo = "$CONNINFO"; };
kafka: { bootstrap_servers = "$BOOT"; linger_ms = 0; };
relay: { poll_interval_ms = 500; };
log: { stats_interval_s = 2; };
EOF

say "outbox-relay migrate (the outbox and the consumers' inbox tables: schema/001_outbox.sql, 002_inbox.sql)"
"$RELAY" -c "$RCONF" migrate 2>&1 | sed 's/^/   /'
say "psql -f schema/003_shop.sql (the example shop: orders, stock, ledger, outcomes)"
sql -d shop -f "$ROOT/schema/003_shop.sql"
echo "   tables: $(q "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")"

say "outbox-relay --check"
"$RELAY" -c "$RCONF" --check 2>&1 | sed 's/^/   /'

# ---------------------------------------------------------------- services
# Writes a consumer config like config/consumer.conf. $1 name, $2 topic.
consumer_conf() {
    cat >"$WORK/$1.conf" <<EOF
# Written by deploy/quickstart.sh. Every key: config/consumer.conf.
postgres: { conninfo = "$CONNINFO"; };
kafka: { bootstrap_servers = "$BOOT"; group_id = "$1"; };
consumer: { name = "$1"; topics = ["$2"]; batch_size = 500; batch_timeout_ms = 20; };
inbox: { retention_s = 604800; cleanup_interval_s = 3600; cleanup_batch = 1000; };
log: { stats_interval_s = 2; };
EOF
}
consumer_conf stock outbox.order
consumer_conf payment outbox.stock

# Starts a service in its own session, logging to $WORK/NAME.log, and shows
# its log below with "NAME | ". Sets the variable named $1_pid.
start_service() {
    local name=$1 log=$WORK/$1.log pid
    shift
    : >"$log"
    setsid "$@" 2>"$log" &
    pid=$!
    printf -v "${name}_pid" '%s' "$pid"
    { tail -s 0.2 -n +1 --pid="$pid" -f "$log" | sed -u "s/^/   $name | /"; } &
    tail_pids+=($!)
}

# Waits up to $3 seconds for $2 in the log of service $1.
wait_log() {
    local name=$1 pattern=$2 pid_var=${1}_pid i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$pattern" "$WORK/$name.log" && return 0
        kill -0 "${!pid_var}" 2>/dev/null || die "$name exited (see $WORK/$name.log)"
        sleep 0.1
    done
    die "$name: no '$pattern' within $3 s (see $WORK/$name.log)"
}

say "starting the relay and the stock and payment consumers (logs below)"
start_service relay "$RELAY" -c "$RCONF"
start_service stock "$BUILD/obx-stock-consumer" -c "$WORK/stock.conf"
start_service payment "$BUILD/obx-payment-consumer" -c "$WORK/payment.conf"
wait_log relay 'msg="postgres connected"' 10
grep -q 'role=leader' "$WORK/relay.log" || die "the relay did not become leader (see $WORK/relay.log)"
# The first group join waits for other members for a few seconds.
wait_log stock 'msg="partition assigned"' 30
wait_log payment 'msg="partition assigned"' 30

# ---------------------------------------------------------------- load
say "obx-order-gen: $ORDERS orders over $SKUS skus (stock $STOCK each, 80% of orders on $HOT_SKUS hot skus), $CLIENTS clients"
t0=$SECONDS
"$BUILD/obx-order-gen" -d "$CONNINFO" -n "$ORDERS" --skus "$SKUS" --stock "$STOCK" --hot-skus "$HOT_SKUS" \
    --clients "$CLIENTS" >"$WORK/order-gen.out" 2>"$WORK/order-gen.log" ||
    { cat "$WORK/order-gen.log" "$WORK/order-gen.out" >&2; die "obx-order-gen failed"; }
echo "   $(cat "$WORK/order-gen.out")"

say "waiting until every order has an outcome and every event is published (up to ${DRAIN_TIMEOUT}s)"
deadline=$((SECONDS + DRAIN_TIMEOUT))
next_report=$((SECONDS + 2))
while :; do
    read -r outcomes unsent < <(q "SELECT (SELECT count(*) FROM shop_order_outcomes),
        (SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL)" | tr '|' ' ')
    ((outcomes >= ORDERS && unsent == 0)) && break
    for s in relay stock payment; do
        pid_var=${s}_pid
        kill -0 "${!pid_var}" 2>/dev/null || die "$s exited with $outcomes/$ORDERS outcomes (see $WORK/$s.log)"
    done
    if ((SECONDS >= deadline)); then
        echo "   timed out: $outcomes/$ORDERS orders with an outcome, $unsent outbox rows unsent"
        break
    fi
    if ((SECONDS >= next_report)); then
        echo "   progress: $outcomes/$ORDERS orders with an outcome, $unsent outbox rows unsent"
        next_report=$((SECONDS + 2))
    fi
    sleep 0.2
done
drain_s=$((SECONDS - t0))
((outcomes < ORDERS || unsent > 0)) || echo "   done: all $ORDERS orders decided ${drain_s}s after obx-order-gen started"

# One more stats line from each service, so the summary shows its view after the drain.
n_stats() { grep -c 'msg=stats' "$WORK/$1.log" || true; }
declare -A stats_before
for s in relay stock payment; do stats_before[$s]=$(n_stats "$s"); done
for _ in $(seq 1 50); do
    fresh=1
    for s in relay stock payment; do
        n=$(n_stats "$s")
        ((${n:-0} > ${stats_before[$s]:-0})) || fresh=0
    done
    ((fresh)) && break
    sleep 0.1
done
declare -A last_stats
for s in relay stock payment; do
    last_stats[$s]=$(grep 'msg=stats' "$WORK/$s.log" | tail -n 1 || true)
done

# Graceful stops: consumers, then the relay. Each must exit 0.
declare -A exit_code
for s in stock payment relay; do
    pid_var=${s}_pid
    if stop_proc "${!pid_var}" 40; then exit_code[$s]=0; else exit_code[$s]=$?; fi
    printf -v "$pid_var" '%s' ''
done
for pid in "${tail_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
tail_pids=()

# ---------------------------------------------------------------- checks
failures=0
# check LABEL VALUE OP EXPECTED: prints one line, counts a failure.
check() {
    local label=$1 value=$2 op=$3 want=$4 pass=0
    case $op in
    =) [ "$value" = "$want" ] && pass=1 ;;
    '>') [[ $value =~ ^[0-9]+$ ]] && ((value > want)) && pass=1 ;;
    esac
    if ((pass)); then
        printf '   ok    %-62s %8s  (%s %s)\n' "$label" "$value" "$op" "$want"
    else
        printf '   FAIL  %-62s %8s  (expected %s %s)\n' "$label" "$value" "$op" "$want"
        failures=$((failures + 1))
    fi
}
info() { printf '         %-62s %8s\n' "$1" "$2"; }

say "invariants (queried in PostgreSQL; the same queries as the flash-sale test, tests/support/shop.c)"
check "orders in shop_orders" "$(q 'SELECT count(*) FROM shop_orders')" = "$ORDERS"
check "skus with stock below zero" "$(q 'SELECT count(*) FROM shop_stock WHERE available < 0')" = 0
check "skus where deducted qty <> initial - final stock" "$(q \
    "SELECT count(*) FROM shop_stock s LEFT JOIN (SELECT sku, sum(qty) q FROM shop_stock_moves
     WHERE outcome = 'deducted' GROUP BY sku) m USING (sku)
     WHERE s.initial - s.available <> COALESCE(m.q, 0)")" = 0
check "orders without a stock decision" "$(q \
    "SELECT count(*) FROM shop_orders o LEFT JOIN shop_stock_moves m USING (order_id)
     WHERE m.order_id IS NULL")" = 0
check "orders without an outcome" "$(q \
    "SELECT count(*) FROM shop_orders o LEFT JOIN shop_order_outcomes x USING (order_id)
     WHERE x.order_id IS NULL")" = 0
check "outcomes (one per order: primary key)" "$(q 'SELECT count(*) FROM shop_order_outcomes')" = "$ORDERS"
check "orders where captured <> deducted" "$(q \
    "SELECT count(*) FROM shop_stock_moves m JOIN shop_order_outcomes x USING (order_id)
     WHERE (m.outcome = 'deducted') <> (x.outcome = 'captured')")" = 0
check "refunds in the ledger" "$(q "SELECT count(*) FROM shop_ledger WHERE kind = 'refund'")" = 0
check "orders where captured <> one ledger capture" "$(q \
    "SELECT count(*) FROM shop_order_outcomes x FULL JOIN shop_ledger l USING (order_id)
     WHERE COALESCE(x.outcome = 'captured', false) <> COALESCE(l.kind = 'capture', false)")" = 0
check "ledger captures not for the order's amount" "$(q \
    "SELECT count(*) FROM shop_ledger l JOIN shop_orders o USING (order_id)
     WHERE l.amount_cents <> o.amount_cents")" = 0
check "stock inbox rows (processed_events, one per OrderPlaced)" \
    "$(q "SELECT count(*) FROM processed_events WHERE consumer = 'stock'")" = "$ORDERS"
check "payment inbox rows (one per StockDeducted/StockRejected)" \
    "$(q "SELECT count(*) FROM processed_events WHERE consumer = 'payment'")" = "$ORDERS"
check "inbox rows neither applied nor rejected" \
    "$(q "SELECT count(*) FROM processed_events WHERE status NOT IN ('applied', 'rejected')")" = 0
check "dead letters" "$(q 'SELECT count(*) FROM dead_letters')" = 0
check "outbox rows not sent" "$(q 'SELECT count(*) FROM outbox WHERE sent_at IS NULL')" = 0
deducted=$(q "SELECT count(*) FROM shop_stock_moves WHERE outcome = 'deducted'")
rejected=$(q "SELECT count(*) FROM shop_stock_moves WHERE outcome = 'rejected'")
oversubscribed=$(q "SELECT count(*) FROM (SELECT sku, sum(qty) AS demand FROM shop_orders GROUP BY sku) d
                    JOIN shop_stock s USING (sku) WHERE d.demand > s.initial")
check "orders deducted" "$deducted" '>' 0
if ((oversubscribed > 0)); then
    check "orders rejected (demand exceeded stock on $oversubscribed skus)" "$rejected" '>' 0
else
    info "orders rejected (demand never exceeded stock: not checked)" "$rejected"
fi
info "orders captured" "$(q "SELECT count(*) FROM shop_order_outcomes WHERE outcome = 'captured'")"
info "orders cancelled" "$(q "SELECT count(*) FROM shop_order_outcomes WHERE outcome = 'cancelled'")"
info "ledger total (cents)" "$(q 'SELECT COALESCE(sum(amount_cents), 0) FROM shop_ledger')"
info "units left in stock" "$(q 'SELECT sum(available) FROM shop_stock')"

say "Kafka: each topic read back from the beginning with kcat"
export LC_ALL=C # one collation for sort and comm
for t in "${TOPICS[@]}"; do
    f=$WORK/kafka-$t
    q "SELECT event_id FROM outbox WHERE aggregate_type = '${t#outbox.}'" | sort >"$f.db"
    timeout 60 kcat -C -q -b "$BOOT" -t "$t" -o beginning -e -f '%h\n' >"$f.headers" 2>"$f.log" ||
        { cat "$f.log" >&2; die "kcat could not read $t"; }
    grep -o 'event_id=[0-9a-f-]*' "$f.headers" | cut -d= -f2 | sort >"$f.all" || true
    sort -u "$f.all" >"$f.distinct"
    written=$(wc -l <"$f.db")
    check "$t: distinct event_ids (= its outbox rows)" "$(wc -l <"$f.distinct")" = "$written"
    check "$t: events missing" "$(comm -23 "$f.db" "$f.distinct" | wc -l)" = 0
    check "$t: events not in the outbox" "$(comm -13 "$f.db" "$f.distinct" | wc -l)" = 0
    info "$t: duplicate copies (publishing is at-least-once)" $(($(wc -l <"$f.all") - $(wc -l <"$f.distinct")))
done
check "outbox.order: distinct event_ids = orders" "$(wc -l <"$WORK/kafka-outbox.order.distinct")" = "$ORDERS"
echo "   first message's headers on outbox.stock: $(head -n 1 "$WORK/kafka-outbox.stock.headers")"

say "services"
for s in relay stock payment; do
    check "$s: exit code after SIGTERM" "${exit_code[$s]}" = 0
done
for s in relay stock payment; do
    echo "   $s's last stats line:"
    echo "   ${last_stats[$s]:-(none)}"
done

echo
echo "   took $((SECONDS - started))s in all; orders decided ${drain_s}s after the first write"
if ((failures > 0)); then
    echo "RESULT: FAIL: $failures check(s) failed" >&2
    exit 1
fi
echo "RESULT: OK: $ORDERS orders, each decided once; stock, ledger and outcomes agree; every event on Kafka"
ok=1
