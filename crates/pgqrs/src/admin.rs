//! Administration: schema, queues, metrics, dead letters, workers.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::retention::{
    prune_table, validate_older_than, validate_retention, workflow_retention, Prunable, Pruned,
    QueueOptions, Retention, DEFAULT_ARCHIVE_RETENTION, DEFAULT_DEAD_RETENTION,
    WORKFLOW_RETENTION_SETTING,
};
use crate::store::{validate_queue_name, NewQueue, Store};
use crate::types::*;
use crate::types::{run_job_payload, RUN_JOB_ATTEMPTS};
use crate::workflow::{to_json, Workflow};

/// Administrative operations on a store. Get one with [`admin`].
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a> {
    pub(crate) store: &'a Store,
}

/// Administrative operations on `store`.
pub fn admin(store: &Store) -> Admin<'_> {
    Admin { store }
}

impl<'a> Admin<'a> {
    /// Create or upgrade pgqrs's tables. Idempotent: safe to call at every start. Refuses a
    /// database whose schema is newer than this version of pgqrs.
    pub async fn install(self) -> Result<()> {
        self.store.backend_impl().install().await
    }

    /// Apply migrations up to `version` only. For tests of the upgrade path; use
    /// [`install`](Self::install) otherwise.
    #[doc(hidden)]
    pub async fn install_up_to(self, version: i64) -> Result<()> {
        self.store.backend_impl().install_up_to(version).await
    }

    /// Check that every table and index pgqrs needs exists at the current version.
    pub async fn verify(self) -> Result<()> {
        self.store.backend_impl().verify().await
    }

    /// The installed schema version, or `None` before [`install`](Self::install).
    pub async fn schema_version(self) -> Result<Option<i64>> {
        self.store.backend_impl().schema_version().await
    }

    /// Create a queue. Names: letters, digits, `_` and `-`, 1 to 48 characters. Its archive
    /// is kept [7 days](crate::DEFAULT_ARCHIVE_RETENTION) and its dead letters
    /// [30 days](crate::DEFAULT_DEAD_RETENTION); see [`create_queue_with`](Self::create_queue_with).
    pub async fn create_queue(self, name: &str) -> Result<QueueInfo> {
        self.create_queue_with(name, QueueOptions::default()).await
    }

    /// Create a queue with its settings; those not given take their defaults.
    ///
    /// ```no_run
    /// # async fn run(store: &pgqrs::Store) -> pgqrs::Result<()> {
    /// use pgqrs::{QueueOptions, Retention};
    /// pgqrs::admin(store)
    ///     .create_queue_with(
    ///         "emails",
    ///         QueueOptions::new()
    ///             .archive_retention(Retention::days(1))
    ///             .dead_retention(Retention::Forever),
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_queue_with(self, name: &str, options: QueueOptions) -> Result<QueueInfo> {
        validate_queue_name(name)?;
        options.validate()?;
        self.store
            .backend_impl()
            .create_queue(NewQueue {
                name,
                archive_retention: options
                    .archive_retention
                    .unwrap_or(DEFAULT_ARCHIVE_RETENTION),
                dead_retention: options.dead_retention.unwrap_or(DEFAULT_DEAD_RETENTION),
                limits: options.limits,
            })
            .await
            .inspect(|q| self.store.backend_impl().queue_ids().learn(q))
    }

    /// Change how long a queue keeps its archive and dead letters (those not given stay as
    /// they are); running workers apply it at their next prune. Returns the queue.
    pub async fn set_queue_retention(
        self,
        name: &str,
        archive_retention: Option<Retention>,
        dead_retention: Option<Retention>,
    ) -> Result<QueueInfo> {
        validate_queue_name(name)?;
        QueueOptions {
            archive_retention,
            dead_retention,
            ..QueueOptions::default()
        }
        .validate()?;
        self.store
            .backend_impl()
            .set_queue_retention(name, archive_retention, dead_retention)
            .await
    }

