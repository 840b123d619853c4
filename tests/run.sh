#!/usr/bin/env bash
# Builds outbox-relay with ASan+UBSan, starts the servers the tests need
# (a throwaway PostgreSQL, a real single-node Kafka broker), runs every
# meson test suite, stops the servers, and exits non-zero on any failure.
#   tests/run.sh [meson test args...]     e.g. tests/run.sh --suite unit
# Env: OBX_BUILD_DIR (default build-test), OBX_TEST_TMP (scratch dir),
#      OBX_TEST_TIMEOUT_MULT (scales every test deadline, default 1).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

packages=(gcc meson ninja-build pkg-config librdkafka-dev libpq-dev libconfig-dev check
          postgresql postgresql-contrib maven openjdk-17-jre-headless valgrind)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

build=${OBX_BUILD_DIR:-build-test}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debugoptimized >/dev/null
fi
ninja -C "$build"

tmp=${OBX_TEST_TMP:-$(mktemp -d /tmp/outbox-relay-tests.XXXXXX)}
mkdir -p "$tmp"
chmod 755 "$tmp"
cleanup() {
    "$root/tests/kafka.sh" stop "$tmp/kafka" >/dev/null 2>&1 || true
    "$root/tests/pg.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
}
trap cleanup EXIT

export PGPORT=${PGPORT:-54329}
pghost=$("$root/tests/pg.sh" start "$tmp/pg")
bootstrap=$("$root/tests/kafka.sh" start "$tmp/kafka")

export OBX_TEST_PGHOST=$pghost OBX_TEST_PGPORT=$PGPORT OBX_TEST_PGDIR=$tmp/pg
export OBX_KAFKA_BOOTSTRAP=$bootstrap OBX_TEST_TMP=$tmp/work
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "run.sh: postgres on $pghost:$PGPORT, kafka on $bootstrap, scratch in $tmp" >&2

status=0
meson test -C "$build" --print-errorlogs "$@" || status=$?
if [ $status -ne 0 ]; then
    echo "run.sh: FAILED (relay logs under $tmp/work/*/relay.log)" >&2
fi
exit $status
