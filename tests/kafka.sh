#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, loopback only) for the integration
# tests. The broker jars are fetched with Maven from tests/kafka/pom.xml and
# cached between runs.
#
# Kafka version: KAFKA_VERSION (default: the <kafka.version> of
# tests/kafka/pom.xml, 3.9.1). Each version has its own jar folder
# (~/.cache/outbox-relay/kafka-<version>) and its own dependency set:
#   3.x  tests/kafka/pom.xml    logging: slf4j 1.7 -> reload4j, log4j.properties
#   4.x  tests/kafka/pom-4.xml  logging: slf4j 1.7 -> log4j2,   log4j2.xml
# fetched with mvn -Dkafka.version=$KAFKA_VERSION. Kafka 4 removed reload4j
# (KIP-653) and ignores log4j.properties; slf4j-reload4j on its class path
# would take the slf4j binding away from log4j2. A broker or cluster folder
# remembers its version (DIR/version); start with another version formats
# DIR/data afresh (a 4.x data folder cannot be read by 3.x).
#   KAFKA_VERSION=4.1.1 tests/kafka.sh start DIR
#
#   tests/kafka.sh start DIR   fetch jars if needed, write DIR/server.properties,
#                              format DIR/data, start the broker, wait until it
#                              answers a Metadata request, print its bootstrap
#                              address (127.0.0.1:PORT) as the only stdout line
#                              and write it to DIR/bootstrap. If the broker of
#                              DIR is already running, just print the address.
#   tests/kafka.sh stop DIR    stop that broker (SIGTERM, up to 30 s, then
#                              SIGKILL). Does nothing if it is not running.
#   tests/kafka.sh fetch       only fetch the jars; prints the jar folder.
#
# Files in DIR: server.properties, data/ (log.dirs), kafka.log (broker output),
# kafka.pid, bootstrap, version (the Kafka version DIR/data was formatted by).
#
# A 3-node cluster (tests/cluster/): three combined broker+controller nodes,
# replication 3, min.insync.replicas 2, every client byte passing a fault
# proxy (obx-faultproxy, built in tests/):
#
#   tests/kafka.sh cluster-start DIR   start the proxy and three fresh nodes, wait
#                              until every node lists all three brokers, print
#                              the proxied bootstrap list as the only stdout line.
#   tests/kafka.sh cluster-stop DIR    stop the nodes and the proxy.
#   tests/kafka.sh cluster-node DIR start|stop|kill|pid N
#                              (re)start node N (1..3) and wait until it is back
#                              in the cluster; SIGTERM it; kill -9 it; print its pid.
#
# Each node has four loopback listeners: CONTROLLER, INTERNAL (between brokers),
# CLIENT (advertised as the node's proxy port: clients that bootstrap from
# DIR/bootstrap talk through the proxy) and DIRECT (advertised as itself, for a
# reader that must not pass the proxy). Files in DIR: bootstrap,
# bootstrap.direct, jars (the jar folder), version, proxy.ctl (the proxy's control
# port), proxy.pid, proxy.log, nN/{server.properties,data/,kafka.log,kafka.pid,
# ports}. Environment: OBX_FAULTPROXY (the proxy binary, default
# build-test/tests/obx-faultproxy), KAFKA_CLUSTER_PORT (first port to try,
# default 28200, below the ephemeral range), KAFKA_CLUSTER_HEAP_OPTS (default -Xmx384m).
#
# Environment:
#   KAFKA_PORT             client port to try first (default 39092)
#   KAFKA_CONTROLLER_PORT  controller port to try first (default 39093)
#                          (when busy, the next free ports are taken)
#   KAFKA_VERSION          Kafka to run (3.x or 4.x; default: pom.xml's)
#   KAFKA_JARS_DIR         jar cache folder
#                          (default ~/.cache/outbox-relay/kafka-<version>)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   KAFKA_HEAP_OPTS        default -Xmx512m
#   KAFKA_FRESH=1          wipe DIR/data before starting
#
# Diagnostics go to stderr; on failure the tail of DIR/kafka.log is printed
# to stderr and the exit status is non-zero.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The <kafka.version> of pom file $1.
pom_version() {
    local v
    v=$(sed -n 's:.*<kafka.version>\([^<]*\)</kafka.version>.*:\1:p' "$1" | head -n 1)
    [[ -n $v ]] || die "no <kafka.version> in $1"
    printf '%s\n' "$v"
}

