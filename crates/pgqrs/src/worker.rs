//! The long-running worker: concurrent handlers, claim-ahead, batched completions, heartbeats
//! with automatic lease extension, and graceful shutdown.
//!
//! ```text
//!            claim (up to the free prefetch room, one round trip)
//!  database ───────────────────────────────► buffer ──► handler slots (concurrency N)
//!     ▲                                                      │ outcome
//!     └──── one statement per flush (every few ms or N jobs) ◄┘ completer
//! ```
//!
//! A crash between a handler's success and the next flush leaves the job leased; its lease
//! expires and it is delivered again. Delivery is therefore at least once; with no crash and
//! no lease expiry, exactly once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::consume::{failure, validate_batch, validate_lease, MAX_BATCH};
use crate::error::{BoxError, Error, Result};
use crate::retry::RetryPolicy;
use crate::store::{
    hostname, validate_queue_name, Backend, ClaimParams, Completion, Failure, NewWorker, Store,
};
use crate::types::{Lease, Message, WorkerStatus};

/// A boxed future, as handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Handles messages. Closures `Fn(Message) -> impl Future<Output = Result<(), BoxError>>` are
/// turned into handlers by [`WorkerBuilder::handle`]; language bindings implement it directly.
pub trait Handler: Send + Sync + 'static {
    /// Handle one message. `Ok` archives it; `Err` records a failed attempt.
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>>;

    /// Handle several messages in one call; the result applies to all of them. By default,
    /// calls [`call`](Self::call) on each concurrently and fails the batch if any failed.
    fn call_batch(&self, msgs: Vec<Message>) -> BoxFuture<Vec<std::result::Result<(), BoxError>>> {
        let futs: Vec<_> = msgs.into_iter().map(|m| self.call(m)).collect();
        Box::pin(futures_util::future::join_all(futs))
    }
}

impl Handler for Arc<dyn Handler> {
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>> {
        (**self).call(msg)
    }
    fn call_batch(&self, msgs: Vec<Message>) -> BoxFuture<Vec<std::result::Result<(), BoxError>>> {
        (**self).call_batch(msgs)
    }
}

/// A closure as a [`Handler`].
pub(crate) struct FnHandler<F>(pub F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
{
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>> {
        Box::pin((self.0)(msg))
    }
}

/// A batch closure as a [`Handler`].
struct BatchFnHandler<F>(F);

impl<F, Fut> Handler for BatchFnHandler<F>
where
    F: Fn(Vec<Message>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
{
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>> {
        Box::pin((self.0)(vec![msg]))
    }
    fn call_batch(&self, msgs: Vec<Message>) -> BoxFuture<Vec<std::result::Result<(), BoxError>>> {
        let n = msgs.len();
        let fut = (self.0)(msgs);
        Box::pin(async move {
            match fut.await {
                Ok(()) => (0..n).map(|_| Ok(())).collect(),
                Err(e) => {
                    let text = e.to_string();
                    (0..n).map(|_| Err(text.clone().into())).collect()
                }
            }
        })
    }
}

/// What happened to one message.
pub(crate) enum Outcome {
    Ok,
    Err(String),
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("handler panicked: {what}")
}

/// Run a handler on one message, turning a panic into an error.
pub(crate) async fn run_handler<H: Handler + ?Sized>(h: &H, msg: Message) -> Outcome {
    match AssertUnwindSafe(async { h.call(msg).await })
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Err(e.to_string()),
        Err(p) => Outcome::Err(panic_text(p)),
    }
}

async fn run_batch(h: &dyn Handler, msgs: Vec<Message>, batch: bool) -> Vec<Outcome> {
    let n = msgs.len();
    let fut = async {
        if batch {
            h.call_batch(msgs).await
        } else {
            let mut out = Vec::with_capacity(n);
            for m in msgs {
                out.push(h.call(m).await);
            }
            out
        }
    };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(rs) => rs
            .into_iter()
            .map(|r| match r {
                Ok(()) => Outcome::Ok,
                Err(e) => Outcome::Err(e.to_string()),
            })
            .collect(),
        Err(p) => {
            let text = panic_text(p);
            (0..n).map(|_| Outcome::Err(text.clone())).collect()
        }
    }
}

/// Configures a [`Worker`]. Start with [`worker`].
#[derive(Debug, Clone)]
#[must_use = "a worker builder does nothing until given a handler and run"]
pub struct WorkerBuilder {
    queue: String,
    concurrency: usize,
    batch_size: usize,
    visibility_timeout: Option<Duration>,
    retry: RetryPolicy,
    poll_interval: Option<Duration>,
    grace: Duration,
    heartbeat: Duration,
    completion: Completion,
    flush_interval: Duration,
    flush_max: usize,
}

