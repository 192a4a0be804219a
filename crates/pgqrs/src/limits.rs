//! Bounds on the arguments of claims and workers, checked before anything touches the
//! database.

use std::time::Duration;

use crate::error::{Error, Result};

/// Largest batch one claim may ask for.
pub(crate) const MAX_BATCH: usize = 10_000;

/// Most handler calls a worker may run at once.
pub(crate) const MAX_CONCURRENCY: usize = 10_000;

/// A claim (or batch) size: 1 to [`MAX_BATCH`].
pub(crate) fn validate_batch(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::validation(
            "batch_size",
            format!("must be between 1 and {MAX_BATCH}, got {n}"),
        ));
    }
    Ok(())
}

/// A worker's concurrency: 1 to [`MAX_CONCURRENCY`].
pub(crate) fn validate_concurrency(n: usize) -> Result<()> {
    if n == 0 || n > MAX_CONCURRENCY {
        return Err(Error::validation(
            "concurrency",
            format!("must be between 1 and {MAX_CONCURRENCY}, got {n}"),
        ));
    }
    Ok(())
}

/// Longest lease: 7 days (a worker renews its leases while a job runs; a longer one only
/// delays the recovery of a job whose worker died).
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest delay of a job: 100 years (365 days each).
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A lease length: from a millisecond to [`MAX_LEASE`].
pub(crate) fn validate_lease(d: Duration) -> Result<()> {
    if d < Duration::from_millis(1) || d > MAX_LEASE {
        return Err(Error::validation(
            "visibility_timeout",
            format!(
                "must be from 1 ms to {} s ({} days), got {d:?}",
                MAX_LEASE.as_secs(),
                MAX_LEASE.as_secs() / 86400
            ),
        ));
    }
    Ok(())
}

/// Longest interval or wait a worker setting may name (poll, heartbeat, flush, shutdown grace,
/// claim-ahead timeout): a day.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A worker's interval or wait: at most [`MAX_INTERVAL`].
pub(crate) fn validate_interval(field: &'static str, d: Duration) -> Result<()> {
    if d > MAX_INTERVAL {
        return Err(Error::validation(
            field,
            format!(
                "must be at most {} s (a day), got {d:?}",
                MAX_INTERVAL.as_secs()
            ),
        ));
    }
    Ok(())
}

/// How long a job waits before it may run: at most [`MAX_DELAY`].
pub(crate) fn validate_delay(field: &'static str, d: Duration) -> Result<()> {
    if d > MAX_DELAY {
        return Err(Error::validation(
            field,
            format!(
                "must be at most {} s (100 years), got {d:?}",
                MAX_DELAY.as_secs()
            ),
        ));
    }
    Ok(())
}

/// Jobs in one page of `list_jobs` when the caller does not say.
pub(crate) const DEFAULT_LIST_LIMIT: i64 = 100;

/// Most jobs one page of `list_jobs` may hold.
pub(crate) const MAX_LIST_LIMIT: i64 = 10_000;

/// A page size: not given, [`DEFAULT_LIST_LIMIT`]; else 1 to [`MAX_LIST_LIMIT`].
pub(crate) fn validate_list_limit(limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(Error::validation(
            "limit",
            format!(
                "must be between 1 and {MAX_LIST_LIMIT} jobs per page, got {limit}; page through \
                 more with the cursor of each page"
            ),
        ));
    }
    Ok(limit)
}
