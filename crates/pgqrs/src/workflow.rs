//! Durable workflows: a workflow is a function of steps; each completed step's output is
//! journaled, so a run resumes after a crash from its last completed step, and a completed
//! step never runs again.
//!
//! ## What is guaranteed
//!
//! * A step's body runs **at least once until its output is journaled, and never after**: if
//!   the process dies after the body ran but before the journal write committed, the body runs
//!   again on resumption.
//! * A finished run (succeeded, failed or cancelled) called again runs nothing: it returns its
//!   stored output, or its stored error.
//! * A run's outcome is recorded exactly once: only the executor that owns the run's lease can
//!   record it, and only while the run is `running`.
//! * One executor at a time: a run is owned through a lease, renewed while it runs. When its
//!   process dies the lease expires and another executor may resume it.
//! * Steps are identified by position and name. If, on replay, the code calls a different step
//!   at a journaled position, the run stops with [`Error::NonDeterministic`].
//!
//! ## Step states
//!
//! ```text
//!  (not journaled) ──body Ok──► succeeded            (replayed from the journal ever after)
//!        │ body Err, attempts left ──► retrying ──next_retry_at──► (runs again)
//!        └ body Err, permanent or no attempts left ──► failed ──► the run fails
//! ```

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{BoxError, Error, Result};
use crate::retry::RetryPolicy;
use crate::store::{hostname, FinishRunParams, NewStep, Store};
use crate::types::{RunStatus, StepRecord, StepStatus, WorkflowRun, RUN_JOB_ATTEMPTS, RUN_JOB_KEY};

/// An error that must not be retried: a step that returns it fails at once and fails its run.
///
/// ```
/// # fn check(x: i32) -> anyhow::Result<()> {
/// if x < 0 {
///     return Err(pgqrs::Permanent::new("negative input").into());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permanent(pub String);

impl Permanent {
    /// A permanent error with this message.
    pub fn new(message: impl Display) -> Self {
        Permanent(message.to_string())
    }
}

impl Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Permanent {}

/// Error types a step or workflow may return. Implemented for `anyhow::Error`,
/// [`BoxError`] and [`Error`]; implement it (with the default method) for your own.
pub trait StepError: Display + From<Error> {
    /// A permanent error is not retried. Default: `false`.
    fn is_permanent(&self) -> bool {
        false
    }
}

fn engine_error_is_final(e: &Error) -> bool {
    matches!(
        e,
        Error::NonDeterministic { .. }
            | Error::WorkflowCancelled { .. }
            | Error::WorkflowLocked { .. }
            | Error::Serialization { .. }
    )
}

impl StepError for anyhow::Error {
    fn is_permanent(&self) -> bool {
        self.downcast_ref::<Permanent>().is_some()
            || self
                .downcast_ref::<Error>()
                .is_some_and(engine_error_is_final)
    }
}

impl StepError for BoxError {
    fn is_permanent(&self) -> bool {
        self.downcast_ref::<Permanent>().is_some()
            || self
                .downcast_ref::<Error>()
                .is_some_and(engine_error_is_final)
    }
}

impl StepError for Error {
    fn is_permanent(&self) -> bool {
        engine_error_is_final(self)
    }
}

/// How a step begins: replayed from the journal, or run (again).
#[derive(Debug, Clone, PartialEq)]
pub enum StepStart {
    /// Journaled: this is its output; do not run the body.
    Replay(Value),
    /// Run the body; this is attempt number `attempt` (1-based) at position `position`.
    Run {
        /// Position of the step in the run.
        position: i32,
        /// Attempt number, 1-based.
        attempt: i32,
    },
}

/// How a run begins.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStart {
    /// This executor owns the run now; execute the body.
    Execute,
    /// The run already finished; this is its record (output or error).
    Finished(WorkflowRun),
}

