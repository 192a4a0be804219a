//! Retention: how long the archive, the dead letters and finished workflow runs are kept, and
//! the pruning that deletes what is older.
//!
//! Every default and bound of retention lives here. A queue's retention is stored with the
//! queue (`pgqrs_queues.archive_retention`, `dead_retention`: whole seconds, NULL = forever);
//! the retention of finished workflow runs is one setting of the whole store
//! (`pgqrs_settings`). Running workers prune in the background ([`Pruner`]): every
//! [`DEFAULT_PRUNE_INTERVAL`] each deletes, for its own queue and for the workflow runs, what
//! is older than the retention, [`PRUNE_BATCH`] rows per statement, through the indexes that
//! order those tables by age. Several workers pruning at once never wait for one another
//! (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite dialect: one short write each).
//! [`Admin::prune`](crate::Admin::prune) does the same on demand.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::limits::validate_interval;
use crate::store::Backend;
pub(crate) use crate::types::Prunable;
pub use crate::types::Retention;

/// Shortest retention: a second.
pub const MIN_RETENTION: Duration = Duration::from_secs(1);
/// Longest retention: 100 years (365 days each). Longer is [`Retention::Forever`].
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The archive of a queue created without saying: 7 days.
pub const DEFAULT_ARCHIVE_RETENTION: Retention = Retention::For(Duration::from_secs(7 * 86_400));
/// The dead letters of a queue created without saying: 30 days (they wait for a person).
pub const DEFAULT_DEAD_RETENTION: Retention = Retention::For(Duration::from_secs(30 * 86_400));
/// Finished workflow runs until [`Admin::set_workflow_retention`](crate::Admin::set_workflow_retention)
/// says otherwise: kept forever (a run's output is its caller's result).
pub const DEFAULT_WORKFLOW_RETENTION: Retention = Retention::Forever;

/// How often a running worker prunes, by default: every minute.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows deleted by one statement.
pub(crate) const PRUNE_BATCH: i64 = 1_000;
/// Statements per table in one background prune; when a table has more to delete, the
/// worker prunes again after [`PRUNE_AGAIN_AFTER`] instead of a whole interval.
pub(crate) const PRUNE_BATCHES_PER_TICK: u32 = 10;
/// The pause between two background prunes while a table still has more to delete.
pub(crate) const PRUNE_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Shortest prune interval a worker accepts.
const MIN_PRUNE_INTERVAL: Duration = Duration::from_millis(10);

/// The setting (in `pgqrs_settings`) that holds the retention of finished workflow runs.
pub(crate) const WORKFLOW_RETENTION_SETTING: &str = "workflow_retention";

/// Check a retention: forever, or from [`MIN_RETENTION`] to [`MAX_RETENTION`].
pub(crate) fn validate_retention(field: &'static str, r: Retention) -> Result<()> {
    let Retention::For(d) = r else { return Ok(()) };
    if d < MIN_RETENTION {
        return Err(Error::validation(
            field,
            format!(
                "must be at least 1 s, got {d:?}; to keep everything use Retention::Forever \
                 (Python: \"forever\"), to delete now use prune(older_than=0)"
            ),
        ));
    }
    if d > MAX_RETENTION {
        return Err(Error::validation(
            field,
            format!(
                "must be at most {} s (100 years), got {d:?}; to keep everything use \
                 Retention::Forever (Python: \"forever\")",
                MAX_RETENTION.as_secs()
            ),
        ));
    }
    Ok(())
}

/// Check the `older_than` of a prune: from 0 (everything finished until now) to
/// [`MAX_RETENTION`].
pub(crate) fn validate_older_than(d: Duration) -> Result<()> {
    if d > MAX_RETENTION {
        return Err(Error::validation(
            "older_than",
            format!(
                "must be at most {} s (100 years), got {d:?}",
                MAX_RETENTION.as_secs()
            ),
        ));
    }
    Ok(())
}

