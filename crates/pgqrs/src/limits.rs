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

/// A lease length: at least a millisecond.
pub(crate) fn validate_lease(d: Duration) -> Result<()> {
    if d < Duration::from_millis(1) {
        return Err(Error::validation(
            "visibility_timeout",
            format!("must be positive, got {d:?}"),
        ));
    }
    Ok(())
}
