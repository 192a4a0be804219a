//! Retry policies: how long to wait before the next attempt of a failed job or step.

use std::time::Duration;

use crate::store::Failure;
use crate::types::Lease;

/// The wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// Always the same delay.
    Fixed(Duration),
    /// `base × 2^(attempt-1)`, capped at `max`.
    Exponential {
        /// Delay after the first failure.
        base: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Like `Exponential`, then a uniformly random delay between half of it and all of it
    /// ("equal jitter"), so that jobs that failed together do not retry together.
    ExponentialJitter {
        /// Delay after the first failure, before jitter.
        base: Duration,
        /// Upper bound, before jitter.
        max: Duration,
    },
}

/// When a failed job (or workflow step) is tried again.
///
/// `max_attempts` counts every attempt, the first included: with 3, a job runs at most three
/// times and then becomes a dead letter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts allowed in all. `None`: the job's own limit (set at enqueue time, default
    /// from [`Config`](crate::Config)). A policy can lower a job's limit, never raise it.
    pub max_attempts: Option<u32>,
    /// The wait between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// The job's own attempt limit; exponential backoff with jitter from 1 s up to 5 min.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: None,
            backoff: Backoff::ExponentialJitter {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure is final.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: Some(1),
            backoff: Backoff::Fixed(Duration::ZERO),
        }
    }

    /// Retry after a fixed delay.
    pub fn fixed(max_attempts: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: Some(max_attempts.max(1)),
            backoff: Backoff::Fixed(delay),
        }
    }

    /// Retry with exponential backoff.
    pub fn exponential(max_attempts: u32, base: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: Some(max_attempts.max(1)),
            backoff: Backoff::Exponential { base, max },
        }
    }

    /// Retry with exponential backoff and jitter.
    pub fn exponential_jitter(max_attempts: u32, base: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: Some(max_attempts.max(1)),
            backoff: Backoff::ExponentialJitter { base, max },
        }
    }

    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = |base: Duration, max: Duration| {
            let shift = attempt.saturating_sub(1).min(32);
            base.checked_mul(1u32 << shift.min(31))
                .unwrap_or(max)
                .min(max)
        };
        match self.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max } => exp(base, max),
            Backoff::ExponentialJitter { base, max } => {
                let full = exp(base, max);
                let half = full / 2;
                half + full.mul_f64(fastrand::f64() * 0.5)
            }
        }
    }

    /// Whether another attempt is allowed after `attempts` attempts, given the job's own limit
    /// (the smaller of the two limits applies).
    pub fn allows_retry(&self, attempts: u32, job_max_attempts: u32) -> bool {
        attempts
            < self
                .max_attempts
                .map_or(job_max_attempts, |p| p.min(job_max_attempts))
    }
}

/// The record of failed attempt number `attempts` of a job allowed `max_attempts`, under
/// `policy`: retried after the policy's backoff, or a dead letter when no attempt is left.
pub(crate) fn failure(
    policy: &RetryPolicy,
    lease: Lease,
    attempts: i32,
    max_attempts: i32,
    error: String,
) -> Failure {
    let attempts = attempts.max(0) as u32;
    let retry_in = policy
        .allows_retry(attempts, max_attempts.max(1) as u32)
        .then(|| policy.delay_after(attempts).min(crate::limits::MAX_DELAY));
    Failure {
        lease,
        error: crate::error::storable_error(&error),
        retry_in,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let s = Duration::from_secs;
        let p = RetryPolicy::exponential(5, s(1), s(10));
        let got: Vec<_> = (1..=6).map(|a| p.delay_after(a)).collect();
        assert_eq!(got, vec![s(1), s(2), s(4), s(8), s(10), s(10)]);
        assert_eq!(RetryPolicy::fixed(3, s(7)).delay_after(9), s(7));
        let j = RetryPolicy::exponential_jitter(5, s(4), s(100));
        for _ in 0..100 {
            let d = j.delay_after(2); // 8 s before jitter
            assert!(d >= s(4) && d <= s(8), "{d:?}");
        }
        assert_eq!(p.delay_after(u32::MAX), s(10));
    }

    #[test]
    fn attempts() {
        let p = RetryPolicy::fixed(3, Duration::ZERO);
        assert!(p.allows_retry(2, 99));
        assert!(!p.allows_retry(3, 99));
        assert!(!p.allows_retry(2, 2), "the job's own, lower limit wins");
        let d = RetryPolicy::default();
        assert!(d.allows_retry(4, 5));
        assert!(!d.allows_retry(5, 5));
        assert!(!RetryPolicy::none().allows_retry(1, 5));
    }
}