/// Start configuring a long-running worker for `queue`.
pub fn worker(queue: impl Into<String>) -> WorkerBuilder {
    WorkerBuilder {
        queue: queue.into(),
        concurrency: 1,
        batch_size: 1,
        visibility_timeout: None,
        retry: RetryPolicy::default(),
        poll_interval: None,
        grace: Duration::from_secs(30),
        heartbeat: Duration::from_secs(5),
        completion: Completion::Archive,
        flush_interval: Duration::from_millis(2),
        flush_max: 500,
    }
}

impl WorkerBuilder {
    /// How many handler calls run at once (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Messages per handler call for batch handlers, and the claim size per slot (default 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Lease length (default from the store's config). Leases of running handlers are
    /// extended automatically at each heartbeat while the worker lives.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = Some(d);
        self
    }

    /// What happens when a handler fails.
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }

    /// Idle polling interval (default from the store's config); doubles while idle, up to 10×.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = Some(d);
        self
    }

    /// How long shutdown waits for running handlers before releasing their jobs (default 30 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Heartbeat (and lease extension) interval (default 5 s).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat = d;
        self
    }

    /// Delete jobs on success instead of archiving them.
    pub fn delete_on_success(mut self, yes: bool) -> Self {
        self.completion = if yes {
            Completion::Delete
        } else {
            Completion::Archive
        };
        self
    }

    /// Completions are written in one statement every `interval` or every `max` jobs,
    /// whichever comes first (default 2 ms / 500).
    pub fn completion_flush(mut self, interval: Duration, max: usize) -> Self {
        self.flush_interval = interval;
        self.flush_max = max.max(1);
        self
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

/// What a worker did, returned by [`Worker::run`].
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
    /// Jobs given back unhandled at shutdown.
    pub released: u64,
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    lease_lost: AtomicU64,
    released: AtomicU64,
}

/// Leases this worker holds: job id → (token, lease expiry).
type Held = Arc<Mutex<HashMap<i64, (i64, Instant)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

struct Done {
    lease: Lease,
    attempts: i32,
    max_attempts: i32,
    outcome: Outcome,
}

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
    /// Heartbeat and lease-extension interval.
    pub heartbeat_interval: Duration,
    /// Jobs to keep claimed ahead of the handlers at first: one round of work
    /// (concurrency × batch size). [`WorkerSession::claim_ahead`] adapts it from there.
    pub claim_ahead: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            visibility_timeout: None,
            retry: RetryPolicy::default(),
            delete_on_success: false,
            flush_interval: Duration::from_millis(2),
            flush_max: 500,
            heartbeat_interval: Duration::from_secs(5),
            claim_ahead: 2,
        }
    }
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
}

