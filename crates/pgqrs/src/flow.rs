//! Flow control: a queue's concurrency limits and rate limit, enforced by the claim itself.
//!
//! * `concurrency`: at most this many jobs of the queue leased at once (a lease counts until
//!   the job is completed, failed or released, or its lease expires), across every worker and
//!   process.
//! * `group_concurrency`: at most this many jobs of one group leased at once (jobs enqueued
//!   with [`EnqueueBuilder::group`](crate::EnqueueBuilder::group); jobs without a group are
//!   not limited by it).
//! * `rate`: at most `jobs` claims per `per`: a window opens at the first claim after the
//!   previous window ended, and takes at most `jobs` jobs until it ends. A worker that finds
//!   the window full waits until it ends (without polling the database meanwhile).
//!
//! A queue without limits claims exactly as before (one statement, nothing more). A queue
//! with limits claims in a transaction that first locks the queue's row (so limited claims of
//! one queue are serialized, across processes), then counts the live leases in a later
//! statement, and claims what the limits leave. Limits are read with the queue's row in that
//! transaction, so a change applies to the next claim; a process that had the queue
//! unlimited in its cache notices new limits within [`LIMITS_REFRESH`].

use std::time::Duration;

use crate::error::{Error, Result};

/// Largest concurrency limit, group concurrency limit and rate limit count.
pub const MAX_LIMIT: i64 = 1_000_000;
/// Shortest rate limit period: a millisecond.
pub const MIN_RATE_PERIOD: Duration = Duration::from_millis(1);
/// Longest rate limit period: 30 days.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(30 * 86_400);
/// How soon a process notices limits set on a queue by another process (its claims of a
/// queue it knows as unlimited take the plain path until then). Changes made through a
/// store apply at once to that store's claims.
pub const LIMITS_REFRESH: Duration = Duration::from_secs(1);

/// At most `jobs` jobs started per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Jobs per period: 1 to [`MAX_LIMIT`].
    pub jobs: i64,
    /// The period: [`MIN_RATE_PERIOD`] to [`MAX_RATE_PERIOD`] (stored in whole milliseconds,
    /// rounded up).
    pub per: Duration,
}

impl RateLimit {
    /// At most `jobs` jobs started per `per`.
    pub fn new(jobs: i64, per: Duration) -> Self {
        RateLimit { jobs, per }
    }

    /// At most `jobs` jobs started per second.
    pub fn per_second(jobs: i64) -> Self {
        Self::new(jobs, Duration::from_secs(1))
    }

    /// At most `jobs` jobs started per minute.
    pub fn per_minute(jobs: i64) -> Self {
        Self::new(jobs, Duration::from_secs(60))
    }

