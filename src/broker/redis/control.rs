//! [`JobControl`] for [`RedisBroker`].
//!
//! Work in progress on branch `control`: every call reports that it is
//! not available on this backend yet.

use std::time::Duration;

use async_trait::async_trait;

use super::RedisBroker;
use crate::{
    broker::control::{CancelOutcome, JobControl, JobCursor, JobPage, JobQuery, LiveJob, WorkerEntry, WorkerInfo},
    error::{Error, Result},
    job::{JobId, QueueName},
};

fn not_yet() -> Error {
    Error::InvalidConfig("operator control is not available on this backend yet; use the memory broker".into())
}

#[async_trait]
impl JobControl for RedisBroker {
    async fn list_jobs(&self, _query: &JobQuery, _cursor: Option<&JobCursor>, _limit: usize) -> Result<JobPage> {
        Err(not_yet())
    }

    async fn get_job(&self, _queue: &QueueName, _id: JobId) -> Result<Option<LiveJob>> {
        Err(not_yet())
    }

    async fn pause(&self, _queue: &QueueName) -> Result<bool> {
        Err(not_yet())
    }

    async fn resume(&self, _queue: &QueueName) -> Result<bool> {
        Err(not_yet())
    }

    async fn cancel(&self, _queue: &QueueName, _id: JobId) -> Result<CancelOutcome> {
        Err(not_yet())
    }

    async fn register_worker(&self, _info: &WorkerInfo, _ttl: Duration) -> Result<()> {
        Err(not_yet())
    }

    async fn deregister_worker(&self, _id: &str) -> Result<bool> {
        Err(not_yet())
    }

    async fn workers(&self) -> Result<Vec<WorkerEntry>> {
        Err(not_yet())
    }
}
