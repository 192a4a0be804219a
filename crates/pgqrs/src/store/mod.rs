//! The store: one internal trait of domain operations ([`Backend`]), the types its operations
//! take and return, and the [`Store`] handle users hold.
//!
//! Core logic (producers, consumers, workers, workflows) only calls [`Backend`] methods; it
//! never sees SQL. Each backend module keeps its SQL (`queries.rs`) and its numbered migrations
//! (`migrations/`) next to it: `postgres/` and `sqlite/` (one backend for the SQLite dialect,
//! over two engines: sqlx's SQLite and Turso). Rows are decoded once for all of them
//! (`decode.rs`); `connect.rs` builds a backend from a configuration. The trait is internal and
//! may change freely between releases.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::job_state::{Job, JobState};
use crate::types::*;
use crate::types::{Fired, Prunable, Retention, ScheduleInfo, SCHEDULE_WAKE};

mod connect;
mod decode;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "turso"))]
mod sqlite;

pub use connect::connect_with;

/// Largest queue name length.
pub(crate) const MAX_QUEUE_NAME: usize = 48;

/// What to do with jobs whose handler succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Move to the archive.
    Archive,
    /// Delete outright.
    Delete,
}

/// When newly enqueued jobs become claimable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Visibility {
    /// At once.
    Now,
    /// After a delay, measured from the database's clock.
    After(Duration),
    /// At an absolute time.
    At(DateTime<Utc>),
}

/// A failed attempt to record.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub lease: Lease,
    pub error: String,
    /// `Some(d)`: claimable again `d` from now (database clock). `None`: the job becomes a
    /// dead letter.
    pub retry_in: Option<Duration>,
}

/// Jobs to enqueue into one queue, all with the same options ([`Backend::enqueue_jobs`]).
///
/// A new job option (a priority, a unique key, …) is one field here, bound by each backend's
/// enqueue statement.
#[derive(Debug, Clone)]
pub(crate) struct EnqueueParams<'a> {
    pub queue: &'a str,
    /// One JSON text per job, in order; never empty.
    pub payloads: Vec<String>,
    pub visibility: Visibility,
    pub max_attempts: i32,
    /// Claims take higher priorities first.
    pub priority: i16,
    /// The handler timeout of each job, in whole milliseconds; `None`: no timeout of its own.
    pub timeout_ms: Option<i64>,
    /// The group of every job (see [`QueueLimits::group_concurrency`](crate::QueueLimits)).
    pub group: Option<String>,
}

/// A caller's own sqlx connection, for an enqueue that runs in the caller's transaction
/// ([`EnqueueBuilder::execute_in`](crate::EnqueueBuilder::execute_in)). Public only to be
/// named by the sealed [`SqlxConnection`](crate::SqlxConnection) trait; not reachable by users.
#[derive(Debug)]
pub enum Caller<'a> {
    /// A PostgreSQL connection (or the connection of a transaction on one).
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
    /// A SQLite connection (or the connection of a transaction on one).
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
    /// Never made: keeps the lifetime used in builds without sqlx's drivers.
    #[doc(hidden)]
    _Unused(
        std::convert::Infallible,
        std::marker::PhantomData<&'a mut ()>,
    ),
}

impl Caller<'_> {
    /// The backend this connection speaks to.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "postgres")]
            Caller::Postgres(_) => BackendKind::Postgres,
            #[cfg(feature = "sqlite")]
            Caller::Sqlite(_) => BackendKind::Sqlite,
            Caller::_Unused(never, _) => match *never {},
        }
    }
}

/// Where an enqueue runs: on the store's own connections (committed when it returns, idle
/// workers of this process woken at once), or on a caller's connection, inside whatever
/// transaction it is in (the backend wakes nobody itself: the commit does, see
/// [`EnqueueBuilder::execute_in`](crate::EnqueueBuilder::execute_in)). The core checks that
/// a caller's connection is of the store's backend before a backend sees it.
#[derive(Debug)]
pub(crate) enum On<'a> {
    Pool,
    Caller(Caller<'a>),
}

/// A queue to create ([`Backend::create_queue`]), its settings resolved by the core.
#[derive(Debug, Clone)]
pub(crate) struct NewQueue<'a> {
    pub name: &'a str,
    pub archive_retention: Retention,
    pub dead_retention: Retention,
    pub limits: crate::QueueLimits,
}

