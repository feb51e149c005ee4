//! The operators' view (feature `admin`): an [`axum::Router`] with a JSON
//! API, a dead-letter-queue dashboard and Prometheus metrics, for the host
//! application to mount.
//!
//! It uses only the public API of the core: a [`Backend`] (any
//! [`Broker`] + [`DeadLetterQueue`]), optionally a [`Worker`] for its
//! counters, a [`HealthSource`] and an [`AdminMetrics`] recorder.
//!
//! ```
//! use std::sync::Arc;
//! use flagship_worker::{admin::AdminBuilder, MemoryBroker};
//!
//! let broker = Arc::new(MemoryBroker::new());
//! let admin: axum::Router = AdminBuilder::new(broker)
//!     .token("a-long-random-secret-from-your-vault")
//!     .build()?;
//! // Mount it wherever the application serves HTTP:
//! let app = axum::Router::new().nest("/admin", admin);
//! # drop(app);
//! # Ok::<_, flagship_worker::Error>(())
//! ```
//!
//! ## Authentication
//!
//! On by default: [`build`](AdminBuilder::build) refuses to build without a
//! token unless [`insecure_no_auth`](AdminBuilder::insecure_no_auth) is
//! called. The API and `/metrics` take `Authorization: Bearer <token>`;
//! the token is compared in constant time. The dashboard asks for the token
//! once and keeps a signed, expiring session in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to the dashboard's path; the token itself
//! never reaches the browser's storage.
//!
//! Dashboard forms must show they come from the dashboard itself (against
//! cross-site request forgery): a state-changing request is refused when
//! `Sec-Fetch-Site` names another site, when `Origin` is not the
//! dashboard's own origin (the host and port of its `Host` header, or of
//! `X-Forwarded-Host` when a proxy rewrites `Host`), and when it sends
//! neither header. Browsers send both; a script may send the bearer token
//! instead, which no other site can.
//!
//! ## Endpoints
//!
//! Paths are relative to where the router is mounted. Errors are JSON
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx status for bad
//! input (malformed filter, cursor or time, page size out of range: 400;
//! an unknown job or queue: 404; a dead job whose record cannot be
//! retried: 409 `not_retryable`), 501 `not_supported` for live-job calls on
//! a broker without [`JobControl`](crate::broker::JobControl), and 503 when
//! the broker cannot be reached.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /api/queues` | every queue's [`QueueStats`](crate::QueueStats), and the worker's counters if one was given |
//! | `GET /api/dlq?queue=&kind=&since=&until=&limit=&cursor=` | one page of dead jobs (all queues unless `queue` is given; times in RFC 3339; `limit` 1 to 1000, default 50); `next_cursor` continues |
//! | `GET /api/dlq/{queue}/{id}` | one dead job with its payload and full attempt history |
//! | `POST /api/dlq/{queue}/{id}/retry` | moves one dead job back to ready |
//! | `DELETE /api/dlq/{queue}/{id}` | deletes one dead job |
//! | `POST /api/dlq/retry` | retries every dead job matching a JSON filter `{"queue", "kind", "since", "until"}` (all optional; `{}` is every dead job) |
//! | `POST /api/dlq/purge` | deletes dead jobs dead-lettered before `{"older_than": "<RFC 3339>"}` (of `"queue"`, or of every queue) |
//! | `GET /api/jobs?queue=&state=&kind=&since=&until=&limit=&cursor=` | one page of live jobs ([`LiveSummary`](crate::broker::LiveSummary)), by `run_at` over every queue unless `queue` is given; `state` is `ready`, `scheduled`, `active` or several separated by commas (default all three); active ones carry their `lease` (worker, started, deadline) |
//! | `GET /api/jobs/{queue}/{id}` | one live job ([`JobDetail`](crate::broker::JobDetail)): payload, state, lease, attempts |
//! | `POST /api/jobs/{queue}/{id}/cancel` | cancels one live job: `{"outcome": "dead_lettered"}` (ready or scheduled, now in the DLQ as "cancelled by operator") or `"signalled"` (active: its worker stops it); 404 when it is not live |
//! | `POST /api/jobs/cancel` | cancels every live job matching `{"queue", "state", "kind", "since", "until"}`; with `"dry_run": true` only counts them (`would_cancel`, per queue and state) |
//! | `POST /api/queues/{queue}/pause`, `.../resume` | pauses or resumes a queue (`{"paused", "changed"}`); `/api/queues` shows `paused` |
//! | `GET /api/workers` | every registered worker, those that stopped heartbeating marked `gone` |
//! | `GET /api/health` | the latest health report (503 when it says `down`) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /ui` | the dashboard |
//!
//! ## Dashboard
//!
//! `GET /ui` shows every queue's stats and status (running or paused, with
//! a Pause or Resume button), the workers panel (every registered worker;
//! those that stopped heartbeating marked gone), and the dead jobs matching
//! a queue and kind filter, a page at a time, each with Retry and Delete
//! buttons and a detail view. Below the list, two bulk forms:
//!
//! - **Retry all matching** retries every dead job the filter shown
//!   matches, on every page (the same operation as `POST /api/dlq/retry`);
//! - **Purge older than** deletes the dead jobs of the selected queue (or of
//!   every queue; the kind filter does not apply) dead-lettered more than N
//!   days ago, N from 1 to 3650, default 30 (the same operation as
//!   `POST /api/dlq/purge`). "Now" is read from
//!   [`AdminBuilder::clock`].
//!
//! Each first shows a page saying how many jobs it would take (`GET
//! /ui/dlq/retry`, `GET /ui/dlq/purge`), with the button that does it
//! (a plain HTML form posting there), and comes back to the list with a
//! notice saying how many jobs it took. They are under the same session and
//! cross-site checks as the per-job buttons; bad input gets a 4xx error
//! page and changes nothing.
//!
//! `GET /ui/live` lists live jobs by queue, state and kind (active ones
//! with their worker and lease deadline), each with a detail view
//! (`/ui/live/{queue}/{id}`) and a Cancel button; "Cancel all matching"
//! shows the count first, like the DLQ's bulk forms.
//!
//! Every mutating call emits an `INFO` tracing event (target
//! `flagship_worker::admin`) saying what it did.
//!
//! ## Metrics
//!
//! Per-kind counters and the handler duration histogram come from the
//! worker: pass the same [`AdminMetrics`] to
//! [`WorkerBuilder::observer`](crate::WorkerBuilder::observer) and to
//! [`AdminBuilder::metrics`]. Queue depth gauges are read from the broker at
//! each scrape. See [`AdminMetrics`] for the metric names.

