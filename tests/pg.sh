#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL cluster for tests and demos:
# owned by the postgres user, in DIR, on a unix socket there (trusted) and
# on 127.0.0.1:PGPORT (password "postgres"; for tests that put a fault proxy
# before the server).
#   tests/pg.sh start DIR      initdb (first time) and start; prints the socket dir
#   tests/pg.sh stop DIR       stop (fast), idempotent
#   tests/pg.sh restart DIR [fast|immediate]
# Env: PGPORT (default 54329), PG_FSYNC (default off: a throwaway cluster).
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop|restart DIR}
dir=${2:?usage: pg.sh start|stop|restart DIR}
port=${PGPORT:-54329}
bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

as_pg() { runuser -u postgres -- "$@"; }

start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        # Over TCP the postgres role needs its password, "postgres", so that a
        # wrong one fails as on a real server; the unix socket trusts.
        echo postgres >"$dir/pwfile"
        chown postgres: "$dir/pwfile"
        as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            --pwfile="$dir/pwfile" -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
        rm -f "$dir/pwfile"
        cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
port = $port
fsync = ${PG_FSYNC:-off}
max_connections = 200
shared_buffers = 256MB
track_commit_timestamp = on
log_min_messages = warning
log_line_prefix = '%m [%p] '
CONF
    fi
    if as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "$dir"
        return
    fi
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
        { tail -20 "$dir/postgres.log" >&2; exit 1; }
    echo "$dir"
}

stop() {
    [ -f "$dir/data/PG_VERSION" ] || return 0
    if as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m "${1:-fast}" -w -t 60 stop >/dev/null
    fi
}

case "$cmd" in
start) start ;;
stop) stop fast ;;
restart) stop "${3:-fast}"; start >/dev/null ;;
*) echo "usage: pg.sh start|stop|restart DIR" >&2; exit 2 ;;
esac
