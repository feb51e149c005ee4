#!/usr/bin/env bash
# Runs flagship-worker's throughput bench on PostgreSQL and the graphile-worker
# peer harness alternately on one PostgreSQL server, several rounds, and prints
# the median of each workload and the ratio ours / graphile-worker.
#
# Usage: benches/compare-graphile.sh [ROUNDS=5] [PEER_DIR=/work/shared/peers/graphile-worker]
# Env:   PGHOST / PGPORT / PGUSER (default 127.0.0.1:5432, postgres). Ours uses
#        the database flagship_bench and drops its flagship_worker schema each
#        run; graphile-worker uses gwbench and drops its graphile_worker schema:
#        point it at a server used only for benchmarks.
#
# Per round: ours `throughput` at concurrency 50 with 20,000 jobs (enqueued in
# batches of 1,000, then drained), graphile-worker `throughput 50 20000 1` (its
# batching on: localQueue and batched completion), ours `latency` (an idle
# worker, one job every 2 ms), and ours `latency` again with the bench
# database's `synchronous_commit` off for the run (reset afterwards). Database work per job is measured around each
# run from outside: transactions (pg_stat_database) and WAL bytes
# (pg_current_wal_lsn), enqueue and processing together, for both systems;
# graphile-worker's figure also holds its schema migration at the start of the
# run (a few hundred kB spread over 20,000 jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
peer=${2:-/work/shared/peers/graphile-worker}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

psql_() { psql -h "$host" -p "$port" -U "$user" -d postgres -qAtc "$1"; }
for db in flagship_bench gwbench; do
  psql_ "select 1 from pg_database where datname = '$db'" | grep -q 1 || psql_ "create database $db" >/dev/null
done
lsn() { psql_ "select pg_current_wal_lsn()"; }
xacts() { sleep 1.5; psql_ "select xact_commit + xact_rollback from pg_stat_database where datname = '$1'"; }
# Runs "$@" and appends to $out/$1-work the transactions and WAL bytes per job around it.
measured() {
  local name=$1 db=$2 jobs=$3; shift 3
  local x0 l0 x1 l1 result
  x0=$(xacts "$db"); l0=$(lsn)
  result=$("$@")
  l1=$(lsn); x1=$(xacts "$db")
  echo "$result" >>"$out/$name"
  psql_ "select json_build_object('statements_per_job', ($x1 - $x0)::float / $jobs,
         'wal_bytes_per_job', pg_wal_lsn_diff('$l1', '$l0') / $jobs)" >>"$out/$name-work"
}

url="postgres://$user@$host:$port/flagship_bench"
cargo bench --quiet --features postgres --bench throughput --no-run >/dev/null 2>&1
ours() { cargo bench --quiet --features postgres --bench throughput -- --backend postgres --postgres-url "$url" "$@" 2>/dev/null | tail -n 1; }
theirs() { DATABASE_URL="postgres://$user@$host:$port/gwbench" "$peer/run.sh" "$@" 2>/dev/null | tail -n 1; }

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  measured ours-c50 flagship_bench 20000 ours --mode throughput --concurrency 50 --jobs 20000
  measured graphile-c50 gwbench 20000 theirs throughput 50 20000 1
  ours --mode latency --jobs 2000 --interval-ms 2 >>"$out/ours-lat"
  # The same with the producer's commits not waiting for the WAL flush, which
  # otherwise is most of the latency on a disk with slow fsync.
  psql_ "alter database flagship_bench set synchronous_commit = off"
  ours --mode latency --jobs 2000 --interval-ms 2 >>"$out/ours-lat-async" || true
  psql_ "alter database flagship_bench reset synchronous_commit"
done

python3 - "$out" <<'PY'
import json, statistics, sys, os
d = sys.argv[1]
def load(name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]
def med(rows, *path):
    vals = []
    for r in rows:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else float("nan")
ours, theirs = load("ours-c50"), load("graphile-c50")
rows = [
    ("process jobs/s, concurrency 50", med(ours, "process_jobs_per_s"), med(theirs, "process_jobs_per_s"), True),
    ("enqueue jobs/s (batches of 1,000)", med(ours, "enqueue_jobs_per_s"), med(theirs, "enqueue_jobs_per_s"), True),
    ("transactions per job (enqueue + process)", med(load("ours-c50-work"), "statements_per_job"), med(load("graphile-c50-work"), "statements_per_job"), False),
    ("WAL bytes per job (enqueue + process)", med(load("ours-c50-work"), "wal_bytes_per_job"), med(load("graphile-c50-work"), "wal_bytes_per_job"), False),
]
print(f"| workload (median of {len(ours)} rounds) | flagship-worker | graphile-worker | ours / graphile |")
print("|---|---:|---:|---:|")
for name, a, b, higher in rows:
    fmt = (lambda v: f"{v:,.0f}") if higher else (lambda v: f"{v:,.3f}" if v < 10 else f"{v:,.0f}")
    ratio = a / b if b else float("nan")
    print(f"| {name} | {fmt(a)} | {fmt(b)} | {ratio:.2f}× |")
print()
for name, label in [("ours-lat", "enqueue commits durably"), ("ours-lat-async", "enqueue with synchronous_commit off")]:
    lat = load(name)
    print(f"flagship-worker latency, idle worker, one job every 2 ms, {label} (median of {len(lat)} rounds): "
          f"p50 {med(lat, 'latency_ms', 'p50'):.3f} ms, p90 {med(lat, 'latency_ms', 'p90'):.3f} ms, "
          f"p99 {med(lat, 'latency_ms', 'p99'):.3f} ms, max {med(lat, 'latency_ms', 'max'):.3f} ms")
print(f"flagship-worker's own figures, processing phase: {med(ours, 'pg_statements_per_job'):.5f} statements (broker calls), "
      f"{med(ours, 'pg_wal_bytes_per_job'):.0f} WAL bytes, {med(ours, 'pg_cpu_us_per_job'):.1f} µs of PostgreSQL CPU, "
      f"{med(ours, 'process_cpu_us_per_job'):.1f} µs of worker CPU per job; enqueue phase: "
      f"{med(ours, 'enqueue_postgres', 'pg_wal_bytes_per_job'):.0f} WAL bytes, "
      f"{med(ours, 'enqueue_postgres', 'pg_cpu_us_per_job'):.1f} µs of PostgreSQL CPU per job")
PY
