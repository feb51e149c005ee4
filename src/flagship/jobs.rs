//! The FlagShip job payloads. Field names are camelCase on the wire; each
//! payload's JSON Schema is committed in `docs/schemas/{kind}.json` so the
//! producing API server can generate its types from them.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    model::{PeriodKind, ID_PATTERN},
    queues::{AUDIT_QUEUE, AUTO_ACTIONS_QUEUE, MAINTENANCE_QUEUE, NOTIFICATIONS_QUEUE, USAGE_QUEUE},
    NotificationType,
};
use crate::{Job, Result, SchemaRegistry};

/// Something that happened in an organization, kept in its audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Unique id of the event; a second event with the same id is ignored.
    #[schemars(pattern(ID_PATTERN))]
    pub id: String,
    /// The organization.
    #[schemars(pattern(ID_PATTERN))]
    pub org_id: String,
    /// Who did it: a user id, an API key id, or `flagship-worker`.
    #[schemars(length(min = 1, max = 256))]
    pub actor: String,
    /// What was done, e.g. `flag.updated`.
    #[schemars(length(min = 1, max = 128))]
    pub action: String,
    /// The kind of thing it was done to, e.g. `flag`.
    #[schemars(length(min = 1, max = 64))]
    pub target_type: String,
    /// The thing it was done to.
    #[schemars(length(min = 1, max = 256))]
    pub target_id: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Anything else worth keeping.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
}

/// Persist one audit event (kind `audit-event`, queue `flagship:audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "audit-event",
    description = "Persist one audit event. Queue `flagship:audit`."
)]
pub struct AuditEventJob {
    /// The event.
    pub event: AuditEvent,
}

impl Job for AuditEventJob {
    const KIND: &'static str = "audit-event";
    const QUEUE: &'static str = AUDIT_QUEUE;

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("audit-event:{}:{}", self.event.org_id, self.event.id))
    }
}

/// One metered use of a metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageEvent {
    /// The metric, e.g. `api_calls`.
    #[schemars(pattern(ID_PATTERN))]
    pub metric: String,
    /// How much was used (at least 1).
    #[schemars(range(min = 1))]
    pub quantity: u64,
    /// When it was used; decides the periods it counts in.
    pub timestamp: DateTime<Utc>,
}

/// The most usage events one ingestion job may carry.
pub const MAX_USAGE_EVENTS: usize = 10_000;

/// Count a batch of usage events (kind `usage-ingestion`, queue `flagship:usage`).
///
/// A batch is counted once: a second job with the same `batchId` for the
/// same organization changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "usage-ingestion",
    description = "Count a batch of usage events once per batchId. Queue `flagship:usage`."
)]
pub struct UsageIngestionJob {
    /// The organization.
    #[schemars(pattern(ID_PATTERN))]
    pub org_id: String,
    /// The events, 1 to 10 000.
    #[schemars(length(min = 1, max = MAX_USAGE_EVENTS))]
    pub events: Vec<UsageEvent>,
    /// The producer's id for the batch, unique per organization.
    #[schemars(pattern(ID_PATTERN))]
    pub batch_id: String,
}

impl Job for UsageIngestionJob {
    const KIND: &'static str = "usage-ingestion";
    const QUEUE: &'static str = USAGE_QUEUE;

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("usage-batch:{}:{}", self.org_id, self.batch_id))
    }
}

/// The numbers behind a usage notification: the spec's `data` of a
/// `threshold_warning` or `limit_exceeded` notification.
///
/// `metric` and `percent` are required; the worker's own notifications add
/// the period, its start, the limit and the usage; any other keys a
/// producer sends are kept (in [`extra`](Self::extra)) and passed on in the
/// webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageAlert {
    /// The metric.
    #[schemars(pattern(ID_PATTERN))]
    pub metric: String,
    /// The threshold crossed, in percent of the limit (the warning
    /// percentage, or 100 at the limit).
    pub percent: u8,
    /// The limit's period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<PeriodKind>,
    /// When the period started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<DateTime<Utc>>,
    /// The limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Usage when the threshold was crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// Any other keys of `data`, passed on as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl UsageAlert {
    /// An alert saying `metric` reached `percent` of a limit, with no
    /// other details.
    pub fn new(metric: impl Into<String>, percent: u8) -> Self {
        UsageAlert {
            metric: metric.into(),
            percent,
            period: None,
            period_start: None,
            limit: None,
            current: None,
            extra: BTreeMap::new(),
        }
    }

    /// The alert with the period, its start, the limit and the usage.
    pub fn with_usage(mut self, period: PeriodKind, period_start: DateTime<Utc>, limit: u64, current: u64) -> Self {
        self.period = Some(period);
        self.period_start = Some(period_start);
        self.limit = Some(limit);
        self.current = Some(current);
        self
    }
}

