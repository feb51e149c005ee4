//! Retry policies: how many times a failed job is retried and after what delay.
//!
//! The delay is a pure function of the retry number (and, with jitter, of a
//! random sample passed in), so it can be tested without clocks.

use std::time::Duration;

use crate::{
    envelope::JobEnvelope,
    error::{Error, Result},
    handler::HandlerError,
};

/// The most retries a policy (or a per-job override) may ask for.
pub const MAX_RETRIES: u32 = 1_000;

/// The longest single retry delay accepted (30 days).
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// How the delay grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// `base × factor^(n−1)` before retry `n`: 1 s, 2 s, 4 s, … for base 1 s, factor 2.
    Exponential {
        /// Delay before the first retry.
        base: Duration,
        /// Growth factor between retries, at least 1.
        factor: f64,
    },
    /// `step × n` before retry `n`: 1 s, 2 s, 3 s, … for a step of 1 s.
    Linear {
        /// Delay added per retry.
        step: Duration,
    },
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        delay: Duration,
    },
}

/// A retry policy: a number of retries after the first attempt, a backoff,
/// an optional cap and optional jitter.
///
/// "5 retries" means one first attempt plus five retries; the sixth failure
/// dead-letters the job.
///
/// ```
/// use std::time::Duration;
/// use flagship_worker::RetryPolicy;
///
/// let policy = RetryPolicy::exponential();
/// let delays: Vec<_> = (1..=6).map(|n| policy.delay(n)).collect();
/// assert_eq!(
///     delays,
///     [1, 2, 4, 8, 16].map(|s| Some(Duration::from_secs(s))).into_iter().chain([None]).collect::<Vec<_>>()
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// How delays grow.
    pub backoff: Backoff,
    /// Upper bound on any single delay.
    pub cap: Option<Duration>,
    /// Fraction (0 to 1) of each delay that may be randomly taken off, so
    /// that jobs failing together do not retry together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential()
    }
}

impl RetryPolicy {
    /// 5 retries, exponential from 1 s with factor 2: 1, 2, 4, 8, 16 s.
    pub fn exponential() -> Self {
        RetryPolicy {
            max_retries: 5,
            backoff: Backoff::Exponential {
                base: Duration::from_secs(1),
                factor: 2.0,
            },
            cap: None,
            jitter: 0.0,
        }
    }

    /// `retries` retries, exponential from `base` with factor 2.
    pub fn exponential_with(retries: u32, base: Duration) -> Self {
        RetryPolicy {
            max_retries: retries,
            backoff: Backoff::Exponential { base, factor: 2.0 },
            cap: None,
            jitter: 0.0,
        }
    }

    /// `retries` retries, waiting `step`, `2 × step`, `3 × step`, …
    pub fn linear(retries: u32, step: Duration) -> Self {
        RetryPolicy {
            max_retries: retries,
            backoff: Backoff::Linear { step },
            cap: None,
            jitter: 0.0,
        }
    }

