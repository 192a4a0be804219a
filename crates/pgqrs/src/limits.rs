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

/// Longest unique key of a job, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// A job's unique key: 1 to [`MAX_KEY_BYTES`] bytes, without NUL (which PostgreSQL cannot
/// store in text). Any other text is a key as it is (no trimming, case kept).
pub(crate) fn validate_key(field: &'static str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::validation(
            field,
            format!(
                "{} must be 1 to {MAX_KEY_BYTES} bytes long (got {} bytes); a longer identity \
                 can be hashed into a key",
                crate::error::preview(key),
                key.len()
            ),
        ));
    }
    if key.contains('\0') {
        return Err(Error::validation(
            field,
            format!(
                "{} contains the NUL character, which cannot be stored; remove it",
                crate::error::preview(key)
            ),
        ));
    }
    Ok(())
}

/// Longest `unique_for` window: 100 years, like [`MAX_DELAY`].
pub(crate) const MAX_UNIQUE_FOR: Duration = MAX_DELAY;

/// A `unique_for` window: more than zero, at most [`MAX_UNIQUE_FOR`].
pub(crate) fn validate_unique_for(d: Duration) -> Result<()> {
    if d.is_zero() || d > MAX_UNIQUE_FOR {
        return Err(Error::validation(
            "unique_for",
            format!(
                "must be more than 0 and at most {} s (100 years), got {d:?}",
                MAX_UNIQUE_FOR.as_secs()
            ),
        ));
    }
    Ok(())
}

/// Deepest nesting of arrays and objects a payload may have.
pub const MAX_DEPTH: usize = 100;

/// Lowest job priority.
pub const MIN_PRIORITY: i64 = i16::MIN as i64;
/// Highest job priority.
pub const MAX_PRIORITY: i64 = i16::MAX as i64;

/// Shortest job timeout: a millisecond.
pub const MIN_JOB_TIMEOUT: Duration = Duration::from_millis(1);
/// Longest job timeout: 7 days (the longest lease).
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// An enqueue's defaults and bounds, by the names under which `install()` records them in
/// PostgreSQL's settings table for the SQL function `pgqrs_enqueue` (migration 11), which
/// reads them there rather than keeping copies: the store's `max_attempts` and
/// `max_payload_bytes`, and the constants the builder checks against.
#[cfg(feature = "postgres")]
pub(crate) fn sql_enqueue_settings(
    max_attempts: u32,
    max_payload_bytes: usize,
) -> [(&'static str, i64); 10] {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    [
        ("enqueue.max_attempts", i64::from(max_attempts)),
        (
            "enqueue.max_payload_bytes",
            i64::try_from(max_payload_bytes).unwrap_or(i64::MAX),
        ),
        ("enqueue.min_priority", MIN_PRIORITY),
        ("enqueue.max_priority", MAX_PRIORITY),
        ("enqueue.max_delay_ms", ms(MAX_DELAY)),
        ("enqueue.min_timeout_ms", ms(MIN_JOB_TIMEOUT)),
        ("enqueue.max_timeout_ms", ms(MAX_JOB_TIMEOUT)),
        ("enqueue.max_key_bytes", MAX_KEY_BYTES as i64),
        ("enqueue.max_unique_for_ms", ms(MAX_UNIQUE_FOR)),
        ("enqueue.max_depth", MAX_DEPTH as i64),
    ]
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for ok in ["invoice-42", " spaced ", "é中", &"k".repeat(MAX_KEY_BYTES)] {
            assert!(validate_key("key", ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a\0b", &"k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(
                matches!(
                    validate_key("key", bad),
                    Err(Error::Validation { field: "key", .. })
                ),
                "{bad:?}"
            );
        }
        assert!(validate_unique_for(Duration::ZERO).is_err());
        assert!(validate_unique_for(MAX_UNIQUE_FOR + Duration::from_secs(1)).is_err());
        assert!(validate_unique_for(Duration::from_secs(3600)).is_ok());
    }
}