#[derive(Default)]
struct State {
    next_position: i32,
    journal: HashMap<i32, StepRecord>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    store: Store,
    run_id: i64,
    name: String,
    input: Value,
    owner: String,
    lease: Duration,
    lost: AtomicBool,
    /// An execution of the run is in progress through this context (or a clone of it).
    executing: AtomicBool,
    state: Mutex<State>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .renewer
            .take()
        {
            h.abort();
        }
    }
}

/// The context of one workflow run: pass it to the workflow function and its steps.
///
/// Get one from [`Admin::create_workflow`](crate::Admin::create_workflow) (a new run) or
/// [`Admin::get_workflow`](crate::Admin::get_workflow) (to resume or query a run). Cheap to
/// clone; clones share the same execution.
#[derive(Clone)]
pub struct Workflow {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("run_id", &self.inner.run_id)
            .field("name", &self.inner.name)
            .finish()
    }
}

static OWNER_SEQ: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workflow {
    pub(crate) fn from_run(store: &Store, run: &WorkflowRun) -> Self {
        let owner = format!(
            "{}:{}:{}:{}",
            hostname(),
            std::process::id(),
            OWNER_SEQ.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        Workflow {
            inner: Arc::new(Inner {
                store: store.clone(),
                run_id: run.id,
                name: run.name.clone(),
                input: run.input.clone(),
                owner,
                lease: store.config().visibility_timeout,
                lost: AtomicBool::new(false),
                executing: AtomicBool::new(false),
                state: Mutex::default(),
            }),
        }
    }

    /// The run id.
    pub fn id(&self) -> i64 {
        self.inner.run_id
    }

    /// The workflow name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The input the run was created with.
    pub fn input(&self) -> &Value {
        &self.inner.input
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The run as stored now.
    pub async fn status(&self) -> Result<WorkflowRun> {
        self.inner
            .store
            .backend_impl()
            .get_run(self.inner.run_id)
            .await
    }

    /// The journaled steps of the run.
    pub async fn steps(&self) -> Result<Vec<StepRecord>> {
        self.inner
            .store
            .backend_impl()
            .list_steps(self.inner.run_id)
            .await
    }

    /// Why this executor may not go on: cancelled, finished, or owned by another executor.
    async fn not_owned(&self) -> Error {
        let id = self.inner.run_id;
        self.inner.lost.store(true, Ordering::Relaxed);
        match self.inner.store.backend_impl().get_run(id).await {
            Ok(r) if r.status == RunStatus::Cancelled => Error::WorkflowCancelled { run_id: id },
            Ok(r) if r.status == RunStatus::Failed => Error::WorkflowFailed {
                run_id: id,
                message: r.error.unwrap_or_default(),
            },
            Ok(_) => Error::WorkflowLocked { run_id: id },
            Err(e) => e,
        }
    }

    /// Take ownership of the run and load its journal. Used by the workflow macros and
    /// language bindings; [`run`](Self::run) calls it for you.
    ///
    /// Fails with [`Error::WorkflowLocked`] while another execution of the run is in progress,
    /// through this context (or a clone of it) or through another executor.
    pub async fn start(&self) -> Result<RunStart> {
        let inner = &self.inner;
        if inner
            .executing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::WorkflowLocked {
                run_id: inner.run_id,
            });
        }
        let started = self.start_owned().await;
        if !matches!(started, Ok(RunStart::Execute)) {
            inner.executing.store(false, Ordering::Release);
        }
        started
    }

    async fn start_owned(&self) -> Result<RunStart> {
        let inner = &self.inner;
        let backend = inner.store.backend_impl();
        let acquired = backend
            .acquire_run(inner.run_id, &inner.owner, inner.lease)
            .await?;
        if acquired.is_none() {
            let run = backend.get_run(inner.run_id).await?;
            return match run.status {
                s if s.is_finished() => Ok(RunStart::Finished(run)),
                _ => Err(Error::WorkflowLocked {
                    run_id: inner.run_id,
                }),
            };
        }
        let journal = backend.list_steps(inner.run_id).await?;
        inner.lost.store(false, Ordering::Relaxed);
        let mut st = lock(&inner.state);
        st.next_position = 0;
        st.journal = journal.into_iter().map(|s| (s.position, s)).collect();
        if st.renewer.is_none() {
            let weak = Arc::downgrade(&self.inner);
            let every = (inner.lease / 3).max(Duration::from_millis(100));
            st.renewer = Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(inner) = weak.upgrade() else { break };
                    match inner
                        .store
                        .backend_impl()
                        .renew_run(inner.run_id, &inner.owner, inner.lease)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            inner.lost.store(true, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, run_id = inner.run_id, "workflow lease renewal failed")
                        }
                    }
                }
            }));
        }
        Ok(RunStart::Execute)
    }

    fn stop_renewing(&self) {
        if let Some(h) = lock(&self.inner.state).renewer.take() {
            h.abort();
        }
        self.inner.executing.store(false, Ordering::Release);
    }

    /// End this execution without recording an outcome (the task running it was cancelled):
    /// stop renewing the lease, so that the run can be resumed, here or elsewhere.
    pub fn suspend(&self) {
        self.stop_renewing();
    }

    /// Record the run's success with its output. Returns `false` if the run was no longer
    /// owned by this executor (cancelled meanwhile, or taken over); nothing is changed then.
    ///
    /// An output that cannot be stored as JSON fails the run with that error instead, and the
    /// error is returned.
    pub async fn finish_ok<T: Serialize + ?Sized>(&self, output: &T) -> Result<bool> {
        let text = match to_json(output, "workflow output") {
            Ok(t) => t,
            Err(e) => {
                self.finish_err(&e.to_string()).await?;
                return Err(e);
            }
        };
        self.stop_renewing();
        self.inner
            .store
            .backend_impl()
            .finish_run(FinishRunParams {
                id: self.inner.run_id,
                owner: &self.inner.owner,
                status: RunStatus::Succeeded,
                output: Some(text),
                error: None,
            })
            .await
    }

    /// Record the run's failure with its error text. Returns `false` (and changes nothing)
    /// if the run is no longer owned by this executor: cancelled, or taken over.
    pub async fn finish_err(&self, error: &str) -> Result<bool> {
        self.stop_renewing();
        if self.inner.lost.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.inner
            .store
            .backend_impl()
            .finish_run(FinishRunParams {
                id: self.inner.run_id,
                owner: &self.inner.owner,
                status: RunStatus::Failed,
                output: None,
                error: Some(crate::error::storable_error(error)),
            })
            .await
    }

    /// Begin the next step: replay it from the journal, or get leave to run it. Fails if the
    /// run was cancelled or taken over, or if the code called a different step than the
    /// journal recorded at this position. Waits out a journaled retry delay.
    pub async fn begin_step(&self, name: &str) -> Result<StepStart> {
        crate::store::validate_name("step name", name)?;
        let inner = &self.inner;
        let (position, recorded) = {
            let mut st = lock(&inner.state);
            let p = st.next_position;
            st.next_position += 1;
            (p, st.journal.get(&p).cloned())
        };
        let mut attempt = 1;
        if let Some(rec) = recorded {
            if rec.name != name {
                return Err(Error::NonDeterministic {
                    run_id: inner.run_id,
                    position,
                    recorded: rec.name,
                    called: name.to_string(),
                });
            }
            match rec.status {
                StepStatus::Succeeded => {
                    return Ok(StepStart::Replay(rec.output.unwrap_or(Value::Null)))
                }
                StepStatus::Failed => {
                    return Err(Error::WorkflowFailed {
                        run_id: inner.run_id,
                        message: rec.error.unwrap_or_default(),
                    })
                }
                StepStatus::Retrying => {
                    attempt = rec.attempts + 1;
                    if let Some(at) = rec.next_retry_at {
                        if let Ok(wait) = (at - Utc::now()).to_std() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
        }
        self.ensure_owned().await?;
        Ok(StepStart::Run { position, attempt })
    }

    /// Check that this executor still owns the run; fails with
    /// [`Error::WorkflowCancelled`] or [`Error::WorkflowLocked`] if the run was cancelled or
    /// taken over. Called before every step attempt, so a cancelled run starts no new step.
    /// A read in the common case (the lease is renewed in the background while the run
    /// executes); a write only when the lease lapsed without anyone taking the run.
    pub async fn ensure_owned(&self) -> Result<()> {
        let inner = &self.inner;
        if !inner.lost.load(Ordering::Relaxed) {
            let backend = inner.store.backend_impl();
            let l = backend.run_lease(inner.run_id).await?;
            let mine =
                l.status == RunStatus::Running && l.owner.as_deref() == Some(inner.owner.as_str());
            if mine
                && (l.lease_valid
                    || backend
                        .renew_run(inner.run_id, &inner.owner, inner.lease)
                        .await?)
            {
                return Ok(());
            }
        }
        Err(self.not_owned().await)
    }

    /// Journal a step's output. After this the step never runs again.
    pub async fn complete_step<T: Serialize + ?Sized>(
        &self,
        position: i32,
        name: &str,
        attempt: i32,
        output: &T,
    ) -> Result<()> {
        let text = to_json(output, "step output")?;
        let ok = self
            .inner
            .store
            .backend_impl()
            .record_step(
                &self.inner.owner,
                NewStep {
                    run_id: self.inner.run_id,
                    position,
                    name,
                    status: StepStatus::Succeeded,
                    output: Some(text),
                    error: None,
                    attempts: attempt,
                    retry_in: None,
                },
            )
            .await?;
        if !ok {
            return Err(self.not_owned().await);
        }
        Ok(())
    }

    /// Journal a failed attempt. Returns `Some(delay)` when the policy allows another attempt
    /// (run it after `delay`), `None` when the step failed for good (the run should fail).
    pub async fn fail_step(
        &self,
        position: i32,
        name: &str,
        attempt: i32,
        error: &str,
        policy: &RetryPolicy,
        permanent: bool,
    ) -> Result<Option<Duration>> {
        // A step has no limit of its own: the policy's (one attempt when it names none).
        let limit = policy.max_attempts.unwrap_or(1);
        let retry = !permanent && policy.allows_retry(attempt.max(1) as u32, limit);
        let delay = retry.then(|| {
            policy
                .delay_after(attempt.max(1) as u32)
                .min(crate::limits::MAX_DELAY)
        });
        let ok = self
            .inner
            .store
            .backend_impl()
            .record_step(
                &self.inner.owner,
                NewStep {
                    run_id: self.inner.run_id,
                    position,
                    name,
                    status: if retry {
                        StepStatus::Retrying
                    } else {
                        StepStatus::Failed
                    },
                    output: None,
                    error: Some(crate::error::storable_error(error)),
                    attempts: attempt,
                    retry_in: delay,
                },
            )
            .await?;
        if !ok {
            return Err(self.not_owned().await);
        }
        Ok(delay)
    }

    /// Journal a failed attempt and decide what comes next: `None` when the step failed for
    /// good (permanent, or no attempt left under `policy`; the run should fail), or the number
    /// of the next attempt, once its backoff has passed and the run was found still owned by
    /// this executor. [`step_with_retry`](Self::step_with_retry) and language bindings call
    /// it when a step's body fails.
    pub async fn retry_step(
        &self,
        position: i32,
        name: &str,
        attempt: i32,
        error: &str,
        policy: &RetryPolicy,
        permanent: bool,
    ) -> Result<Option<i32>> {
        match self
            .fail_step(position, name, attempt, error, policy, permanent)
            .await?
        {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                self.ensure_owned().await?;
                Ok(Some(attempt + 1))
            }
            None => Ok(None),
        }
    }

    /// Run a step that is not retried (a failure fails the run). See
    /// [`step_with_retry`](Self::step_with_retry).
    pub async fn step<T, E, F, Fut>(&self, name: &str, f: F) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: StepError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let mut f = Some(f);
        self.step_with_retry(name, RetryPolicy::none(), move || {
            let f = f.take().expect("a step without retries runs its body once");
            f()
        })
        .await
    }

    /// Run a step: replay its journaled output, or run `f` and journal the result, retrying
    /// transient errors per `policy` (the engine sleeps the backoff and journals each attempt).
    pub async fn step_with_retry<T, E, F, Fut>(
        &self,
        name: &str,
        policy: RetryPolicy,
        mut f: F,
    ) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: StepError,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let (position, mut attempt) = match self.begin_step(name).await? {
            StepStart::Replay(v) => {
                return serde_json::from_value(v).map_err(|e| E::from(e.into()))
            }
            StepStart::Run { position, attempt } => (position, attempt),
        };
        loop {
            match f().await {
                Ok(v) => {
                    self.complete_step(position, name, attempt, &v).await?;
                    return Ok(v);
                }
                Err(e) => {
                    let text = e.to_string();
                    match self
                        .retry_step(position, name, attempt, &text, &policy, e.is_permanent())
                        .await?
                    {
                        Some(next) => attempt = next,
                        None => return Err(e),
                    }
                }
            }
        }
    }

    /// Execute the workflow body `f` for this run: start (or resume) the run, run the body,
    /// record its outcome. A finished run is not executed again: its stored output (or error)
    /// is returned.
    pub async fn run<T, E, F, Fut>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: StepError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        match self.start().await? {
            RunStart::Finished(run) => stored_outcome(run).map_err(E::from),
            RunStart::Execute => match f().await {
                Ok(v) => {
                    if self.finish_ok(&v).await? {
                        Ok(v)
                    } else {
                        // Cancelled (or taken over) after the last step: not a success.
                        Err(E::from(self.not_owned().await))
                    }
                }
                Err(e) => {
                    // A no-op when cancelled or taken over: the run is not ours to fail.
                    self.finish_err(&e.to_string()).await?;
                    Err(e)
                }
            },
        }
    }
}

