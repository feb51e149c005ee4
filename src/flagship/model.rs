//! The FlagShip domain: organizations' configuration, usage periods and
//! counters, flags, API keys and health reports.

use std::fmt;

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pattern every FlagShip identifier (organization, metric, flag key,
/// API key id, batch id, event id) must match: 1 to 128 ASCII letters,
/// digits, `_`, `.` or `-`, starting with a letter or digit. The character
/// set keeps identifiers safe inside store keys, log lines and URLs.
pub const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$";

/// Whether `value` matches [`ID_PATTERN`].
pub fn is_valid_id(value: &str) -> bool {
    let mut chars = value.chars();
    value.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The length of a usage period. Periods are aligned to UTC: an hourly
/// period starts on the hour, a daily one at midnight, a monthly one at
/// midnight on the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// One hour.
    Hourly,
    /// One UTC day.
    Daily,
    /// One UTC calendar month.
    Monthly,
}

impl PeriodKind {
    /// Every period kind, shortest first.
    pub const ALL: [PeriodKind; 3] = [PeriodKind::Hourly, PeriodKind::Daily, PeriodKind::Monthly];

    /// The wire name: `hourly`, `daily` or `monthly`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Hourly => "hourly",
            PeriodKind::Daily => "daily",
            PeriodKind::Monthly => "monthly",
        }
    }

    /// The start of the period of this kind that contains `t`.
    ///
    /// ```
    /// use flagship_worker::flagship::PeriodKind;
    /// let t = "2026-03-17T10:42:05Z".parse().unwrap();
    /// assert_eq!(PeriodKind::Hourly.start_of(t).to_rfc3339(), "2026-03-17T10:00:00+00:00");
    /// assert_eq!(PeriodKind::Monthly.start_of(t).to_rfc3339(), "2026-03-01T00:00:00+00:00");
    /// ```
    pub fn start_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let truncate = |unit: i64| DateTime::from_timestamp(t.timestamp().div_euclid(unit) * unit, 0).unwrap_or(t);
        match self {
            PeriodKind::Hourly => truncate(3_600),
            PeriodKind::Daily => truncate(86_400),
            PeriodKind::Monthly => NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
                .unwrap_or_else(|| truncate(86_400)),
        }
    }

    /// The end of the period that starts at `start` (the next period's start).
    pub fn end_of(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let next = match self {
            PeriodKind::Hourly => start.checked_add_signed(TimeDelta::hours(1)),
            PeriodKind::Daily => start.checked_add_signed(TimeDelta::days(1)),
            PeriodKind::Monthly => start.checked_add_months(Months::new(1)),
        };
        next.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One usage counter: an organization's metric over one period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterKey {
    /// The organization.
    pub org_id: String,
    /// The metric, e.g. `api_calls`.
    pub metric: String,
    /// The period's length.
    pub period: PeriodKind,
    /// The period's start (aligned, see [`PeriodKind::start_of`]).
    pub period_start: DateTime<Utc>,
}

impl CounterKey {
    /// The counter of `metric` for the `period` containing `at`.
    pub fn containing(org_id: &str, metric: &str, period: PeriodKind, at: DateTime<Utc>) -> Self {
        CounterKey {
            org_id: org_id.to_owned(),
            metric: metric.to_owned(),
            period,
            period_start: period.start_of(at),
        }
    }

    /// When the counter's period ends.
    pub fn period_end(&self) -> DateTime<Utc> {
        self.period.end_of(self.period_start)
    }
}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.org_id,
            self.metric,
            self.period,
            self.period_start.timestamp()
        )
    }
}

/// A usage threshold of a limit: the warning level or the limit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// The organization's warning percentage of the limit (default 80 %).
    Warning,
    /// 100 % of the limit.
    Limit,
}

impl Threshold {
    /// The wire name: `warning` or `limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Threshold::Warning => "warning",
            Threshold::Limit => "limit",
        }
    }
}

