//! The database side of a running worker: registration and heartbeats, the leases it holds
//! (extended at each heartbeat while held), claims ahead of the handlers, idle polling, and
//! batched completions.
//!
//! ```text
//!            next_jobs: claim (adaptive depth), or wait (poll interval, backing off) when idle
//!  database ───────────────────────────────► caller's buffer ──► handlers
//!     ▲                                                             │ complete(outcome)
//!     └──── one statement per flush (every few ms or N jobs) ◄──────┘ completer task
//! ```
//!
//! [`Worker`](crate::Worker) drives a session from a tokio task; language bindings drive one
//! from their own event loop. Either way every number (claim depth, refill threshold, poll
//! interval and its back-off, error back-off, heartbeat, retry policy) lives here, so both
//! loops only hand jobs to handlers and report outcomes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::flow::Throttle;
use crate::handler::Outcome;
use crate::limits::{validate_batch, validate_interval, validate_lease, MAX_BATCH};
use crate::retention::{validate_prune_interval, Pruner, DEFAULT_PRUNE_INTERVAL};
use crate::retry::{failure, RetryPolicy};
use crate::schedule::Ticker;
use crate::store::{
    hostname, validate_queue_name, Backend, Claim, ClaimParams, Completion, Failure, NewWorker,
    Store,
};
use crate::types::{Lease, Message, WorkerStatus};

/// Settings of a [`WorkerSession`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Lease length (default from the store's config).
    pub visibility_timeout: Option<Duration>,
    /// What happens to failed jobs.
    pub retry: RetryPolicy,
    /// Delete instead of archive on success.
    pub delete_on_success: bool,
    /// Completion batching: flush at least this often…
    pub flush_interval: Duration,
    /// …or when this many outcomes are waiting.
    pub flush_max: usize,
    /// Heartbeat and lease-extension interval. `None` (the default): a third of the lease, at
    /// most 5 s. One given must be at most half the lease, or leases could expire between two
    /// extensions; starting the worker fails with a [`Validation`](Error::Validation)
    /// error otherwise.
    pub heartbeat_interval: Option<Duration>,
    /// How long a job claimed ahead may wait for a handler (default 2 s, at most half the
    /// lease). A job still waiting then is given back, attempt and all, for any worker to
    /// claim, and the claim depth falls back to its base: handlers that stall hold only the
    /// jobs they run.
    pub claim_ahead_timeout: Duration,
    /// Jobs to keep claimed ahead of the handlers at first: one round of work
    /// (concurrency × batch size). [`WorkerSession::claim_ahead`] adapts it from there.
    pub claim_ahead: usize,
    /// How often the worker deletes what is past its retention: its queue's archive and dead
    /// letters, and finished workflow runs (default
    /// [`DEFAULT_PRUNE_INTERVAL`](crate::DEFAULT_PRUNE_INTERVAL), a minute; from 10 ms to a
    /// day). See [`Retention`](crate::Retention).
    pub prune_interval: Duration,
    /// The handler timeout of jobs enqueued without one (`None`, the default: no limit);
    /// from 1 ms to 7 days. A handler past its job's timeout is cancelled and the attempt
    /// recorded as failed (see [`EnqueueBuilder::timeout`](crate::EnqueueBuilder::timeout)).
    pub job_timeout: Option<Duration>,
    /// Whether the worker fires the due ticks of the store's schedules (of every queue;
    /// default true). It wakes at each schedule's next tick, and reads the schedules at least
    /// every second to see those other processes create. See
    /// [`Admin::create_schedule`](crate::Admin::create_schedule).
    pub fire_schedules: bool,
}

impl SessionOptions {
    /// Check the lease-related settings, against `lease` (the store's, when
    /// [`visibility_timeout`](Self::visibility_timeout) is not given), and return the lease,
    /// the heartbeat interval and how long a job claimed ahead may wait.
    fn resolve(&self, store_lease: Duration) -> Result<(Duration, Duration, Duration)> {
        self.validate_intervals()?;
        let lease = self.visibility_timeout.unwrap_or(store_lease);
        validate_lease(lease)?;
        let heartbeat = heartbeat_for(lease, self.heartbeat_interval)?;
        // A job claimed ahead is given back before its lease needs extending.
        Ok((lease, heartbeat, self.claim_ahead_timeout.min(lease / 2)))
    }

    /// The checks that do not depend on the lease.
    fn validate_intervals(&self) -> Result<()> {
        for (field, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("flush_interval", Some(self.flush_interval)),
            ("claim_ahead_timeout", Some(self.claim_ahead_timeout)),
        ] {
            if let Some(d) = d {
                validate_interval(field, d)?;
            }
        }
        if self.heartbeat_interval.is_some_and(|h| h.is_zero()) {
            return Err(Error::validation(
                "heartbeat_interval",
                "must be positive, got 0s; leave it unset for a third of the lease",
            ));
        }
        if self.claim_ahead_timeout.is_zero() {
            return Err(Error::validation(
                "claim_ahead_timeout",
                "must be positive, got 0s; leave it unset for the default (2 s)",
            ));
        }
        if let Some(t) = self.job_timeout {
            crate::deadline::validate_timeout("job_timeout", t)?;
        }
        validate_prune_interval(self.prune_interval)
    }