    /// Replace a queue's concurrency and rate limits as a whole (`QueueLimits::new()`: no
    /// limits). The next claim of every worker of this store applies them; other processes
    /// notice within [`LIMITS_REFRESH`](crate::LIMITS_REFRESH). Leases held beyond a lowered
    /// limit are not taken back: claims wait until the count is under it. Returns the queue.
    ///
    /// ```no_run
    /// # async fn run(store: &pgqrs::Store) -> pgqrs::Result<()> {
    /// use pgqrs::{QueueLimits, RateLimit};
    /// pgqrs::admin(store)
    ///     .set_queue_limits("emails", QueueLimits::new().rate(RateLimit::per_second(50)))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_queue_limits(
        self,
        name: &str,
        limits: crate::QueueLimits,
    ) -> Result<QueueInfo> {
        validate_queue_name(name)?;
        limits.validate()?;
        let q = self
            .store
            .backend_impl()
            .set_queue_limits(name, limits)
            .await?;
        self.store.backend_impl().queue_ids().learn(&q);
        Ok(q)
    }

    /// How long finished workflow runs (succeeded, failed or cancelled) are kept, for the
    /// whole store ([`DEFAULT_WORKFLOW_RETENTION`](crate::DEFAULT_WORKFLOW_RETENTION) until
    /// set).
    pub async fn workflow_retention(self) -> Result<Retention> {
        workflow_retention(self.store.backend_impl()).await
    }

    /// Set how long finished workflow runs are kept (counted from when they finished), with
    /// their steps; running workers of every queue apply it at their next prune.
    pub async fn set_workflow_retention(self, retention: Retention) -> Result<()> {
        validate_retention("workflow_retention", retention)?;
        self.store
            .backend_impl()
            .set_setting(WORKFLOW_RETENTION_SETTING, retention.stored())
            .await
    }

    /// Delete now what is past its retention: the archive and dead letters of `queue` (every
    /// queue when `None`), and, when `queue` is `None`, finished workflow runs. `older_than`
    /// replaces the retentions: everything finished more than that long ago goes, whatever
    /// the settings (`Duration::ZERO`: everything finished until now). Deletes in statements
    /// of 1,000 rows, oldest first, until nothing is left; returns how many rows went from
    /// each table.
    pub async fn prune(
        self,
        queue: Option<&str>,
        older_than: Option<std::time::Duration>,
    ) -> Result<Pruned> {
        if let Some(q) = queue {
            validate_queue_name(q)?;
        }
        if let Some(d) = older_than {
            validate_older_than(d)?;
        }
        let backend = self.store.backend_impl();
        let queues = match queue {
            Some(q) => vec![backend.get_queue(q).await?],
            None => backend.list_queues().await?,
        };
        let mut pruned = Pruned::default();
        for q in queues {
            for (what, retention) in [
                (Prunable::Archive, q.archive_retention),
                (Prunable::Dead, q.dead_retention),
            ] {
                let Some(age) = older_than.or(retention.duration()) else {
                    continue;
                };
                let (n, _) = prune_table(backend, what, q.id, age, None, None).await?;
                match what {
                    Prunable::Archive => pruned.archived += n,
                    _ => pruned.dead += n,
                }
            }
        }
        if queue.is_none() {
            let age = match older_than {
                Some(d) => Some(d),
                None => workflow_retention(backend).await?.duration(),
            };
            if let Some(age) = age {
                let (n, _) =
                    prune_table(backend, Prunable::WorkflowRuns, 0, age, None, None).await?;
                pruned.workflow_runs = n;
            }
        }
        Ok(pruned)
    }

    /// Delete a queue with its jobs, archive and dead letters. Refused with
    /// [`Error::QueueInUse`] while jobs are leased, unless `force` is true.
    pub async fn delete_queue(self, name: &str, force: bool) -> Result<()> {
        validate_queue_name(name)?;
        self.store.backend_impl().delete_queue(name, force).await
    }

    /// Delete every pending job (ready, delayed and leased) of a queue; returns how many.
    /// The archive and dead letters are kept.
    pub async fn purge_queue(self, name: &str) -> Result<u64> {
        validate_queue_name(name)?;
        self.store.backend_impl().purge_queue(name).await
    }

    /// All queues, by name.
    pub async fn list_queues(self) -> Result<Vec<QueueInfo>> {
        self.store.backend_impl().list_queues().await
    }

    /// Counts of ready, delayed, leased, archived and dead jobs, and the oldest ready job's age.
    pub async fn queue_metrics(self, name: &str) -> Result<QueueMetrics> {
        validate_queue_name(name)?;
        self.store.backend_impl().queue_metrics(name).await
    }

    /// Dead letters of a queue, oldest first, at most `limit`.
    pub async fn dead_letters(self, queue: &str, limit: i64) -> Result<Vec<DeadLetter>> {
        validate_queue_name(queue)?;
        check_limit(limit)?;
        self.store.backend_impl().dead_letters(queue, limit).await
    }

    /// Put the given dead letters back in their queue, ready now, with their attempt count
    /// reset. Returns how many were re-queued (ids that are not dead letters of this queue are
    /// skipped).
    pub async fn requeue_dead(self, queue: &str, ids: &[i64]) -> Result<u64> {
        validate_queue_name(queue)?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.store
            .backend_impl()
            .requeue_dead(queue, Some(ids))
            .await
    }

    /// Put every dead letter of the queue back, ready now. Returns how many.
    pub async fn requeue_all_dead(self, queue: &str) -> Result<u64> {
        validate_queue_name(queue)?;
        self.store.backend_impl().requeue_dead(queue, None).await
    }

    /// Completed jobs kept in the archive, newest first, at most `limit`.
    pub async fn archived_jobs(self, queue: &str, limit: i64) -> Result<Vec<ArchivedJob>> {
        validate_queue_name(queue)?;
        check_limit(limit)?;
        self.store.backend_impl().archived_jobs(queue, limit).await
    }

    /// Registered workers, newest first. See [`WorkerInfo::is_healthy`].
    pub async fn list_workers(self) -> Result<Vec<WorkerInfo>> {
        self.store.backend_impl().list_workers().await
    }
}

