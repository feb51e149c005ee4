#!/usr/bin/env bash
# Runs flagship-worker's throughput bench and the BullMQ peer harness
# alternately on one Redis, several rounds, and prints the median of each
# workload and the ratio ours / BullMQ. Each round also runs the throughput
# mode of bullmq-official, BullMQ's own Rust crate (benches/peers/bullmq-official,
# built once here); if that peer does not build, its rows are left out and the
# rest of the table is still printed.
#
# The throughput rows run at concurrency 50 with JOBS jobs (default 100,000,
# so a run lasts seconds) for each payload size in SIZES (default "0 1024
# 16384": no padding, the ~20-byte no-op job, then a string field `pad` of
# 1 KiB and 16 KiB, as the peer's PAYLOAD=N pads its jobs). Times are to the
# last job's completion.
#
# Usage: benches/compare-bullmq.sh [ROUNDS=5] [PEER_DIR=../shared/peers/bullmq]
# Env:   SIZES, JOBS as above; RUST_PEER=0 skips the bullmq-official peer;
#        KEEP_RESULTS=DIR keeps every run's JSON line there.
#        REDIS_HOST / REDIS_PORT (default 127.0.0.1:6379). BullMQ FLUSHALLs that
#        Redis, bullmq-official flushes its database 0 and ours its database 15:
#        point it at a Redis used only for benchmarks. The Rust peer builds into
#        $CARGO_TARGET_DIR/peers (default target/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
peer=${2:-../shared/peers/bullmq}
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
url="redis://$host:$port/15"
sizes=${SIZES:-0 1024 16384}
jobs=${JOBS:-100000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo bench --quiet --features redis --bench throughput --no-run >/dev/null 2>&1
ours() { cargo bench --quiet --features redis --bench throughput -- --backend redis --redis-url "$url" "$@" 2>/dev/null | tail -n 1; }
theirs() { REDIS_HOST=$host REDIS_PORT=$port "$peer/run.sh" "$@" 2>/dev/null | tail -n 1; }

rs_target=${CARGO_TARGET_DIR:-$PWD/target}/peers
rs_bin=$rs_target/release/bullmq-official-peer
rs_log=$rs_target/build.log
mkdir -p "$rs_target"
if [ "${RUST_PEER:-1}" = 0 ]; then
  rs_ok=0
  echo "bullmq-official (Rust) peer skipped (RUST_PEER=0)" >"$out/rs-note"
elif echo "building the bullmq-official (Rust) peer (log: $rs_log)" >&2 &&
  CARGO_TARGET_DIR=$rs_target cargo build --release --locked \
    --manifest-path benches/peers/bullmq-official/Cargo.toml >"$rs_log" 2>&1; then
  rs_ok=1
else
  rs_ok=0
  echo "bullmq-official (Rust) peer did not build (see $rs_log): its rows are left out" >&2
  echo "bullmq-official (Rust) peer did not build (see $rs_log)" >"$out/rs-note"
fi
theirs_rs() {
  [ "$rs_ok" = 1 ] || return 0
  REDIS_HOST=$host REDIS_PORT=$port "$rs_bin" "$@" 2>/dev/null | tail -n 1 ||
    echo "bullmq-official (Rust) peer failed: $*" >&2
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  for size in $sizes; do
    ours --mode throughput --concurrency 50 --jobs "$jobs" --payload-bytes "$size" >>"$out/ours-c50-$size"
    PAYLOAD=$size theirs throughput 50 "$jobs" >>"$out/bull-c50-$size"
  done
  theirs_rs throughput 50 "$jobs" >>"$out/rs-c50"
  ours --mode throughput --concurrency 1 --jobs 20000 >>"$out/ours-c1"
  theirs throughput 1 10000 >>"$out/bull-c1"
  theirs_rs throughput 1 10000 >>"$out/rs-c1"
  ours --mode latency --jobs 2000 --interval-ms 2 >>"$out/ours-lat"
  theirs latency 2000 2 10 >>"$out/bull-lat"
  ours --mode retry --concurrency 50 --jobs 5000 >>"$out/ours-retry"
  theirs retry none 5000 50 >>"$out/bull-retry"
done

if [ -n "${KEEP_RESULTS:-}" ]; then
  mkdir -p "$KEEP_RESULTS" && cp "$out"/* "$KEEP_RESULTS"/
fi
python3 - "$out" "$jobs" $sizes <<'EOF'
import json, statistics, sys, os
d = sys.argv[1]
jobs = int(sys.argv[2])
sizes = sys.argv[3:]
def load(name):
    if not os.path.exists(os.path.join(d, name)):
        return []
    with open(os.path.join(d, name)) as f:
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
def shown(size):
    return "~20 B payload" if size == "0" else f"{int(size):,} B pad"
rows = []
for size in sizes:
    ours, bull = load(f"ours-c50-{size}"), load(f"bull-c50-{size}")
    rows += [
        (f"{shown(size)}: process jobs/s, concurrency 50", med(ours, "process_jobs_per_s"), med(bull, "process_jobs_per_s"), True),
        (f"{shown(size)}: enqueue jobs/s (batches of 1,000)", med(ours, "enqueue_jobs_per_s"), med(bull, "enqueue_jobs_per_s"), True),
        (f"{shown(size)}: Redis CPU µs per processed job", med(ours, "redis_cpu_us_per_job"),
         med(bull, "process_redis", "redis_cpu_s") * 1e6 / jobs, False),
        (f"{shown(size)}: Redis CPU µs per enqueued job", med(ours, "enqueue_redis", "redis_cpu_us_per_job"),
         med(bull, "enqueue_redis", "redis_cpu_s") * 1e6 / jobs, False),
        (f"{shown(size)}: client CPU µs per processed job", med(ours, "process_cpu_us_per_job"),
         med(bull, "process_redis", "client_cpu_s") * 1e6 / jobs, False),
    ]
c50 = load(f"ours-c50-{sizes[0]}")
bull_c50 = load(f"bull-c50-{sizes[0]}")
rows += [
    ("process jobs/s, concurrency 1", med(load("ours-c1"), "process_jobs_per_s"), med(load("bull-c1"), "process_jobs_per_s"), True),
    ("retry path jobs/s (fail once)", med(load("ours-retry"), "process_jobs_per_s"), med(load("bull-retry"), "jobs_per_s"), True),
    ("latency p50 ms (idle worker)", med(load("ours-lat"), "latency_ms", "p50"), med(load("bull-lat"), "p50_ms"), False),
    ("latency p99 ms (idle worker)", med(load("ours-lat"), "latency_ms", "p99"), med(load("bull-lat"), "p99_ms"), False),
    ("Redis reads per processed job, c50", med(c50, "redis_reads_per_job"), med(bull_c50, "process_redis", "reads_per_job"), False),
]
if load("rs-c50"):
    rows += [
        ("process jobs/s, concurrency 50 vs bullmq-official (Rust)", med(c50, "process_jobs_per_s"), med(load("rs-c50"), "process_jobs_per_s"), True),
        ("process jobs/s, concurrency 1 vs bullmq-official (Rust)", med(load("ours-c1"), "process_jobs_per_s"), med(load("rs-c1"), "process_jobs_per_s"), True),
        ("enqueue jobs/s vs bullmq-official (Rust)", med(c50, "enqueue_jobs_per_s"), med(load("rs-c50"), "enqueue_jobs_per_s"), True),
        ("Redis CPU µs per processed job, c50 vs bullmq-official (Rust)", med(c50, "redis_cpu_us_per_job"), med(load("rs-c50"), "redis_cpu_us_per_job"), False),
    ]
print(f"| workload (median of {len(c50)} rounds; {jobs:,} jobs per throughput run) | flagship-worker | BullMQ | ours / BullMQ |")
print("|---|---:|---:|---:|")
for name, ours, theirs, higher_better in rows:
    ratio = ours / theirs if theirs else float("nan")
    fmt = (lambda v: f"{v:,.0f}") if higher_better else (lambda v: f"{v:.3f}")
    print(f"| {name} | {fmt(ours)} | {fmt(theirs)} | {ratio:.2f}× |")
if not load("rs-c50"):
    note = os.path.join(d, "rs-note")
    why = open(note).read().strip() if os.path.exists(note) else "bullmq-official (Rust) peer gave no result"
    print(f"\n{why}: no bullmq-official rows.")
EOF
