#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 and prints "DIR URL"; `scripts/pg.sh stop DIR`
# stops it and deletes it. Used by scripts/test.sh for the PostgreSQL run of the Rust test suite.
# `scripts/pg.sh halt DIR` stops the server but keeps the cluster, and `scripts/pg.sh resume DIR`
# starts it again on the same port: the database outage test (server/tests/reliability.rs)
# takes its own cluster away and back this way.
set -euo pipefail

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$pg_bin" ] || { echo "PostgreSQL is not installed (scripts/tools.sh test installs it)" >&2; exit 1; }

# PostgreSQL refuses to run as root: use the postgres account Debian's package creates.
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

# Starts the cluster in DIR on the port recorded in DIR/port.
run_cluster() {
  local dir=$1 port sync="-c fsync=off"
  port=$(cat "$dir/port")
  # fsync off: this cluster holds only test data and is thrown away. A benchmark sets
  # PG_DURABLE=1 to measure what a real server's commits cost.
  [ "${PG_DURABLE:-0}" = 1 ] && sync=""
  as_pg "'$pg_bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -o \"-c listen_addresses=127.0.0.1 -p $port -k '$dir' $sync -c max_connections=300\" start >/dev/null"
}

case "${1:-start}" in
  start)
    dir=$(mktemp -d /tmp/moderato-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "'$pg_bin/initdb' -D '$dir/data' -A trust -U postgres --no-sync -E UTF8 >'$dir/initdb.log' 2>&1"
    echo "$port" >"$dir/port"
    run_cluster "$dir"
    echo "$dir postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  halt)
    dir=${2:?usage: pg.sh halt DIR}
    # "fast": open sessions are ended at once, as when a database host goes down.
    as_pg "'$pg_bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null"
    ;;
  resume)
    dir=${2:?usage: pg.sh resume DIR}
    run_cluster "$dir"
    ;;
  stop)
    dir=${2:?usage: pg.sh stop DIR}
    as_pg "'$pg_bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" || true
    rm -rf "$dir"
    ;;
esac