    /// Check what can be checked without the store: everything when
    /// [`visibility_timeout`](Self::visibility_timeout) is given, otherwise what does not
    /// depend on the lease (the rest is checked when the session starts, against the
    /// store's lease).
    pub(crate) fn validate(&self) -> Result<()> {
        match self.visibility_timeout {
            Some(lease) => self.resolve(lease).map(drop),
            None => self.validate_intervals(),
        }
    }
}

impl Default for SessionOptions {
    /// The defaults of every worker: the store's lease, [`RetryPolicy::default`], archive on
    /// success, completions flushed every 2 ms or 500 jobs, a heartbeat every third of the
    /// lease (at most every 5 s), jobs claimed ahead given back after waiting 2 s, a prune
    /// every minute, schedules fired.
    fn default() -> Self {
        SessionOptions {
            visibility_timeout: None,
            retry: RetryPolicy::default(),
            delete_on_success: false,
            flush_interval: Duration::from_millis(2),
            flush_max: 500,
            heartbeat_interval: None,
            claim_ahead_timeout: DEFAULT_CLAIM_AHEAD_TIMEOUT,
            claim_ahead: 2,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
            job_timeout: None,
            fire_schedules: true,
        }
    }
}

/// How a worker runs its handlers, next to its [`SessionOptions`]: the settings its loop
/// reads from the session.
#[derive(Debug, Clone)]
pub(crate) struct LoopSettings {
    /// Idle polling interval; `None`: the store's.
    pub poll_interval: Option<Duration>,
    pub concurrency: usize,
    pub batch_size: usize,
    pub shutdown_grace: Duration,
}

/// Default of [`WorkerBuilder::shutdown_grace`](crate::WorkerBuilder::shutdown_grace).
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            poll_interval: None,
            concurrency: 1,
            batch_size: 1,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// First wait after a claim failed with a transient error (busy, connection lost); it
/// doubles with each further failure, up to [`MAX_ERROR_BACKOFF`].
const ERROR_BACKOFF: Duration = Duration::from_millis(50);
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// An idle worker waits the poll interval, then doubles the wait up to this many times it.
const IDLE_BACKOFF_FACTOR: u32 = 10;

/// How long an idle consumer waits before it looks for jobs again, after `rounds` waits that
/// found nothing: the poll interval, doubling with each round, up to ten times it.
pub fn idle_wait(poll: Duration, rounds: u32) -> Duration {
    let most = poll * IDLE_BACKOFF_FACTOR;
    poll.checked_mul(1u32 << rounds.min(16))
        .map_or(most, |d| d.min(most))
}
/// Shortest poll interval a worker uses.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Shortest heartbeat interval a worker uses; a worker's lease must be at least three times it.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest heartbeat interval a worker derives from its lease.
const MAX_DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Default of [`SessionOptions::claim_ahead_timeout`].
pub(crate) const DEFAULT_CLAIM_AHEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The heartbeat interval of a worker holding leases of `lease`: the one given (at most half
/// the lease), or a third of the lease up to 5 s.
fn heartbeat_for(lease: Duration, given: Option<Duration>) -> Result<Duration> {
    if lease < MIN_HEARTBEAT_INTERVAL * 3 {
        return Err(Error::validation(
            "visibility_timeout",
            format!(
                "a worker's lease must be at least {:?} (three heartbeats of {:?}) so that \
                 heartbeats can extend it, got {lease:?}",
                MIN_HEARTBEAT_INTERVAL * 3,
                MIN_HEARTBEAT_INTERVAL
            ),
        ));
    }
    match given {
        None => Ok((lease / 3).clamp(MIN_HEARTBEAT_INTERVAL, MAX_DEFAULT_HEARTBEAT)),
        Some(h) if h > lease / 2 => Err(Error::validation(
            "heartbeat_interval",
            format!(
                "must be at most half the lease ({lease:?}) or leases expire between two \
                 extensions, got {h:?}; leave it unset (a third of the lease) or lengthen \
                 visibility_timeout"
            ),
        )),
        Some(h) => Ok(h.max(MIN_HEARTBEAT_INTERVAL)),
    }
}

/// What a worker did, returned by [`Worker::run`](crate::Worker::run) and
/// [`WorkerSession::stop`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's registered id.
    pub worker_id: i64,
    /// Messages whose handler returned Ok and whose completion was written.
    pub succeeded: u64,
    /// Failed attempts recorded (retried later or dead-lettered).
    pub failed: u64,
    /// Of those, how many became dead letters.
    pub dead: u64,
    /// Completions refused because the lease had been lost.
    pub lease_lost: u64,
    /// Jobs given back unhandled: at shutdown, or claimed ahead and left waiting longer than
    /// [`SessionOptions::claim_ahead_timeout`].
    pub released: u64,
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    lease_lost: AtomicU64,
    released: AtomicU64,
    /// Of `released`, the jobs claimed ahead that waited too long for a handler.
    given_back: AtomicU64,
}

