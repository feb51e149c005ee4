/** Valid payloads of the four producer-facing FlagShip kinds. */

import type { AuditEventJob, AutoActionJob, NotificationJob, UsageIngestionJob } from "../../src/index.js";

export function auditEvent(id = "evt-ts-1", orgId = "acme"): AuditEventJob {
  return {
    event: {
      id,
      orgId,
      actor: "user-7",
      action: "flag.created",
      targetType: "flag",
      targetId: "new-ui",
      occurredAt: "2026-01-01T10:01:00Z",
      metadata: { source: "typescript" },
    },
  };
}

export function usageIngestion(batchId = "ts-b-1", quantity = 85, orgId = "acme"): UsageIngestionJob {
  return {
    orgId,
    batchId,
    events: [{ metric: "api_calls", quantity, timestamp: "2026-01-01T10:20:00Z" }],
  };
}

export function notification(notificationId = "ts-n-1", orgId = "acme"): NotificationJob {
  return {
    orgId,
    notificationId,
    type: "feature_disabled",
    data: { flagKey: "beta-search", reason: "disabled by an operator from the API server" },
  };
}

export function autoAction(targetId = "key-1", orgId = "acme"): AutoActionJob {
  return { orgId, action: "block_api_key", targetId, reason: "blocked by the API server's abuse check" };
}