/// A limit on one metric over one period length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageLimit {
    /// The metric, e.g. `api_calls`.
    #[schemars(pattern(ID_PATTERN))]
    pub metric: String,
    /// The period the limit applies to.
    pub period: PeriodKind,
    /// The most usage allowed in one period.
    #[schemars(range(min = 1))]
    pub limit: u64,
    /// What happens automatically when this limit is exceeded (nothing
    /// by default): each limit has its own actions.
    #[serde(default)]
    pub on_exceeded: EnforcementConfig,
}

impl UsageLimit {
    /// A limit of `limit` on `metric` per `period`, with no auto-actions.
    pub fn new(metric: impl Into<String>, period: PeriodKind, limit: u64) -> Self {
        UsageLimit {
            metric: metric.into(),
            period,
            limit,
            on_exceeded: EnforcementConfig::default(),
        }
    }

    /// The limit with `actions` run when it is exceeded.
    pub fn on_exceeded(mut self, actions: EnforcementConfig) -> Self {
        self.on_exceeded = actions;
        self
    }

    /// The highest threshold `value` has reached, given the warning
    /// percentage.
    pub fn reached(&self, value: u64, warning_percent: u8) -> Option<Threshold> {
        let value = u128::from(value);
        let limit = u128::from(self.limit);
        if value >= limit {
            Some(Threshold::Limit)
        } else if value * 100 >= limit * u128::from(warning_percent) {
            Some(Threshold::Warning)
        } else {
            None
        }
    }
}

/// The kinds of notification an organization can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    /// Usage crossed the warning percentage of a limit.
    ThresholdWarning,
    /// Usage reached a limit.
    LimitExceeded,
    /// A feature flag was disabled by enforcement.
    FeatureDisabled,
    /// An API key was blocked by enforcement.
    ApiKeyBlocked,
}

impl NotificationType {
    /// Every notification type.
    pub const ALL: [NotificationType; 4] = [
        NotificationType::ThresholdWarning,
        NotificationType::LimitExceeded,
        NotificationType::FeatureDisabled,
        NotificationType::ApiKeyBlocked,
    ];

    /// The wire name, e.g. `threshold_warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::ThresholdWarning => "threshold_warning",
            NotificationType::LimitExceeded => "limit_exceeded",
            NotificationType::FeatureDisabled => "feature_disabled",
            NotificationType::ApiKeyBlocked => "api_key_blocked",
        }
    }
}

/// Where an organization's webhooks go, and the secret they are signed with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// The receiver's URL (`https://…`, or `http://…`).
    pub url: String,
    /// The signing secret, `whsec_` followed by base64 (Standard Webhooks).
    pub secret: String,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn all_notification_types() -> Vec<NotificationType> {
    NotificationType::ALL.to_vec()
}

/// How an organization wants to be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPreferences {
    /// Which notification types are delivered (default: all).
    #[serde(default = "all_notification_types")]
    pub types: Vec<NotificationType>,
    /// Email recipients (none: no email).
    #[serde(default)]
    pub email_recipients: Vec<String>,
    /// Webhook endpoint (none: no webhook).
    #[serde(default)]
    pub webhook: Option<WebhookEndpoint>,
}

impl Default for NotificationPreferences {
    fn default() -> Self {
        NotificationPreferences {
            types: all_notification_types(),
            email_recipients: Vec::new(),
            webhook: None,
        }
    }
}

/// What happens automatically when a limit is exceeded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementConfig {
    /// Feature flags to disable.
    #[serde(default)]
    pub disable_flags: Vec<String>,
    /// API keys to block.
    #[serde(default)]
    pub block_api_keys: Vec<String>,
    /// Whether to tell the organization about each disabled flag and
    /// blocked key (`feature_disabled` and `api_key_blocked` notifications).
    #[serde(default)]
    pub notify: bool,
}

fn default_warning_percent() -> u8 {
    DEFAULT_WARNING_PERCENT
}

/// The warning threshold used when an organization sets none: 80 % of a limit.
pub const DEFAULT_WARNING_PERCENT: u8 = 80;

/// One organization's FlagShip configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgConfig {
    /// The organization.
    pub org_id: String,
    /// Usage limits per metric and period.
    #[serde(default)]
    pub limits: Vec<UsageLimit>,
    /// The warning threshold, in percent of a limit (1 to 99, default 80).
    #[serde(default = "default_warning_percent")]
    pub warning_percent: u8,
    /// Notification preferences.
    #[serde(default)]
    pub notifications: NotificationPreferences,
}