impl<'a> Admin<'a> {
    /// Create a workflow run (status `pending`) and return its context. Pass the context to
    /// the workflow function to execute it.
    pub async fn create_workflow<T: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &T,
    ) -> Result<Workflow> {
        validate_workflow_name(name)?;
        let input = to_json(input, "workflow input")?;
        let max = self.store.config().max_payload_bytes;
        if input.len() > max {
            return Err(Error::PayloadTooLarge {
                size: input.len(),
                max,
            });
        }
        let run = self.store.backend_impl().create_run(name, input).await?;
        Ok(Workflow::from_run(self.store, &run))
    }

    /// The context of an existing run: to resume it after a crash, or to query it.
    pub async fn get_workflow(self, id: i64) -> Result<Workflow> {
        let run = self.store.backend_impl().get_run(id).await?;
        Ok(Workflow::from_run(self.store, &run))
    }

    /// Create a workflow run and ask for it on `queue`: a worker built with
    /// [`WorkflowRegistry::worker`](crate::WorkflowRegistry::worker) will execute it.
    pub async fn enqueue_workflow<T: Serialize + ?Sized>(
        &self,
        queue: &str,
        name: &str,
        input: &T,
    ) -> Result<WorkflowRun> {
        validate_queue_name(queue)?;
        validate_workflow_name(name)?;
        self.store.backend_impl().get_queue(queue).await?;
        let input = to_json(input, "workflow input")?;
        let max = self.store.config().max_payload_bytes;
        if input.len() > max {
            return Err(Error::PayloadTooLarge {
                size: input.len(),
                max,
            });
        }
        let run = self.store.backend_impl().create_run(name, input).await?;
        // A run request may be redelivered many times while another executor holds the run.
        crate::enqueue()
            .message(&run_job_payload(run.id))
            .max_attempts(RUN_JOB_ATTEMPTS)
            .to(queue)
            .execute(self.store)
            .await?;
        Ok(run)
    }

    /// A run as stored now.
    pub async fn workflow_run(self, id: i64) -> Result<WorkflowRun> {
        self.store.backend_impl().get_run(id).await
    }

    /// The journaled steps of a run, in order.
    pub async fn workflow_steps(self, id: i64) -> Result<Vec<StepRecord>> {
        self.store.backend_impl().get_run(id).await?;
        self.store.backend_impl().list_steps(id).await
    }

    /// Runs, oldest first, optionally only those with `status`, at most `limit`. Runs whose
    /// executor died show as `running` with [`WorkflowRun::lease_expired`] true.
    pub async fn list_workflows(
        &self,
        status: Option<RunStatus>,
        limit: i64,
    ) -> Result<Vec<WorkflowRun>> {
        check_limit(limit)?;
        self.store.backend_impl().list_runs(status, limit).await
    }

    /// Cancel a run: it starts no new step and ends `cancelled`. Returns `false` if it had
    /// already finished.
    pub async fn cancel_workflow(self, id: i64) -> Result<bool> {
        self.store.backend_impl().get_run(id).await?;
        self.store.backend_impl().cancel_run(id).await
    }
}

fn validate_workflow_name(name: &str) -> Result<()> {
    crate::store::validate_name("workflow name", name)
}

fn check_limit(limit: i64) -> Result<()> {
    if limit <= 0 {
        return Err(Error::validation(
            "limit",
            format!("must be at least 1, got {limit}"),
        ));
    }
    Ok(())
}
