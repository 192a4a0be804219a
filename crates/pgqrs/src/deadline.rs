//! Job deadlines: a handler that runs longer than its job's timeout is cancelled, and the
//! attempt is recorded as failed (then retried or dead-lettered by the retry policy, like any
//! failure).
//!
//! A job's timeout is given at enqueue ([`EnqueueBuilder::timeout`](crate::EnqueueBuilder::timeout),
//! stored with the job) or, for jobs without one, by the worker
//! ([`WorkerBuilder::job_timeout`](crate::WorkerBuilder::job_timeout)); without either a
//! handler may run as long as it likes (its lease is extended while the worker lives). A batch
//! handler gets the shortest timeout of its jobs. Cancelling drops the handler's future: it
//! stops at its next `.await`. Code that blocks a thread without awaiting cannot be stopped
//! that way; its attempt is recorded as failed all the same.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::handler::{run_batch, Handler, Outcome};
use crate::types::Message;

pub use crate::limits::{MAX_JOB_TIMEOUT, MIN_JOB_TIMEOUT};

/// Check a job timeout (`field`: `timeout` at enqueue, `job_timeout` on a worker).
pub(crate) fn validate_timeout(field: &'static str, d: Duration) -> Result<()> {
    if d < MIN_JOB_TIMEOUT || d > MAX_JOB_TIMEOUT {
        return Err(Error::validation(
            field,
            format!(
                "must be from 1 ms to {} s (7 days), got {d:?}; leave it unset for no limit",
                MAX_JOB_TIMEOUT.as_secs()
            ),
        ));
    }
    Ok(())
}

/// As stored with the job: whole milliseconds, rounded up.
pub(crate) fn stored_ms(d: Duration) -> i64 {
    let ms = d.as_millis() + u128::from(!d.as_nanos().is_multiple_of(1_000_000));
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// From the stored value; `None` for NULL (or a value pgqrs never writes).
pub(crate) fn from_stored_ms(v: Option<i64>) -> Option<Duration> {
    v.filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(ms as u64))
}

/// The error recorded with an attempt whose handler ran out of time.
pub fn timeout_error(d: Duration) -> String {
    format!(
        "handler exceeded its timeout of {} s and was cancelled",
        d.as_secs_f64()
    )
}

/// The timeout of a handler call on jobs with these timeouts (`None`: the job has none), where
/// `default` applies to jobs without one: the shortest; `None` when no job has a limit.
pub(crate) fn timeout_of(
    job_timeouts: impl IntoIterator<Item = Option<Duration>>,
    default: Option<Duration>,
) -> Option<Duration> {
    job_timeouts.into_iter().filter_map(|t| t.or(default)).min()
}

/// Run a handler on messages (see [`run_batch`]) within `timeout`: past it, the call is
/// cancelled and every message's outcome is the timeout error.
pub(crate) async fn run_within(
    h: &dyn Handler,
    msgs: Vec<Message>,
    batch: bool,
    timeout: Option<Duration>,
) -> Vec<Outcome> {
    let Some(t) = timeout else {
        return run_batch(h, msgs, batch).await;
    };
    let n = msgs.len();
    match tokio::time::timeout(t, run_batch(h, msgs, batch)).await {
        Ok(outcomes) => outcomes,
        Err(_) => {
            tracing::debug!(timeout = ?t, jobs = n, "handler exceeded its job timeout; cancelled");
            (0..n).map(|_| Err(timeout_error(t))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded_and_stored_in_whole_milliseconds() {
        for bad in [
            Duration::ZERO,
            Duration::from_nanos(999_999),
            MAX_JOB_TIMEOUT * 2,
        ] {
            assert!(matches!(
                validate_timeout("timeout", bad),
                Err(Error::Validation {
                    field: "timeout",
                    ..
                })
            ));
        }
        validate_timeout("job_timeout", Duration::from_millis(1)).unwrap();
        validate_timeout("job_timeout", MAX_JOB_TIMEOUT).unwrap();
        assert_eq!(stored_ms(Duration::from_micros(1500)), 2);
        assert_eq!(stored_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(from_stored_ms(Some(30_000)), Some(Duration::from_secs(30)));
        assert_eq!(from_stored_ms(None), None);
        assert_eq!(from_stored_ms(Some(0)), None);
    }

    #[test]
    fn a_call_gets_the_shortest_timeout_of_its_jobs() {
        let s = Duration::from_secs;
        assert_eq!(timeout_of([None, None], None), None);
        assert_eq!(timeout_of([None, Some(s(5))], None), Some(s(5)));
        assert_eq!(timeout_of([None, Some(s(50))], Some(s(10))), Some(s(10)));
        assert_eq!(
            timeout_of([Some(s(50))], Some(s(10))),
            Some(s(50)),
            "the job's own wins"
        );
        assert_eq!(
            timeout_error(Duration::from_millis(200)),
            "handler exceeded its timeout of 0.2 s and was cancelled"
        );
        assert_eq!(
            timeout_error(s(30)),
            "handler exceeded its timeout of 30 s and was cancelled"
        );
    }
}
