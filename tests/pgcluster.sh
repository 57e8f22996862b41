#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from Debian's server binaries.
#   pgcluster.sh start DIR   initdb in DIR, start it on a free loopback port with its unix socket
#                            in DIR, create database rustdesk_test, print its URL; exit
#                            status 3 when PostgreSQL is not installed
#   pgcluster.sh stop DIR    stop the server and remove DIR
# .ci/run and tests/services.py both use it. Run as root, the server runs as the postgres
# system user: PostgreSQL refuses to run as root. Durability is off: the data is thrown away.
set -euo pipefail
command=$1
dir=$2

if [ "$(id -u)" = 0 ]; then
    as_owner() { runuser -u postgres -- "$@"; }
else
    as_owner() { "$@"; }
fi

bindir() {
    local debian
    debian=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' 2>/dev/null \
        | sort -V | tail -n 1)
    if [ -n "$debian" ]; then
        echo "$debian"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
    fi
}

bin=$(bindir)
cd "$dir"
case $command in
start)
    if [ -z "$bin" ]; then
        echo "no PostgreSQL server binaries (Debian package postgresql)" >&2
        exit 3
    fi
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h "$dir" -p "$port" -U postgres rustdesk_test
    echo "postgresql://postgres@127.0.0.1:$port/rustdesk_test"
    ;;
stop)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -s -m immediate stop || true
    fi
    cd /
    rm -rf "$dir"
    ;;
*)
    echo "usage: pgcluster.sh start|stop DIR" >&2
    exit 2
    ;;
esac