# Sets KAFKA_VERSION, POM (the dependency set) and LOG_OPT (the JVM option
# naming the logging config) for version $1.
select_version() {
    KAFKA_VERSION=$1
    [[ $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "KAFKA_VERSION '$KAFKA_VERSION' is not x.y.z"
    case $KAFKA_VERSION in
    3.*)
        POM="$SCRIPT_DIR/kafka/pom.xml"
        LOG_OPT="-Dlog4j.configuration=file:$SCRIPT_DIR/kafka/log4j.properties"
        ;;
    4.*)
        POM="$SCRIPT_DIR/kafka/pom-4.xml"
        LOG_OPT="-Dlog4j2.configurationFile=file:$SCRIPT_DIR/kafka/log4j2.xml"
        ;;
    *) die "KAFKA_VERSION $KAFKA_VERSION: only 3.x and 4.x are set up (tests/kafka/)" ;;
    esac
}
select_version "${KAFKA_VERSION:-$(pom_version "$SCRIPT_DIR/kafka/pom.xml")}"

usage() {
    cat >&2 <<'EOF'
usage: tests/kafka.sh start DIR | stop DIR | fetch
       tests/kafka.sh cluster-start DIR | cluster-stop DIR
       tests/kafka.sh cluster-node DIR start|stop|kill|pid N
EOF
    exit 2
}

kafka_version() {
    printf '%s\n' "$KAFKA_VERSION"
}