/// The details of a `feature_disabled` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDisabled {
    /// The flag that was disabled.
    #[schemars(pattern(ID_PATTERN))]
    pub flag_key: String,
    /// Why.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// The details of an `api_key_blocked` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyBlocked {
    /// The API key (its id) that was blocked.
    #[schemars(pattern(ID_PATTERN))]
    pub key_id: String,
    /// Why.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// What a notification says: its `type` and its `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Notice {
    /// Usage crossed the warning threshold of a limit.
    ThresholdWarning(UsageAlert),
    /// Usage reached a limit.
    LimitExceeded(UsageAlert),
    /// Enforcement disabled a feature flag.
    FeatureDisabled(FeatureDisabled),
    /// Enforcement blocked an API key.
    ApiKeyBlocked(ApiKeyBlocked),
}

impl Notice {
    /// The notification type.
    pub fn kind(&self) -> NotificationType {
        match self {
            Notice::ThresholdWarning(_) => NotificationType::ThresholdWarning,
            Notice::LimitExceeded(_) => NotificationType::LimitExceeded,
            Notice::FeatureDisabled(_) => NotificationType::FeatureDisabled,
            Notice::ApiKeyBlocked(_) => NotificationType::ApiKeyBlocked,
        }
    }
}

/// Tell an organization something (kind `notification`, queue
/// `flagship:notifications`): by email and webhook, as its preferences say.
///
/// On the wire: `{ "notificationId"?, "orgId", "type", "data" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "notification",
    description = "Deliver a notification by email and webhook as the organization prefers. Queue `flagship:notifications`."
)]
pub struct NotificationJob {
    /// A stable id for the notification: the webhook id, the base of the
    /// email's idempotency key and of the delivery log's entries. When
    /// absent, the job id is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ID_PATTERN))]
    pub notification_id: Option<String>,
    /// The organization.
    #[schemars(pattern(ID_PATTERN))]
    pub org_id: String,
    /// The notification's type and data.
    #[serde(flatten)]
    pub notice: Notice,
}

impl Job for NotificationJob {
    const KIND: &'static str = "notification";
    const QUEUE: &'static str = NOTIFICATIONS_QUEUE;

    fn idempotency_key(&self) -> Option<String> {
        self.notification_id
            .as_ref()
            .map(|id| format!("notification:{}:{id}", self.org_id))
    }
}

/// An enforcement step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoAction {
    /// Disable the feature flag `targetId`.
    DisableFeature,
    /// Block the API key `targetId`.
    BlockApiKey,
    /// Tell the organization what enforcement did to `targetId`: the
    /// action named by `about` (a `feature_disabled` or `api_key_blocked`
    /// notification).
    SendNotification,
}

impl AutoAction {
    /// The wire name, e.g. `disable_feature`.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoAction::DisableFeature => "disable_feature",
            AutoAction::BlockApiKey => "block_api_key",
            AutoAction::SendNotification => "send_notification",
        }
    }
}

/// Run one enforcement step (kind `auto-action`, queue `flagship:auto-actions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "auto-action",
    description = "Disable a flag, block an API key or send a notification, and audit it. Queue `flagship:auto-actions`."
)]
pub struct AutoActionJob {
    /// The organization.
    #[schemars(pattern(ID_PATTERN))]
    pub org_id: String,
    /// What to do.
    pub action: AutoAction,
    /// The flag key or API key id acted on.
    #[schemars(pattern(ID_PATTERN))]
    pub target_id: String,
    /// Why, in words for people. Part of the action's identity: the same
    /// action for another reason (another period) runs again.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// For `send_notification`: the action the notification reports
    /// (`disable_feature` or `block_api_key`); required there, refused
    /// elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<AutoAction>,
}