/// A lease this worker holds.
#[derive(Debug, Clone, Copy)]
struct HeldJob {
    token: i64,
    /// When the lease runs out unless extended.
    expires: Instant,
    /// When it was claimed.
    claimed: Instant,
    /// Whether a handler got it ([`WorkerSession::begin`]); until then it waits in a buffer.
    started: bool,
}

/// Leases this worker holds, by job id.
type Held = Arc<Mutex<HashMap<i64, HeldJob>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Done {
    lease: Lease,
    attempts: i32,
    max_attempts: i32,
    outcome: Outcome,
}

/// Most jobs a worker keeps claimed ahead of its handlers, however fast they are.
const MAX_CLAIM_AHEAD: usize = 1_000;

/// How many jobs a worker keeps claimed ahead of its handlers.
///
/// A claim is one round trip, so a worker whose handlers are quicker than that round trip
/// would idle between claims if it only claimed for its free slots. The depth starts at one
/// round of work (concurrency × batch size), doubles (up to 16 times that) whenever the
/// handlers sat idle waiting for a claim while the queue had more, and falls back by a
/// quarter after each claim they did not wait for. Slow handlers so keep few jobs claimed
/// (other workers get the rest) and quick ones get deep claims. Claimed jobs waiting for a
/// handler are held by the worker's heartbeat like running ones.
#[derive(Debug, Clone)]
struct ClaimDepth {
    base: usize,
    max: usize,
    depth: usize,
    /// The last claim: how many it asked for and how many it got.
    last: Option<(usize, usize)>,
}

impl ClaimDepth {
    fn new(base: usize) -> Self {
        let base = base.clamp(2, MAX_BATCH);
        ClaimDepth {
            base,
            max: (base * 16).min(MAX_CLAIM_AHEAD).max(base),
            depth: base,
            last: None,
        }
    }

    /// Adapt to how the last claim went, then say how many to claim with `buffered` jobs
    /// already waiting (0 when the buffer is full enough).
    fn next(&mut self, buffered: usize, starved: bool) -> usize {
        if let Some((asked, got)) = self.last.take() {
            if starved && got >= asked {
                self.depth = (self.depth * 2).min(self.max);
            } else if !starved {
                self.depth = (self.depth - self.depth / 4).max(self.base);
            }
        }
        self.depth.saturating_sub(buffered)
    }

    fn refill_below(&self) -> usize {
        self.depth.div_ceil(2)
    }

    /// Jobs claimed ahead waited too long for a handler: claim only one round ahead again.
    fn reset(&mut self) {
        self.depth = self.base;
        self.last = None;
    }
}

/// Jobs handed out by [`WorkerSession::next_jobs`], and when to ask again.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Claimed {
    /// The jobs claimed, leased to this worker (empty when the queue had none and jobs are
    /// still buffered, or after [`WorkerSession::stop_claiming`]).
    pub jobs: Vec<Message>,
    /// Call [`next_jobs`](WorkerSession::next_jobs) again once fewer than this many claimed
    /// jobs wait for a handler (1: once none does; 0: never, claiming has stopped).
    pub refill_below: usize,
}

/// The database side of a running worker: its registration and heartbeats, the leases it
/// holds (extended at each heartbeat while held), claims and batched completions.
///
/// [`Worker`](crate::Worker) runs on one; language bindings drive one from their own event
/// loop: [`next_jobs`](Self::next_jobs) (or the lower-level [`claim`](Self::claim) and
/// [`claim_ahead`](Self::claim_ahead)), then report each outcome with
/// [`complete`](Self::complete) (it returns at once; outcomes are written in batches), and
/// finally [`stop_claiming`](Self::stop_claiming) and [`stop`](Self::stop).
pub struct WorkerSession {
    backend: Arc<dyn Backend>,
    depth: Arc<Mutex<ClaimDepth>>,
    queue: String,
    worker_id: i64,
    lease: Duration,
    poll: Duration,
    settings: LoopSettings,
    job_timeout: Option<Duration>,
    held: Held,
    counters: Arc<Counters>,
    done_tx: Mutex<Option<mpsc::UnboundedSender<Done>>>,
    completer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    hb_stop: watch::Sender<bool>,
    heartbeat: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    pruner: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    ticker: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    claiming_stopped: watch::Sender<bool>,
}