/// The database side of a running worker: its registration and heartbeats, the leases it
/// holds (extended at each heartbeat while held), and batched completions.
///
/// [`Worker`] runs on one; language bindings drive one from their own event loop: `claim` or
/// [`claim_ahead`](Self::claim_ahead), then report each outcome with
/// [`complete`](Self::complete) (it returns at once; outcomes are written in batches), and
/// finally [`stop`](Self::stop).
pub struct WorkerSession {
    backend: Arc<dyn Backend>,
    depth: Mutex<ClaimDepth>,
    queue: String,
    worker_id: i64,
    lease: Duration,
    held: Held,
    counters: Arc<Counters>,
    done_tx: Mutex<Option<mpsc::UnboundedSender<Done>>>,
    completer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    hb_stop: watch::Sender<bool>,
    heartbeat: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
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
    /// Register a worker for `queue` and start its heartbeat and completion tasks.
    pub async fn start(store: &Store, queue: &str, opts: SessionOptions) -> Result<Self> {
        validate_queue_name(queue)?;
        let lease = opts
            .visibility_timeout
            .unwrap_or(store.config().visibility_timeout);
        validate_lease(lease)?;
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
            completion,
            opts.retry,
            opts.flush_interval,
            opts.flush_max.max(1),
            counters.clone(),
            held.clone(),
        ));
        let (hb_stop, hb_stop_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat_loop(
            backend.clone(),
            worker_id,
            opts.heartbeat_interval.max(Duration::from_millis(10)),
            lease,
            queue.to_string(),
            held.clone(),
            hb_stop_rx,
        ));
        Ok(WorkerSession {
            backend,
            depth: Mutex::new(ClaimDepth::new(opts.claim_ahead)),
            queue: queue.to_string(),
            worker_id,
            lease,
            held,
            counters,
            done_tx: Mutex::new(Some(done_tx)),
            completer: tokio::sync::Mutex::new(Some(completer)),
            hb_stop,
            heartbeat: tokio::sync::Mutex::new(Some(heartbeat)),
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

    /// Claim up to `limit` ready jobs, leased to this worker.
    pub async fn claim(&self, limit: usize) -> Result<Vec<Message>> {
        validate_batch(limit)?;
        let msgs = self
            .backend
            .claim_jobs(ClaimParams {
                queue: &self.queue,
                limit,
                lease: self.lease,
                worker_id: Some(self.worker_id),
            })
            .await?;
        if !msgs.is_empty() {
            let expires = Instant::now() + self.lease;
            let mut h = lock(&self.held);
            for m in &msgs {
                h.insert(m.id, (m.lease_token, expires));
            }
        }
        Ok(msgs)
    }

    /// Claim ahead of the handlers: as many jobs as the adaptive claim depth allows with
    /// `buffered` claimed jobs still waiting for a handler. `starved` tells whether the
    /// handlers sat idle waiting for the previous claim (the depth grows if so and the queue
    /// had more). Returns nothing, without a round trip, when the buffer is deep enough.
    pub async fn claim_ahead(&self, buffered: usize, starved: bool) -> Result<Vec<Message>> {
        let want = lock(&self.depth).next(buffered, starved);
        if want == 0 {
            return Ok(Vec::new());
        }
        let msgs = self.claim(want).await?;
        lock(&self.depth).last = Some((want, msgs.len()));
        Ok(msgs)
    }

    /// Claim again once fewer than this many claimed jobs wait for a handler.
    pub fn refill_below(&self) -> usize {
        lock(&self.depth).refill_below()
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
            outcome: match outcome {
                Ok(()) => Outcome::Ok,
                Err(e) => Outcome::Err(e),
            },
        })
        .map_err(|_| Error::Closed)
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

    /// Write every pending outcome, release every job still held, stop heartbeating and mark
    /// the worker stopped. Idempotent.
    pub async fn stop(&self) -> WorkerStats {
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
            .map(|(&id, &(token, _))| Lease { id, token })
            .collect();
        self.release(&rest).await;
        let _ = self.hb_stop.send(true);
        if let Some(h) = self.heartbeat.lock().await.take() {
            let _ = h.await;
        }
        let _ = self
            .backend
            .worker_heartbeat(self.worker_id, WorkerStatus::Stopped)
            .await;
        self.stats()
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
        let c = &self.cfg;
        validate_queue_name(&c.queue)?;
        validate_batch(c.batch_size)?;
        if c.concurrency == 0 || c.concurrency > 10_000 {
            return Err(Error::validation(
                "concurrency",
                format!("must be between 1 and 10000, got {}", c.concurrency),
            ));
        }
        let poll = c.poll_interval.unwrap_or(store.config().poll_interval);
        let session = WorkerSession::start(
            store,
            &c.queue,
            SessionOptions {
                visibility_timeout: c.visibility_timeout,
                retry: c.retry,
                delete_on_success: c.completion == Completion::Delete,
                flush_interval: c.flush_interval,
                flush_max: c.flush_max,
                heartbeat_interval: c.heartbeat,
                claim_ahead: c.concurrency * c.batch_size,
            },
        )
        .await?;
        let session = Arc::new(session);

        let sem = Arc::new(Semaphore::new(c.concurrency));
        let mut buffer: VecDeque<Message> = VecDeque::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut shutdown_rx = self.shutdown.tx.subscribe();
        let mut idle = poll;
        let mut fatal: Option<Error> = None;
        let mut error_backoff = Duration::from_millis(50);
        // The claim in flight: it runs while handlers run and jobs are handed out.
        let mut claim: Option<tokio::task::JoinHandle<Result<Vec<Message>>>> = None;
        // Whether the handlers sat idle waiting for the last claim (see `claim_ahead`).
        let mut starved = false;
        // The last claim found nothing: do not claim again before the buffer is empty.
        let mut dry = false;
        // Claim again below this many buffered jobs; the depth changes only with a claim.
        let mut refill_below = session.refill_below();

        'main: loop {
            if *shutdown_rx.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            if let Some(h) = claim.as_mut() {
                if buffer.is_empty() || h.is_finished() {
                    let waited = buffer.is_empty();
                    let joined = tokio::select! {
                        r = h => r,
                        _ = shutdown_rx.changed() => break 'main,
                    };
                    claim = None;
                    refill_below = session.refill_below();
                    let res = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    match res {
                        Ok(msgs) => {
                            error_backoff = Duration::from_millis(50);
                            starved = waited && sem.available_permits() > 0;
                            dry = msgs.is_empty();
                            if msgs.is_empty() && buffer.is_empty() {
                                tokio::select! {
                                    _ = session.wait_for_jobs(idle) => {}
                                    _ = shutdown_rx.changed() => {}
                                }
                                idle = (idle * 2).min(poll * 10);
                                continue;
                            }
                            idle = poll;
                            buffer.extend(msgs);
                        }
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, queue = %c.queue, "claim failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(error_backoff) => {}
                                _ = shutdown_rx.changed() => {}
                            }
                            error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        Err(e) => {
                            fatal = Some(e);
                            break;
                        }
                    }
                }
            }
            if claim.is_none() && buffer.len() < refill_below && (!dry || buffer.is_empty()) {
                let (s, buffered) = (session.clone(), buffer.len());
                let st = std::mem::take(&mut starved);
                claim = Some(tokio::spawn(
                    async move { s.claim_ahead(buffered, st).await },
                ));
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
            let take = if self.batch {
                c.batch_size.min(buffer.len())
            } else {
                1
            };
            let msgs: Vec<Message> = buffer.drain(..take).collect();
            let handler = self.handler.clone();
            let session = session.clone();
            let batch = self.batch;
            tasks.spawn(async move {
                let meta: Vec<(Lease, i32, i32)> = msgs
                    .iter()
                    .map(|m| (m.lease(), m.attempts, m.max_attempts))
                    .collect();
                let outcomes = run_batch(&*handler, msgs, batch).await;
                for ((lease, attempts, max_attempts), outcome) in meta.into_iter().zip(outcomes) {
                    let outcome = match outcome {
                        Outcome::Ok => Ok(()),
                        Outcome::Err(e) => Err(e),
                    };
                    let _ = session.complete(lease, attempts, max_attempts, outcome);
                }
                drop(permit);
            });
        }

        // A claim still in flight: what it got was never started either.
        if let Some(h) = claim.take() {
            if let Ok(Ok(msgs)) = h.await {
                buffer.extend(msgs);
            }
        }
        // Shutdown: claim nothing more; give back what was never started.
        let never_started: Vec<Lease> = buffer.drain(..).map(|m| m.lease()).collect();
        session.release(&never_started).await;
        // Let running handlers finish within the grace period.
        let drained = tokio::time::timeout(c.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(queue = %c.queue, "shutdown grace period over; abandoning running handlers and releasing their jobs");
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

#[allow(clippy::too_many_arguments)]
async fn completer_loop(
    backend: Arc<dyn Backend>,
    mut rx: mpsc::UnboundedReceiver<Done>,
    completion: Completion,
    retry: RetryPolicy,
    interval: Duration,
    max: usize,
    counters: Arc<Counters>,
    held: Held,
) {
    let mut ok: Vec<Lease> = Vec::new();
    let mut failed: Vec<Failure> = Vec::new();
    loop {
        // Wait for the first outcome, then gather more for up to `interval`.
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + interval;
        let push = |d: Done, ok: &mut Vec<Lease>, failed: &mut Vec<Failure>| match d.outcome {
            Outcome::Ok => ok.push(d.lease),
            Outcome::Err(e) => failed.push(failure(&retry, d.lease, d.attempts, d.max_attempts, e)),
        };
        push(first, &mut ok, &mut failed);
        let mut closed = false;
        while ok.len() + failed.len() < max {
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
            completion,
            &mut ok,
            &mut failed,
            &counters,
            &held,
        )
        .await;
        if closed {
            break;
        }
    }
    flush(
        &*backend,
        completion,
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

async fn heartbeat_loop(
    backend: Arc<dyn Backend>,
    worker_id: i64,
    every: Duration,
    lease: Duration,
    queue: String,
    held: Held,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = backend
            .worker_heartbeat(worker_id, WorkerStatus::Running)
            .await
        {
            tracing::warn!(error = %e, worker_id, "heartbeat failed");
        }
        // Keep the leases of running handlers alive while this worker lives.
        let soon = Instant::now() + lease / 2 + every;
        let due: Vec<Lease> = lock(&held)
            .iter()
            .filter(|(_, (_, exp))| *exp <= soon)
            .map(|(&id, &(token, _))| Lease { id, token })
            .collect();
        if !due.is_empty() {
            match backend.extend_leases(&due, lease).await {
                Ok(r) => {
                    let exp = Instant::now() + lease;
                    let mut h = lock(&held);
                    for (l, ok) in due.iter().zip(r) {
                        if ok {
                            if let Some(e) = h.get_mut(&l.id) {
                                e.1 = exp;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease extension failed"),
            }
        }
        // Jobs whose final attempt's lease expired (their worker died) become dead letters.
        if let Err(e) = backend.rescue_expired(&queue).await {
            tracing::warn!(error = %e, "dead-lettering expired final attempts failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClaimDepth;

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
