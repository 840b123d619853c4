#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, loopback only) for the integration
# tests. The broker jars are fetched with Maven from tests/kafka/pom.xml and
# cached between runs.
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
# kafka.pid, bootstrap.
#
# Environment:
#   KAFKA_PORT             client port to try first (default 39092)
#   KAFKA_CONTROLLER_PORT  controller port to try first (default 39093)
#                          (when busy, the next free ports are taken)
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
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J_CONF="$SCRIPT_DIR/kafka/log4j.properties"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: tests/kafka.sh start DIR | stop DIR | fetch
EOF
    exit 2
}

kafka_version() {
    local v
    v=$(sed -n 's:.*<kafka.version>\([^<]*\)</kafka.version>.*:\1:p' "$POM" | head -n 1)
    [[ -n $v ]] || die "no <kafka.version> in $POM"
    printf '%s\n' "$v"
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
# Re-fetched when pom.xml changes (its hash is stored in the folder).
fetch_jars() {
    local version dir stamp tmp
    version=$(kafka_version)
    dir=${KAFKA_JARS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay/kafka-$version}
    stamp=$(sha256sum "$POM" | cut -d' ' -f1)
    if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$stamp" ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    ensure_tools java mvn
    log "fetching Kafka $version jars into $dir"
    mkdir -p "$(dirname "$dir")"
    tmp=$(mktemp -d "$dir.tmp.XXXXXX")
    # mvn's output is shown only when it fails (-q still prints colour codes).
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "mvn could not fetch the Kafka $version jars"
    fi
    rm -f "$tmp.log"
    compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null || {
        rm -rf "$tmp"
        die "kafka_2.13-$version.jar missing after mvn"
    }
    printf '%s\n' "$stamp" >"$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    printf '%s\n' "$dir"
}

# True when something accepts connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when 127.0.0.1:$1 can be listened on (nothing listening there).
port_free() {
    if command -v ss >/dev/null 2>&1; then
        if ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; then return 1; fi
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

    write_config "$dir" "$port" "$cport"
    rm -f "$dir/bootstrap" "$dir/kafka.pid"
    : >"$dir/kafka.log"

    local -a jvm
    read -r -a jvm <<<"${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true -Dlog4j.configuration=file:$LOG4J_CONF"

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

    bootstrap="127.0.0.1:$port"
    printf '%s\n' "$bootstrap" >"$dir/bootstrap"
    log "ready (pid $pid) in ${SECONDS} s"
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
    *) usage ;;
    esac
}

main "$@"