impl OrgConfig {
    /// A configuration with no limits, the default warning threshold, every
    /// notification type and no channels.
    pub fn new(org_id: impl Into<String>) -> Self {
        OrgConfig {
            org_id: org_id.into(),
            limits: Vec::new(),
            warning_percent: DEFAULT_WARNING_PERCENT,
            notifications: NotificationPreferences::default(),
        }
    }

    /// The limits on `metric`.
    pub fn limits_for<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = &'a UsageLimit> + 'a {
        self.limits.iter().filter(move |l| l.metric == metric)
    }

    /// The limit on `metric` over `period`, if any.
    pub fn limit(&self, metric: &str, period: PeriodKind) -> Option<&UsageLimit> {
        self.limits.iter().find(|l| l.metric == metric && l.period == period)
    }

    /// The periods counted for `metric`: always hourly (the basis of daily
    /// aggregation), plus every period a limit on it uses.
    pub fn counted_periods(&self, metric: &str) -> Vec<PeriodKind> {
        let mut periods = vec![PeriodKind::Hourly];
        for limit in self.limits_for(metric) {
            if !periods.contains(&limit.period) {
                periods.push(limit.period);
            }
        }
        periods
    }

    /// Checks the configuration: identifiers, the warning percentage, one
    /// limit per metric and period, recipients without line breaks.
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_id(&self.org_id) {
            return Err(format!(
                "organization id `{}` does not match {ID_PATTERN}",
                self.org_id.escape_debug()
            ));
        }
        if !(1..=99).contains(&self.warning_percent) {
            return Err(format!(
                "warning percent {} must be between 1 and 99",
                self.warning_percent
            ));
        }
        for (i, limit) in self.limits.iter().enumerate() {
            if !is_valid_id(&limit.metric) || limit.limit == 0 {
                return Err(format!(
                    "limit {i}: metric must match {ID_PATTERN} and the limit be at least 1"
                ));
            }
            if self.limits[..i]
                .iter()
                .any(|l| l.metric == limit.metric && l.period == limit.period)
            {
                return Err(format!(
                    "two {} limits on metric `{}`; keep one",
                    limit.period, limit.metric
                ));
            }
        }
        for recipient in &self.notifications.email_recipients {
            super::notify::check_address(recipient)?;
        }
        if let Some(bad) = self
            .limits
            .iter()
            .flat_map(|l| l.on_exceeded.disable_flags.iter().chain(&l.on_exceeded.block_api_keys))
            .find(|id| !is_valid_id(id))
        {
            return Err(format!(
                "auto-action target `{}` does not match {ID_PATTERN}",
                bad.escape_debug()
            ));
        }
        Ok(())
    }
}

/// A feature flag of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    /// The organization.
    pub org_id: String,
    /// The flag's key.
    pub key: String,
    /// Whether the flag is on.
    pub enabled: bool,
    /// Why the flag was last disabled by enforcement, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When the flag last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Flag {
    /// An enabled flag.
    pub fn enabled(org_id: impl Into<String>, key: impl Into<String>) -> Self {
        Flag {
            org_id: org_id.into(),
            key: key.into(),
            enabled: true,
            disabled_reason: None,
            updated_at: None,
        }
    }
}

/// An API key of an organization (its id, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// The organization.
    pub org_id: String,
    /// The key's id.
    pub id: String,
    /// Whether requests with the key are refused.
    pub blocked: bool,
    /// Why the key was blocked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
    /// When the key was blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// An active (unblocked) key.
    pub fn active(org_id: impl Into<String>, id: impl Into<String>) -> Self {
        ApiKey {
            org_id: org_id.into(),
            id: id.into(),
            blocked: false,
            blocked_reason: None,
            blocked_at: None,
        }
    }
}

/// A closed period's total, as kept by the period archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedPeriod {
    /// Which counter.
    pub key: CounterKey,
    /// Its total over the period.
    pub total: u64,
}