use std::{fmt, sync::Arc, time::Duration};

use axum::{
    routing::{get, post},
    Router,
};

use crate::{
    broker::{Backend, Broker, DeadLetterQueue},
    clock::{Clock, SystemClock},
    error::{Error, Result},
    worker::Worker,
};

mod api;
mod auth;
mod dashboard;
mod dlq;
mod history;
mod live;
mod metrics;

#[cfg(feature = "flagship")]
pub use crate::health::{BrokerHealth, HealthCheck, HealthReport, HealthSource, HealthStatus};
pub use metrics::AdminMetrics;

/// The shortest bearer token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// How long a dashboard login lasts by default (12 hours).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Builds the admin [`Router`]; see the [module docs](self).
pub struct AdminBuilder {
    /// The backend whose queues and DLQ are shown.
    broker: Arc<dyn Broker>,
    /// Its dead-letter queue.
    dlq: Arc<dyn DeadLetterQueue>,
    /// The bearer token, if one was set.
    token: Option<String>,
    /// Whether the caller chose to run without authentication.
    insecure: bool,
    /// A worker whose counters `/api/queues` and `/metrics` include.
    worker: Option<Worker>,
    /// Where `/api/health` reads from (default: [`BrokerHealth`]).
    health: Option<Arc<dyn HealthSource>>,
    /// The metrics recorder (default: a fresh one, without per-kind counters).
    metrics: Option<AdminMetrics>,
    /// How long a dashboard login lasts.
    session_ttl: Duration,
    /// Whether the session cookie is marked `Secure` (HTTPS only).
    secure_cookie: bool,
    /// What the dashboard takes as "now" (default: [`SystemClock`]).
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminBuilder")
            .field("broker", &self.broker)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("insecure", &self.insecure)
            .field("worker", &self.worker.as_ref().map(Worker::id))
            .field("session_ttl", &self.session_ttl)
            .field("secure_cookie", &self.secure_cookie)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl AdminBuilder {
    /// Starts building the router for `backend`.
    pub fn new<B: Backend>(backend: Arc<B>) -> Self {
        let broker: Arc<dyn crate::broker::Broker> = backend.clone();
        Self::from_parts(broker, backend)
    }

    /// Starts building the router for a broker and its dead-letter queue
    /// held as trait objects.
    pub fn from_parts(broker: Arc<dyn Broker>, dlq: Arc<dyn DeadLetterQueue>) -> Self {
        AdminBuilder {
            broker,
            dlq,
            token: None,
            insecure: false,
            worker: None,
            health: None,
            metrics: None,
            session_ttl: DEFAULT_SESSION_TTL,
            secure_cookie: false,
            clock: None,
        }
    }

    /// Requires `Authorization: Bearer <token>` (at least
    /// [`MIN_TOKEN_LEN`] bytes; use a long random string).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Serves everything without authentication. Only for a router
    /// reachable by trusted callers alone (a loopback port, a private
    /// sidecar); never expose it otherwise.
    pub fn insecure_no_auth(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Includes `worker`'s counters in `/api/queues`, `/metrics` and the
    /// dashboard.
    pub fn worker(mut self, worker: &Worker) -> Self {
        self.worker = Some(worker.clone());
        self
    }

    /// Reads `/api/health` from `source` instead of [`BrokerHealth`].
    pub fn health(mut self, source: Arc<dyn HealthSource>) -> Self {
        self.health = Some(source);
        self
    }

    /// Renders `/metrics` from `metrics`; pass the same value to
    /// [`WorkerBuilder::observer`](crate::WorkerBuilder::observer) to get
    /// per-kind counters and durations.
    pub fn metrics(mut self, metrics: AdminMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How long a dashboard login lasts (default [`DEFAULT_SESSION_TTL`],
    /// one minute to 30 days).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Marks the dashboard's session cookie `Secure`, so browsers send it
    /// over HTTPS only. Turn it on whenever the dashboard is served over
    /// HTTPS (directly or behind a TLS-terminating proxy).
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// Reads "now" from `clock` (default [`SystemClock`]): the dashboard's
    /// "dead for" ages and the cutoff of its purge form, which deletes what
    /// was dead-lettered more than N days before now. Pass the broker's
    /// clock when it is not the system's (tests on a paused tokio clock).
    /// Dashboard sessions are issued and expire by it too, and so do the
    /// default health reports.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the settings and builds the router.
    ///
    /// Fails with [`Error::InvalidConfig`] when no token is set and
    /// [`insecure_no_auth`](Self::insecure_no_auth) was not called, when the
    /// token is shorter than [`MIN_TOKEN_LEN`] or when both were given.
    pub fn build(self) -> Result<Router> {
        let auth = match (self.token, self.insecure) {
            (Some(_), true) => {
                return Err(Error::InvalidConfig(
                    "the admin router got both a token and `insecure_no_auth()`; choose one".into(),
                ))
            }
            (None, false) => {
                return Err(Error::InvalidConfig(
                    "the admin router needs a bearer token: call `.token(...)` with a long random secret, \
                     or `.insecure_no_auth()` if only trusted callers can reach it"
                        .into(),
                ))
            }
            (None, true) => {
                tracing::warn!(target: "flagship_worker::admin", "admin router built without authentication");
                None
            }
            (Some(token), false) => Some(auth::Auth::new(&token, self.session_ttl, self.secure_cookie)?),
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let health = self.health.unwrap_or_else(|| {
            let health = BrokerHealth::new(self.broker.clone()).dead_letters(self.dlq.clone());
            Arc::new(health.with_clock(clock.clone()))
        });
        let state = AdminState {
            broker: self.broker,
            dlq: self.dlq,
            worker: self.worker,
            health,
            metrics: self.metrics.unwrap_or_default(),
            auth: auth.map(Arc::new),
            clock,
        };
        Ok(routes(Arc::new(state)))
    }
}

/// What every handler shares.
#[derive(Debug)]
struct AdminState {
    broker: Arc<dyn Broker>,
    dlq: Arc<dyn DeadLetterQueue>,
    worker: Option<Worker>,
    health: Arc<dyn HealthSource>,
    metrics: AdminMetrics,
    /// `None` when built with `insecure_no_auth`.
    auth: Option<Arc<auth::Auth>>,
    /// "Now" for the dashboard: ages shown and purge cutoffs.
    clock: Arc<dyn Clock>,
}

type SharedState = Arc<AdminState>;

fn routes(state: SharedState) -> Router {
    let api = Router::new()
        .route("/api/queues", get(api::queues))
        .route("/api/queues/{queue}/history", get(history::queue_history))
        .route("/api/dlq", get(api::list_dead))
        .route("/api/dlq/retry", post(api::retry_matching))
        .route("/api/dlq/purge", post(api::purge))
        .route("/api/dlq/{queue}/{id}", get(api::show_dead).delete(api::delete_dead))
        .route("/api/dlq/{queue}/{id}/retry", post(api::retry_dead))
        .route("/api/jobs", get(live::list_jobs))
        .route("/api/jobs/cancel", post(live::cancel_jobs))
        .route("/api/jobs/{queue}/{id}", get(live::show_job))
        .route("/api/jobs/{queue}/{id}/cancel", post(live::cancel_job))
        .route("/api/queues/{queue}/pause", post(live::pause))
        .route("/api/queues/{queue}/resume", post(live::resume))
        .route("/api/workers", get(live::workers))
        .route("/api/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ));
    let ui = Router::new()
        .route("/ui", get(dashboard::index))
        .route("/ui/", get(dashboard::index))
        .route("/ui/history", get(dashboard::history_page))
        .route("/ui/jobs/{queue}/{id}", get(dashboard::show))
        .route("/ui/jobs/{queue}/{id}/retry", post(dashboard::retry))
        .route("/ui/jobs/{queue}/{id}/delete", post(dashboard::delete))
        .route(
            "/ui/dlq/retry",
            get(dashboard::confirm_retry_matching).post(dashboard::retry_matching),
        )
        .route("/ui/dlq/purge", get(dashboard::confirm_purge).post(dashboard::purge))
        .route("/ui/live", get(dashboard::live::index))
        .route(
            "/ui/live/cancel",
            get(dashboard::live::confirm_cancel).post(dashboard::live::cancel_matching),
        )
        .route("/ui/live/{queue}/{id}", get(dashboard::live::show))
        .route("/ui/live/{queue}/{id}/cancel", post(dashboard::live::cancel))
        .route("/ui/queues/{queue}/pause", post(dashboard::live::pause))
        .route("/ui/queues/{queue}/resume", post(dashboard::live::resume))
        .route("/ui/logout", post(dashboard::logout))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    let public = Router::new()
        .route("/", get(dashboard::root))
        .route("/ui/login", get(dashboard::login_page).post(dashboard::login))
        .route("/ui/style.css", get(dashboard::stylesheet));
    api.merge(ui)
        .merge(public)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
}
