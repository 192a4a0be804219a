//! The long-running worker: concurrent handlers fed from a [`WorkerSession`], graceful
//! shutdown.
//!
//! ```text
//!  WorkerSession::next_jobs ──► buffer ──► handler slots (concurrency N) ──► WorkerSession::complete
//! ```
//!
//! A crash between a handler's success and the next flush leaves the job leased; its lease
//! expires and it is delivered again. Delivery is therefore at least once; with no crash and
//! no lease expiry, exactly once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::deadline::run_within;
use crate::error::{BoxError, Error, Result};
use crate::handler::{BatchFnHandler, FnHandler, Handler};
use crate::limits::{validate_batch, validate_concurrency, validate_interval};
use crate::retry::RetryPolicy;
use crate::session::{Claimed, LoopSettings, SessionOptions, WorkerSession, WorkerStats};
use crate::store::{validate_queue_name, Store};
use crate::types::{Lease, Message};

/// Configures a [`Worker`]. Start with [`worker`].
#[derive(Debug, Clone)]
#[must_use = "a worker builder does nothing until given a handler and run"]
pub struct WorkerBuilder {
    queue: String,
    session: SessionOptions,
    settings: LoopSettings,
}

/// Start configuring a long-running worker for `queue`. Every setting has a default
/// ([`SessionOptions::default`]; one handler call at a time, one message per call, 30 s of
/// shutdown grace; the store's lease length and poll interval).
pub fn worker(queue: impl Into<String>) -> WorkerBuilder {
    WorkerBuilder {
        queue: queue.into(),
        session: SessionOptions::default(),
        settings: LoopSettings::default(),
    }
}

impl WorkerBuilder {
    /// How many handler calls run at once (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n;
        self
    }

    /// Messages per handler call for batch handlers, and the claim size per slot (default 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.settings.batch_size = n;
        self
    }

    /// Lease length (default from the store's config). Leases of running handlers are
    /// extended automatically at each heartbeat while the worker lives.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.session.visibility_timeout = Some(d);
        self
    }

    /// What happens when a handler fails.
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.session.retry = p;
        self
    }

    /// Idle polling interval (default from the store's config); doubles while idle, up to 10×.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.settings.poll_interval = Some(d);
        self
    }

    /// How long shutdown waits for running handlers before releasing their jobs (default 30 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.settings.shutdown_grace = d;
        self
    }

    /// Heartbeat (and lease extension) interval (default: a third of the lease, at most 5 s).
    /// It must be at most half the lease; the worker refuses to start otherwise.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.session.heartbeat_interval = Some(d);
        self
    }

    /// How long a job claimed ahead of the handlers may wait for one (default 2 s, at most
    /// half the lease). Jobs still waiting then are given back for any worker to claim, so
    /// handlers that stall hold only the jobs they run.
    pub fn claim_ahead_timeout(mut self, d: Duration) -> Self {
        self.session.claim_ahead_timeout = d;
        self
    }

    /// How often the worker deletes what is past its retention (its queue's archive and dead
    /// letters, finished workflow runs), in batches of 1,000 rows (default a minute, from
    /// 10 ms to a day). See [`Retention`](crate::Retention).
    pub fn prune_interval(mut self, d: Duration) -> Self {
        self.session.prune_interval = d;
        self
    }

    /// The handler timeout of jobs enqueued without their own
    /// ([`EnqueueBuilder::timeout`](crate::EnqueueBuilder::timeout)); default: no limit. A
    /// handler past it is cancelled and the attempt recorded as failed, then retried per the
    /// retry policy. From 1 ms to 7 days.
    pub fn job_timeout(mut self, d: Duration) -> Self {
        self.session.job_timeout = Some(d);
        self
    }

    /// Whether this worker fires the due ticks of the store's schedules (default true; see
    /// [`SessionOptions::fire_schedules`]).
    pub fn fire_schedules(mut self, yes: bool) -> Self {
        self.session.fire_schedules = yes;
        self
    }

    /// Delete jobs on success instead of archiving them.
    pub fn delete_on_success(mut self, yes: bool) -> Self {
        self.session.delete_on_success = yes;
        self
    }

    /// Completions are written in one statement every `interval` or every `max` jobs,
    /// whichever comes first (default 2 ms / 500).
    pub fn completion_flush(mut self, interval: Duration, max: usize) -> Self {
        self.session.flush_interval = interval;
        self.session.flush_max = max.max(1);
        self
    }

    /// Check the settings that need no database (concurrency, batch size, the heartbeat
    /// against a lease given here); the queue, and the heartbeat against the store's lease,
    /// are checked when the worker starts.
    pub fn validate(&self) -> Result<()> {
        validate_batch(self.settings.batch_size)?;
        validate_concurrency(self.settings.concurrency)?;
        if let Some(d) = self.settings.poll_interval {
            validate_interval("poll_interval", d)?;
        }
        validate_interval("shutdown_grace", self.settings.shutdown_grace)?;
        self.session.validate()
    }

    /// Register a worker with these settings and start its session, for a caller that runs
    /// its own loop (language bindings): the session claims, polls, heartbeats and writes
    /// outcomes as [`Worker::run`] would.
    pub async fn session(&self, store: &Store) -> Result<WorkerSession> {
        validate_queue_name(&self.queue)?;
        self.validate()?;
        let opts = SessionOptions {
            claim_ahead: self.settings.concurrency * self.settings.batch_size,
            ..self.session.clone()
        };
        WorkerSession::open(store, &self.queue, opts, self.settings.clone()).await
    }

    /// Handle one message per call.
    pub fn handle<F, Fut>(self, f: F) -> Worker
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
    {
        self.handler(Arc::new(FnHandler(f)), false)
    }

    /// Handle up to `batch_size` messages per call; the result applies to the whole batch.
    pub fn handle_batch<F, Fut>(self, f: F) -> Worker
    where
        F: Fn(Vec<Message>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
    {
        self.handler(Arc::new(BatchFnHandler(f)), true)
    }

    /// A [`Handler`] object; `batch` chooses [`Handler::call_batch`] over [`Handler::call`].
    pub fn handler(self, h: Arc<dyn Handler>, batch: bool) -> Worker {
        let (tx, _) = watch::channel(false);
        Worker {
            cfg: self,
            handler: h,
            batch,
            shutdown: ShutdownHandle { tx: Arc::new(tx) },
        }
    }
}

