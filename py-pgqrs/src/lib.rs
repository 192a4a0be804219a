//! The native module `pgqrs._pgqrs`: a thin layer over the Rust core.
//!
//! Every async method runs its work on a tokio runtime (see [`runtime`]) and returns an asyncio
//! awaitable; the GIL is not held while the database works. Records cross the boundary as
//! tuples of plain values (payloads as JSON text, times as microseconds since the epoch); the
//! public Python package (`py-pgqrs/python/pgqrs`) turns them into typed objects and holds the
//! docstrings and typing. Errors go through the single mapping in [`errors`].

mod errors;
mod runtime;

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use errors::to_py;
use runtime::awaitable;

/// Payloads handed to `Store.enqueue`: checked and split in Rust either way.
#[derive(FromPyObject)]
enum Payloads {
    /// One JSON array text (`produce_batch` encodes the whole list in one call).
    Array(String),
    /// One JSON text per job.
    Each(Vec<String>),
}

type Msg = (i64, String, String, i32, i32, i64, i64, Option<String>, i64);
type Run = (
    i64,
    String,
    String,
    &'static str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    i32,
    i64,
    i64,
    Option<i64>,
);
type Step = (
    i64,
    i32,
    String,
    &'static str,
    Option<String>,
    Option<String>,
    i32,
    Option<i64>,
);
type Stats = (i64, u64, u64, u64, u64, u64);
/// `(max_attempts or None, kind, base seconds, max seconds)`.
type RetrySpec = (Option<u32>, String, f64, f64);