    /// The period in whole milliseconds, rounded up (as stored).
    pub(crate) fn period_ms(&self) -> i64 {
        let ms = self.per.as_nanos().div_ceil(1_000_000);
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

/// A queue's flow-control limits; `None`: no limit of that kind.
///
/// ```
/// use std::time::Duration;
/// use pgqrs::{QueueLimits, RateLimit};
/// let limits = QueueLimits::new()
///     .concurrency(10)
///     .group_concurrency(2)
///     .rate(RateLimit::new(100, Duration::from_secs(60)));
/// assert_eq!(limits.concurrency, Some(10));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueLimits {
    /// At most this many jobs of the queue leased at once.
    pub concurrency: Option<i64>,
    /// At most this many jobs of one group leased at once.
    pub group_concurrency: Option<i64>,
    /// At most so many jobs started per period.
    pub rate: Option<RateLimit>,
}

impl QueueLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` jobs of the queue leased at once, across every worker and process.
    pub fn concurrency(mut self, n: i64) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// At most `n` jobs of one group leased at once.
    pub fn group_concurrency(mut self, n: i64) -> Self {
        self.group_concurrency = Some(n);
        self
    }

    /// At most `rate.jobs` jobs started per `rate.per`.
    pub fn rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.concurrency.is_some() || self.group_concurrency.is_some() || self.rate.is_some()
    }

    /// Check every limit given: counts from 1 to [`MAX_LIMIT`], a period from
    /// [`MIN_RATE_PERIOD`] to [`MAX_RATE_PERIOD`].
    pub(crate) fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("concurrency_limit", self.concurrency),
            ("group_concurrency_limit", self.group_concurrency),
            ("rate_limit", self.rate.map(|r| r.jobs)),
        ] {
            if let Some(n) = v {
                validate_count(field, n)?;
            }
        }
        if let Some(r) = self.rate {
            if r.per < MIN_RATE_PERIOD || r.per > MAX_RATE_PERIOD {
                return Err(Error::validation(
                    "rate_limit",
                    format!(
                        "the period must be from 1 ms to {} s (30 days), got {:?}",
                        MAX_RATE_PERIOD.as_secs(),
                        r.per
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The limits as stored: (concurrency, group concurrency, rate jobs, rate period ms).
    pub(crate) fn stored(&self) -> (Option<i64>, Option<i64>, Option<i64>, Option<i64>) {
        (
            self.concurrency,
            self.group_concurrency,
            self.rate.map(|r| r.jobs),
            self.rate.map(|r| r.period_ms()),
        )
    }

    /// The limits from their stored columns; anything not positive is no limit.
    pub(crate) fn from_stored(
        concurrency: Option<i64>,
        group: Option<i64>,
        rate_jobs: Option<i64>,
        rate_ms: Option<i64>,
    ) -> Self {
        let pos = |v: Option<i64>| v.filter(|n| *n > 0);
        QueueLimits {
            concurrency: pos(concurrency),
            group_concurrency: pos(group),
            rate: match (pos(rate_jobs), pos(rate_ms)) {
                (Some(jobs), Some(ms)) => Some(RateLimit {
                    jobs,
                    per: Duration::from_millis(ms as u64),
                }),
                _ => None,
            },
        }
    }
}

fn validate_count(field: &'static str, n: i64) -> Result<()> {
    if n < 1 {
        return Err(Error::validation(
            field,
            format!(
                "must be at least 1, got {n}; to have no limit, leave it out (Python: None) — \
                 to stop a queue, stop its workers"
            ),
        ));
    }
    if n > MAX_LIMIT {
        return Err(Error::validation(
            field,
            format!("must be at most {MAX_LIMIT}, got {n}; to have no limit, leave it out (Python: None)"),
        ));
    }
    Ok(())
}

/// A rate limit window as stored with the queue: when it opened (microseconds since the
/// epoch) and how many jobs it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub start_us: Option<i64>,
    pub taken: i64,
}

/// What a rate limit allows at `now_us`: how many jobs may start now, the window to store if
/// any start, and how long to wait when none may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowance {
    pub jobs: i64,
    /// The window the claim counts into (a new one when the stored one has ended).
    pub window: Window,
    /// `Some` when `jobs` is 0: how long until the window ends.
    pub wait: Option<Duration>,
}

/// The rate limit `r` at `now_us`, with the stored window `w`.
pub(crate) fn allowance(r: RateLimit, w: Window, now_us: i64) -> Allowance {
    let period_us = r.period_ms().saturating_mul(1000);
    let window = match w.start_us {
        Some(s) if now_us >= s && now_us < s.saturating_add(period_us) => w,
        // None yet, ended, or the clock went back past its start: a new window.
        _ => Window {
            start_us: Some(now_us),
            taken: 0,
        },
    };
    let jobs = (r.jobs - window.taken).max(0);
    let wait = (jobs == 0).then(|| {
        let end = window.start_us.unwrap_or(now_us).saturating_add(period_us);
        Duration::from_micros((end - now_us).max(1) as u64)
    });
    Allowance { jobs, window, wait }
}

/// Why a claim got fewer jobs than it asked for, when a limit is the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Throttle {
    /// No limit held it back (or the queue has none).
    #[default]
    None,
    /// The concurrency limit is reached: jobs may be claimed once leases end.
    Concurrency,
    /// The rate limit's window is full: nothing may start for this long.
    Rate(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_negative_limits_say_how_to_fix_them() {
        for bad in [
            QueueLimits::new().concurrency(0),
            QueueLimits::new().group_concurrency(-3),
            QueueLimits::new().rate(RateLimit::per_second(0)),
            QueueLimits::new().concurrency(MAX_LIMIT + 1),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(
                matches!(e, Error::Validation { ref message, .. } if message.contains("leave it out")),
                "{e}"
            );
        }
        for bad_period in [Duration::ZERO, MAX_RATE_PERIOD * 2] {
            let e = QueueLimits::new()
                .rate(RateLimit::new(5, bad_period))
                .validate()
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Validation {
                        field: "rate_limit",
                        ..
                    }
                ),
                "{e}"
            );
        }
        QueueLimits::new()
            .concurrency(1)
            .group_concurrency(MAX_LIMIT)
            .rate(RateLimit::new(1, MIN_RATE_PERIOD))
            .validate()
            .unwrap();
    }

    #[test]
    fn a_rate_window_takes_its_jobs_then_says_when_it_ends() {
        let r = RateLimit::new(3, Duration::from_secs(1));
        let a = allowance(
            r,
            Window {
                start_us: None,
                taken: 0,
            },
            10_000_000,
        );
        assert_eq!(
            (a.jobs, a.window.start_us, a.wait),
            (3, Some(10_000_000), None)
        );
        let full = Window {
            start_us: Some(10_000_000),
            taken: 3,
        };
        let a = allowance(r, full, 10_250_000);
        assert_eq!(a.jobs, 0);
        assert_eq!(a.wait, Some(Duration::from_millis(750)));
        let a = allowance(r, full, 11_000_000);
        assert_eq!((a.jobs, a.window.start_us), (3, Some(11_000_000)));
        let part = Window {
            start_us: Some(10_000_000),
            taken: 1,
        };
        assert_eq!(allowance(r, part, 10_500_000).jobs, 2);
        assert_eq!(
            RateLimit::new(1, Duration::from_micros(1500)).period_ms(),
            2
        );
        let stored = QueueLimits::new().rate(RateLimit::per_minute(7)).stored();
        assert_eq!(stored, (None, None, Some(7), Some(60_000)));
        assert_eq!(
            QueueLimits::from_stored(stored.0, stored.1, stored.2, stored.3),
            QueueLimits::new().rate(RateLimit::per_minute(7))
        );
    }
}
