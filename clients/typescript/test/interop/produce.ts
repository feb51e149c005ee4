/**
 * The TypeScript side of the cross-language test (tests/flagship/interop.rs):
 * enqueues jobs with the built package into the Redis at argv[2] and prints
 * one JSON line with what happened, for the Rust test to check.
 *
 *   node dist/test/interop/produce.js <redis-url> flagship
 *     the four producer-facing FlagShip kinds in one batch, a delayed audit
 *     event, and the usage batch again (a duplicate by idempotency key)
 *   node dist/test/interop/produce.js <redis-url> raw-invalid
 *     a usage-ingestion envelope whose orgId breaks the schema, sent with the
 *     enqueue script directly (no Zod), as any foreign producer could
 */

import { Redis } from "ioredis";

import {
  ENQUEUE_SCRIPT,
  ENQUEUE_SCRIPT_SHA1,
  enqueueKeys,
  flagshipKinds,
  Producer,
  QUEUES_KEY,
  uuidv7,
} from "../../src/index.js";
import { auditEvent, autoAction, notification, usageIngestion } from "../support/fixtures.js";

/** How long the delayed job waits, in ms. */
export const DELAY_MS = 1500;

async function flagship(url: string): Promise<unknown> {
  const producer = Producer.connect(url, { kinds: flagshipKinds });
  try {
    const [audit, usage, notice, action, delayed] = await producer.enqueueBatch([
      { kind: "audit-event", payload: auditEvent("evt-ts-1") },
      { kind: "usage-ingestion", payload: usageIngestion("ts-b-1", 85) },
      { kind: "notification", payload: notification("ts-n-1") },
      { kind: "auto-action", payload: autoAction("key-1") },
      { kind: "audit-event", payload: auditEvent("evt-ts-delayed"), options: { delayMs: DELAY_MS } },
    ]);
    // The same batch again: its idempotency key (usage-batch:acme:ts-b-1) is held.
    const duplicate = await producer.enqueue("usage-ingestion", usageIngestion("ts-b-1", 85));
    return { audit, usage, notification: notice, autoAction: action, delayed, duplicate, delayMs: DELAY_MS, scriptSha1: ENQUEUE_SCRIPT_SHA1 };
  } finally {
    await producer.close();
  }
}

async function rawInvalid(url: string): Promise<unknown> {
  const redis = new Redis(url);
  try {
    const id = uuidv7();
    const now = new Date().toISOString();
    const payload = { ...usageIngestion("ts-raw-1"), orgId: "not a valid org!" };
    const envelope = JSON.stringify({
      v: 1, id, type: "usage-ingestion", queue: "flagship:usage", payload,
      attempt: 0, enqueued_at: now, run_at: now, attempts: [],
    });
    await redis.sadd(QUEUES_KEY, "flagship:usage");
    const keys = enqueueKeys("flagship:usage");
    const reply = await redis.eval(ENQUEUE_SCRIPT, keys.length, ...keys, id, envelope, "0", "");
    return { id, reply };
  } finally {
    redis.disconnect();
  }
}

const [url, scenario] = process.argv.slice(2);
if (!url || (scenario !== "flagship" && scenario !== "raw-invalid")) {
  console.error("usage: produce.js <redis-url> flagship|raw-invalid");
  process.exit(2);
}
const result = scenario === "flagship" ? await flagship(url) : await rawInvalid(url);
console.log(JSON.stringify(result));