fn us(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

fn json_text(v: &serde_json::Value) -> String {
    // Serializing a serde_json::Value cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn msgs(v: Vec<pgqrs::Message>) -> Vec<Msg> {
    v.into_iter().map(msg).collect()
}

fn msg(m: pgqrs::Message) -> Msg {
    (
        m.id,
        m.queue,
        json_text(&m.payload),
        m.attempts,
        m.max_attempts,
        us(m.enqueued_at),
        us(m.visible_at),
        m.last_error,
        m.lease_token,
    )
}

fn run(r: pgqrs::WorkflowRun) -> Run {
    (
        r.id,
        r.name,
        json_text(&r.input),
        r.status.as_str(),
        r.output.as_ref().map(json_text),
        r.error,
        r.owner,
        r.lease_until.map(us),
        r.attempts,
        us(r.created_at),
        us(r.updated_at),
        r.finished_at.map(us),
    )
}

fn step(s: pgqrs::StepRecord) -> Step {
    (
        s.run_id,
        s.position,
        s.name,
        s.status.as_str(),
        s.output.as_ref().map(json_text),
        s.error,
        s.attempts,
        s.next_retry_at.map(us),
    )
}

fn stats(s: pgqrs::WorkerStats) -> Stats {
    (
        s.worker_id,
        s.succeeded,
        s.failed,
        s.dead,
        s.lease_lost,
        s.released,
    )
}

fn secs(name: &str, s: f64) -> PyResult<Duration> {
    if !s.is_finite() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

fn opt_secs(name: &str, s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| secs(name, s)).transpose()
}

fn policy(spec: Option<RetrySpec>) -> PyResult<pgqrs::RetryPolicy> {
    let Some((max_attempts, kind, base, max)) = spec else {
        return Ok(pgqrs::RetryPolicy::default());
    };
    if max_attempts == Some(0) {
        return Err(errors::named(
            "ValidationError",
            "max_attempts must be at least 1".into(),
        ));
    }
    let base = secs("backoff base", base)?;
    let max = secs("backoff max", max)?;
    let backoff = match kind.as_str() {
        "fixed" => pgqrs::Backoff::Fixed(base),
        "exponential" => pgqrs::Backoff::Exponential { base, max },
        "exponential_jitter" => pgqrs::Backoff::ExponentialJitter { base, max },
        other => {
            return Err(errors::named(
                "ValidationError",
                format!("unknown backoff {other:?}: use fixed, exponential or exponential_jitter"),
            ))
        }
    };
    Ok(pgqrs::RetryPolicy {
        max_attempts,
        backoff,
    })
}

/// Refuse objects created in another process (before `os.fork()`).
fn same_process(pid: u32, what: &str) -> PyResult<()> {
    if pid != std::process::id() {
        return Err(errors::named(
            "ForkError",
            format!(
                "this {what} was created in process {pid}, before os.fork(); its connections belong to the parent. Call pgqrs.connect() again in the child process"
            ),
        ));
    }
    Ok(())
}

/// A connection to a pgqrs database.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
struct Store {
    inner: pgqrs::Store,
    pid: u32,
}

impl Store {
    fn get(&self) -> PyResult<pgqrs::Store> {
        same_process(self.pid, "store")?;
        Ok(self.inner.clone())
    }
}

/// Open a store.
#[pyfunction]
fn connect(py: Python<'_>, dsn: String) -> PyResult<Bound<'_, PyAny>> {
    awaitable(py, async move {
        let inner = pgqrs::connect(&dsn).await.map_err(to_py)?;
        Ok(Store {
            inner,
            pid: std::process::id(),
        })
    })
}

/// `self.get()?` (the native object, checked to be of this process), then an awaitable of
/// `$body` with the error mapped to Python.
macro_rules! native_call {
    ($self:ident, $py:ident, |$s:ident| $body:expr) => {{
        let $s = $self.get()?;
        awaitable($py, async move { $body.map_err(to_py) })
    }};
}

#[pymethods]
impl Store {
    /// `postgres`, `sqlite` or `turso`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend().name()
    }

    /// The connection string with the password hidden.
    #[getter]
    fn dsn(&self) -> String {
        self.inner.config().redacted_dsn().to_string()
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        awaitable(py, async move {
            s.close().await;
            Ok(())
        })
    }

    fn install<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).install().await)
    }

    fn install_up_to<'py>(&self, py: Python<'py>, version: i64) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).install_up_to(version).await)
    }

    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).verify().await)
    }

    fn schema_version<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).schema_version().await)
    }

    fn create_queue<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .create_queue(&name)
            .await
            .map(|q| (q.id, q.name, us(q.created_at))))
    }

    fn delete_queue<'py>(
        &self,
        py: Python<'py>,
        name: String,
        force: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .delete_queue(&name, force)
            .await)
    }

    fn purge_queue<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).purge_queue(&name).await)
    }

    fn list_queues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).list_queues().await.map(
            |qs| qs
                .into_iter()
                .map(|q| (q.id, q.name, us(q.created_at)))
                .collect::<Vec<_>>()
        ))
    }

    fn queue_metrics<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .queue_metrics(&name)
            .await
            .map(|m| (
                m.queue,
                m.ready,
                m.delayed,
                m.leased,
                m.archived,
                m.dead,
                m.oldest_ready_age_secs
            )))
    }

    fn dead_letters<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .dead_letters(&queue, limit)
            .await
            .map(|ds| ds
                .into_iter()
                .map(|d| (
                    d.id,
                    d.queue,
                    json_text(&d.payload),
                    d.attempts,
                    d.last_error,
                    us(d.enqueued_at),
                    us(d.failed_at)
                ))
                .collect::<Vec<_>>()))
    }

    #[pyo3(signature = (queue, ids=None))]
    fn requeue_dead<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        ids: Option<Vec<i64>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| match ids {
            Some(ids) => pgqrs::admin(&s).requeue_dead(&queue, &ids).await,
            None => pgqrs::admin(&s).requeue_all_dead(&queue).await,
        })
    }

    fn archived_jobs<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .archived_jobs(&queue, limit)
            .await
            .map(|js| js
                .into_iter()
                .map(|j| (
                    j.id,
                    j.queue,
                    json_text(&j.payload),
                    j.attempts,
                    us(j.enqueued_at),
                    us(j.archived_at)
                ))
                .collect::<Vec<_>>()))
    }

    fn list_workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).list_workers().await.map(
            |ws| ws
                .into_iter()
                .map(|w| (
                    w.id,
                    w.hostname,
                    w.pid,
                    w.queue,
                    us(w.started_at),
                    us(w.heartbeat_at),
                    match w.status {
                        pgqrs::WorkerStatus::Running => "running",
                        pgqrs::WorkerStatus::Stopping => "stopping",
                        _ => "stopped",
                    }
                ))
                .collect::<Vec<_>>()
        ))
    }

    /// Enqueue JSON (already serialized by the Python layer) in one statement: a list of
    /// texts, one per job, or one JSON array text whose elements are the jobs.
    #[pyo3(signature = (queue, payloads, delay=None, at_us=None, max_attempts=None))]
    fn enqueue<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        payloads: Payloads,
        delay: Option<f64>,
        at_us: Option<i64>,
        max_attempts: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let delay = opt_secs("delay", delay)?;
        let at = match at_us {
            Some(t) => Some(chrono::DateTime::from_timestamp_micros(t).ok_or_else(|| {
                errors::named("ValidationError", format!("time {t} µs is out of range"))
            })?),
            None => None,
        };
        awaitable(py, async move {
            let mut b = pgqrs::enqueue().to(queue);
            match payloads {
                Payloads::Array(text) => b = b.messages_json_array(&text),
                Payloads::Each(texts) => {
                    for p in texts {
                        b = b.message_json(p);
                    }
                }
            }
            if let Some(d) = delay {
                b = b.delay(d);
            }
            if let Some(t) = at {
                b = b.at(t);
            }
            if let Some(n) = max_attempts {
                b = b.max_attempts(n);
            }
            b.execute(&s).await.map_err(to_py)
        })
    }

    fn consumer<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let pid = self.pid;
        awaitable(py, async move {
            let inner = pgqrs::Consumer::new(&s, &queue).await.map_err(to_py)?;
            Ok(Consumer { inner, pid })
        })
    }

    #[pyo3(signature = (queue, visibility_timeout=None, retry=None, delete_on_success=false, flush_interval=0.002, flush_max=500, heartbeat_interval=5.0, claim_ahead=2))]
    #[allow(clippy::too_many_arguments)]
    fn worker_session<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        visibility_timeout: Option<f64>,
        retry: Option<RetrySpec>,
        delete_on_success: bool,
        flush_interval: f64,
        flush_max: usize,
        heartbeat_interval: f64,
        claim_ahead: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let pid = self.pid;
        let opts = pgqrs::SessionOptions {
            visibility_timeout: opt_secs("visibility_timeout", visibility_timeout)?,
            retry: policy(retry)?,
            delete_on_success,
            flush_interval: secs("flush_interval", flush_interval)?,
            flush_max,
            heartbeat_interval: secs("heartbeat_interval", heartbeat_interval)?,
            claim_ahead,
        };
        awaitable(py, async move {
            let inner = pgqrs::WorkerSession::start(&s, &queue, opts)
                .await
                .map_err(to_py)?;
            Ok(WorkerSession {
                inner: Arc::new(inner),
                pid,
            })
        })
    }

    fn create_workflow<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let pid = self.pid;
        awaitable(py, async move {
            let input = raw(input_json)?;
            let inner = pgqrs::admin(&s)
                .create_workflow(&name, &input)
                .await
                .map_err(to_py)?;
            Ok(Workflow { inner, pid })
        })
    }

    fn get_workflow<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let pid = self.pid;
        awaitable(py, async move {
            let inner = pgqrs::admin(&s).get_workflow(id).await.map_err(to_py)?;
            Ok(Workflow { inner, pid })
        })
    }

    fn enqueue_workflow<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        name: String,
        input_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        awaitable(py, async move {
            let input = raw(input_json)?;
            pgqrs::admin(&s)
                .enqueue_workflow(&queue, &name, &input)
                .await
                .map(run)
                .map_err(to_py)
        })
    }

    fn workflow_run<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .workflow_run(id)
            .await
            .map(run))
    }

    fn workflow_steps<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .workflow_steps(id)
            .await
            .map(|v| v.into_iter().map(step).collect::<Vec<_>>()))
    }

    #[pyo3(signature = (status=None, limit=1000))]
    fn list_workflows<'py>(
        &self,
        py: Python<'py>,
        status: Option<String>,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let status = match status {
            Some(s) => Some(pgqrs::RunStatus::parse(&s).ok_or_else(|| {
                errors::named(
                    "ValidationError",
                    format!("unknown run status {s:?}: use pending, running, succeeded, failed or cancelled"),
                )
            })?),
            None => None,
        };
        native_call!(self, py, |s| pgqrs::admin(&s)
            .list_workflows(status, limit)
            .await
            .map(|v| v.into_iter().map(run).collect::<Vec<_>>()))
    }

    fn cancel_workflow<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).cancel_workflow(id).await)
    }
}

