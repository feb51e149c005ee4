//! Auto-actions on the product's own data: [`FlagControl`] turns a feature
//! flag off and [`ApiKeyControl`] blocks an API key, wherever the product
//! keeps them.
//!
//! [`StoreControl`] acts on the crate's own copies ([`FlagStore`] and
//! [`ApiKeyStore`], filled with `put_flag` / `put_api_key`): for tests and
//! for products without tables of their own. With the `postgres` feature,
//! `PostgresControl` acts on the product's tables directly, with one
//! idempotent `UPDATE` each over configurable table and column names.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg(feature = "postgres")]
pub use super::stores::postgres::{PostgresControl, SwitchTable};
use super::stores::{ApiKeyStore, FlagStore};
use crate::Result;

/// Turns feature flags off.
///
/// # Contract
///
/// - [`disable_flag`](FlagControl::disable_flag) MUST return `None` when
///   the organization has no such flag, `Some(true)` when it turned the
///   flag off, and `Some(false)` when the flag was off already.
/// - It MUST be idempotent: a second call changes nothing.
/// - It MAY record `reason` and `at` next to the flag.
#[async_trait]
pub trait FlagControl: Send + Sync + fmt::Debug + 'static {
    /// Turns flag `key` of `org_id` off.
    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>>;
}

/// Blocks API keys.
///
/// # Contract
///
/// Like [`FlagControl`]: `None` for an unknown key, `Some(true)` when it
/// blocked the key, `Some(false)` when it was blocked already; idempotent.
#[async_trait]
pub trait ApiKeyControl: Send + Sync + fmt::Debug + 'static {
    /// Blocks key `id` of `org_id`.
    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>>;
}

/// Flag and key control over the crate's own stores.
#[derive(Debug, Clone)]
pub struct StoreControl {
    /// Where the flags are.
    flags: Arc<dyn FlagStore>,
    /// Where the keys are.
    api_keys: Arc<dyn ApiKeyStore>,
}

impl StoreControl {
    /// Control over `flags` and `api_keys`.
    pub fn new(flags: Arc<dyn FlagStore>, api_keys: Arc<dyn ApiKeyStore>) -> Self {
        StoreControl { flags, api_keys }
    }
}

#[async_trait]
impl FlagControl for StoreControl {
    async fn disable_flag(&self, org_id: &str, key: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        self.flags.disable_flag(org_id, key, reason, at).await
    }
}

#[async_trait]
impl ApiKeyControl for StoreControl {
    async fn block_api_key(&self, org_id: &str, id: &str, reason: &str, at: DateTime<Utc>) -> Result<Option<bool>> {
        self.api_keys.block_api_key(org_id, id, reason, at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: Arc<dyn FlagControl>, _: Arc<dyn ApiKeyControl>) {}
}
