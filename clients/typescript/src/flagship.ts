/**
 * The FlagShip job kinds: the generated schemas (from docs/schemas) plus the
 * idempotency keys the Rust job types derive from their payloads
 * (`Job::idempotency_key` in `src/flagship/jobs.rs`), so a job enqueued from
 * TypeScript and the same job enqueued from Rust are one job.
 */

import { createHash } from "node:crypto";

import {
  generatedKinds,
  type AuditEventJob,
  type AutoActionJob,
  type NotificationJob,
  type OperatorAlertJob,
  type UsageIngestionJob,
} from "./generated/flagship.js";
import type { KindRegistry } from "./kinds.js";

/** Every FlagShip job kind, for `new Producer({ kinds: flagshipKinds, ... })`. */
export const flagshipKinds = {
  ...generatedKinds,
  "audit-event": {
    ...generatedKinds["audit-event"],
    idempotencyKey: (job: AuditEventJob): string => `audit-event:${job.event.orgId}:${job.event.id}`,
  },
  "usage-ingestion": {
    ...generatedKinds["usage-ingestion"],
    idempotencyKey: (job: UsageIngestionJob): string => `usage-batch:${job.orgId}:${job.batchId}`,
  },
  notification: {
    ...generatedKinds.notification,
    idempotencyKey: (job: NotificationJob): string | undefined =>
      job.notificationId == null ? undefined : `notification:${job.orgId}:${job.notificationId}`,
  },
  "auto-action": {
    ...generatedKinds["auto-action"],
    idempotencyKey: (job: AutoActionJob): string => `auto-action:${job.orgId}:${autoActionIdentity(job)}`,
  },
  "operator-alert": {
    ...generatedKinds["operator-alert"],
    idempotencyKey: (job: OperatorAlertJob): string => `operator-alert:${job.alertId}`,
  },
} as const satisfies KindRegistry;

/**
 * An auto-action's identity, as `AutoActionJob::identity` computes it: 32
 * hex digits of a SHA-256 of organization, action, target, `about` and
 * reason, one per line. The worker audits and notifies once per identity.
 */
export function autoActionIdentity(job: AutoActionJob): string {
  const text = [job.orgId, job.action, job.targetId, job.about ?? "", job.reason].join("\n");
  return createHash("sha256").update(text, "utf8").digest("hex").slice(0, 32);
}

/** The FlagShip kinds a producer (the API server) enqueues; the others are maintenance jobs the workers schedule. */
export const PRODUCER_KINDS = ["audit-event", "usage-ingestion", "notification", "auto-action"] as const;
