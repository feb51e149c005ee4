/**
 * Enqueue throughput: N jobs (default 100,000) in batches of 1,000 with
 * `enqueueBatch`, one batch at a time, as BullMQ's peer benchmark calls
 * `addBulk`. Prints one JSON line per round and a summary with the median.
 *
 *   npm run bench -- [N] [rounds] [noop,audit-event]   # a private redis-server on a free port
 *   REDIS_URL=redis://127.0.0.1:6390 npm run bench      # an existing Redis (FLUSHALLed!)
 *
 * `bench/compare-bullmq.sh` runs it alternately with BullMQ's peer benchmark.
 *
 * Payloads: `noop` ({ i }, as BullMQ's benchmark) and `audit-event` (a
 * FlagShip audit event, ~250 bytes).
 */

import { Redis } from "ioredis";
import { z } from "zod";

import { flagshipKinds, Producer, type JobRequest } from "../src/index.js";
import { auditEvent } from "../test/support/fixtures.js";
import { RedisServer } from "../test/support/redis-server.js";

const N = Number(process.argv[2] ?? 100_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const PAYLOADS = (process.argv[4] ?? "noop,audit-event").split(",") as ("noop" | "audit-event")[];
const BATCH = 1000;

const kinds = {
  ...flagshipKinds,
  noop: { kind: "noop", queue: "bench", schema: z.looseObject({ i: z.number().int() }) },
} as const;
type Kinds = typeof kinds;

async function redisCpu(redis: Redis): Promise<number> {
  const info = await redis.info("cpu");
  const get = (k: string): number => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return get("used_cpu_user") + get("used_cpu_sys");
}

async function round(producer: Producer<Kinds>, admin: Redis, payload: "noop" | "audit-event") {
  await admin.flushall();
  const cpu0 = await redisCpu(admin);
  const t0 = performance.now();
  for (let off = 0; off < N; off += BATCH) {
    const jobs: JobRequest<Kinds>[] = [];
    for (let i = off; i < Math.min(N, off + BATCH); i++) {
      jobs.push(
        payload === "noop"
          ? { kind: "noop", payload: { i } }
          : { kind: "audit-event", payload: auditEvent(`evt-${i}`) },
      );
    }
    await producer.enqueueBatch(jobs);
  }
  const seconds = (performance.now() - t0) / 1000;
  const redisSeconds = (await redisCpu(admin)) - cpu0;
  const queue = payload === "noop" ? "bench" : "flagship:audit";
  const stored = await admin.hlen(`{${queue}}:jobs`);
  if (stored !== N) throw new Error(`expected ${N} stored jobs, found ${stored}`);
  return {
    payload,
    n: N,
    batch: BATCH,
    seconds: +seconds.toFixed(3),
    jobs_per_s: Math.round(N / seconds),
    redis_cpu_us_per_job: +((redisSeconds * 1e6) / N).toFixed(2),
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const server = process.env.REDIS_URL ? undefined : await RedisServer.start();
const url = process.env.REDIS_URL ?? (server as RedisServer).url;
const admin = new Redis(url);
const producer = Producer.connect(url, { kinds });
try {
  const summary: Record<string, number> = {};
  for (const payload of PAYLOADS) {
    if (payload !== "noop" && payload !== "audit-event") throw new Error(`unknown payload ${payload as string}`);
    const rates: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const result = await round(producer, admin, payload);
      console.log(JSON.stringify(result));
      rates.push(result.jobs_per_s);
    }
    summary[`${payload}_median_jobs_per_s`] = median(rates);
  }
  console.log(JSON.stringify({ summary: { n: N, batch: BATCH, rounds: ROUNDS, ...summary } }));
} finally {
  await producer.close();
  admin.disconnect();
  await server?.stop();
}