/// One day's usage of a metric, aggregated from its hourly periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyUsage {
    /// The organization.
    pub org_id: String,
    /// The metric.
    pub metric: String,
    /// The UTC day.
    pub day: NaiveDate,
    /// Usage over the day.
    pub total: u64,
    /// Usage in the day's busiest hour.
    pub peak_hour_total: u64,
    /// Hours of the day with any usage.
    pub active_hours: u32,
}

/// One queue's condition in a [`HealthRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueHealth {
    /// The queue.
    pub queue: String,
    /// Jobs ready to run.
    pub ready: u64,
    /// Jobs waiting for their run time.
    pub scheduled: u64,
    /// Jobs running.
    pub active: u64,
    /// Jobs in the dead-letter queue.
    pub dead: u64,
    /// How long the oldest ready job has waited, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ready_age_ms: Option<u64>,
}

/// The result of one health check, readable by the admin API through
/// [`HealthStore::latest`](super::stores::HealthStore::latest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    /// The health-check job that produced the report.
    pub check_id: String,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
    /// Whether every check passed.
    pub healthy: bool,
    /// Whether the broker answered a ping.
    pub broker_reachable: bool,
    /// Each FlagShip queue's counts (empty when the broker is unreachable).
    pub queues: Vec<QueueHealth>,
    /// Dead jobs across the FlagShip queues.
    pub dead_total: u64,
    /// Jobs dead-lettered since the previous check.
    pub dlq_growth: u64,
    /// While unhealthy: when operators were last alerted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_alert_at: Option<DateTime<Utc>>,
    /// What is wrong, one line each; empty when healthy.
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn periods_align_to_utc_boundaries() {
        let t = at("2026-12-31T23:59:59Z");
        assert_eq!(PeriodKind::Hourly.start_of(t), at("2026-12-31T23:00:00Z"));
        assert_eq!(PeriodKind::Daily.start_of(t), at("2026-12-31T00:00:00Z"));
        assert_eq!(PeriodKind::Monthly.start_of(t), at("2026-12-01T00:00:00Z"));
        assert_eq!(
            PeriodKind::Hourly.end_of(at("2026-12-31T23:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            PeriodKind::Monthly.end_of(at("2026-12-01T00:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            PeriodKind::Monthly.end_of(at("2028-02-01T00:00:00Z")),
            at("2028-03-01T00:00:00Z")
        );
        let before_epoch = at("1969-12-31T23:30:00Z");
        assert_eq!(PeriodKind::Hourly.start_of(before_epoch), at("1969-12-31T23:00:00Z"));
    }

    #[test]
    fn thresholds_are_reached_at_the_warning_percentage_and_the_limit() {
        let limit = UsageLimit::new("api_calls", PeriodKind::Hourly, 100);
        assert_eq!(limit.reached(79, 80), None);
        assert_eq!(limit.reached(80, 80), Some(Threshold::Warning));
        assert_eq!(limit.reached(99, 80), Some(Threshold::Warning));
        assert_eq!(limit.reached(100, 80), Some(Threshold::Limit));
        assert_eq!(limit.reached(u64::MAX, 80), Some(Threshold::Limit));
    }

    #[test]
    fn ids_and_configs_are_checked() {
        assert!(is_valid_id("org_1.a-b"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("-x"));
        assert!(!is_valid_id("a:b"));
        assert!(!is_valid_id(&"a".repeat(129)));
        let mut config = OrgConfig::new("acme");
        assert!(config.validate().is_ok());
        config.warning_percent = 100;
        assert!(config.validate().unwrap_err().contains("between 1 and 99"));
        config.warning_percent = 80;
        config.notifications.email_recipients = vec!["ops@example.com\r\nBcc: x@evil".into()];
        assert!(config.validate().is_err());
    }

    #[test]
    fn webhook_secrets_stay_out_of_debug_output() {
        let endpoint = WebhookEndpoint {
            url: "https://example.com/hook".into(),
            secret: "whsec_c2VjcmV0".into(),
        };
        assert!(!format!("{endpoint:?}").contains("c2VjcmV0"));
    }
}