impl std::fmt::Debug for WorkerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSession")
            .field("queue", &self.queue)
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

impl WorkerSession {
    /// Register a worker for `queue` and start its heartbeat and completion tasks. It polls
    /// at the store's interval and reports the default concurrency, batch size and shutdown
    /// grace; [`WorkerBuilder::session`](crate::WorkerBuilder::session) starts one with a
    /// worker's own.
    pub async fn start(store: &Store, queue: &str, opts: SessionOptions) -> Result<Self> {
        Self::open(store, queue, opts, LoopSettings::default()).await
    }

    pub(crate) async fn open(
        store: &Store,
        queue: &str,
        opts: SessionOptions,
        settings: LoopSettings,
    ) -> Result<Self> {
        validate_queue_name(queue)?;
        let (lease, heartbeat, hold) = opts.resolve(store.config().visibility_timeout)?;
        let poll = settings
            .poll_interval
            .unwrap_or(store.config().poll_interval)
            .max(MIN_POLL_INTERVAL);
        let backend: Arc<dyn Backend> = store.inner.clone();
        backend.get_queue(queue).await?;
        let worker_id = backend
            .register_worker(NewWorker {
                hostname: hostname(),
                pid: std::process::id() as i64,
                queue: queue.to_string(),
            })
            .await?;
        let held: Held = Arc::default();
        let counters = Arc::new(Counters::default());
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        let completion = if opts.delete_on_success {
            Completion::Delete
        } else {
            Completion::Archive
        };
        let completer = tokio::spawn(completer_loop(
            backend.clone(),
            done_rx,
            Flush {
                completion,
                retry: opts.retry,
                interval: opts.flush_interval,
                max: opts.flush_max.max(1),
                queue: queue.to_string(),
            },
            counters.clone(),
            held.clone(),
        ));
        let depth = Arc::new(Mutex::new(ClaimDepth::new(opts.claim_ahead)));
        let (hb_stop, hb_stop_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(
            Keeper {
                backend: backend.clone(),
                worker_id,
                heartbeat,
                lease,
                hold,
                queue: queue.to_string(),
                held: held.clone(),
                depth: depth.clone(),
                counters: counters.clone(),
            }
            .run(hb_stop_rx.clone()),
        );
        let ticker = opts.fire_schedules.then(|| {
            tokio::spawn(
                Ticker {
                    backend: backend.clone(),
                }
                .run(hb_stop_rx.clone()),
            )
        });
        let pruner = tokio::spawn(
            Pruner {
                backend: backend.clone(),
                queue: queue.to_string(),
                interval: opts.prune_interval,
            }
            .run(hb_stop_rx),
        );
        Ok(WorkerSession {
            backend,
            depth,
            queue: queue.to_string(),
            worker_id,
            lease,
            poll,
            settings,
            job_timeout: opts.job_timeout,
            held,
            counters,
            done_tx: Mutex::new(Some(done_tx)),
            completer: tokio::sync::Mutex::new(Some(completer)),
            hb_stop,
            heartbeat: tokio::sync::Mutex::new(Some(heartbeat)),
            pruner: tokio::sync::Mutex::new(Some(pruner)),
            ticker: tokio::sync::Mutex::new(ticker),
            claiming_stopped: watch::channel(false).0,
        })
    }

    /// The registered worker id.
    pub fn worker_id(&self) -> i64 {
        self.worker_id
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The idle polling interval in force: the worker's, or the store's
    /// (`poll_interval_ms`). An idle worker waits this long, then twice as long, up to ten
    /// times it, unless jobs arrive sooner.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// How many handler calls the worker runs at once.
    pub fn concurrency(&self) -> usize {
        self.settings.concurrency
    }

    /// Messages per handler call for batch handlers.
    pub fn batch_size(&self) -> usize {
        self.settings.batch_size
    }

    /// How long shutdown waits for running handlers before releasing their jobs.
    pub fn shutdown_grace(&self) -> Duration {
        self.settings.shutdown_grace
    }

    /// How long one handler call may run on jobs with these timeouts (each job's
    /// [`Message::timeout`], `None` when it has none): the shortest of them, the worker's
    /// [`job_timeout`](SessionOptions::job_timeout) standing in for jobs without one; `None`
    /// when none has a limit. Past it, cancel the call and report
    /// [`timeout_error`](crate::timeout_error) as each job's outcome.
    pub fn handler_timeout(
        &self,
        job_timeouts: impl IntoIterator<Item = Option<Duration>>,
    ) -> Option<Duration> {
        crate::deadline::timeout_of(job_timeouts, self.job_timeout)
    }

    /// Claim up to `limit` ready jobs, leased to this worker, for handlers to run now: they
    /// count as [begun](Self::begin) (their leases are extended while the worker lives).
    pub async fn claim(&self, limit: usize) -> Result<Vec<Message>> {
        Ok(self.claim_as(limit, true).await?.jobs)
    }

    async fn claim_as(&self, limit: usize, started: bool) -> Result<Claim> {
        validate_batch(limit)?;
        // The database starts the lease after this instant: count its time from here.
        let asked = Instant::now();
        let claim = self
            .backend
            .claim_jobs(ClaimParams {
                queue: &self.queue,
                limit,
                lease: self.lease,
                worker_id: Some(self.worker_id),
            })
            .await?;
        let msgs = &claim.jobs;
        if !msgs.is_empty() {
            let (claimed, expires) = (asked, asked + self.lease);
            let mut h = lock(&self.held);
            for m in msgs {
                h.insert(
                    m.id,
                    HeldJob {
                        token: m.lease_token,
                        expires,
                        claimed,
                        started,
                    },
                );
            }
        }
        Ok(claim)
    }

    /// A handler is about to run this claimed job: from now on its lease is extended while
    /// the worker lives. `false` when the worker no longer holds it — it waited longer than
    /// [`SessionOptions::claim_ahead_timeout`] and was given back, or its lease could not be
    /// extended in time — and the handler must not run it (another worker may have it).
    pub fn begin(&self, lease: &Lease) -> bool {
        let mut h = lock(&self.held);
        let Some(job) = h.get_mut(&lease.id).filter(|j| j.token == lease.token) else {
            return false;
        };
        if job.expires < Instant::now() + self.lease / 3 {
            // Too close to expiry to be sure of the next extension: leave it to expire.
            h.remove(&lease.id);
            return false;
        }
        job.started = true;
        true
    }

    /// Whether the worker still holds this claimed job (see [`begin`](Self::begin)).
    pub fn holds(&self, lease: &Lease) -> bool {
        lock(&self.held)
            .get(&lease.id)
            .is_some_and(|j| j.token == lease.token)
    }

    /// How many jobs claimed ahead have been given back so far for waiting too long. When it
    /// changes, a caller that buffers claimed jobs drops those it no longer
    /// [holds](Self::holds).
    pub fn given_back(&self) -> u64 {
        self.counters.given_back.load(Ordering::Relaxed)
    }

    /// Claim ahead of the handlers: as many jobs as the adaptive claim depth allows with
    /// `buffered` claimed jobs still waiting for a handler. `starved` tells whether the
    /// handlers sat idle waiting for the previous claim (the depth grows if so and the queue
    /// had more). Returns nothing, without a round trip, when the buffer is deep enough.
    pub async fn claim_ahead(&self, buffered: usize, starved: bool) -> Result<Vec<Message>> {
        Ok(self
            .claim_to_depth(buffered, starved)
            .await?
            .map(|c| c.jobs)
            .unwrap_or_default())
    }

    /// [`claim_ahead`](Self::claim_ahead); `None` when the buffer was deep enough to claim
    /// nothing.
    async fn claim_to_depth(&self, buffered: usize, starved: bool) -> Result<Option<Claim>> {
        let want = lock(&self.depth).next(buffered, starved);
        if want == 0 {
            return Ok(None);
        }
        let claim = self.claim_as(want, false).await?;
        lock(&self.depth).last = Some((want, claim.jobs.len()));
        Ok(Some(claim))
    }

    /// Claim again once fewer than this many claimed jobs wait for a handler.
    pub fn refill_below(&self) -> usize {
        lock(&self.depth).refill_below()
    }

    /// The next jobs for the handlers, claimed ahead ([`claim_ahead`](Self::claim_ahead));
    /// `buffered` and `starved` as there.
    ///
    /// When the queue has nothing and nothing is buffered, waits for jobs (an enqueue, a
    /// notification, or the [poll interval](Self::poll_interval), doubling while idle up to
    /// ten times it) and claims again. Transient database errors are retried after a back-off
    /// (50 ms, doubling up to 5 s); other errors are returned. Returns at once, with nothing,
    /// after [`stop_claiming`](Self::stop_claiming).
    ///
    /// Await it to the end rather than dropping it: a claim dropped halfway may have leased
    /// jobs that then wait for their leases to expire. To end it early, call
    /// [`stop_claiming`](Self::stop_claiming).
    pub async fn next_jobs(&self, buffered: usize, starved: bool) -> Result<Claimed> {
        let mut stopped = self.claiming_stopped.subscribe();
        let mut idle_rounds = 0;
        let mut error_backoff = ERROR_BACKOFF;
        loop {
            if *stopped.borrow_and_update() {
                return Ok(Claimed::default());
            }
            match self.claim_to_depth(buffered, starved).await {
                Ok(None) => {
                    return Ok(Claimed {
                        jobs: Vec::new(),
                        refill_below: self.refill_below(),
                    })
                }
                Ok(Some(claim)) if claim.jobs.is_empty() && buffered == 0 => {
                    match claim.throttle {
                        // The queue's rate limit allows nothing before then: sleep until
                        // then (an enqueue would not change that), or for at most the longest
                        // idle wait, so that a long window's limit cleared meanwhile is seen.
                        Throttle::Rate(wait) if !wait.is_zero() => {
                            let most = self.poll * IDLE_BACKOFF_FACTOR;
                            tokio::select! {
                                _ = tokio::time::sleep(wait.min(most)) => {}
                                _ = stopped.changed() => {}
                            }
                        }
                        // Nothing ready, or the concurrency limit reached: a completion of
                        // the queue's jobs wakes limited queues' workers like an enqueue.
                        _ => {
                            tokio::select! {
                                _ = self.wait_for_jobs(idle_wait(self.poll, idle_rounds)) => {}
                                _ = stopped.changed() => {}
                            }
                            idle_rounds += 1;
                        }
                    }
                }
                Ok(Some(Claim { jobs, .. })) => {
                    // Nothing this time but jobs are still buffered: ask again once they are
                    // all handed out.
                    let refill_below = if jobs.is_empty() {
                        1
                    } else {
                        self.refill_below()
                    };
                    return Ok(Claimed { jobs, refill_below });
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, queue = %self.queue, "claim failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = stopped.changed() => {}
                    }
                    error_backoff = (error_backoff * 2).min(MAX_ERROR_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Claim nothing more through [`next_jobs`](Self::next_jobs): a call in progress returns
    /// once its claim in flight (if any) is done, with what that claim got. Idempotent.
    pub fn stop_claiming(&self) {
        self.claiming_stopped.send_replace(true);
    }

    /// Report a handler's outcome: `Ok` completes the job (archive or delete), `Err(text)`
    /// records a failed attempt under the retry policy. Returns at once; the write happens in
    /// the next batch. Fails only after [`stop`](Self::stop).
    pub fn complete(
        &self,
        lease: Lease,
        attempts: i32,
        max_attempts: i32,
        outcome: std::result::Result<(), String>,
    ) -> Result<()> {
        let tx = lock(&self.done_tx);
        let Some(tx) = tx.as_ref() else {
            return Err(Error::Closed);
        };
        tx.send(Done {
            lease,
            attempts,
            max_attempts,
            outcome,
        })
        .map_err(|_| Error::Closed)
    }

    /// Report the outcome of a claimed message (see [`complete`](Self::complete)).
    pub fn complete_message(
        &self,
        msg: &Message,
        outcome: std::result::Result<(), String>,
    ) -> Result<()> {
        self.complete(msg.lease(), msg.attempts, msg.max_attempts, outcome)
    }

    /// Give jobs back unhandled (claimable at once; the attempt is given back).
    pub async fn release(&self, leases: &[Lease]) {
        if !leases.is_empty() {
            release(&*self.backend, leases, &self.held, &self.counters).await
        }
    }

    /// Wait until jobs may have arrived (an enqueue in this process, a notification) or
    /// `timeout` passes.
    pub async fn wait_for_jobs(&self, timeout: Duration) {
        self.backend.wait_for_jobs(&self.queue, timeout).await
    }

    /// What the session did so far.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.counters;
        WorkerStats {
            worker_id: self.worker_id,
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            lease_lost: c.lease_lost.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
        }
    }

    /// Stop claiming, write every pending outcome, release every job still held, stop
    /// heartbeating and mark the worker stopped. Idempotent.
    pub async fn stop(&self) -> WorkerStats {
        self.stop_claiming();
        let _ = self
            .backend
            .worker_heartbeat(self.worker_id, WorkerStatus::Stopping)
            .await;
        drop(lock(&self.done_tx).take());
        if let Some(c) = self.completer.lock().await.take() {
            let _ = c.await;
        }
        let rest: Vec<Lease> = lock(&self.held)
            .iter()
            .map(|(&id, j)| Lease { id, token: j.token })
            .collect();
        self.release(&rest).await;
        let _ = self.hb_stop.send(true);
        if let Some(h) = self.heartbeat.lock().await.take() {
            let _ = h.await;
        }
        if let Some(h) = self.pruner.lock().await.take() {
            let _ = h.await;
        }
        if let Some(h) = self.ticker.lock().await.take() {
            let _ = h.await;
        }
        let _ = self
            .backend
            .worker_heartbeat(self.worker_id, WorkerStatus::Stopped)
            .await;
        self.stats()
    }
}

async fn release(backend: &dyn Backend, leases: &[Lease], held: &Held, counters: &Counters) {
    match backend.release_jobs(leases, Duration::ZERO).await {
        Ok(r) => {
            let n = r.iter().filter(|x| **x).count() as u64;
            counters.released.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not release jobs at shutdown; they become claimable when their leases expire");
        }
    }
    let mut h = lock(held);
    for l in leases {
        h.remove(&l.id);
    }
}

/// How the completer writes outcomes.
struct Flush {
    completion: Completion,
    retry: RetryPolicy,
    interval: Duration,
    max: usize,
    /// The queue, whose idle workers a flush wakes when it has limits.
    queue: String,
}

async fn completer_loop(
    backend: Arc<dyn Backend>,
    mut rx: mpsc::UnboundedReceiver<Done>,
    how: Flush,
    counters: Arc<Counters>,
    held: Held,
) {
    let mut ok: Vec<Lease> = Vec::new();
    let mut failed: Vec<Failure> = Vec::new();
    let push = |d: Done, ok: &mut Vec<Lease>, failed: &mut Vec<Failure>| match d.outcome {
        Ok(()) => ok.push(d.lease),
        Err(e) => failed.push(failure(&how.retry, d.lease, d.attempts, d.max_attempts, e)),
    };
    loop {
        // Wait for the first outcome, then gather more for up to `interval`.
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + how.interval;
        push(first, &mut ok, &mut failed);
        let mut closed = false;
        while ok.len() + failed.len() < how.max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(d)) => push(d, &mut ok, &mut failed),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        flush(
            &*backend,
            how.completion,
            &mut ok,
            &mut failed,
            &counters,
            &held,
        )
        .await;
        backend.capacity_freed(&how.queue);
        if closed {
            break;
        }
    }
    flush(
        &*backend,
        how.completion,
        &mut ok,
        &mut failed,
        &counters,
        &held,
    )
    .await;
}

async fn flush(
    backend: &dyn Backend,
    completion: Completion,
    ok: &mut Vec<Lease>,
    failed: &mut Vec<Failure>,
    counters: &Counters,
    held: &Held,
) {
    let mut attempt = 0u32;
    while !ok.is_empty() {
        match backend.complete_jobs(ok, completion).await {
            Ok(r) => {
                let good = r.iter().filter(|x| **x).count() as u64;
                counters.succeeded.fetch_add(good, Ordering::Relaxed);
                counters
                    .lease_lost
                    .fetch_add(r.len() as u64 - good, Ordering::Relaxed);
                let mut h = lock(held);
                for l in ok.iter() {
                    h.remove(&l.id);
                }
                ok.clear();
            }
            Err(e) if e.is_transient() && attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, "completion flush failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => {
                // The jobs stay leased and come back when their leases expire: never lost.
                tracing::error!(error = %e, jobs = ok.len(), "could not record completions; the jobs will be delivered again after their leases expire");
                let mut h = lock(held);
                for l in ok.iter() {
                    h.remove(&l.id);
                }
                ok.clear();
            }
        }
    }
    attempt = 0;
    while !failed.is_empty() {
        match backend.fail_jobs(failed).await {
            Ok(r) => {
                for (f, applied) in failed.iter().zip(&r) {
                    if *applied {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        if f.retry_in.is_none() {
                            counters.dead.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        counters.lease_lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut h = lock(held);
                for f in failed.iter() {
                    h.remove(&f.lease.id);
                }
                failed.clear();
            }
            Err(e) if e.is_transient() && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = failed.len(), "could not record failures; the jobs will be delivered again after their leases expire");
                let mut h = lock(held);
                for f in failed.iter() {
                    h.remove(&f.lease.id);
                }
                failed.clear();
            }
        }
    }
}

/// The worker's background upkeep: its heartbeat, extending the leases it holds, giving back
/// jobs claimed ahead that waited too long, and dead-lettering final attempts whose worker
/// died.
struct Keeper {
    backend: Arc<dyn Backend>,
    worker_id: i64,
    heartbeat: Duration,
    lease: Duration,
    /// How long a job claimed ahead may wait for a handler.
    hold: Duration,
    queue: String,
    held: Held,
    depth: Arc<Mutex<ClaimDepth>>,
    counters: Arc<Counters>,
}

impl Keeper {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        // Waiting jobs are looked at twice per hold; the heartbeat comes every few ticks.
        let every = self
            .heartbeat
            .min(self.hold / 2)
            .max(MIN_HEARTBEAT_INTERVAL);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut next_beat = Instant::now() + self.heartbeat;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            self.give_back_waiting().await;
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + self.heartbeat;
                self.beat().await;
            }
        }
    }

    /// Give back the jobs claimed ahead that no handler started within the hold: any worker
    /// may claim them at once (the attempt is not counted), and this worker claims only one
    /// round ahead again.
    async fn give_back_waiting(&self) {
        let now = Instant::now();
        let waiting: Vec<Lease> = {
            let mut h = lock(&self.held);
            let ids: Vec<i64> = h
                .iter()
                .filter(|(_, j)| !j.started && now.duration_since(j.claimed) >= self.hold)
                .map(|(&id, _)| id)
                .collect();
            ids.into_iter()
                .filter_map(|id| h.remove(&id).map(|j| Lease { id, token: j.token }))
                .collect()
        };
        if waiting.is_empty() {
            return;
        }
        lock(&self.depth).reset();
        self.counters
            .given_back
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            jobs = waiting.len(),
            queue = %self.queue,
            "giving back jobs claimed ahead that waited too long for a handler"
        );
        release(&*self.backend, &waiting, &self.held, &self.counters).await;
    }

