/**
 * The FlagShip job kinds: the generated schemas (from docs/schemas) plus the
 * idempotency keys the Rust job types derive from their payloads
 * (`Job::idempotency_key` in `src/flagship/jobs.rs`), so a job enqueued from
 * TypeScript and the same job enqueued from Rust are one job.
 */

import {
  generatedKinds,
  type AuditEventJob,
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
  "operator-alert": {
    ...generatedKinds["operator-alert"],
    idempotencyKey: (job: OperatorAlertJob): string => `operator-alert:${job.alertId}`,
  },
} as const satisfies KindRegistry;

/** The FlagShip kinds a producer (the API server) enqueues; the others are maintenance jobs the workers schedule. */
export const PRODUCER_KINDS = ["audit-event", "usage-ingestion", "notification", "auto-action"] as const;
