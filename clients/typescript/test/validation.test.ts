import assert from "node:assert/strict";
import { test } from "node:test";

import { flagshipKinds, PayloadError, validatePayload, type AnyKindSpec } from "../src/index.js";
import { auditEvent, autoAction, notification, usageIngestion } from "./support/fixtures.js";

function refusal(kind: keyof typeof flagshipKinds, payload: unknown): PayloadError {
  const spec: AnyKindSpec = flagshipKinds[kind];
  try {
    validatePayload(kind, spec.schema, payload);
  } catch (e) {
    assert.ok(e instanceof PayloadError, String(e));
    return e;
  }
  assert.fail(`the ${kind} payload was accepted`);
}

test("valid payloads of the producer-facing kinds pass", () => {
  validatePayload("audit-event", flagshipKinds["audit-event"].schema, auditEvent());
  validatePayload("usage-ingestion", flagshipKinds["usage-ingestion"].schema, usageIngestion());
  validatePayload("notification", flagshipKinds.notification.schema, notification());
  validatePayload("auto-action", flagshipKinds["auto-action"].schema, autoAction());
  const warning = {
    orgId: "acme",
    type: "threshold_warning",
    data: { metric: "api_calls", period: "hourly", periodStart: "2026-01-01T10:00:00+00:00", limit: 100, current: 85, percent: 80 },
  };
  validatePayload("notification", flagshipKinds.notification.schema, warning);
  // The spec's shape: only the fields the worker needs, extra keys allowed.
  const spec = { orgId: "acme", type: "threshold_warning", data: { metric: "api_calls", percent: 80, plan: "pro" } };
  validatePayload("notification", flagshipKinds.notification.schema, spec);
});

test("errors name the JSON path and the rule, and never the value", () => {
  const secret = "s3cr3t value!";
  const cases: [keyof typeof flagshipKinds, unknown, string, RegExp][] = [
    ["audit-event", { event: { ...auditEvent().event, orgId: secret } }, "/event/orgId", /^pattern \^\[A-Za-z0-9\]/],
    ["audit-event", { event: { ...auditEvent().event, occurredAt: secret } }, "/event/occurredAt", /^format date-time/],
    ["usage-ingestion", { ...usageIngestion(), events: [] }, "/events", /^minItems 1$/],
    ["usage-ingestion", { ...usageIngestion(), events: [{ metric: "x", quantity: 0, timestamp: "2026-01-01T00:00:00Z" }] }, "/events/0/quantity", /^minimum 1/],
    ["usage-ingestion", { ...usageIngestion(), events: [{ metric: "x", quantity: 2 ** 60, timestamp: "2026-01-01T00:00:00Z" }] }, "/events/0/quantity", /9007199254740991/],
    ["usage-ingestion", { orgId: "acme", events: usageIngestion().events }, "/batchId", /^required$/],
    ["usage-ingestion", { ...usageIngestion(), orgId: 42 }, "/orgId", /^type: expected string, got integer$/],
    ["auto-action", { ...autoAction(), action: secret }, "/action", /^one of "disable_feature", "block_api_key", "send_notification"$/],
    ["auto-action", { ...autoAction(), reason: "" }, "/reason", /^minLength 1$/],
    ["notification", { ...notification(), type: secret }, "/type", /^one of "threshold_warning", "limit_exceeded", "feature_disabled", "api_key_blocked"$/],
    ["notification", { orgId: "acme" }, "/type", /^required \(one of/],
    ["notification", { ...notification(), data: { flagKey: "ok", reason: "x".repeat(1025) } }, "/data/reason", /^maxLength 1024$/],
  ];
  for (const [kind, payload, path, rule] of cases) {
    const e = refusal(kind, payload);
    assert.equal(e.kind, kind);
    assert.equal(e.path, path, `${kind}: ${e.message}`);
    assert.match(e.rule, rule, `${kind}: ${e.message}`);
    assert.ok(e.message.includes(`\`${path}\``), e.message);
    assert.ok(e.message.endsWith("fix the payload, nothing was enqueued"), e.message);
    assert.ok(!e.message.includes(secret) && !JSON.stringify(e.issues).includes(secret), `echoes the value: ${e.message}`);
  }
  assert.match(refusal("audit-event", "not an object").message, /at the payload's root: type: expected object, got string/);
});

test("string lengths count code points, as JSON Schema does", () => {
  // 1024 astral characters are 2048 UTF-16 units but 1024 code points: within maxLength 1024.
  const astral = "\u{1F600}".repeat(1024);
  validatePayload("auto-action", flagshipKinds["auto-action"].schema, { ...autoAction(), reason: astral });
  const e = refusal("auto-action", { ...autoAction(), reason: astral + "x" });
  assert.equal(e.rule, "maxLength 1024");
});

test("properties the schema does not declare are kept, as the JSON Schema allows", () => {
  const payload = { ...autoAction(), extra: { nested: true } };
  const parsed = flagshipKinds["auto-action"].schema.parse(payload) as Record<string, unknown>;
  assert.deepEqual(parsed.extra, { nested: true });
});
