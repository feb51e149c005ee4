import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";

import type { Redis } from "ioredis";

import {
  BrokerError,
  ENQUEUE_SCRIPT,
  ENQUEUE_SCRIPT_SHA1,
  flagshipKinds,
  MAX_BATCH,
  PayloadError,
  Producer,
  QUEUES_KEY,
  UnknownKindError,
  type JobRequest,
} from "../src/index.js";
import { auditEvent, autoAction, notification, usageIngestion } from "./support/fixtures.js";
import { redisAvailable, RedisServer } from "./support/redis-server.js";

type Kinds = typeof flagshipKinds;

describe("Producer against a real redis-server", { skip: !redisAvailable() }, () => {
  let server: RedisServer;
  let redis: Redis;
  let producer: Producer<Kinds>;

  before(async () => {
    server = await RedisServer.start();
    redis = server.connect();
    producer = new Producer({ redis, kinds: flagshipKinds });
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });
  beforeEach(async () => {
    await redis.flushall();
  });

  async function redisMs(): Promise<number> {
    const [s, us] = await redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  test("enqueue stores the envelope, makes the job ready, wakes a worker and registers the queue", async () => {
    const outcome = await producer.enqueue("auto-action", autoAction());
    assert.equal(outcome.status, "enqueued");
    const stored = await redis.hget("{flagship:auto-actions}:jobs", outcome.id);
    assert.ok(stored);
    const envelope = JSON.parse(stored) as Record<string, unknown>;
    assert.deepEqual(envelope.payload, autoAction());
    assert.equal(envelope.type, "auto-action");
    assert.deepEqual(await redis.lrange("{flagship:auto-actions}:ready", 0, -1), [outcome.id]);
    assert.deepEqual(await redis.lrange("{flagship:auto-actions}:wake", 0, -1), ["1"]);
    assert.deepEqual(await redis.smembers(QUEUES_KEY), ["flagship:auto-actions"]);
  });

  test("a second job with the same idempotency key is a duplicate of the first", async () => {
    const first = await producer.enqueue("audit-event", auditEvent());
    const again = await producer.enqueue("audit-event", auditEvent());
    assert.deepEqual(again, { status: "duplicate", id: first.id });
    const explicit = await producer.enqueue("auto-action", autoAction(), { idempotencyKey: "block:key-1" });
    const explicitAgain = await producer.enqueue("auto-action", autoAction("key-2"), { idempotencyKey: "block:key-1" });
    assert.deepEqual(explicitAgain, { status: "duplicate", id: explicit.id });
    assert.equal(await redis.hget("{flagship:auto-actions}:unique", "block:key-1"), explicit.id);
    assert.equal(await redis.hlen("{flagship:auto-actions}:jobs"), 1);
  });

  test("delayed jobs are scheduled at Redis's clock plus the delay; runAt likewise", async () => {
    const before = await redisMs();
    const delayed = await producer.enqueue("audit-event", auditEvent("evt-later"), { delayMs: 60_000 });
    const at = await producer.enqueue("audit-event", auditEvent("evt-at"), { runAt: new Date(Date.now() + 120_000) });
    const afterMs = await redisMs();
    const due = Number(await redis.zscore("{flagship:audit}:scheduled", delayed.id));
    assert.ok(due >= before + 60_000 && due <= afterMs + 60_000, `due ${due - before} ms after enqueue`);
    const dueAt = Number(await redis.zscore("{flagship:audit}:scheduled", at.id));
    assert.ok(dueAt >= before + 119_000 && dueAt <= afterMs + 120_000, `due ${dueAt - before} ms after enqueue`);
    assert.equal(await redis.llen("{flagship:audit}:ready"), 0);
  });

  test("a job with a priority goes to its priority's ready list, named in the set of priorities in use", async () => {
    const plain = await producer.enqueue("auto-action", autoAction("key-p0"));
    const high = await producer.enqueue("auto-action", autoAction("key-p7"), { priority: 7 });
    const low = await producer.enqueue("auto-action", autoAction("key-m2"), { priority: -2 });
    const stored = JSON.parse((await redis.hget("{flagship:auto-actions}:jobs", high.id)) ?? "{}") as Record<string, unknown>;
    assert.equal(stored.priority, 7);
    assert.deepEqual(await redis.lrange("{flagship:auto-actions}:ready", 0, -1), [plain.id]);
    assert.deepEqual(await redis.lrange("{flagship:auto-actions}:ready:7", 0, -1), [high.id]);
    assert.deepEqual(await redis.lrange("{flagship:auto-actions}:ready:-2", 0, -1), [low.id]);
    assert.deepEqual(await redis.zrange("{flagship:auto-actions}:priorities", "0", "-1"), ["-2", "7"]);
  });

  test("a batch across queues returns outcomes in order and splits into calls of at most 1,000 jobs", async () => {
    const jobs: JobRequest<Kinds>[] = [];
    for (let i = 0; i < 2 * MAX_BATCH + 5; i++) {
      jobs.push({ kind: "auto-action", payload: autoAction(`key-${i}`) });
      if (i % 500 === 0) jobs.push({ kind: "usage-ingestion", payload: usageIngestion(`b-${i}`) });
    }
    jobs.push({ kind: "usage-ingestion", payload: usageIngestion("b-0") }); // same batch id: same key
    await redis.config("RESETSTAT");
    const outcomes = await producer.enqueueBatch(jobs);
    assert.equal(outcomes.length, jobs.length);
    assert.equal(await redis.llen("{flagship:auto-actions}:ready"), 2 * MAX_BATCH + 5);
    assert.equal(await redis.llen("{flagship:usage}:ready"), 5);
    assert.deepEqual(outcomes.at(-1), { status: "duplicate", id: outcomes[1]?.id });
    assert.ok(outcomes.slice(0, -1).every((o) => o.status === "enqueued"));
    const ready = await redis.lrange("{flagship:auto-actions}:ready", 0, 2);
    const autoIds = outcomes.filter((_, i) => jobs[i]?.kind === "auto-action").map((o) => o.id);
    assert.deepEqual(ready, autoIds.slice(0, 3), "ready in the batch's order");
    const stats = await redis.info("commandstats");
    assert.match(stats, /cmdstat_evalsha:calls=4,/, "3 calls for auto-actions, 1 for usage");
  });

  test("an invalid payload in a batch sends nothing", async () => {
    const bad = { ...usageIngestion("b-x"), events: [] };
    await assert.rejects(
      producer.enqueueBatch([
        { kind: "auto-action", payload: autoAction() },
        { kind: "usage-ingestion", payload: bad },
      ]),
      (e: Error) => e instanceof PayloadError && e.index === 1 && e.path === "/events" && /job 1 of the batch/.test(e.message),
    );
    await assert.rejects(producer.enqueue("no-such-kind" as "audit-event", auditEvent()), UnknownKindError);
    assert.equal(await redis.dbsize(), 0);
  });

  test("the script is loaded again when Redis lost it", async () => {
    await redis.script("FLUSH");
    assert.equal((await producer.enqueue("notification", notification("n-1"))).status, "enqueued");
    assert.deepEqual(await redis.script("EXISTS", ENQUEUE_SCRIPT_SHA1), [1]);
    await redis.script("FLUSH");
    const outcomes = await producer.enqueueBatch([
      { kind: "notification", payload: notification("n-2") },
      { kind: "audit-event", payload: auditEvent("evt-2") },
    ]);
    assert.deepEqual(outcomes.map((o) => o.status), ["enqueued", "enqueued"]);
  });

  test("a batch sent again after a lost reply stores nothing twice", async () => {
    const job = producer.prepare("auto-action", autoAction());
    const keys = ["jobs", "ready", "scheduled", "unique", "completed-keys", "job-keys", "wake"].map((k) => `{flagship:auto-actions}:${k}`);
    const args = [job.id, job.envelope, String(job.delayMs), job.idempotencyKey];
    assert.deepEqual(await redis.eval(ENQUEUE_SCRIPT, keys.length, ...keys, ...args), [1]);
    assert.deepEqual(await redis.eval(ENQUEUE_SCRIPT, keys.length, ...keys, ...args), [job.id]);
  });

  test("Redis errors become BrokerErrors that say what happened", async () => {
    await redis.config("SET", "maxmemory", "1");
    try {
      await assert.rejects(
        producer.enqueue("auto-action", autoAction("key-oom")),
        (e: Error) => e instanceof BrokerError && /out of memory.*nothing was stored/.test(e.message),
      );
    } finally {
      await redis.config("SET", "maxmemory", "0");
    }
    assert.equal(await redis.hlen("{flagship:auto-actions}:jobs"), 0);
  });
});

describe("Producer against a one-node Redis Cluster", { skip: !redisAvailable() }, () => {
  let server: RedisServer;
  let redis: Redis;

  before(async () => {
    server = await RedisServer.start({ cluster: true });
    redis = server.connect();
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  test("every call touches one slot: the queue's keys share its hash tag", async () => {
    const producer = new Producer({ redis, kinds: flagshipKinds });
    const outcomes = await producer.enqueueBatch([
      { kind: "audit-event", payload: auditEvent(), options: { delayMs: 1000 } },
      { kind: "usage-ingestion", payload: usageIngestion() },
      { kind: "notification", payload: notification() },
      { kind: "auto-action", payload: autoAction() },
    ]);
    assert.deepEqual(outcomes.map((o) => o.status), ["enqueued", "enqueued", "enqueued", "enqueued"]);
    // The check works: a script over two queues' keys is refused.
    await assert.rejects(redis.eval("return 1", 2, "{a}:jobs", "{b}:jobs"), /CROSSSLOT/);
  });
});