/// JSON text of a value, refusing what could not be read back (nesting too deep, integers
/// beyond 64 bits); `field` names it in the error.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, field: &'static str) -> Result<String> {
    let text = serde_json::to_string(value)?;
    crate::produce::check_json(&text, field)?;
    Ok(text)
}

/// The result a finished run stored (see [`WorkflowRun::outcome`]).
fn stored_outcome<T: DeserializeOwned>(run: WorkflowRun) -> Result<T> {
    Ok(serde_json::from_value(run.outcome()?)?)
}

type WorkflowFn = Arc<
    dyn Fn(Workflow) -> crate::handler::BoxFuture<std::result::Result<(), BoxError>> + Send + Sync,
>;

/// Workflows by name, for workers that execute runs taken from a queue.
///
/// ```no_run
/// # async fn demo(store: &pgqrs::Store) -> pgqrs::Result<()> {
/// async fn greet(ctx: &pgqrs::Workflow, name: String) -> anyhow::Result<String> {
///     ctx.step("hello", || async { Ok::<_, anyhow::Error>(format!("hello {name}")) }).await
/// }
/// let registry = pgqrs::WorkflowRegistry::new().register("greet", |ctx: pgqrs::Workflow| async move {
///     let name: String = serde_json::from_value(ctx.input().clone())?;
///     ctx.run(|| greet(&ctx, name)).await
/// });
/// pgqrs::admin(store).enqueue_workflow("runs", "greet", &"ada").await?;
/// let worker = registry.worker("runs").concurrency(4).build(store);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct WorkflowRegistry {
    map: HashMap<String, WorkflowFn>,
}