/// The keys of a keyed enqueue ([`Backend::enqueue_unique`]): one key (or none) per payload
/// of its [`EnqueueParams`], in order, no key twice (the core folds a batch's repeats).
#[derive(Debug, Clone)]
pub(crate) struct UniqueParams<'a> {
    pub keys: &'a [Option<String>],
    /// A finished (archived) job also holds its key for this long after it finished.
    pub window: Option<Duration>,
    /// Write nothing unless every keyed job is new (the caller will raise DuplicateJob).
    pub only_new: bool,
}

/// Where one job of a keyed enqueue went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// A new job, with this id.
    New(i64),
    /// The key is held by this job (waiting, running, or archived within the window).
    Existing(i64),
    /// Not written: `only_new` was asked and another job's key was taken.
    NotWritten,
}

/// A workflow run's outcome ([`Backend::finish_run`]).
#[derive(Debug, Clone)]
pub(crate) struct FinishRunParams<'a> {
    pub id: i64,
    /// The executor that must still hold the run.
    pub owner: &'a str,
    pub status: RunStatus,
    /// JSON text.
    pub output: Option<String>,
    pub error: Option<String>,
}

/// Parameters of [`Backend::claim_jobs`].
#[derive(Debug, Clone)]
pub(crate) struct ClaimParams<'a> {
    pub queue: &'a str,
    pub limit: usize,
    pub lease: Duration,
    pub worker_id: Option<i64>,
}

/// What a claim got, and which limit (if any) held it back.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    pub jobs: Vec<Message>,
    pub throttle: crate::flow::Throttle,
}

impl From<Vec<Message>> for Claim {
    fn from(jobs: Vec<Message>) -> Self {
        Claim {
            jobs,
            throttle: crate::flow::Throttle::None,
        }
    }
}

/// A worker registering itself.
#[derive(Debug, Clone)]
pub(crate) struct NewWorker {
    pub hostname: String,
    pub pid: i64,
    pub queue: String,
}

/// A step outcome to journal.
#[derive(Debug, Clone)]
pub(crate) struct NewStep<'a> {
    pub run_id: i64,
    pub position: i32,
    pub name: &'a str,
    pub status: StepStatus,
    /// JSON text.
    pub output: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    pub retry_in: Option<Duration>,
}

/// A schedule to create ([`Backend::create_schedule`]), checked and resolved by the core.
#[derive(Debug, Clone)]
pub(crate) struct NewSchedule<'a> {
    pub name: &'a str,
    pub queue: &'a str,
    /// One of `cron` (with `timezone`) and `every_ms`.
    pub cron: Option<&'a str>,
    pub every_ms: Option<i64>,
    pub timezone: Option<&'a str>,
    /// JSON text.
    pub payload: &'a str,
    pub workflow: Option<&'a str>,
    pub priority: i16,
    pub max_attempts: Option<i32>,
    pub catch_up: i32,
    /// The first tick.
    pub next_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// One firing of a schedule ([`Backend::fire_schedule`]): in one transaction, move the
/// schedule to `next_at` if it still expects `expected_next_at` (and is not paused), then
/// make one job per tick (a workflow run and its run request, for a workflow schedule).
#[derive(Debug, Clone)]
pub(crate) struct FireParams<'a> {
    pub id: i64,
    pub queue: &'a str,
    /// `None`: fire regardless of the schedule's next tick and pause ("fire now").
    pub expected_next_at: Option<DateTime<Utc>>,
    /// `None`: unchanged.
    pub next_at: Option<DateTime<Utc>>,
    /// One job per tick, oldest first, each visible from its tick (or the database's now, if
    /// earlier). May be empty (the schedule only moves on).
    pub ticks: &'a [DateTime<Utc>],
    /// JSON text: the job's payload, or the run's input.
    pub payload: &'a str,
    pub workflow: Option<&'a str>,
    pub priority: i16,
    pub max_attempts: i32,
    /// `None`: unchanged.
    pub last_tick_at: Option<DateTime<Utc>>,
}

/// Who holds a workflow run, as a cheap read (no write, no commit).
#[derive(Debug, Clone)]
pub(crate) struct RunLease {
    pub status: RunStatus,
    pub owner: Option<String>,
    /// The owner's lease has not expired.
    pub lease_valid: bool,
}

