#!/usr/bin/env bash
# Builds outbox-relay with ASan+UBSan, starts the servers the tests need
# (a throwaway PostgreSQL, a real single-node Kafka broker, and for the
# cluster suite a real 3-node Kafka cluster behind a fault proxy), runs every
# meson test suite, stops the servers, and exits non-zero on any failure.
#   tests/run.sh [meson test args...]     e.g. tests/run.sh --suite unit
# Env: OBX_BUILD_DIR (default build-test), OBX_TEST_TMP (scratch dir),
#      OBX_TEST_TIMEOUT_MULT (scales every test deadline, default 1),
#      CHAOS_LONG=1 / OBX_CHAOS_SEED (the chaos suites' schedule).
# The 3-node cluster starts only when the selection can include the cluster
# suite (no arguments, or an argument naming "cluster").
# Kafka 4: the end-to-end and flash-sale tests (integration-e2e,
# integration-shop) run a second time, on a single-node Kafka 4.1.1 broker
# (KAFKA4_VERSION overrides), in the full run and when an argument mentions
# "kafka4" (such arguments are run.sh's own, not passed to meson: `tests/run.sh
# kafka4` runs only that pass). Output in $tmp/meson-kafka4.out, counted in
# the closing line; a failure fails the run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

packages=(gcc meson ninja-build pkg-config librdkafka-dev libpq-dev libconfig-dev check
          postgresql postgresql-contrib maven openjdk-17-jre-headless valgrind
          clang libclang-rt-14-dev kcat
          systemd python3-yaml) # the deploy suite: systemd-analyze verify, the k8s YAML
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
    "$root/tests/kafka.sh" cluster-stop "$tmp/cluster" >/dev/null 2>&1 || true
    "$root/tests/kafka.sh" stop "$tmp/kafka4" >/dev/null 2>&1 || true
    "$root/tests/kafka.sh" stop "$tmp/kafka" >/dev/null 2>&1 || true
    "$root/tests/pg.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
    "$root/tests/pg.sh" stop "$tmp/work/pg-soak" >/dev/null 2>&1 || true # the soak suite's own
}
trap cleanup EXIT

# Arguments that mention kafka4 select the Kafka 4 pass; the rest go to meson.
# Given only such arguments, the first meson pass (and its broker) is skipped.
want_kafka4=0 run_main=1 meson_args=()
[ $# -eq 0 ] && want_kafka4=1
for a in "$@"; do
    case $a in
    *kafka4*) want_kafka4=1 ;;
    *) meson_args+=("$a") ;;
    esac