/// JSON text from Python, checked and kept as is.
fn raw(text: String) -> PyResult<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(text)
        .map_err(|e| errors::named("SerializationError", format!("invalid JSON: {e}")))
}

/// Low-level access to one queue.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
struct Consumer {
    inner: pgqrs::Consumer,
    pid: u32,
}

impl Consumer {
    fn get(&self) -> PyResult<pgqrs::Consumer> {
        same_process(self.pid, "consumer")?;
        Ok(self.inner.clone())
    }
}

#[pymethods]
impl Consumer {
    #[getter]
    fn queue(&self) -> String {
        self.inner.queue().to_string()
    }

    #[pyo3(signature = (batch_size=1, visibility_timeout=None))]
    fn dequeue<'py>(
        &self,
        py: Python<'py>,
        batch_size: usize,
        visibility_timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        let vt = opt_secs("visibility_timeout", visibility_timeout)?;
        awaitable(py, async move {
            c.dequeue(batch_size, vt).await.map(msgs).map_err(to_py)
        })
    }

    fn archive<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        awaitable(py, async move { c.archive(id).await.map_err(to_py) })
    }

    fn archive_many<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        awaitable(py, async move { c.archive_many(&ids).await.map_err(to_py) })
    }

    fn delete<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        awaitable(py, async move { c.delete(id).await.map_err(to_py) })
    }

    fn delete_many<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        awaitable(py, async move { c.delete_many(&ids).await.map_err(to_py) })
    }

    fn extend<'py>(&self, py: Python<'py>, id: i64, seconds: f64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        let d = secs("seconds", seconds)?;
        awaitable(py, async move { c.extend(id, d).await.map_err(to_py) })
    }

    #[pyo3(signature = (id, delay=0.0))]
    fn release<'py>(&self, py: Python<'py>, id: i64, delay: f64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        let d = secs("delay", delay)?;
        awaitable(py, async move { c.release(id, d).await.map_err(to_py) })
    }

    #[pyo3(signature = (id, error, retry=None))]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        id: i64,
        error: String,
        retry: Option<RetrySpec>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.get()?;
        let p = policy(retry)?;
        awaitable(
            py,
            async move { c.fail(id, &error, &p).await.map_err(to_py) },
        )
    }
}