/// The domain operations every backend provides.
///
/// Batch operations take and return slices in the same order; a `false` in a returned vector
/// means "that job's lease was lost or it no longer exists; nothing changed for it".
#[async_trait]
pub(crate) trait Backend: JobAdmin + Send + Sync + 'static {
    fn config(&self) -> &Config;
    /// This store's cache of queue ids.
    fn queue_ids(&self) -> &QueueIds;

    // schema
    /// Apply migrations up to `version` only (tests of the upgrade path).
    async fn install_up_to(&self, version: i64) -> Result<()>;
    async fn install(&self) -> Result<()> {
        self.install_up_to(i64::MAX).await
    }
    async fn verify(&self) -> Result<()>;
    async fn schema_version(&self) -> Result<Option<i64>>;
    async fn close(&self);

    // queues
    async fn create_queue(&self, q: NewQueue<'_>) -> Result<QueueInfo>;
    /// Replace the queue's limits (and start its rate window afresh); the queue as it is
    /// then, or [`Error::QueueNotFound`].
    async fn set_queue_limits(&self, name: &str, limits: crate::QueueLimits) -> Result<QueueInfo>;
    /// Change the retention settings given (`None`: unchanged); the queue as it is then, or
    /// [`Error::QueueNotFound`].
    async fn set_queue_retention(
        &self,
        name: &str,
        archive: Option<Retention>,
        dead: Option<Retention>,
    ) -> Result<QueueInfo>;
    /// The queue, or [`Error::QueueNotFound`].
    async fn get_queue(&self, name: &str) -> Result<QueueInfo>;
    async fn delete_queue(&self, name: &str, force: bool) -> Result<()>;
    async fn purge_queue(&self, name: &str) -> Result<u64>;
    async fn list_queues(&self) -> Result<Vec<QueueInfo>>;
    async fn queue_metrics(&self, name: &str) -> Result<QueueMetrics>;
    /// The queue's id, from the cache or the database.
    async fn queue_id(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.queue_ids().get(name) {
            return Ok(id);
        }
        let q = self.get_queue(name).await?;
        self.queue_ids().learn(&q);
        Ok(q.id)
    }

    // jobs
    /// Insert the jobs, on `on` (see [`On`]); their ids, in ascending order.
    async fn enqueue_jobs(&self, p: EnqueueParams<'_>, on: On<'_>) -> Result<Vec<i64>>;
    /// Insert the jobs whose key no job of the queue holds (see [`UniqueParams`]), on `on`;
    /// where each went, in order. Race-free: concurrent enqueues of one key make one job.
    /// Nothing of a batch stays in a caller's transaction when it fails or, with
    /// `only_new`, when one of its keys is taken.
    async fn enqueue_unique(
        &self,
        p: EnqueueParams<'_>,
        u: UniqueParams<'_>,
        on: On<'_>,
    ) -> Result<Vec<Placed>>;
    /// Claim from the queue with this id: [`claim_jobs`](Self::claim_jobs) resolves the name.
    /// The plain claim of a queue without limits.
    async fn claim_in(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Vec<Message>>;
    /// Claim from a queue with limits (see `flow.rs`): serialized per queue, within what the
    /// limits (read in the same transaction) leave.
    async fn claim_limited(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Claim>;
    /// Claim up to `p.limit` ready jobs of `p.queue`, in id order (see [`QueueIds::claim`]),
    /// through the limited path when the queue has limits.
    async fn claim_jobs(&self, p: ClaimParams<'_>) -> Result<Claim> {
        let p = &p;
        self.queue_ids()
            .claim(
                p.queue,
                || self.get_queue(p.queue),
                |id, limited| async move {
                    if limited {
                        self.claim_limited(id, p).await
                    } else {
                        Ok(self.claim_in(id, p).await?.into())
                    }
                },
            )
            .await
    }
    /// Leases of `queue` ended: if it has limits, wake its idle workers (this process's at
    /// once; other processes' through the backend's notifications, if it has them).
    fn capacity_freed(&self, queue: &str) {
        if self.queue_ids().limited(queue) {
            self.wake_queue(queue);
        }
    }
    /// Wake the idle workers of `queue` (see [`capacity_freed`](Self::capacity_freed)).
    fn wake_queue(&self, queue: &str);
    async fn complete_jobs(&self, leases: &[Lease], how: Completion) -> Result<Vec<bool>>;
    async fn fail_jobs(&self, failures: &[Failure]) -> Result<Vec<bool>>;
    async fn extend_leases(&self, leases: &[Lease], by: Duration) -> Result<Vec<bool>>;
    async fn release_jobs(&self, leases: &[Lease], delay: Duration) -> Result<Vec<bool>>;
    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<DeadLetter>>;
    async fn requeue_dead(&self, queue: &str, ids: Option<&[i64]>) -> Result<u64>;
    async fn archived_jobs(&self, queue: &str, limit: i64) -> Result<Vec<ArchivedJob>>;
    /// Dead-letter jobs whose final attempt's lease expired (their consumer died).
    async fn rescue_expired(&self, queue: &str) -> Result<u64>;

    // retention
    /// Delete up to `limit` rows of `what` older than `older_than` (by the database's clock;
    /// the archive and dead letters of the queue `queue_id`, which finished runs ignore), the
    /// oldest first, through the index that orders them by age; how many. Concurrent calls
    /// never wait for one another's rows.
    async fn prune_batch(
        &self,
        what: Prunable,
        queue_id: i64,
        older_than: Duration,
        limit: i64,
    ) -> Result<u64>;
    /// A store-wide setting: `None` when it was never set, `Some(None)` when set to NULL.
    async fn get_setting(&self, name: &str) -> Result<Option<Option<i64>>>;
    async fn set_setting(&self, name: &str, value: Option<i64>) -> Result<()>;

    // workers
    async fn register_worker(&self, w: NewWorker) -> Result<i64>;
    async fn worker_heartbeat(&self, id: i64, status: WorkerStatus) -> Result<()>;
    async fn list_workers(&self) -> Result<Vec<WorkerInfo>>;

    // workflows
    async fn create_run(&self, name: &str, input: String) -> Result<WorkflowRun>;
    async fn get_run(&self, id: i64) -> Result<WorkflowRun>;
    /// Take ownership of a pending run, a running run whose lease expired, or one this owner
    /// already holds. `None` when it cannot be acquired.
    async fn acquire_run(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<WorkflowRun>>;
    /// Who holds the run (a read: cheaper than [`renew_run`](Self::renew_run)).
    async fn run_lease(&self, id: i64) -> Result<RunLease>;
    /// Extend the owner's lease; `false` if the run is no longer running under this owner.
    async fn renew_run(&self, id: i64, owner: &str, lease: Duration) -> Result<bool>;
    async fn list_steps(&self, run_id: i64) -> Result<Vec<StepRecord>>;
    /// Journal a step outcome; `false` if the run is no longer running under this owner.
    async fn record_step(&self, owner: &str, step: NewStep<'_>) -> Result<bool>;
    /// Record the run's outcome; `false` if it is no longer running under this owner.
    async fn finish_run(&self, p: FinishRunParams<'_>) -> Result<bool>;
    async fn cancel_run(&self, id: i64) -> Result<bool>;
    async fn list_runs(&self, status: Option<RunStatus>, limit: i64) -> Result<Vec<WorkflowRun>>;

    // schedules
    /// [`Error::ScheduleAlreadyExists`] when the name is taken.
    async fn create_schedule(&self, s: NewSchedule<'_>) -> Result<ScheduleInfo>;
    /// The schedule, or [`Error::ScheduleNotFound`].
    async fn get_schedule(&self, name: &str) -> Result<ScheduleInfo>;
    /// Every schedule, by name.
    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>>;
    /// The first `limit` schedules not paused, by next tick.
    async fn upcoming_schedules(&self, limit: i64) -> Result<Vec<ScheduleInfo>>;
    /// Pause or resume (`next_at`: the tick to resume from); the schedule as changed, or
    /// [`Error::ScheduleNotFound`]. Wakes the schedule tickers.
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_at: Option<DateTime<Utc>>,
    ) -> Result<ScheduleInfo>;
    /// Whether there was one.
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
    /// See [`FireParams`]. `None` when the schedule is gone, paused, or no longer expects
    /// `expected_next_at` (another firer took the tick): nothing was written then.
    /// [`Error::QueueNotFound`] (nothing written) when its queue is gone.
    async fn fire_schedule(&self, f: FireParams<'_>) -> Result<Option<Fired>>;

    /// Wait until jobs may have arrived in `queue` (an enqueue through this process, another
    /// connection's commit, a PostgreSQL NOTIFY), or `timeout` passes.
    async fn wait_for_jobs(&self, queue: &str, timeout: Duration);
}

/// Where a page of [`JobAdmin::list_jobs`] starts: after the job with this key, in the
/// state's order (see [`Admin::list_jobs`](crate::Admin::list_jobs)). The first page starts
/// from a key before every job (the inspection API makes it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum JobKey {
    /// Ready, delayed, leased: claim order, `priority` descending, then `visible_at`, `id`.
    Pending {
        priority: i32,
        visible_at: DateTime<Utc>,
        id: i64,
    },
    /// Archived: `archived_at` descending, then `id` descending.
    Archived { at: DateTime<Utc>, id: i64 },
    /// Dead: `id` ascending.
    Dead { id: i64 },
}

/// Parameters of [`JobAdmin::list_jobs`].
#[derive(Debug, Clone)]
pub(crate) struct ListJobsParams<'a> {
    pub queue: &'a str,
    pub state: JobState,
    /// The key matches `state` (the core checks it).
    pub after: JobKey,
    /// How many rows to return at most.
    pub fetch: i64,
}

/// Inspecting and acting on single jobs (the inspection API, `inspect.rs`), part of every [`Backend`].
///
/// The states are those of [`Backend::queue_metrics`], to the letter. The actions change a
/// job only while it is waiting (ready or delayed), in one statement whose condition says
/// so, and return `None` when no waiting job has the id at that moment.
#[async_trait]
pub(crate) trait JobAdmin: Send + Sync {
    /// The job in the job table, the archive or the dead letters: one statement.
    async fn get_job(&self, id: i64) -> Result<Option<Job>>;
    /// Jobs of `p.queue` in `p.state` after `p.after`, in the state's order, at most
    /// `p.fetch`. [`Error::QueueNotFound`] for an unknown queue.
    async fn list_jobs(&self, p: ListJobsParams<'_>) -> Result<Vec<Job>>;
    /// Delete the job if it is waiting; the job as it was.
    async fn cancel_job(&self, id: i64) -> Result<Option<Job>>;
    /// Make the job claimable at `at` if it is waiting (clearing an expired lease); the job
    /// as changed. Wakes idle workers when it is ready now.
    async fn reschedule_job(&self, id: i64, at: Visibility) -> Result<Option<Job>>;
    /// Change the job's priority if it is waiting; the job as changed.
    async fn set_job_priority(&self, id: i64, priority: i16) -> Result<Option<Job>>;
}

/// A connection to a pgqrs database: cheap to clone, safe to share across tasks.
///
/// Create one with [`connect`](crate::connect).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend().name())
            .field("dsn", &self.inner.config().redacted_dsn())
            .finish()
    }
}

impl Store {
    /// Which backend this store talks to.
    pub fn backend(&self) -> BackendKind {
        self.inner.config().kind
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        self.inner.config()
    }

    /// Close the pool. Operations after this fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.inner.close().await
    }

    pub(crate) fn backend_impl(&self) -> &dyn Backend {
        &*self.inner
    }
}

/// In-process wake-ups: an enqueue wakes this process's idle workers of that queue at once.
/// Other processes notice new jobs by polling (or, on PostgreSQL, by LISTEN/NOTIFY).
#[derive(Default)]
pub(crate) struct Wakers {
    by_queue: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl Wakers {
    fn get(&self, queue: &str) -> Arc<tokio::sync::Notify> {
        let mut m = self.by_queue.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(queue.to_string()).or_default().clone()
    }

    /// Wake every worker of `queue` waiting now, and leave a permit for the next one to wait,
    /// so that a worker between an empty claim and its wait does not miss the news.
    pub(crate) fn wake(&self, queue: &str) {
        let n = self
            .by_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .cloned();
        if let Some(n) = n {
            n.notify_waiters();
            n.notify_one();
        }
    }

    /// Wake every waiting worker of every queue. Not the schedule tickers (their wake-up name
    /// is not a queue name): news of some commit says nothing about the schedules, and a
    /// ticker woken by every commit of a busy SQLite file would read them every few ms.
    pub(crate) fn wake_all(&self) {
        for (name, n) in self
            .by_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if name != SCHEDULE_WAKE {
                n.notify_waiters();
            }
        }
    }

    /// Wait until woken or `timeout` passes.
    pub(crate) async fn wait(&self, queue: &str, timeout: Duration) {
        let n = self.get(queue);
        let _ = tokio::time::timeout(timeout, n.notified()).await;
    }
}

/// Cache of queue name → id, and whether the queue has limits (which claim path it takes).
/// A deleted queue is forgotten by the process that deletes it; other processes find out
/// from the foreign-key error on their next enqueue. Whether a queue has limits is read
/// again after [`LIMITS_REFRESH`](crate::LIMITS_REFRESH) by a claim.
#[derive(Default)]
pub(crate) struct QueueIds(std::sync::RwLock<std::collections::HashMap<String, CachedQueue>>);

#[derive(Clone, Copy)]
pub(crate) struct CachedQueue {
    id: i64,
    limited: bool,
    /// When `limited` was read.
    at: std::time::Instant,
}

impl QueueIds {
    pub(crate) fn get(&self, name: &str) -> Option<i64> {
        self.entry(name).map(|c| c.id)
    }

    fn entry(&self, name: &str) -> Option<CachedQueue> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// Whether the queue had limits when last read.
    pub(crate) fn limited(&self, name: &str) -> bool {
        self.entry(name).is_some_and(|c| c.limited)
    }

    /// Remember a queue as read now.
    pub(crate) fn learn(&self, q: &QueueInfo) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(
            q.name.clone(),
            CachedQueue {
                id: q.id,
                limited: q.limits.any(),
                at: std::time::Instant::now(),
            },
        );
    }

    pub(crate) fn forget(&self, name: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Claim from `queue` through its cached id, by the path its limits say (`claim(id,
    /// limited)`). When nothing is ready, check that the cached id still names the queue:
    /// another store may have deleted it (then the claim fails with
    /// [`Error::QueueNotFound`]) or deleted and re-created it (then the claim is retried with
    /// the new id). The check costs one read, on empty claims only; whether the queue has
    /// limits is read again at most every [`LIMITS_REFRESH`](crate::LIMITS_REFRESH).
    pub(crate) async fn claim<L, LF, C, CF>(
        &self,
        queue: &str,
        lookup: L,
        claim: C,
    ) -> Result<Claim>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Result<QueueInfo>>,
        C: Fn(i64, bool) -> CF,
        CF: std::future::Future<Output = Result<Claim>>,
    {
        let cached = self
            .entry(queue)
            .filter(|c| c.at.elapsed() < crate::flow::LIMITS_REFRESH);
        let (id, limited) = match cached {
            Some(c) => (c.id, c.limited),
            None => {
                let q = lookup().await?;
                self.learn(&q);
                (q.id, q.limits.any())
            }
        };
        let got = claim(id, limited).await?;
        if !got.jobs.is_empty() || cached.is_none() || got.throttle != crate::flow::Throttle::None {
            return Ok(got);
        }
        match lookup().await {
            Ok(fresh) => {
                self.learn(&fresh);
                if fresh.id == id && fresh.limits.any() == limited {
                    Ok(got)
                } else {
                    claim(fresh.id, fresh.limits.any()).await
                }
            }
            Err(e) => {
                self.forget(queue);
                Err(e)
            }
        }
    }
}

/// Turn the ids a statement returned into per-lease flags, in the leases' order.
pub(crate) fn mark(leases: &[Lease], done: impl IntoIterator<Item = i64>) -> Vec<bool> {
    let done: std::collections::HashSet<i64> = done.into_iter().collect();
    leases.iter().map(|l| done.contains(&l.id)).collect()
}

/// The tables every backend's schema has (`verify()` checks them; the names are the same on
/// every backend).
pub(crate) const TABLES: &[&str] = &[
    "pgqrs_schema_version",
    "pgqrs_queues",
    "pgqrs_jobs",
    "pgqrs_archive",
    "pgqrs_dead",
    "pgqrs_workers",
    "pgqrs_workflow_runs",
    "pgqrs_workflow_steps",
    "pgqrs_settings",
    "pgqrs_schedules",
];

/// The indexes every backend's schema has.
pub(crate) const INDEXES: &[&str] = &[
    "pgqrs_jobs_claim",
    "pgqrs_jobs_exhausted",
    "pgqrs_archive_queue",
    "pgqrs_dead_queue",
    "pgqrs_workflow_runs_status",
    "pgqrs_jobs_unique",
    "pgqrs_archive_unique",
    "pgqrs_dead_failed",
    "pgqrs_workflow_runs_finished",
    "pgqrs_jobs_group",
    "pgqrs_schedules_next",
];

/// Text appended to the last error of a job whose final attempt's lease expired.
pub(crate) const EXPIRED_FINAL: &str =
    "lease expired during the final attempt (the consumer stopped or crashed without completing the job)";

/// The migrations that bring a schema at version `current` up to version `up_to` (or the
/// last), or [`Error::SchemaTooNew`] if `current` is newer than the last.
pub(crate) fn pending_migrations(
    all: &'static [(i64, &'static str)],
    current: i64,
    up_to: i64,
) -> Result<impl Iterator<Item = &'static (i64, &'static str)>> {
    let latest = all.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    Ok(all.iter().filter(move |m| m.0 > current && m.0 <= up_to))
}