impl AutoActionJob {
    /// The action's identity: 32 hex digits of a SHA-256 of (organization,
    /// action, target, what it is about, reason). Two jobs with the same
    /// identity are one action: the idempotency key, the audit event's id
    /// and the notification's id derive from it.
    pub fn identity(&self) -> String {
        use sha2::{Digest, Sha256};
        let about = self.about.map_or("", AutoAction::as_str);
        let text = format!(
            "{}\n{}\n{}\n{about}\n{}",
            self.org_id,
            self.action.as_str(),
            self.target_id,
            self.reason
        );
        Sha256::digest(text.as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Job for AutoActionJob {
    const KIND: &'static str = "auto-action";
    const QUEUE: &'static str = AUTO_ACTIONS_QUEUE;

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("auto-action:{}:{}", self.org_id, self.identity()))
    }
}

/// Close the ended periods of one length (kind `period-rollover`, queue
/// `flagship:maintenance`): archive their counters, start the new period at
/// zero, reset threshold markers. Scheduled at each hour, day and month
/// boundary (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "period-rollover",
    description = "Archive and reset the counters of ended periods. Queue `flagship:maintenance`."
)]
pub struct PeriodRolloverJob {
    /// Which period length to close.
    pub period: PeriodKind,
}

impl Job for PeriodRolloverJob {
    const KIND: &'static str = "period-rollover";
    const QUEUE: &'static str = MAINTENANCE_QUEUE;
}

/// Roll one day's hourly usage into daily totals (kind `usage-aggregation`,
/// queue `flagship:maintenance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "usage-aggregation",
    description = "Aggregate a day's hourly usage into daily totals. Queue `flagship:maintenance`."
)]
pub struct UsageAggregationJob {
    /// The UTC day to aggregate; absent: the day before the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
}

impl Job for UsageAggregationJob {
    const KIND: &'static str = "usage-aggregation";
    const QUEUE: &'static str = MAINTENANCE_QUEUE;
}

fn default_dlq_retention_days() -> u32 {
    DEFAULT_DLQ_RETENTION_DAYS
}

/// How long dead jobs are kept by default before the weekly cleanup
/// deletes them.
pub const DEFAULT_DLQ_RETENTION_DAYS: u32 = 30;

/// Delete old dead jobs of the FlagShip queues (kind `dlq-cleanup`, queue
/// `flagship:maintenance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "dlq-cleanup",
    description = "Delete dead jobs older than olderThanDays from the FlagShip queues. Queue `flagship:maintenance`."
)]
pub struct DlqCleanupJob {
    /// Dead jobs dead-lettered more than this many days ago are deleted
    /// (default 30).
    #[serde(default = "default_dlq_retention_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub older_than_days: u32,
}

impl Default for DlqCleanupJob {
    fn default() -> Self {
        DlqCleanupJob {
            older_than_days: DEFAULT_DLQ_RETENTION_DAYS,
        }
    }
}

impl Job for DlqCleanupJob {
    const KIND: &'static str = "dlq-cleanup";
    const QUEUE: &'static str = MAINTENANCE_QUEUE;
}

/// Check the broker and the FlagShip queues and record the result (kind
/// `health-check`, queue `flagship:maintenance`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "health-check",
    description = "Check broker reachability, queue depths, oldest ready job age and DLQ growth. Queue `flagship:maintenance`."
)]
pub struct HealthCheckJob {}

impl Job for HealthCheckJob {
    const KIND: &'static str = "health-check";
    const QUEUE: &'static str = MAINTENANCE_QUEUE;
}

/// Email the operators about a problem (kind `operator-alert`, queue
/// `flagship:notifications`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "operator-alert",
    description = "Email the configured operators about a problem. Queue `flagship:notifications`."
)]
pub struct OperatorAlertJob {
    /// A stable id for the alert (the email's idempotency key).
    #[schemars(pattern(ID_PATTERN))]
    pub alert_id: String,
    /// One line saying what is wrong.
    #[schemars(length(min = 1, max = 200))]
    pub subject: String,
    /// The details.
    #[schemars(length(max = 65536))]
    pub body: String,
}

impl Job for OperatorAlertJob {
    const KIND: &'static str = "operator-alert";
    const QUEUE: &'static str = NOTIFICATIONS_QUEUE;

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("operator-alert:{}", self.alert_id))
    }
}

