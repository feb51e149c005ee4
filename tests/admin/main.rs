//! The admin router: JSON API, auth, dashboard, metrics, and a real browser;
//! with the `postgres` feature, also on a `PostgresBroker`.

mod api;
mod auth;
mod bad_input;
mod browser;
mod dashboard;
mod history;
mod live;
#[path = "../support/logs.rs"]
mod logs;
mod metrics;
mod origin;
#[cfg(feature = "postgres")]
mod postgres;
mod support;
