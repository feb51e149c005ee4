import assert from "node:assert/strict";
import { test } from "node:test";

import {
  flagshipKinds,
  InvalidOptionsError,
  JobEnvelopeSchema,
  MAX_SCHEDULE_AHEAD_MS,
  PayloadError,
  PayloadTooLargeError,
  prepareJob,
  uuidv7,
  type AnyKindSpec,
} from "../src/index.js";
import { auditEvent, notification, usageIngestion } from "./support/fixtures.js";

const NOW = Date.parse("2026-03-01T12:00:00.000Z");
const audit: AnyKindSpec = flagshipKinds["audit-event"];
const prepare = (spec: AnyKindSpec, payload: unknown, options = {}) => prepareJob(spec, payload, options, NOW, 1024 * 1024);

test("ids are lower-case UUID v7 carrying the time", () => {
  const ids = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const id = uuidv7(NOW);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    ids.add(id);
  }
  assert.equal(ids.size, 2000);
  assert.equal(parseInt(uuidv7(NOW).replace(/-/g, "").slice(0, 12), 16), NOW);
});

test("the envelope has the Rust field order and passes the envelope schema", () => {
  const job = prepare(audit, auditEvent(), { maxRetries: 2 });
  assert.equal(
    job.envelope,
    `{"v":1,"id":"${job.id}","type":"audit-event","queue":"flagship:audit","payload":${JSON.stringify(auditEvent())},` +
      `"idempotency_key":"audit-event:acme:evt-ts-1","attempt":0,"max_retries":2,` +
      `"enqueued_at":"2026-03-01T12:00:00.000Z","run_at":"2026-03-01T12:00:00.000Z","attempts":[]}`,
  );
  const parsed = JobEnvelopeSchema.parse(JSON.parse(job.envelope));
  assert.equal(parsed.id, job.id);
  assert.equal(job.queue, "flagship:audit");
  assert.equal(job.delayMs, 0);
  // Without a key or retries the fields are left out, as serde leaves out `None`.
  const plain = prepare(flagshipKinds["period-rollover"], { period: "hourly" });
  assert.ok(!plain.envelope.includes("idempotency_key") && !plain.envelope.includes("max_retries"), plain.envelope);
  assert.equal(plain.idempotencyKey, "");
});

test("an auto-action's key is its identity, as the Rust job derives it", () => {
  const job = prepare(flagshipKinds["auto-action"], { orgId: "acme", action: "block_api_key", targetId: "k", reason: "r" });
  // The same value `AutoActionJob::identity` gives (src/flagship/jobs.rs).
  assert.equal(job.idempotencyKey, "auto-action:acme:78e96cd8a58766f40584f13bbdae48b8");
});

test("delays and run times become run_at and a delay in ms that Redis adds to its clock", () => {
  const delayed = prepare(audit, auditEvent(), { delayMs: 1500.2 });
  assert.equal(delayed.delayMs, 1501, "rounded up, never early");
  assert.match(delayed.envelope, /"run_at":"2026-03-01T12:00:01\.501Z"/);
  const at = prepare(audit, auditEvent(), { runAt: new Date(NOW + 60_000) });
  assert.equal(at.delayMs, 60_000);
  const past = prepare(audit, auditEvent(), { runAt: new Date(NOW - 60_000) });
  assert.equal(past.delayMs, 0);
  assert.match(past.envelope, /"run_at":"2026-03-01T11:59:00\.000Z"/);
});

test("idempotency keys follow the Rust job types unless the options give one", () => {
  assert.equal(prepare(audit, auditEvent()).idempotencyKey, "audit-event:acme:evt-ts-1");
  assert.equal(prepare(flagshipKinds["usage-ingestion"], usageIngestion()).idempotencyKey, "usage-batch:acme:ts-b-1");
  assert.equal(prepare(flagshipKinds.notification, notification()).idempotencyKey, "notification:acme:ts-n-1");
  const { notificationId: _, ...anonymous } = notification();
  assert.equal(prepare(flagshipKinds.notification, anonymous).idempotencyKey, "");
  assert.equal(prepare(audit, auditEvent(), { idempotencyKey: "mine" }).idempotencyKey, "mine");
});

test("bad options are refused before anything is built", () => {
  const refused = (options: object, message: RegExp) =>
    assert.throws(() => prepare(audit, auditEvent(), options), (e: Error) => e instanceof InvalidOptionsError && message.test(e.message));
  refused({ delayMs: 1, runAt: new Date(NOW) }, /either `runAt` or `delayMs`/);
  refused({ delayMs: -1 }, /at least 0/);
  refused({ delayMs: Number.NaN }, /finite/);
  refused({ runAt: new Date("nope") }, /valid Date/);
  refused({ delayMs: MAX_SCHEDULE_AHEAD_MS + 1 }, /ten years/);
  refused({ idempotencyKey: "" }, /1 to 512 bytes, got 0/);
  refused({ idempotencyKey: "é".repeat(257) }, /got 514/);
  refused({ maxRetries: 1001 }, /0 to 1000/);
  refused({ maxRetries: 1.5 }, /integer/);
  refused({ priority: 11 }, /-10 to 10/);
  refused({ priority: -11 }, /-10 to 10/);
  refused({ priority: 0.5 }, /integer/);
});

test("the payload is checked as sent: parsed back from its JSON", () => {
  // A Date becomes an RFC 3339 string in JSON, which the schema accepts.
  const withDate = { event: { ...auditEvent().event, occurredAt: new Date(NOW) } };
  const job = prepare(audit, withDate);
  assert.match(job.envelope, /"occurredAt":"2026-03-01T12:00:00\.000Z"/);
  // NaN becomes null, which the schema refuses.
  const nan = { ...usageIngestion(), events: [{ metric: "m", quantity: Number.NaN, timestamp: "2026-01-01T00:00:00Z" }] };
  assert.throws(() => prepare(flagshipKinds["usage-ingestion"], nan), (e: Error) => e instanceof PayloadError && e.path === "/events/0/quantity");
  assert.throws(() => prepare(audit, undefined), InvalidOptionsError);
});

test("payloads over the size limit are refused with their size", () => {
  const big = { event: { ...auditEvent().event, metadata: { blob: "x".repeat(2000) } } };
  assert.throws(
    () => prepareJob(audit, big, {}, NOW, 1000),
    (e: Error) => e instanceof PayloadTooLargeError && e.limit === 1000 && e.size > 2000 && !e.message.includes("xxx"),
  );
});