/// Registers every FlagShip job kind (and its schema) with `registry`, e.g.
/// to export the schemas or to validate a foreign producer's payloads.
///
/// ```
/// use flagship_worker::SchemaRegistry;
/// let registry = SchemaRegistry::new();
/// flagship_worker::flagship::register_kinds(&registry)?;
/// assert!(registry.get("usage-ingestion").is_some());
/// # Ok::<_, flagship_worker::Error>(())
/// ```
pub fn register_kinds(registry: &SchemaRegistry) -> Result<()> {
    registry.register::<AuditEventJob>()?;
    registry.register::<UsageIngestionJob>()?;
    registry.register::<NotificationJob>()?;
    registry.register::<AutoActionJob>()?;
    registry.register::<PeriodRolloverJob>()?;
    registry.register::<UsageAggregationJob>()?;
    registry.register::<DlqCleanupJob>()?;
    registry.register::<HealthCheckJob>()?;
    registry.register::<OperatorAlertJob>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry() -> SchemaRegistry {
        let registry = SchemaRegistry::new();
        register_kinds(&registry).unwrap();
        registry
    }

    #[test]
    fn wire_names_are_camel_case() {
        let job = UsageIngestionJob {
            org_id: "acme".into(),
            events: vec![UsageEvent {
                metric: "api_calls".into(),
                quantity: 3,
                timestamp: "2026-01-01T10:00:00Z".parse().unwrap(),
            }],
            batch_id: "b-1".into(),
        };
        let value = serde_json::to_value(&job).unwrap();
        assert_eq!(value["orgId"], "acme");
        assert_eq!(value["batchId"], "b-1");
        registry().validate(UsageIngestionJob::KIND, &value).unwrap();
    }

    #[test]
    fn notifications_carry_type_and_data_side_by_side() {
        let job = NotificationJob {
            notification_id: None,
            org_id: "acme".into(),
            notice: Notice::FeatureDisabled(FeatureDisabled {
                flag_key: "new-ui".into(),
                reason: "limit".into(),
            }),
        };
        let value = serde_json::to_value(&job).unwrap();
        assert_eq!(
            value,
            json!({ "orgId": "acme", "type": "feature_disabled", "data": { "flagKey": "new-ui", "reason": "limit" } })
        );
        let registry = registry();
        registry.validate(NotificationJob::KIND, &value).unwrap();
        let wrong =
            json!({ "orgId": "acme", "type": "limit_exceeded", "data": { "flagKey": "new-ui", "reason": "x" } });
        assert!(registry.validate(NotificationJob::KIND, &wrong).is_err());
        let unknown = json!({ "orgId": "acme", "type": "party", "data": {} });
        assert!(registry.validate(NotificationJob::KIND, &unknown).is_err());
    }

    #[test]
    fn auto_action_identities_match_the_typescript_producers() {
        let job = AutoActionJob {
            org_id: "acme".into(),
            action: AutoAction::BlockApiKey,
            target_id: "k".into(),
            reason: "r".into(),
            about: None,
        };
        // clients/typescript/test/envelope.test.ts expects the same key.
        assert_eq!(
            job.idempotency_key().as_deref(),
            Some("auto-action:acme:78e96cd8a58766f40584f13bbdae48b8")
        );
    }

    #[test]
    fn notifications_in_the_specs_shape_are_accepted() {
        let spec = json!({ "orgId": "acme", "type": "threshold_warning", "data": { "metric": "api_calls", "percent": 80, "plan": "pro" } });
        registry().validate(NotificationJob::KIND, &spec).unwrap();
        let job: NotificationJob = serde_json::from_value(spec.clone()).unwrap();
        let Notice::ThresholdWarning(alert) = &job.notice else {
            panic!("{job:?}")
        };
        assert_eq!(
            (alert.metric.as_str(), alert.percent, alert.limit),
            ("api_calls", 80, None)
        );
        assert_eq!(alert.extra["plan"], "pro", "extra keys are kept");
        assert_eq!(serde_json::to_value(&job).unwrap(), spec, "and passed on");
        let no_metric = json!({ "orgId": "acme", "type": "threshold_warning", "data": { "percent": 80 } });
        assert!(registry().validate(NotificationJob::KIND, &no_metric).is_err());
    }

    #[test]
    fn schemas_refuse_bad_identifiers_and_empty_batches() {
        let registry = registry();
        let bad_org = json!({ "orgId": "a:b", "events": [], "batchId": "b" });
        let err = registry
            .validate(UsageIngestionJob::KIND, &bad_org)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/orgId") || err.contains("/events"), "{err}");
        let empty = json!({ "orgId": "acme", "events": [], "batchId": "b" });
        let err = registry
            .validate(UsageIngestionJob::KIND, &empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/events"), "{err}");
        let zero = json!({ "orgId": "acme", "batchId": "b", "events": [{ "metric": "m", "quantity": 0, "timestamp": "2026-01-01T00:00:00Z" }] });
        assert!(registry.validate(UsageIngestionJob::KIND, &zero).is_err());
        let action = json!({ "orgId": "acme", "action": "delete_everything", "targetId": "x", "reason": "r" });
        assert!(registry.validate(AutoActionJob::KIND, &action).is_err());
    }
}