done
[ $# -gt 0 ] && [ ${#meson_args[@]} -eq 0 ] && run_main=0

export PGPORT=${PGPORT:-54329}
pghost=$("$root/tests/pg.sh" start "$tmp/pg")
bootstrap=""
[ $run_main = 1 ] && bootstrap=$("$root/tests/kafka.sh" start "$tmp/kafka")
want_cluster=0
[ $# -eq 0 ] && want_cluster=1
for a in "${meson_args[@]}"; do
    case $a in *cluster*) want_cluster=1 ;; esac
done
if [ $want_cluster = 1 ]; then
    cluster=$(OBX_FAULTPROXY=$(cd "$build" && pwd)/tests/obx-faultproxy "$root/tests/kafka.sh" cluster-start "$tmp/cluster")
    export OBX_CLUSTER_DIR=$tmp/cluster OBX_CLUSTER_BOOTSTRAP=$cluster
    export OBX_CLUSTER_DIRECT=$(cat "$tmp/cluster/bootstrap.direct")
    echo "run.sh: kafka cluster on $cluster (direct $OBX_CLUSTER_DIRECT)" >&2
fi

export OBX_TEST_PGHOST=$pghost OBX_TEST_PGPORT=$PGPORT OBX_TEST_PGDIR=$tmp/pg
export OBX_KAFKA_BOOTSTRAP=$bootstrap OBX_TEST_TMP=$tmp/work
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "run.sh: postgres on $pghost:$PGPORT, kafka on ${bootstrap:-(not started)}, scratch in $tmp" >&2

status=0
if [ $run_main = 1 ]; then
    # PIPESTATUS must be read right after the pipeline: behind "|| true" it
    # would hold true's status, and every failure would pass.
    set +e
    meson test -C "$build" --print-errorlogs "${meson_args[@]}" 2>&1 | tee "$tmp/meson-test.out"
    status=${PIPESTATUS[0]}
    set -e
    if [ $status -ne 0 ]; then
        echo "run.sh: FAILED (relay logs under $tmp/work/*/relay.log)" >&2
    fi
fi
# The cluster's three JVMs are not needed past here: free their memory and CPU.
"$root/tests/kafka.sh" cluster-stop "$tmp/cluster" >/dev/null 2>&1 || true

# Kafka 4: the end-to-end and flash-sale tests again, on a 4.x broker of their
# own (its own scratch folder and meson log), stopped right after.
if [ $want_kafka4 = 1 ]; then
    k4status=0
    if bootstrap4=$(KAFKA_VERSION=${KAFKA4_VERSION:-4.1.1} "$root/tests/kafka.sh" start "$tmp/kafka4"); then
        echo "run.sh: kafka ${KAFKA4_VERSION:-4.1.1} on $bootstrap4" >&2
        set +e
        OBX_KAFKA_BOOTSTRAP=$bootstrap4 OBX_TEST_TMP=$tmp/work-kafka4 \
            meson test -C "$build" --print-errorlogs --logbase testlog-kafka4 \
            integration-e2e integration-shop 2>&1 | tee "$tmp/meson-kafka4.out"
        k4status=${PIPESTATUS[0]}
        set -e
    else
        k4status=1
    fi
    "$root/tests/kafka.sh" stop "$tmp/kafka4" >/dev/null 2>&1 || true
    if [ $k4status -ne 0 ]; then
        echo "run.sh: Kafka 4 pass FAILED (see $tmp/meson-kafka4.out, $tmp/kafka4/kafka.log, relay logs under $tmp/work-kafka4/*/relay.log)" >&2
        status=1
    fi
fi

# Valgrind (skipped when a test selection was given): the unit and
# integration suites again on a build without sanitizers, every test program
# and every relay and consumer it starts under memcheck. The fault-injection
# tests that run alone (they stop servers: faults, health, alerts) take half
# of this pass's time and run under ASan+UBSan above: OBX_VALGRIND=all adds
# them, OBX_VALGRIND=0 skips the pass.
if [ $# -eq 0 ] && [ "${OBX_VALGRIND:-1}" != 0 ]; then
    vbuild=${OBX_VALGRIND_BUILD_DIR:-build-vg}
    if [ ! -f "$vbuild/build.ninja" ]; then
        meson setup "$vbuild" --buildtype=debugoptimized >/dev/null
    fi
    ninja -C "$vbuild" >/dev/null
    vtests=()
    if [ "${OBX_VALGRIND:-1}" != all ]; then
        mapfile -t vtests < <(meson test -C "$vbuild" --list --suite unit --suite integration 2>/dev/null |
            sed -n 's|^.* / ||p' | grep -vxE 'integration-(faults|health|alerts)')
    fi
    set +e
    OBX_TEST_TMP=$tmp/work-vg meson test -C "$vbuild" --setup=valgrind --suite unit --suite integration \
        --print-errorlogs "${vtests[@]}" 2>&1 | tee "$tmp/meson-valgrind.out"
    vstatus=${PIPESTATUS[0]}
    set -e
    [ "$vstatus" -eq 0 ] || { echo "run.sh: valgrind run FAILED" >&2; status=1; }
fi

# Fuzzing (skipped when a test selection was given): every libFuzzer target
# first replays its saved crash inputs, then runs for FUZZ_SECONDS on a copy
# of its seed corpus. A crash fails the run and leaves its input in $tmp/fuzz.
if [ $# -eq 0 ] && [ "${FUZZ_SECONDS:-20}" -gt 0 ]; then
    fbuild=${OBX_FUZZ_BUILD_DIR:-build-fuzz}
    if [ ! -f "$fbuild/build.ninja" ]; then
        CC=clang meson setup "$fbuild" -Dfuzz=true -Dtests=false >/dev/null
    fi
    ninja -C "$fbuild" >/dev/null
    export LSAN_OPTIONS=suppressions=$root/tests/fuzz/lsan.supp
    for target in config pgbin headers log; do
        corpus=$tmp/fuzz/$target
        mkdir -p "$corpus"
        cp "$root/tests/fuzz/corpus/$target/"* "$corpus/"
        regressions=("$root/tests/fuzz/regressions/$target/"*)
        if [ -e "${regressions[0]}" ] &&
            ! "$fbuild/tests/fuzz/fuzz_$target" "${regressions[@]}" >"$tmp/fuzz/$target-regressions.log" 2>&1; then
            echo "run.sh: fuzz_$target regression FAILED, see $tmp/fuzz/$target-regressions.log" >&2
            status=1
        fi
        if "$fbuild/tests/fuzz/fuzz_$target" -max_total_time="${FUZZ_SECONDS:-20}" \
            -artifact_prefix="$tmp/fuzz/" "$corpus" >"$tmp/fuzz/$target.log" 2>&1; then
            echo "fuzz_$target: $(grep -E '^Done' "$tmp/fuzz/$target.log")" >&2
        else
            echo "run.sh: fuzz_$target FAILED, see $tmp/fuzz/$target.log" >&2
            status=1
        fi
    done
fi
# (No meson-*.out at all, as when the only pass's broker did not start, is
# no error: under pipefail a failing cat would end the script here.)
count() { { cat "$tmp"/meson-*.out 2>/dev/null || true; } | awk -v k="$1:" '$1 == k { s += $2 } END { print s + 0 }'; }
failed=$(( $(count Fail) + $(count Timeout) ))
echo "tests: $(count Ok) passed, $failed failed"
[ "$failed" -eq 0 ] || status=1
exit $status