/// A worker's prune interval: from 10 ms to a day.
pub(crate) fn validate_prune_interval(d: Duration) -> Result<()> {
    validate_interval("prune_interval", d)?;
    if d < MIN_PRUNE_INTERVAL {
        return Err(Error::validation(
            "prune_interval",
            format!("must be at least {MIN_PRUNE_INTERVAL:?}, got {d:?}"),
        ));
    }
    Ok(())
}

/// Settings of a queue: at [`Admin::create_queue_with`](crate::Admin::create_queue_with),
/// a retention not given takes its default ([`DEFAULT_ARCHIVE_RETENTION`],
/// [`DEFAULT_DEAD_RETENTION`]) and a limit not given is no limit; at
/// [`Admin::set_queue_retention`](crate::Admin::set_queue_retention), a retention not given
/// stays as it is (limits change with [`Admin::set_queue_limits`](crate::Admin::set_queue_limits)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueOptions {
    /// How long completed jobs stay in the archive.
    pub archive_retention: Option<Retention>,
    /// How long dead letters are kept.
    pub dead_retention: Option<Retention>,
    /// Concurrency and rate limits (see [`QueueLimits`](crate::QueueLimits)).
    pub limits: crate::QueueLimits,
}

impl QueueOptions {
    /// Nothing given: the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long completed jobs stay in the archive.
    pub fn archive_retention(mut self, r: Retention) -> Self {
        self.archive_retention = Some(r);
        self
    }

    /// How long dead letters are kept.
    pub fn dead_retention(mut self, r: Retention) -> Self {
        self.dead_retention = Some(r);
        self
    }

    /// At most `n` jobs of the queue leased at once, across every worker and process.
    pub fn concurrency_limit(mut self, n: i64) -> Self {
        self.limits = self.limits.concurrency(n);
        self
    }

    /// At most `n` jobs of one group leased at once (see
    /// [`EnqueueBuilder::group`](crate::EnqueueBuilder::group)).
    pub fn group_concurrency_limit(mut self, n: i64) -> Self {
        self.limits = self.limits.group_concurrency(n);
        self
    }

    /// At most `rate.jobs` jobs started per `rate.per`.
    pub fn rate_limit(mut self, rate: crate::RateLimit) -> Self {
        self.limits = self.limits.rate(rate);
        self
    }

    /// All the limits at once.
    pub fn limits(mut self, limits: crate::QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        if let Some(r) = self.archive_retention {
            validate_retention("archive_retention", r)?;
        }
        if let Some(r) = self.dead_retention {
            validate_retention("dead_retention", r)?;
        }
        Ok(())
    }
}

/// What a prune deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Completed jobs deleted from the archive.
    pub archived: u64,
    /// Dead letters deleted.
    pub dead: u64,
    /// Finished workflow runs deleted, with their steps.
    pub workflow_runs: u64,
}

impl Pruned {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.archived + self.dead + self.workflow_runs
    }
}