    /// `retries` retries, each after the same `delay`.
    pub fn fixed(retries: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_retries: retries,
            backoff: Backoff::Fixed { delay },
            cap: None,
            jitter: 0.0,
        }
    }

    /// No retries: the first failure dead-letters the job.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            backoff: Backoff::Fixed { delay: Duration::ZERO },
            cap: None,
            jitter: 0.0,
        }
    }

    /// Sets the number of retries.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Caps every delay at `cap`.
    pub fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Takes up to `fraction` (0 to 1) of each delay off at random.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Checks the policy for absurd values; the worker builder calls this.
    pub fn validate(&self) -> Result<()> {
        check_retry_count(self.max_retries)?;
        let bad = |what: String| Err(Error::InvalidConfig(format!("retry policy: {what}")));
        match self.backoff {
            Backoff::Exponential { base, factor } => {
                if base.is_zero() || base > MAX_DELAY {
                    return bad(format!(
                        "exponential base {base:?} must be above zero and at most 30 days"
                    ));
                }
                if !(1.0..=100.0).contains(&factor) {
                    return bad(format!("exponential factor {factor} must be between 1 and 100"));
                }
            }
            Backoff::Linear { step } if step.is_zero() || step > MAX_DELAY => {
                return bad(format!("linear step {step:?} must be above zero and at most 30 days"));
            }
            Backoff::Fixed { delay } if delay > MAX_DELAY => {
                return bad(format!("fixed delay {delay:?} must be at most 30 days"));
            }
            _ => {}
        }
        if let Some(cap) = self.cap {
            if cap.is_zero() || cap > MAX_DELAY {
                return bad(format!("cap {cap:?} must be above zero and at most 30 days"));
            }
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad(format!("jitter {} must be a fraction between 0 and 1", self.jitter));
        }
        Ok(())
    }

    /// The delay before retry `retry` (1-based), without jitter; `None` when
    /// the policy has no retry left and the job must be dead-lettered.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        self.delay_with(retry, self.max_retries, 0.0)
    }

    /// The delay before retry `retry` (1-based) when the job allows
    /// `max_retries` retries, with `sample` (0 to 1) deciding the jitter.
    ///
    /// A pure function: the same arguments always give the same delay.
    pub fn delay_with(&self, retry: u32, max_retries: u32, sample: f64) -> Option<Duration> {
        if retry == 0 || retry > max_retries {
            return None;
        }
        let max = self.cap.unwrap_or(MAX_DELAY).min(MAX_DELAY).as_secs_f64();
        let secs = match self.backoff {
            Backoff::Exponential { base, factor } => {
                // Clamp the exponent first so huge retry numbers stay finite.
                let exponent = (retry - 1).min(4_096) as i32;
                base.as_secs_f64() * factor.powi(exponent)
            }
            Backoff::Linear { step } => step.as_secs_f64() * f64::from(retry),
            Backoff::Fixed { delay } => delay.as_secs_f64(),
        };
        let capped = if secs.is_finite() { secs.min(max) } else { max };
        let jitter = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        Some(Duration::from_secs_f64(capped * (1.0 - jitter)))
    }
}

/// What to do with a job whose attempt did not finish: the broker call the
/// worker makes next. See [`RetryPolicy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Record the failed attempt and run the job again after `delay`.
    Retry {
        /// How long to wait before the retry.
        delay: Duration,
    },
    /// Run the job again after `delay` without counting an attempt.
    Snooze {
        /// How long to wait.
        delay: Duration,
    },
    /// Move the job to the dead-letter queue with `reason`.
    DeadLetter {
        /// Why, as operators will read it.
        reason: String,
    },
}

impl RetryPolicy {
    /// Decides what happens to `job` after its handler answered `error`: a
    /// pure function of the policy, the error, the job's attempt count and
    /// retry override, and `sample` (0 to 1, the jitter's random draw).
    ///
    /// - [`HandlerError::Snooze`] snoozes, whatever the attempt count.
    /// - Delays a handler names (snooze, retry after) are capped at
    ///   [`MAX_DELAY`], like the policy's own.
    /// - [`HandlerError::Permanent`] dead-letters with the error as reason.
    /// - [`HandlerError::Retry`] retries after the policy's delay for the
    ///   next retry and [`HandlerError::RetryAfter`] after the delay it
    ///   names, while the job has retries left (its own `max_retries`, or
    ///   the policy's); then it dead-letters, saying retries ran out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flagship_worker::{retry::Decision, HandlerError, JobEnvelope, QueueName, RetryPolicy};
    ///
    /// let policy = RetryPolicy::linear(1, Duration::from_secs(10));
    /// let mut job = JobEnvelope::new("ping", QueueName::new("default")?, serde_json::json!({}), chrono::Utc::now());
    /// let error = HandlerError::retry("upstream timed out");
    /// assert_eq!(policy.decide(&error, &job, 0.0), Decision::Retry { delay: Duration::from_secs(10) });
    /// job.attempt = 1;
    /// assert!(matches!(policy.decide(&error, &job, 0.0), Decision::DeadLetter { .. }));
    /// # Ok::<_, flagship_worker::Error>(())
    /// ```
    pub fn decide(&self, error: &HandlerError, job: &JobEnvelope, sample: f64) -> Decision {
        let message = match error {
            HandlerError::Snooze(delay) => {
                return Decision::Snooze {
                    delay: (*delay).min(MAX_DELAY),
                }
            }
            HandlerError::Permanent(e) => return Decision::DeadLetter { reason: e.to_string() },
            HandlerError::Retry(e) | HandlerError::RetryAfter(_, e) => e,
        };
        let allowed = job.max_retries.unwrap_or(self.max_retries);
        match self.delay_with(job.attempt.saturating_add(1), allowed, sample) {
            Some(delay) => Decision::Retry {
                delay: match error {
                    HandlerError::RetryAfter(asked, _) => (*asked).min(MAX_DELAY),
                    _ => delay,
                },
            },
            None => Decision::DeadLetter {
                reason: format!(
                    "retries exhausted after {} attempts: {message}",
                    u64::from(job.attempt) + 1
                ),
            },
        }
    }
}