/// The database side of a Python worker.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
struct WorkerSession {
    inner: Arc<pgqrs::WorkerSession>,
    pid: u32,
}

impl WorkerSession {
    fn get(&self) -> PyResult<Arc<pgqrs::WorkerSession>> {
        same_process(self.pid, "worker")?;
        Ok(self.inner.clone())
    }
}

#[pymethods]
impl WorkerSession {
    #[getter]
    fn worker_id(&self) -> i64 {
        self.inner.worker_id()
    }

    /// Claim ahead of the handlers (adaptive depth; see `pgqrs::WorkerSession::claim_ahead`).
    fn claim_ahead<'py>(
        &self,
        py: Python<'py>,
        buffered: usize,
        starved: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| s
            .claim_ahead(buffered, starved)
            .await
            .map(msgs))
    }

    /// Claim again once fewer than this many claimed jobs wait for a handler.
    fn refill_below(&self) -> usize {
        self.inner.refill_below()
    }

    /// Report an outcome; returns at once (written in the next batch). `error=None` is success.
    #[pyo3(signature = (id, token, attempts, max_attempts, error=None))]
    fn complete(
        &self,
        id: i64,
        token: i64,
        attempts: i32,
        max_attempts: i32,
        error: Option<String>,
    ) -> PyResult<()> {
        let s = self.get()?;
        let outcome = match error {
            None => Ok(()),
            Some(e) => Err(e),
        };
        s.complete(pgqrs::Lease { id, token }, attempts, max_attempts, outcome)
            .map_err(to_py)
    }

    fn release<'py>(
        &self,
        py: Python<'py>,
        leases: Vec<(i64, i64)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        awaitable(py, async move {
            let leases: Vec<pgqrs::Lease> = leases
                .into_iter()
                .map(|(id, token)| pgqrs::Lease { id, token })
                .collect();
            s.release(&leases).await;
            Ok(())
        })
    }

    fn wait_for_jobs<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let d = secs("timeout", timeout)?;
        awaitable(py, async move {
            s.wait_for_jobs(d).await;
            Ok(())
        })
    }

    fn stats(&self) -> Stats {
        stats(self.inner.stats())
    }

    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        awaitable(py, async move { Ok(stats(s.stop().await)) })
    }
}