/// Delete the rows of `what` (of the queue `queue_id`) older than `older_than`, in statements
/// of [`PRUNE_BATCH`] rows, at most `max_batches` of them (`None`: until none is left).
/// Returns how many were deleted and whether more may be left.
pub(crate) async fn prune_table(
    backend: &dyn Backend,
    what: Prunable,
    queue_id: i64,
    older_than: Duration,
    max_batches: Option<u32>,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<(u64, bool)> {
    let mut total = 0u64;
    let mut batches = 0u32;
    loop {
        if stop.is_some_and(|s| *s.borrow()) {
            return Ok((total, true));
        }
        let n = backend
            .prune_batch(what, queue_id, older_than, PRUNE_BATCH)
            .await?;
        total += n;
        batches += 1;
        if n < PRUNE_BATCH as u64 {
            return Ok((total, false));
        }
        if max_batches.is_some_and(|m| batches >= m) {
            return Ok((total, true));
        }
    }
}

/// The retention of finished workflow runs in force.
pub(crate) async fn workflow_retention(backend: &dyn Backend) -> Result<Retention> {
    Ok(backend
        .get_setting(WORKFLOW_RETENTION_SETTING)
        .await?
        .map_or(DEFAULT_WORKFLOW_RETENTION, Retention::from_stored))
}

/// A worker's background pruning of its queue's archive and dead letters and of finished
/// workflow runs.
pub(crate) struct Pruner {
    pub backend: Arc<dyn Backend>,
    pub queue: String,
    pub interval: Duration,
}

impl Pruner {
    /// Prune every interval until `stop` says so. The first prune comes at a random point of
    /// the first interval, so that workers started together do not prune together.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut wait = self.interval.mul_f64(0.1 + 0.9 * fastrand::f64());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            wait = match self.tick(&stop).await {
                Ok(true) => PRUNE_AGAIN_AFTER.min(self.interval),
                Ok(false) => self.interval.mul_f64(0.9 + 0.2 * fastrand::f64()),
                Err(e) => {
                    tracing::warn!(error = %e, queue = %self.queue, "pruning failed; trying again at the next interval");
                    self.interval
                }
            };
        }
    }

    /// One prune; `true` when a table has more to delete.
    async fn tick(&self, stop: &watch::Receiver<bool>) -> Result<bool> {
        let backend = &*self.backend;
        let q = backend.get_queue(&self.queue).await?;
        let mut pruned = Pruned::default();
        let mut more = false;
        for (what, retention, count) in [
            (Prunable::Archive, q.archive_retention, &mut pruned.archived),
            (Prunable::Dead, q.dead_retention, &mut pruned.dead),
        ] {
            if let Retention::For(d) = retention {
                let (n, left) = prune_table(
                    backend,
                    what,
                    q.id,
                    d,
                    Some(PRUNE_BATCHES_PER_TICK),
                    Some(stop),
                )
                .await?;
                *count = n;
                more |= left;
            }
        }
        if let Retention::For(d) = workflow_retention(backend).await? {
            let (n, left) = prune_table(
                backend,
                Prunable::WorkflowRuns,
                0,
                d,
                Some(PRUNE_BATCHES_PER_TICK),
                Some(stop),
            )
            .await?;
            pruned.workflow_runs = n;
            more |= left;
        }
        if pruned.total() > 0 {
            tracing::debug!(
                queue = %self.queue,
                archived = pruned.archived,
                dead = pruned.dead,
                workflow_runs = pruned.workflow_runs,
                "pruned past their retention"
            );
        }
        Ok(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_stored_in_whole_seconds_rounded_up() {
        assert_eq!(Retention::Forever.stored(), None);
        assert_eq!(Retention::secs(5).stored(), Some(5));
        assert_eq!(
            Retention::For(Duration::from_millis(1500)).stored(),
            Some(2)
        );
        assert_eq!(Retention::from_stored(None), Retention::Forever);
        assert_eq!(Retention::from_stored(Some(0)), Retention::Forever);
        assert_eq!(Retention::from_stored(Some(-3)), Retention::Forever);
        assert_eq!(Retention::from_stored(Some(86_400)), Retention::days(1));
    }

    #[test]
    fn bad_retentions_are_refused_with_the_way_out() {
        for bad in [
            Retention::For(Duration::ZERO),
            Retention::For(Duration::from_millis(999)),
            Retention::For(MAX_RETENTION + Duration::from_secs(1)),
            Retention::days(u64::MAX),
        ] {
            let e = validate_retention("archive_retention", bad).unwrap_err();
            assert!(
                matches!(e, Error::Validation { field: "archive_retention", ref message }
                    if message.contains("forever")),
                "{e}"
            );
        }
        for good in [
            Retention::Forever,
            Retention::secs(1),
            Retention::For(MAX_RETENTION),
        ] {
            validate_retention("dead_retention", good).unwrap();
        }
        validate_older_than(Duration::ZERO).unwrap();
        assert!(validate_older_than(MAX_RETENTION * 2).is_err());
        assert!(validate_prune_interval(Duration::ZERO).is_err());
        assert!(validate_prune_interval(Duration::from_secs(86_401)).is_err());
        validate_prune_interval(DEFAULT_PRUNE_INTERVAL).unwrap();
    }
}