# Install a JRE (java) / Maven (mvn) only when missing (Debian, as root).
ensure_tools() {
    local pkgs=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 && continue
        case $tool in
        java) pkgs+=(openjdk-17-jre-headless) ;;
        mvn) pkgs+=(maven) ;;
        esac
    done
    ((${#pkgs[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing ${pkgs[*]} (install them, or run as root)"
    command -v apt-get >/dev/null 2>&1 || die "missing ${pkgs[*]} and no apt-get"
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
}

# Fetch the broker jars into the cache folder once; prints the folder.
# Re-fetched when the pom (less its comments) or the version changes: their
# hash is stored in the folder. A re-fetch that yields the same jars only
# renews the stamp, so that brokers running from the folder keep their jars.
fetch_jars() {
    local version dir stamp tmp
    version=$(kafka_version)
    dir=${KAFKA_JARS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay/kafka-$version}
    stamp=$({ sed '/<!--/,/-->/d' "$POM"; printf '%s\n' "$version"; } | sha256sum | cut -d' ' -f1)
    if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$stamp" ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    ensure_tools java mvn
    log "fetching Kafka $version jars into $dir"
    mkdir -p "$(dirname "$dir")"
    tmp=$(mktemp -d "$dir.tmp.XXXXXX")
    # mvn's output is shown only when it fails (-q still prints colour codes).
    if ! mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$version" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime \
        >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "mvn could not fetch the Kafka $version jars"
    fi
    rm -f "$tmp.log"
    compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null || {
        rm -rf "$tmp"
        die "kafka_2.13-$version.jar missing after mvn"
    }
    if [[ -d $dir ]] && diff -rq -x .complete "$dir" "$tmp" >/dev/null 2>&1; then
        rm -rf "$tmp"
        printf '%s\n' "$stamp" >"$dir/.complete"
    else
        printf '%s\n' "$stamp" >"$tmp/.complete"
        rm -rf "$dir"
        mv "$tmp" "$dir"
    fi
    printf '%s\n' "$dir"
}

# True when something accepts connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when 127.0.0.1:$1 can be listened on (nothing listening there).
# Any TCP socket on that local port counts, not only listeners: the default
# ports lie in the ephemeral range, where a client connection of another
# test can hold the port and make the broker's bind fail.
port_free() {
    if command -v ss >/dev/null 2>&1; then
        if ss -Htan "sport = :$1" 2>/dev/null | grep -q .; then return 1; fi
    else
        if port_open "$1"; then return 1; fi
    fi
    return 0
}

# First free port from $1 on, not equal to $2.
pick_port() {
    local p=$1 avoid=${2:-} i
    for ((i = 0; i < 200; i++, p++)); do
        ((p > 65535)) && p=20000
        [[ $p == "$avoid" ]] && continue
        if port_free "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    die "no free loopback port from $1 on"
}

# Sends a Metadata request (v4, all topics) to 127.0.0.1:$1 and checks that the
# answer lists at least one broker: the broker is up and unfenced.
# Request: int32 size=23, int16 api_key=3, int16 api_version=4,
# int32 correlation_id='KORP', string client_id="kafka.sh",
# int32 topics=-1 (null: all), int8 allow_auto_topic_creation=0.
# Response starts: int32 size, int32 correlation_id, int32 throttle_time_ms,
# int32 broker count.
metadata_ok() {
    local port=$1 resp
    resp=$(
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf '\x00\x00\x00\x17\x00\x03\x00\x04\x4b\x4f\x52\x50\x00\x08kafka.sh\xff\xff\xff\xff\x00' >&3
        timeout 5 head -c 16 <&3 | od -An -v -tx1 | tr -d ' \n'
    ) 2>/dev/null || return 1
    [[ ${#resp} == 32 && ${resp:8:8} == 4b4f5250 ]] || return 1
    ((16#${resp:24:8} >= 1))
}

# Pid of the broker of DIR when it is running, else nothing (status 1).
running_pid() {
    local dir=$1 pid
    [[ -f $dir/kafka.pid ]] || return 1
    pid=$(cat "$dir/kafka.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a reused pid: it must be our broker.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    printf '%s\n' "$pid"
}

log_tail() {
    local dir=$1
    if [[ -s $dir/kafka.log ]]; then
        log "last lines of $dir/kafka.log:"
        tail -n 60 "$dir/kafka.log" >&2
    fi
}

new_cluster_id() {
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding
    # (22 characters); Kafka avoids ids starting with '-'.
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [[ $id != -* && ${#id} == 22 ]] && break
    done
    printf '%s\n' "$id"
}

write_config() {
    local dir=$1 port=$2 cport=$3
    cat >"$dir/server.properties" <<EOF
# Written by tests/kafka.sh: single-node KRaft broker on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=16777216
EOF
}

cmd_start() {
    local dir=$1 jars version pid port cport deadline bootstrap
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    # A broker of DIR that runs another Kafka version is stopped, and its
    # data formatted afresh.
    if [[ -f $dir/version && $(cat "$dir/version") != "$KAFKA_VERSION" ]]; then
        log "$dir held Kafka $(cat "$dir/version"); starting $KAFKA_VERSION afresh"
        cmd_stop "$dir"
        rm -rf "$dir/data"
    fi
    if pid=$(running_pid "$dir") && [[ -s $dir/bootstrap ]] &&
        metadata_ok "$(cut -d: -f2 "$dir/bootstrap")"; then
        log "broker already running (pid $pid)"
        cat "$dir/bootstrap"
        return 0
    fi
    if pid=$(running_pid "$dir"); then
        log "a broker of $dir (pid $pid) is running but not ready; stopping it"
        cmd_stop "$dir"
    fi

    jars=$(fetch_jars)
    ensure_tools java
    version=$(kafka_version)
    [[ ${KAFKA_FRESH:-0} == 1 ]] && rm -rf "$dir/data"

    # Keep the ports of an existing data folder (the controller address is
    # part of the quorum); start afresh when they are taken now.
    port="" cport=""
    if [[ -f $dir/data/meta.properties && -f $dir/server.properties ]]; then
        port=$(sed -n 's|^advertised.listeners=PLAINTEXT://127.0.0.1:||p' "$dir/server.properties")
        cport=$(sed -n 's|^controller.quorum.voters=1@127.0.0.1:||p' "$dir/server.properties")
        if [[ -z $port || -z $cport ]] || ! port_free "$port" || ! port_free "$cport"; then
            log "ports of the existing $dir/data are gone; formatting afresh"
            rm -rf "$dir/data"
            port="" cport=""
        fi
    else
        rm -rf "$dir/data"
    fi
    if [[ -z $port ]]; then
        port=$(pick_port "${KAFKA_PORT:-39092}")
        cport=$(pick_port "${KAFKA_CONTROLLER_PORT:-39093}" "$port")
    fi

    local -a jvm
    read -r -a jvm <<<"${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true $LOG_OPT"

    # Up to 3 tries: a port found free can be taken (by another test's client
    # connection) before the broker binds it; then the next ports are taken.
    local try t0
    for try in 1 2 3; do
        write_config "$dir" "$port" "$cport"
        printf '%s\n' "$version" >"$dir/version"
        rm -f "$dir/bootstrap" "$dir/kafka.pid"
        : >"$dir/kafka.log"

        t0=$EPOCHREALTIME
        if [[ ! -f $dir/data/meta.properties ]]; then
            log "formatting $dir/data"
            if ! java "${jvm[@]}" -cp "$jars/*" kafka.tools.StorageTool format \
                -t "$(new_cluster_id)" -c "$dir/server.properties" >>"$dir/kafka.log" 2>&1; then
                log_tail "$dir"
                die "formatting the storage failed"
            fi
        fi

        log "starting Kafka $version on 127.0.0.1:$port (controller $cport)"
        # setsid: the broker outlives this script and the caller's job control.
        setsid java "${jvm[@]}" -cp "$jars/*" kafka.Kafka "$dir/server.properties" \
            >>"$dir/kafka.log" 2>&1 </dev/null &
        pid=$!
        printf '%s\n' "$pid" >"$dir/kafka.pid"

        deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
        until port_open "$port" && metadata_ok "$port"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                rm -f "$dir/kafka.pid"
                if ((try < 3)) && grep -q 'Address already in use' "$dir/kafka.log"; then
                    log "port $port or $cport was taken meanwhile; trying the next ones"
                    rm -rf "$dir/data"
                    port=$(pick_port $((port + 2)))
                    cport=$(pick_port $((cport + 2)) "$port")
                    continue 2
                fi
                log_tail "$dir"
                die "the broker exited during startup"
            fi
            if ((SECONDS >= deadline)); then
                log_tail "$dir"
                cmd_stop "$dir"
                die "the broker was not ready within ${KAFKA_START_TIMEOUT:-90} s"
            fi
            sleep 0.25
        done
        break
    done

    bootstrap="127.0.0.1:$port"
    printf '%s\n' "$bootstrap" >"$dir/bootstrap"
    log "Kafka $version ready (pid $pid): format and start took $(awk -v a="${EPOCHREALTIME/,/.}" -v b="${t0/,/.}" 'BEGIN { printf "%.1f", a - b }') s, ${SECONDS} s in all"
    printf '%s\n' "$bootstrap"
}

cmd_stop() {
    local dir=$1 pid i
    [[ -d $dir ]] || return 0
    rm -f "$dir/bootstrap"
    if ! pid=$(running_pid "$dir"); then
        rm -f "$dir/kafka.pid"
        return 0
    fi
    log "stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker still running after 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    rm -f "$dir/kafka.pid"
}

# ---- 3-node cluster -------------------------------------------------------

# Like metadata_ok, but true only when the answer lists $2 brokers (all nodes
# registered and unfenced, so the controller quorum works).
metadata_brokers() {
    local port=$1 want=$2 resp
    resp=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf '\x00\x00\x00\x17\x00\x03\x00\x04\x4b\x4f\x52\x50\x00\x08kafka.sh\xff\xff\xff\xff\x00' >&3
        timeout 5 head -c 16 <&3 | od -An -v -tx1 | tr -d ' \n'
    ) 2>/dev/null || return 1
    [[ ${#resp} == 32 && ${resp:8:8} == 4b4f5250 ]] || return 1
    ((16#${resp:24:8} == want))
}

# Pid recorded in file $1 when that process is still running and its command
# line contains $2 (guards against a reused pid), else nothing (status 1).
pid_of() {
    local file=$1 what=$2 pid
    [[ -f $file ]] || return 1
    pid=$(cat "$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$what" || return 1
    printf '%s\n' "$pid"
}

# Port $2 (controller|internal|client|direct|proxy) of node $3 of cluster $1.
node_port() {
    sed -n "s/^$2=//p" "$1/n$3/ports"
}

cluster_jvm() {
    local -n out=$1
    read -r -a out <<<"${KAFKA_CLUSTER_HEAP_OPTS:--Xmx384m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true $LOG_OPT"
}

# Picks 5 free ports per node and one for the proxy's control, all distinct
# (a port is only taken once listened on, so each pick skips earlier picks).
cluster_pick_ports() {
    local dir=$1 next=${KAFKA_CLUSTER_PORT:-28200} n name p
    for n in 1 2 3 ctl; do
        for name in controller internal client direct proxy; do
            [[ $n == ctl && $name != proxy ]] && continue
            p=$(pick_port "$next")
            next=$((p + 1))
            if [[ $n == ctl ]]; then
                printf '%s\n' "$p" >"$dir/proxy.ctl"
            else
                mkdir -p "$dir/n$n"
                printf '%s=%s\n' "$name" "$p" >>"$dir/n$n/ports"
            fi
        done
    done
}

cluster_write_config() {
    local dir=$1 n=$2 voters=$3 c i d x
    c=$(node_port "$dir" controller "$n") i=$(node_port "$dir" internal "$n")
    d=$(node_port "$dir" direct "$n") x=$(node_port "$dir" proxy "$n")
    cat >"$dir/n$n/server.properties" <<EOF
# Written by tests/kafka.sh: node $n of a 3-node KRaft cluster on loopback.
# Short session and lag timeouts so that kill -9 and SIGSTOP move leaders and
# shrink the ISR within a test's time (DESIGN.md section 6).
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=CONTROLLER://127.0.0.1:$c,INTERNAL://127.0.0.1:$i,CLIENT://127.0.0.1:$(node_port "$dir" client "$n"),DIRECT://127.0.0.1:$d
advertised.listeners=INTERNAL://127.0.0.1:$i,CLIENT://127.0.0.1:$x,DIRECT://127.0.0.1:$d
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:PLAINTEXT,DIRECT:PLAINTEXT
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
log.dirs=$dir/n$n/data
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=10000
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.retention.hours=24
log.segment.bytes=16777216
EOF
}

cluster_node_start() {
    local dir=$1 n=$2 jars pid
    local -a jvm
    if pid=$(pid_of "$dir/n$n/kafka.pid" kafka.Kafka); then
        log "node $n already running (pid $pid)"
        return 0
    fi
    [[ -f $dir/version ]] && select_version "$(cat "$dir/version")"
    cluster_jvm jvm
    jars=$(cat "$dir/jars")
    setsid java "${jvm[@]}" -cp "$jars/*" kafka.Kafka "$dir/n$n/server.properties" \
        >>"$dir/n$n/kafka.log" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$dir/n$n/kafka.pid"
}

# Waits until every node in $2 answers a Metadata request listing three brokers.
cluster_wait() {
    local dir=$1 nodes=$2 n deadline pending
    deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
    while :; do
        pending=""
        for n in $nodes; do
            # kill -0, not pid_of: until setsid has exec'd java, the pid's
            # command line is still the shell's (a restart under load failed so).
            if ! kill -0 "$(cat "$dir/n$n/kafka.pid")" 2>/dev/null; then
                tail -n 40 "$dir/n$n/kafka.log" >&2
                die "node $n exited during startup (see $dir/n$n/kafka.log)"
            fi
            metadata_brokers "$(node_port "$dir" direct "$n")" 3 || pending+=" $n"
        done
        [[ -z $pending ]] && return 0
        if ((SECONDS >= deadline)); then
            for n in $pending; do tail -n 20 "$dir/n$n/kafka.log" >&2; done
            die "nodes$pending not ready within ${KAFKA_START_TIMEOUT:-90} s"
        fi
        sleep 0.1
    done
}

proxy_start() {
    local dir=$1 bin=${OBX_FAULTPROXY:-$SCRIPT_DIR/../build-test/tests/obx-faultproxy} n ctl deadline
    local -a routes=()
    [[ -x $bin ]] || die "fault proxy $bin not built (set OBX_FAULTPROXY)"
    for n in 1 2 3; do
        routes+=("$(node_port "$dir" proxy "$n"):$(node_port "$dir" client "$n")")
    done
    ctl=$(cat "$dir/proxy.ctl")
    : >"$dir/proxy.log"
    setsid "$bin" "$ctl" "${routes[@]}" >>"$dir/proxy.log" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$dir/proxy.pid"
    deadline=$((SECONDS + 10))
    until port_open "$ctl"; do
        # kill -0, not pid_of: until setsid has exec'd the proxy, the pid's
        # command line is still the shell's.
        if ! kill -0 "$(cat "$dir/proxy.pid")" 2>/dev/null; then
            cat "$dir/proxy.log" >&2
            die "the fault proxy exited"
        fi
        ((SECONDS < deadline)) || die "the fault proxy is not listening on $ctl"
        sleep 0.05
    done
}

cluster_start() {
    local dir=$1 jars n voters="" id start=$SECONDS proxied="" direct=""
    local -a jvm
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cluster_stop "$dir"
    rm -rf "$dir"/n[123] "$dir/proxy.ctl"
    jars=$(fetch_jars)
    ensure_tools java
    printf '%s\n' "$jars" >"$dir/jars"
    printf '%s\n' "$KAFKA_VERSION" >"$dir/version"
    cluster_pick_ports "$dir"
    for n in 1 2 3; do
        voters+="${voters:+,}$n@127.0.0.1:$(node_port "$dir" controller "$n")"
        proxied+="${proxied:+,}127.0.0.1:$(node_port "$dir" proxy "$n")"
        direct+="${direct:+,}127.0.0.1:$(node_port "$dir" direct "$n")"
    done
    proxy_start "$dir"
    id=$(new_cluster_id)
    cluster_jvm jvm
    # Each format costs a JVM start: the three run side by side.
    for n in 1 2 3; do
        cluster_write_config "$dir" "$n" "$voters"
        : >"$dir/n$n/kafka.log"
        java "${jvm[@]}" -cp "$jars/*" kafka.tools.StorageTool format -t "$id" \
            -c "$dir/n$n/server.properties" >>"$dir/n$n/kafka.log" 2>&1 &
    done
    for n in 1 2 3; do
        if ! wait -n; then
            wait
            cluster_stop "$dir"
            die "formatting a node's storage failed (see $dir/n*/kafka.log)"
        fi
    done
    log "starting a 3-node Kafka $(kafka_version) cluster in $dir"
    for n in 1 2 3; do cluster_node_start "$dir" "$n"; done
    if ! (cluster_wait "$dir" "1 2 3"); then
        cluster_stop "$dir"
        exit 1
    fi
    printf '%s\n' "$proxied" >"$dir/bootstrap"
    printf '%s\n' "$direct" >"$dir/bootstrap.direct"
    log "cluster ready in $((SECONDS - start)) s (proxied $proxied, direct $direct)"
    printf '%s\n' "$proxied"
}

# Sends signal $2 to pid $1 and waits up to $3 quarter seconds for it to exit.
stop_pid() {
    local pid=$1 sig=$2 tries=$3 i
    kill "-$sig" "$pid" 2>/dev/null || true
    # A frozen (SIGSTOPped) node handles SIGTERM only once continued.
    kill -CONT "$pid" 2>/dev/null || true
    for ((i = 0; i < tries; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    return 1
}

cluster_node() {
    local dir=$1 action=$2 n=$3 pid
    [[ -f $dir/n$n/ports ]] || die "no cluster in $dir"
    case $action in
    start)
        cluster_node_start "$dir" "$n"
        cluster_wait "$dir" "$n"
        ;;
    stop)
        pid=$(pid_of "$dir/n$n/kafka.pid" kafka.Kafka) || return 0
        stop_pid "$pid" TERM 120 || stop_pid "$pid" KILL 40 || die "node $n (pid $pid) survived SIGKILL"
        ;;
    kill)
        pid=$(pid_of "$dir/n$n/kafka.pid" kafka.Kafka) || return 0
        stop_pid "$pid" KILL 40 || die "node $n (pid $pid) survived SIGKILL"
        ;;
    pid)
        pid_of "$dir/n$n/kafka.pid" kafka.Kafka || die "node $n is not running"
        ;;
    *) usage ;;
    esac
}

cluster_stop() {
    local dir=$1 n pid pids=()
    [[ -d $dir ]] || return 0
    # SIGTERM to all three at once: one by one, the last would wait out a
    # controlled shutdown without a quorum.
    for n in 1 2 3; do
        if pid=$(pid_of "$dir/n$n/kafka.pid" kafka.Kafka); then
            pids+=("$pid")
            kill -TERM "$pid" 2>/dev/null || true
            kill -CONT "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do
        stop_pid "$pid" TERM 60 || stop_pid "$pid" KILL 40 || log "node pid $pid survived SIGKILL"
    done
    if pid=$(pid_of "$dir/proxy.pid" obx-faultproxy); then
        stop_pid "$pid" TERM 20 || stop_pid "$pid" KILL 20 || log "proxy pid $pid survived SIGKILL"
    fi
    rm -f "$dir"/n[123]/kafka.pid "$dir/proxy.pid" "$dir/bootstrap" "$dir/bootstrap.direct"
}

main() {
    (($# >= 1)) || usage
    case $1 in
    start)
        (($# == 2)) || usage
        cmd_start "$2"
        ;;
    stop)
        (($# == 2)) || usage
        cmd_stop "$2"
        ;;
    fetch)
        (($# == 1)) || usage
        fetch_jars
        ;;
    cluster-start)
        (($# == 2)) || usage
        cluster_start "$2"
        ;;
    cluster-stop)
        (($# == 2)) || usage
        cluster_stop "$2"
        ;;
    cluster-node)
        (($# == 4)) && [[ $4 =~ ^[1-3]$ ]] || usage
        cluster_node "$2" "$3" "$4"
        ;;
    *) usage ;;
    esac
}

main "$@"
