#!/usr/bin/env bash
# Enqueue throughput of this package against BullMQ's addBulk, alternately on
# one private redis-server: 100,000 jobs in batches of 1,000, { i } payloads,
# ROUNDS rounds; prints each side's median and the ratio.
#
# Usage: bench/compare-bullmq.sh [ROUNDS=5] [PEER_DIR=/work/shared/peers/bullmq]
# Needs redis-server, and npm for the peer (its run.sh installs BullMQ into a cache).
# The peer's throughput mode also drains the jobs with a worker; only its
# enqueue phase (`enqueue_jobs_per_s`) is compared.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
peer=${2:-/work/shared/peers/bullmq}
n=${N:-100000}
npm run --silent build >/dev/null
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no >/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

ours=() theirs=() ours_cpu=() theirs_cpu=()
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);console.log(eval("j."+process.argv[1]))})' "$1"; }
for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  o=$(REDIS_URL="redis://127.0.0.1:$port" node dist/bench/enqueue.js "$n" 1 noop | head -n 1)
  t=$(REDIS_PORT=$port "$peer/run.sh" throughput 50 "$n" 2>/dev/null | tail -n 1)
  ours+=("$(field jobs_per_s <<<"$o")")
  ours_cpu+=("$(field redis_cpu_us_per_job <<<"$o")")
  theirs+=("$(field enqueue_jobs_per_s <<<"$t")")
  theirs_cpu+=("$(field "enqueue_redis.redis_cpu_s*1e6/$n" <<<"$t")")
  echo "  ours ${ours[-1]} jobs/s (Redis ${ours_cpu[-1]} us/job), BullMQ addBulk ${theirs[-1]} jobs/s (Redis ${theirs_cpu[-1]} us/job)" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
o=$(median "${ours[@]}")
t=$(median "${theirs[@]}")
oc=$(median "${ours_cpu[@]}")
tc=$(median "${theirs_cpu[@]}")
echo "{\"rounds\":$rounds,\"n\":$n,\"batch\":1000,\"ours_jobs_per_s\":$o,\"bullmq_addbulk_jobs_per_s\":$t,\"ratio\":$(awk "BEGIN{printf \"%.2f\", $o/$t}"),\"ours_redis_cpu_us_per_job\":$oc,\"bullmq_redis_cpu_us_per_job\":$(awk "BEGIN{printf \"%.2f\", $tc}")}"