pub(crate) fn check_retry_count(retries: u32) -> Result<()> {
    if retries > MAX_RETRIES {
        return Err(Error::InvalidConfig(format!(
            "{retries} retries is more than the limit of {MAX_RETRIES}; a job that fails that often belongs in the dead-letter queue"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::QueueName;
    use proptest::prelude::*;

    fn job_at(attempt: u32, max_retries: Option<u32>) -> JobEnvelope {
        let queue = QueueName::new("q").unwrap();
        let mut job = JobEnvelope::new("k", queue, serde_json::json!({}), chrono::DateTime::UNIX_EPOCH);
        job.attempt = attempt;
        job.max_retries = max_retries;
        job
    }

    #[test]
    fn decide_follows_the_policy_then_dead_letters() {
        let policy = RetryPolicy::exponential();
        let fail = HandlerError::retry("boom");
        let delays: Vec<_> = (0..5).map(|n| policy.decide(&fail, &job_at(n, None), 0.0)).collect();
        let expected: Vec<_> = [1, 2, 4, 8, 16]
            .map(|s| Decision::Retry {
                delay: Duration::from_secs(s),
            })
            .to_vec();
        assert_eq!(delays, expected);
        assert_eq!(
            policy.decide(&fail, &job_at(5, None), 0.0),
            Decision::DeadLetter {
                reason: "retries exhausted after 6 attempts: boom".into()
            }
        );
    }

    #[test]
    fn decide_honours_the_jobs_own_retry_count() {
        let policy = RetryPolicy::exponential();
        let fail = HandlerError::retry("boom");
        assert!(matches!(
            policy.decide(&fail, &job_at(0, Some(0)), 0.0),
            Decision::DeadLetter { .. }
        ));
        assert!(matches!(
            RetryPolicy::none().decide(&fail, &job_at(3, Some(9)), 0.0),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn decide_takes_the_delay_a_callee_asked_for_while_retries_last() {
        let policy = RetryPolicy::linear(2, Duration::from_secs(5));
        let later = HandlerError::retry_after(Duration::from_secs(42), "429");
        assert_eq!(
            policy.decide(&later, &job_at(1, None), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(42)
            }
        );
        assert!(matches!(
            policy.decide(&later, &job_at(2, None), 0.0),
            Decision::DeadLetter { reason } if reason.contains("retries exhausted after 3 attempts: 429")
        ));
    }

    #[test]
    fn delays_a_handler_names_are_capped() {
        let policy = RetryPolicy::exponential();
        let forever = Duration::MAX;
        assert_eq!(
            policy.decide(&HandlerError::snooze(forever), &job_at(0, None), 0.0),
            Decision::Snooze { delay: MAX_DELAY }
        );
        assert_eq!(
            policy.decide(&HandlerError::retry_after(forever, "later"), &job_at(0, None), 0.0),
            Decision::Retry { delay: MAX_DELAY }
        );
    }

    #[test]
    fn decide_snoozes_whatever_the_attempt_and_dead_letters_permanent_at_once() {
        let policy = RetryPolicy::none();
        let snooze = HandlerError::snooze(Duration::from_secs(7));
        assert_eq!(
            policy.decide(&snooze, &job_at(1_000, Some(0)), 1.0),
            Decision::Snooze {
                delay: Duration::from_secs(7)
            }
        );
        let hopeless = HandlerError::permanent("no such user");
        assert_eq!(
            RetryPolicy::exponential().decide(&hopeless, &job_at(0, None), 0.0),
            Decision::DeadLetter {
                reason: "no such user".into()
            }
        );
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn linear_and_none() {
        let linear = RetryPolicy::linear(3, Duration::from_secs(5));
        assert_eq!(
            (1..=4).map(|n| linear.delay(n)).collect::<Vec<_>>(),
            [secs(5), secs(10), secs(15), None]
        );
        assert_eq!(RetryPolicy::none().delay(1), None);
        assert_eq!(RetryPolicy::exponential().delay(0), None);
    }

    #[test]
    fn absurd_policies_are_refused() {
        assert!(RetryPolicy::exponential().validate().is_ok());
        assert!(RetryPolicy::exponential()
            .with_max_retries(MAX_RETRIES + 1)
            .validate()
            .is_err());
        assert!(RetryPolicy::linear(3, Duration::ZERO).validate().is_err());
        assert!(RetryPolicy::exponential().with_jitter(1.5).validate().is_err());
        assert!(RetryPolicy::exponential().with_cap(Duration::ZERO).validate().is_err());
        assert!(RetryPolicy::exponential_with(3, Duration::from_secs(365 * 24 * 3600))
            .validate()
            .is_err());
    }

    proptest! {
        #[test]
        fn exponential_delays_never_decrease(base_ms in 1u64..10_000, factor in 1.0f64..10.0, n in 1u32..200) {
            let p = RetryPolicy { max_retries: 1000, backoff: Backoff::Exponential { base: Duration::from_millis(base_ms), factor }, cap: None, jitter: 0.0 };
            prop_assert!(p.delay(n + 1).unwrap() >= p.delay(n).unwrap());
        }

        #[test]
        fn linear_delays_never_decrease(step_ms in 1u64..10_000, n in 1u32..900) {
            let p = RetryPolicy::linear(1000, Duration::from_millis(step_ms));
            prop_assert!(p.delay(n + 1).unwrap() >= p.delay(n).unwrap());
        }

        #[test]
        fn delays_respect_the_cap(cap_ms in 1u64..100_000, n in 1u32..1000) {
            let cap = Duration::from_millis(cap_ms);
            let p = RetryPolicy::exponential().with_max_retries(1000).with_cap(cap);
            prop_assert!(p.delay(n).unwrap() <= cap);
        }

        #[test]
        fn jitter_stays_within_its_fraction(jitter in 0.0f64..=1.0, sample in 0.0f64..=1.0, n in 1u32..10) {
            let p = RetryPolicy::exponential().with_jitter(jitter);
            let plain = p.delay_with(n, 5, 0.0).unwrap_or_default().as_secs_f64();
            let jittered = p.delay_with(n, 5, sample).unwrap_or_default().as_secs_f64();
            prop_assert!(jittered <= plain + 1e-9);
            prop_assert!(jittered >= plain * (1.0 - jitter) - 1e-9);
        }

        #[test]
        fn no_retry_beyond_the_limit(max in 0u32..50, extra in 1u32..50) {
            let p = RetryPolicy::exponential().with_max_retries(max);
            prop_assert_eq!(p.delay(max + extra), None);
        }
    }
}