impl std::fmt::Debug for WorkflowRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

/// Builds the [`Worker`](crate::Worker) that executes queued runs of a [`WorkflowRegistry`].
#[derive(Debug)]
pub struct WorkflowWorkerBuilder {
    registry: WorkflowRegistry,
    builder: crate::WorkerBuilder,
}

impl WorkflowWorkerBuilder {
    /// Runs executed at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.builder = self.builder.concurrency(n);
        self
    }

    /// Further worker settings.
    pub fn configure(
        mut self,
        f: impl FnOnce(crate::WorkerBuilder) -> crate::WorkerBuilder,
    ) -> Self {
        self.builder = f(self.builder);
        self
    }

    /// The worker, executing runs stored in `store`. Run it with
    /// [`Worker::run`](crate::Worker::run) on the same store.
    pub fn build(self, store: &Store) -> crate::Worker {
        let registry = Arc::new(self.registry);
        let store = store.clone();
        self.builder.handle(move |msg| {
            let registry = registry.clone();
            let store = store.clone();
            async move { registry.execute_message(&store, msg).await }
        })
    }
}

/// The retry policy of workers that execute workflow runs: a run request is delivered again
/// while another executor holds the run, up to the attempts its job was enqueued with,
/// with exponential backoff from 0.5 s up to 30 s.
pub fn run_job_retry() -> RetryPolicy {
    RetryPolicy::exponential(
        RUN_JOB_ATTEMPTS,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
}

impl Workflow {
    /// The run a job made by [`Admin::enqueue_workflow`](crate::Admin::enqueue_workflow)
    /// asks for, ready to execute; `None` when that run has already finished (the job is
    /// done), or finished and was deleted by [retention](crate::Retention). Fails with [`Error::Validation`] if the job is not a run request.
    pub async fn for_job(store: &Store, msg: &crate::Message) -> Result<Option<Workflow>> {
        let run_id = msg
            .payload
            .get(RUN_JOB_KEY)
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                Error::validation(
                    "job",
                    format!(
                        "job {} is not a workflow run request: {}",
                        msg.id, msg.payload
                    ),
                )
            })?;
        let run = match store.backend_impl().get_run(run_id).await {
            Ok(run) => run,
            // Runs are only deleted once finished, by retention: the request is done.
            Err(Error::WorkflowNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if run.status.is_finished() {
            return Ok(None);
        }
        Ok(Some(Workflow::from_run(store, &run)))
    }
}

impl WorkflowRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a workflow under `name`. `f` receives the run's context; it usually calls
    /// [`Workflow::run`] with the workflow function.
    pub fn register<F, Fut, T, E>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Workflow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Display + Send + 'static,
    {
        let f = Arc::new(f);
        self.map.insert(
            name.to_string(),
            Arc::new(move |ctx| {
                let fut = f(ctx);
                Box::pin(async move {
                    fut.await
                        .map(|_| ())
                        .map_err(|e| -> BoxError { e.to_string().into() })
                })
            }),
        );
        self
    }

    /// A worker that takes run requests from `queue` (see
    /// [`Admin::enqueue_workflow`](crate::Admin::enqueue_workflow)) and executes them.
    /// A run held by another live executor is retried later; a run of an unknown workflow
    /// fails the job (and ends as a dead letter).
    pub fn worker(self, queue: &str) -> WorkflowWorkerBuilder {
        WorkflowWorkerBuilder {
            registry: self,
            builder: crate::worker(queue).retry(run_job_retry()),
        }
    }

    async fn execute_message(
        &self,
        store: &Store,
        msg: crate::Message,
    ) -> std::result::Result<(), BoxError> {
        let Some(ctx) = Workflow::for_job(store, &msg).await? else {
            return Ok(());
        };
        let f = self
            .map
            .get(ctx.name())
            .cloned()
            .ok_or_else(|| -> BoxError {
                format!(
                    "no workflow named {:?} is registered with this worker",
                    ctx.name()
                )
                .into()
            })?;
        f(ctx).await
    }
}
