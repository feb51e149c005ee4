#!/usr/bin/env bash
# Runs the throughput bench's `stream` mode (producer and worker together,
# backlog capped at 20,000 jobs) on a PostgreSQL server of its own, started
# here with initdb + pg_ctl in a temporary directory (stock settings but for
# any `-c name=value` given in SERVER_OPTS), and prints the bench's JSON line:
# the jobs table's size (pg_total_relation_size) at the start, its largest
# and at the end, and how often autovacuum ran on it.
#
# Usage: benches/stream-postgres.sh [JOBS=1000000] [CONCURRENCY=50] [VACUUM_AFTER=100000|off]
# Env:   SERVER_OPTS, e.g. "-c autovacuum_naptime=5s"; PORT (default 55433).
# Needs PostgreSQL's programs (`pg_config --bindir`); as root the server runs
# as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-1000000}
concurrency=${2:-50}
vacuum_after=${3:-100000}
port=${PORT:-55433}
bindir=$(pg_config --bindir)
dir=$(mktemp -d /tmp/flagship-stream-XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_owner=(runuser -u postgres --)
fi
stop() { "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap stop EXIT
"${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 >/dev/null
"${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 ${SERVER_OPTS:-}" start >/dev/null
echo "server: $("$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc "select version()" | cut -d' ' -f1-2)," \
  "autovacuum $("$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc "show autovacuum")," \
  "naptime $("$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc "show autovacuum_naptime")" >&2
cargo bench --quiet --features postgres --bench throughput -- --backend postgres \
  --postgres-url "postgres://postgres@127.0.0.1:$port/flagship_bench" \
  --mode stream --jobs "$jobs" --concurrency "$concurrency" --vacuum-after "$vacuum_after" 2>/dev/null | tail -n 1