/// `verify()`'s check of the installed schema version, the same on every backend:
/// `installed` is `None` when there is no version table; `where_` says where pgqrs looked.
pub(crate) fn check_schema_version(
    installed: Option<i64>,
    latest: i64,
    where_: impl FnOnce() -> String,
) -> Result<()> {
    match installed {
        None => Err(Error::SchemaNotInstalled { where_: where_() }),
        Some(v) if v > latest => Err(Error::SchemaTooNew {
            found: v,
            supported: latest,
        }),
        Some(v) if v < latest => Err(Error::SchemaInvalid {
            message: format!(
                "schema is at version {v}, this pgqrs needs {latest}: run install() to upgrade"
            ),
        }),
        Some(_) => Ok(()),
    }
}

/// `verify()`'s verdict on the tables and indexes it did not find (`where_`: " in …" or "").
pub(crate) fn check_missing(missing: &[&str], where_: &str) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::SchemaInvalid {
        message: format!(
            "missing{where_}: {}; run install() to repair",
            missing.join(", ")
        ),
    })
}

/// Check a queue name: letters, digits, `_` and `-`, 1 to 48 characters.
pub(crate) fn validate_queue_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_QUEUE_NAME {
        return Err(Error::validation(
            "queue name",
            format!(
                "{} must be 1 to {MAX_QUEUE_NAME} characters long (got {})",
                crate::error::preview(name),
                name.chars().count()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::validation(
            "queue name",
            format!(
                "{} contains {c:?}; use only letters, digits, '_' and '-'",
                crate::error::preview(name)
            ),
        ));
    }
    Ok(())
}

/// Longest workflow or step name, in bytes.
pub(crate) const MAX_NAME: usize = 200;

/// A workflow or step name: free text (SQL-looking names are stored as they are), 1 to
/// [`MAX_NAME`] bytes, not blank, without control characters (NUL cannot be stored by
/// PostgreSQL, and a newline or tab in a name is a mistake).
pub(crate) fn validate_name(field: &'static str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME {
        return Err(Error::validation(
            field,
            format!(
                "{} must be 1 to {MAX_NAME} bytes and not blank (got {} bytes)",
                crate::error::preview(name),
                name.len()
            ),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::validation(
            field,
            format!(
                "{} contains the control character {c:?}; use printable characters",
                crate::error::preview(name)
            ),
        ));
    }
    Ok(())
}

/// The hostname of this machine, best effort.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_printable_text() {
        for ok in [
            "send-email",
            "'; DROP TABLE x; --",
            "café 中文",
            &"w".repeat(MAX_NAME),
        ] {
            assert!(validate_name("workflow name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "   ",
            "a\0b",
            "tab\there",
            "new\nline",
            &"w".repeat(MAX_NAME + 1),
        ] {
            assert!(
                matches!(
                    validate_name("step name", bad),
                    Err(Error::Validation {
                        field: "step name",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let e = validate_name("workflow name", &"w".repeat(10_000_000)).unwrap_err();
        assert!(e.to_string().len() < 300, "{}", e.to_string().len());
    }
}