/// The context of one workflow run.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
struct Workflow {
    inner: pgqrs::Workflow,
    pid: u32,
}

impl Workflow {
    fn get(&self) -> PyResult<pgqrs::Workflow> {
        same_process(self.pid, "workflow context")?;
        Ok(self.inner.clone())
    }
}

#[pymethods]
impl Workflow {
    #[getter]
    fn id(&self) -> i64 {
        self.inner.id()
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[getter]
    fn input_json(&self) -> String {
        json_text(self.inner.input())
    }

    /// `("execute", None)` or `("finished", run tuple)`.
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move {
            match w.start().await.map_err(to_py)? {
                pgqrs::RunStart::Execute => Ok(("execute", None)),
                pgqrs::RunStart::Finished(r) => Ok(("finished", Some(run(r)))),
            }
        })
    }

    /// `("replay", output_json, 0, 0)` or `("run", None, position, attempt)`.
    fn begin_step<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move {
            match w.begin_step(&name).await.map_err(to_py)? {
                pgqrs::StepStart::Replay(v) => Ok(("replay", Some(json_text(&v)), 0, 0)),
                pgqrs::StepStart::Run { position, attempt } => Ok(("run", None, position, attempt)),
            }
        })
    }

    fn complete_step<'py>(
        &self,
        py: Python<'py>,
        position: i32,
        name: String,
        attempt: i32,
        output_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move {
            let out = raw(output_json)?;
            w.complete_step(position, &name, attempt, &out)
                .await
                .map_err(to_py)
        })
    }

    /// Seconds to wait before the next attempt, or `None` when the step failed for good.
    #[pyo3(signature = (position, name, attempt, error, retry=None, permanent=false))]
    #[allow(clippy::too_many_arguments)]
    fn fail_step<'py>(
        &self,
        py: Python<'py>,
        position: i32,
        name: String,
        attempt: i32,
        error: String,
        retry: Option<RetrySpec>,
        permanent: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        let p = match retry {
            Some(r) => policy(Some(r))?,
            None => pgqrs::RetryPolicy::none(),
        };
        awaitable(py, async move {
            w.fail_step(position, &name, attempt, &error, &p, permanent)
                .await
                .map(|d| d.map(|d| d.as_secs_f64()))
                .map_err(to_py)
        })
    }

    /// End this execution without an outcome (its task was cancelled); the run can be resumed.
    fn suspend(&self) {
        self.inner.suspend();
    }

    fn ensure_owned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move { w.ensure_owned().await.map_err(to_py) })
    }

    fn finish_ok<'py>(&self, py: Python<'py>, output_json: String) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move {
            let out = raw(output_json)?;
            w.finish_ok(&out).await.map_err(to_py)
        })
    }

    fn finish_err<'py>(&self, py: Python<'py>, error: String) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move { w.finish_err(&error).await.map_err(to_py) })
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move { w.status().await.map(run).map_err(to_py) })
    }

    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move {
            w.steps()
                .await
                .map(|v| v.into_iter().map(step).collect::<Vec<_>>())
                .map_err(to_py)
        })
    }
}

/// Stop the runtime at interpreter exit (registered with `atexit` by the package).
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    py.detach(|| runtime::shutdown(Duration::from_secs(2)));
}

/// Native core of pgqrs. Private: use the `pgqrs` package.
#[pymodule]
fn _pgqrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_class::<Store>()?;
    m.add_class::<Consumer>()?;
    m.add_class::<WorkerSession>()?;
    m.add_class::<Workflow>()?;
    Ok(())
}