/// Stops a running [`Worker`] gracefully. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Ask the worker to stop: it claims nothing new, lets running handlers finish within the
    /// grace period, releases the rest, and returns from [`Worker::run`].
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        *self.tx.borrow()
    }
}

/// A long-running consumer. Build with [`worker`], run with [`run`](Worker::run), stop with
/// its [`ShutdownHandle`].
pub struct Worker {
    cfg: WorkerBuilder,
    handler: Arc<dyn Handler>,
    batch: bool,
    shutdown: ShutdownHandle,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("cfg", &self.cfg).finish()
    }
}

impl Worker {
    /// A handle that stops this worker.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Run until shutdown is requested. Returns what the worker did. Transient database
    /// errors (busy, connection lost) are retried with backoff; a missing queue or schema
    /// ends the run with an error after releasing what it holds.
    pub async fn run(&self, store: &Store) -> Result<WorkerStats> {
        let session = Arc::new(self.cfg.session(store).await?);
        let sem = Arc::new(Semaphore::new(session.concurrency()));
        let per_call = if self.batch { session.batch_size() } else { 1 };
        let mut buffer: VecDeque<Message> = VecDeque::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut shutdown_rx = self.shutdown.tx.subscribe();
        let mut fatal: Option<Error> = None;
        // The claim in flight: it runs while handlers run and jobs are handed out.
        let mut fetch: Option<tokio::task::JoinHandle<Result<Claimed>>> = None;
        // Whether the handlers sat idle waiting for the last claim (see `claim_ahead`).
        let mut starved = false;
        // Claim again below this many buffered jobs (the session says, with each claim).
        let mut refill_below = session.refill_below();
        // Jobs claimed ahead that waited too long are given back by the session: drop them.
        let mut given_back = session.given_back();

        'main: loop {
            if *shutdown_rx.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            if let Some(h) = fetch.as_mut() {
                if buffer.is_empty() || h.is_finished() {
                    let waited = buffer.is_empty();
                    let joined = tokio::select! {
                        r = h => r,
                        _ = shutdown_rx.changed() => break 'main,
                    };
                    fetch = None;
                    match joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
                        Ok(claimed) => {
                            starved = waited && sem.available_permits() > 0;
                            refill_below = claimed.refill_below;
                            buffer.extend(claimed.jobs);
                        }
                        Err(e) => {
                            fatal = Some(e);
                            break;
                        }
                    }
                }
            }
            if session.given_back() != given_back {
                given_back = session.given_back();
                buffer.retain(|m| session.holds(&m.lease()));
            }
            if fetch.is_none() && buffer.len() < refill_below {
                let (s, buffered) = (session.clone(), buffer.len());
                let st = std::mem::take(&mut starved);
                fetch = Some(tokio::spawn(async move { s.next_jobs(buffered, st).await }));
            }
            if buffer.is_empty() {
                continue; // the claim in flight is awaited at the top
            }
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => tokio::select! {
                    p = sem.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    _ = shutdown_rx.changed() => break 'main,
                },
            };
            let msgs: Vec<Message> = buffer
                .drain(..per_call.min(buffer.len()))
                .filter(|m| session.begin(&m.lease()))
                .collect();
            if msgs.is_empty() {
                continue; // given back meanwhile; the permit goes back
            }
            let handler = self.handler.clone();
            let session = session.clone();
            let batch = self.batch;
            tasks.spawn(async move {
                let meta: Vec<(Lease, i32, i32)> = msgs
                    .iter()
                    .map(|m| (m.lease(), m.attempts, m.max_attempts))
                    .collect();
                let timeout = session.handler_timeout(msgs.iter().map(|m| m.timeout));
                let outcomes = run_within(&*handler, msgs, batch, timeout).await;
                for ((lease, attempts, max_attempts), outcome) in meta.into_iter().zip(outcomes) {
                    let _ = session.complete(lease, attempts, max_attempts, outcome);
                }
                drop(permit);
            });
        }

        // Shutdown: claim nothing more. What the claim in flight got was never started either.
        session.stop_claiming();
        if let Some(h) = fetch.take() {
            if let Ok(Ok(claimed)) = h.await {
                buffer.extend(claimed.jobs);
            }
        }
        // Give back what was never started.
        let never_started: Vec<Lease> = buffer.drain(..).map(|m| m.lease()).collect();
        session.release(&never_started).await;
        // Let running handlers finish within the grace period.
        let drained = tokio::time::timeout(session.shutdown_grace(), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(queue = %session.queue(), "shutdown grace period over; abandoning running handlers and releasing their jobs");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let stats = session.stop().await;
        match fatal {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}