    async fn beat(&self) {
        let backend = &*self.backend;
        if let Err(e) = backend
            .worker_heartbeat(self.worker_id, WorkerStatus::Running)
            .await
        {
            tracing::warn!(error = %e, worker_id = self.worker_id, "heartbeat failed");
        }
        // Keep the leases of what this worker holds alive while it lives: every lease that
        // would run out before the beat after next.
        let soon = Instant::now() + self.lease / 2 + self.heartbeat;
        let due: Vec<Lease> = lock(&self.held)
            .iter()
            .filter(|(_, j)| j.expires <= soon)
            .map(|(&id, j)| Lease { id, token: j.token })
            .collect();
        if !due.is_empty() {
            let asked = Instant::now();
            match backend.extend_leases(&due, self.lease).await {
                Ok(r) => {
                    let exp = asked + self.lease;
                    let mut h = lock(&self.held);
                    for (l, ok) in due.iter().zip(r) {
                        match h.get_mut(&l.id) {
                            Some(j) if ok && j.token == l.token => j.expires = exp,
                            // Lost (another worker has it now): never start it.
                            Some(j) if !ok && j.token == l.token && !j.started => {
                                h.remove(&l.id);
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease extension failed"),
            }
        }
        // Jobs whose final attempt's lease expired (their worker died) become dead letters.
        if let Err(e) = backend.rescue_expired(&self.queue).await {
            tracing::warn!(error = %e, "dead-lettering expired final attempts failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClaimDepth;

    #[test]
    fn options_without_a_lease_check_only_what_does_not_depend_on_it() {
        use super::SessionOptions;
        use std::time::Duration;
        // The store's lease is not known yet: nothing lease-dependent may be refused.
        SessionOptions::default()
            .validate()
            .expect("the defaults are valid");
        let long_heartbeat = SessionOptions {
            heartbeat_interval: Some(Duration::from_secs(60)),
            ..SessionOptions::default()
        };
        long_heartbeat
            .validate()
            .expect("checked against the store's lease later");
        assert!(long_heartbeat.resolve(Duration::from_secs(30)).is_err());
        let zero = SessionOptions {
            claim_ahead_timeout: Duration::ZERO,
            ..SessionOptions::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn idle_wait_doubles_up_to_ten_times_the_poll_interval() {
        let ms = std::time::Duration::from_millis;
        let waits: Vec<_> = (0..6).map(|r| super::idle_wait(ms(20), r)).collect();
        assert_eq!(waits, [ms(20), ms(40), ms(80), ms(160), ms(200), ms(200)]);
        assert_eq!(super::idle_wait(ms(20), u32::MAX), ms(200));
    }

    #[test]
    fn claim_depth_adapts_to_handler_speed() {
        let mut d = ClaimDepth::new(4);
        assert_eq!(d.next(0, false), 4, "starts at one round of work");
        assert_eq!(d.refill_below(), 2);

        // Handlers idle while a full claim was in flight: the depth doubles, up to 16×.
        for _ in 0..10 {
            let want = d.next(0, true);
            d.last = Some((want, want));
        }
        assert_eq!(d.next(0, true), 64, "capped at 16 times the base");
        assert_eq!(d.refill_below(), 32);

        // A claim that found fewer jobs than asked does not grow it, even when starved.
        d.last = Some((64, 10));
        assert_eq!(d.next(0, true), 64);

        // Claims the handlers did not wait for shrink it back to the base, never below.
        for _ in 0..20 {
            d.last = Some((1, 1));
            d.next(0, false);
        }
        assert_eq!(d.next(3, false), 1, "base 4 minus the 3 already buffered");
        assert_eq!(d.next(9, false), 0, "nothing to claim with a full buffer");

        // Bounds: at least 2, at most MAX_CLAIM_AHEAD however large the base.
        assert_eq!(ClaimDepth::new(0).next(0, false), 2);
        let mut big = ClaimDepth::new(5_000);
        big.last = Some((5_000, 5_000));
        assert_eq!(
            big.next(0, true),
            5_000,
            "a base above the cap stays the base"
        );
    }
}
