//! `Store`: a connection to a pgqrs database, with administration, enqueueing, and the
//! factories of consumers, worker sessions and workflow contexts.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::consumer::Consumer;
use crate::convert::{
    count, from_us, int, ints, opt_retention, opt_secs, opt_secs_any, opt_texts, raw, same_process,
    text,
};
use crate::errors::{exc, to_py, validation};
use crate::rows::{
    retention_secs, rows, ArchivedJobRow, DeadLetterRow, FiredRow, JobPageOut, JobRow, MessageRow,
    MetricsRow, PrunedRow, QueueRow, RunRow, ScheduleRow, StepRow, WorkerRow,
};
use crate::runtime::{awaitable, native_call};
use crate::worker::{WorkerOptions, WorkerSession};
use crate::workflow::Workflow;

/// Payloads handed to `Store.enqueue`: checked and split in Rust either way.
#[derive(FromPyObject)]
enum Payloads {
    /// One JSON array text (`produce_batch` encodes the whole list in one call).
    Array(String),
    /// One JSON text per job.
    Each(Vec<String>),
}

/// A connection to a pgqrs database.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct Store {
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
pub fn connect<'py>(py: Python<'py>, dsn: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let dsn = text("dsn", dsn)?;
    awaitable(py, async move {
        let inner = pgqrs::connect(&dsn).await.map_err(to_py)?;
        Ok(Store {
            inner,
            pid: std::process::id(),
        })
    })
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

    /// The idle polling interval in seconds (`poll_interval_ms`).
    #[getter]
    fn poll_interval(&self) -> f64 {
        self.inner.config().idle_poll_interval().as_secs_f64()
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

    /// Retentions: seconds or `"forever"`; not given, the core's defaults. Limits: not
    /// given, none (`rate_limit` jobs per `rate_period` seconds).
    #[pyo3(signature = (
        name, *, archive_retention=None, dead_retention=None, concurrency_limit=None,
        group_concurrency_limit=None, rate_limit=None, rate_period=None
    ))]
    #[allow(clippy::too_many_arguments)] // keyword-only options, each forwarded by name
    fn create_queue<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        archive_retention: Option<&Bound<'py, PyAny>>,
        dead_retention: Option<&Bound<'py, PyAny>>,
        concurrency_limit: Option<&Bound<'py, PyAny>>,
        group_concurrency_limit: Option<&Bound<'py, PyAny>>,
        rate_limit: Option<&Bound<'py, PyAny>>,
        rate_period: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("queue name", name)?;
        let limits = queue_limits(
            concurrency_limit,
            group_concurrency_limit,
            rate_limit,
            rate_period,
        )?;
        let mut options = pgqrs::QueueOptions::new().limits(limits);
        if let Some(r) = opt_retention("archive_retention", archive_retention)? {
            options = options.archive_retention(r);
        }
        if let Some(r) = opt_retention("dead_retention", dead_retention)? {
            options = options.dead_retention(r);
        }
        native_call!(self, py, |s| pgqrs::admin(&s)
            .create_queue_with(&name, options)
            .await
            .map(QueueRow::from))
    }

    /// Replaces every limit: those not given are no limit.
    #[pyo3(signature = (
        name, *, concurrency_limit=None, group_concurrency_limit=None, rate_limit=None,
        rate_period=None
    ))]
    fn set_queue_limits<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        concurrency_limit: Option<&Bound<'py, PyAny>>,
        group_concurrency_limit: Option<&Bound<'py, PyAny>>,
        rate_limit: Option<&Bound<'py, PyAny>>,
        rate_period: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("queue name", name)?;
        let limits = queue_limits(
            concurrency_limit,
            group_concurrency_limit,
            rate_limit,
            rate_period,
        )?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .set_queue_limits(&name, limits)
            .await
            .map(QueueRow::from))
    }

    /// Retentions not given stay as they are.
    #[pyo3(signature = (name, *, archive_retention=None, dead_retention=None))]
    fn set_queue_retention<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        archive_retention: Option<&Bound<'py, PyAny>>,
        dead_retention: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("queue name", name)?;
        let archive = opt_retention("archive_retention", archive_retention)?;
        let dead = opt_retention("dead_retention", dead_retention)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .set_queue_retention(&name, archive, dead)
            .await
            .map(QueueRow::from))
    }

    /// Seconds; `None`: kept forever.
    fn workflow_retention<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .workflow_retention()
            .await
            .map(retention_secs))
    }

    fn set_workflow_retention<'py>(
        &self,
        py: Python<'py>,
        retention: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let retention = opt_retention("workflow_retention", Some(retention))?
            .unwrap_or(pgqrs::Retention::Forever);
        native_call!(self, py, |s| pgqrs::admin(&s)
            .set_workflow_retention(retention)
            .await)
    }

    #[pyo3(signature = (queue=None, older_than=None))]
    fn prune<'py>(
        &self,
        py: Python<'py>,
        queue: Option<&Bound<'py, PyAny>>,
        older_than: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = queue.map(|q| text("queue name", q)).transpose()?;
        let older_than = opt_secs_any("older_than", older_than)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .prune(queue.as_deref(), older_than)
            .await
            .map(PrunedRow::from))
    }

    #[pyo3(signature = (name, *, force=false))]
    fn delete_queue<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        force: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("queue name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .delete_queue(&name, force)
            .await)
    }

    fn purge_queue<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("queue name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s).purge_queue(&name).await)
    }

    fn list_queues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .list_queues()
            .await
            .map(rows::<_, QueueRow>))
    }

    fn queue_metrics<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("queue name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .queue_metrics(&name)
            .await
            .map(MetricsRow::from))
    }

    fn dead_letters<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        limit: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let limit = int("limit", limit)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .dead_letters(&queue, limit)
            .await
            .map(rows::<_, DeadLetterRow>))
    }

    #[pyo3(signature = (queue, ids=None))]
    fn requeue_dead<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        ids: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let ids = ids.map(|ids| ints("ids", ids)).transpose()?;
        native_call!(self, py, |s| match ids {
            Some(ids) => pgqrs::admin(&s).requeue_dead(&queue, &ids).await,
            None => pgqrs::admin(&s).requeue_all_dead(&queue).await,
        })
    }

    fn archived_jobs<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        limit: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let limit = int("limit", limit)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .archived_jobs(&queue, limit)
            .await
            .map(rows::<_, ArchivedJobRow>))
    }

    fn get_job<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let id = int("job id", id)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .get_job(id)
            .await
            .map(JobRow::from))
    }

    #[pyo3(signature = (queue, state, *, limit=None, cursor=None))]
    fn list_jobs<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        state: &Bound<'py, PyAny>,
        limit: Option<&Bound<'py, PyAny>>,
        cursor: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let state: pgqrs::JobState = text("state", state)?.parse().map_err(to_py)?;
        let limit = limit.map(|n| int("limit", n)).transpose()?;
        let cursor = cursor.map(|c| text("cursor", c)).transpose()?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .list_jobs(&queue, state, limit, cursor.as_deref())
            .await
            .map(JobPageOut))
    }

    fn cancel_job<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("job id", id)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .cancel_job(id)
            .await
            .map(JobRow::from))
    }

    fn retry_job<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("job id", id)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .retry_job(id)
            .await
            .map(JobRow::from))
    }

    /// Move a waiting job's run time: exactly one of `delay` (seconds) and `at_us`.
    #[pyo3(signature = (id, *, delay=None, at_us=None))]
    fn reschedule_job<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        delay: Option<f64>,
        at_us: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("job id", id)?;
        let delay = opt_secs("delay", delay)?;
        let at = at_us.map(from_us).transpose()?;
        let when = pgqrs::RunAt::from_options(delay, at).map_err(to_py)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .reschedule_job(id, when)
            .await
            .map(JobRow::from))
    }

    fn set_job_priority<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        priority: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("job id", id)?;
        let priority = int("priority", priority)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .set_job_priority(id, priority)
            .await
            .map(JobRow::from))
    }

    fn list_workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .list_workers()
            .await
            .map(rows::<_, WorkerRow>))
    }

    /// Enqueue JSON (already serialized by the Python layer) in one statement: a list of
    /// texts, one per job, or one JSON array text whose elements are the jobs. Options not
    /// given take the store's defaults.
    #[pyo3(signature = (
        queue, payloads, *, delay=None, at_us=None, max_attempts=None, priority=None,
        timeout=None, key=None, keys=None, on_duplicate=None, unique_for=None, group=None
    ))]
    #[allow(clippy::too_many_arguments)] // keyword-only options, each forwarded by name
    fn enqueue<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        payloads: Payloads,
        delay: Option<f64>,
        at_us: Option<i64>,
        max_attempts: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
        key: Option<&Bound<'py, PyAny>>,
        keys: Option<&Bound<'py, PyAny>>,
        on_duplicate: Option<&Bound<'py, PyAny>>,
        unique_for: Option<f64>,
        group: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let group = group.map(|g| text("group", g)).transpose()?;
        let key = key.map(|k| text("key", k)).transpose()?;
        let keys = keys.map(|k| opt_texts("keys", k)).transpose()?;
        let on_duplicate = on_duplicate
            .map(|p| {
                text("on_duplicate", p)?
                    .parse::<pgqrs::OnDuplicate>()
                    .map_err(to_py)
            })
            .transpose()?;
        let unique_for = opt_secs("unique_for", unique_for)?;
        let max_attempts = max_attempts
            .map(|n| count::<u32>("max_attempts", n))
            .transpose()?;
        let priority = priority.map(|p| int("priority", p)).transpose()?;
        let s = self.get()?;
        let delay = opt_secs("delay", delay)?;
        let at = at_us.map(from_us).transpose()?;
        let timeout = opt_secs("timeout", timeout)?;
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
            if let Some(p) = priority {
                b = b.priority(p);
            }
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            if let Some(k) = key {
                b = b.key(k);
            }
            if let Some(ks) = keys {
                b = b.keys(ks);
            }
            if let Some(p) = on_duplicate {
                b = b.on_duplicate(p);
            }
            if let Some(w) = unique_for {
                b = b.unique_for(w);
            }
            if let Some(g) = group {
                b = b.group(g);
            }
            b.execute(&s).await.map_err(to_py)
        })
    }

    fn consumer<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let s = self.get()?;
        let pid = self.pid;
        awaitable(py, async move {
            let inner = pgqrs::Consumer::new(&s, &queue).await.map_err(to_py)?;
            Ok(Consumer::new(inner, pid))
        })
    }

    /// Register a worker for `queue` and start its session; settings not given in `options`
    /// (or no `options`) take the core's defaults.
    #[pyo3(signature = (queue, options=None))]
    fn worker_session<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        options: Option<PyRef<'py, WorkerOptions>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let s = self.get()?;
        let pid = self.pid;
        let builder = match options {
            Some(o) => o.builder(queue),
            None => pgqrs::worker(queue),
        };
        awaitable(py, async move {
            let inner = builder.session(&s).await.map_err(to_py)?;
            Ok(WorkerSession::new(Arc::new(inner), pid))
        })
    }

    fn create_workflow<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        input_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("workflow name", name)?;
        let s = self.get()?;
        let pid = self.pid;
        awaitable(py, async move {
            let input = raw(input_json)?;
            let inner = pgqrs::admin(&s)
                .create_workflow(&name, &input)
                .await
                .map_err(to_py)?;
            Ok(Workflow::new(inner, pid))
        })
    }

    fn get_workflow<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("run id", id)?;
        let s = self.get()?;
        let pid = self.pid;
        awaitable(py, async move {
            let inner = pgqrs::admin(&s).get_workflow(id).await.map_err(to_py)?;
            Ok(Workflow::new(inner, pid))
        })
    }

    /// The run a job of `Admin.enqueue_workflow` asks for, or `None` once it has finished.
    fn workflow_for_job<'py>(
        &self,
        py: Python<'py>,
        job: PyRef<'py, MessageRow>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let pid = self.pid;
        let payload: serde_json::Value = serde_json::from_str(&job.payload_json)
            .map_err(|e| exc::SerializationError::new_err(format!("invalid JSON: {e}")))?;
        let msg = pgqrs::Message {
            id: job.id,
            queue: job.queue.clone(),
            payload,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            enqueued_at: from_us(job.enqueued_at_us)?,
            visible_at: from_us(job.visible_at_us)?,
            last_error: job.last_error.clone(),
            lease_token: job.lease_token,
            priority: job.priority,
            timeout: opt_secs("timeout", job.timeout)?,
        };
        awaitable(py, async move {
            let found = pgqrs::Workflow::for_job(&s, &msg).await.map_err(to_py)?;
            Ok(found.map(|inner| Workflow::new(inner, pid)))
        })
    }

    fn enqueue_workflow<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        name: &Bound<'py, PyAny>,
        input_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = text("queue name", queue)?;
        let name = text("workflow name", name)?;
        let s = self.get()?;
        awaitable(py, async move {
            let input = raw(input_json)?;
            pgqrs::admin(&s)
                .enqueue_workflow(&queue, &name, &input)
                .await
                .map(RunRow::from)
                .map_err(to_py)
        })
    }

    fn workflow_run<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("run id", id)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .workflow_run(id)
            .await
            .map(RunRow::from))
    }

    fn workflow_steps<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("run id", id)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .workflow_steps(id)
            .await
            .map(rows::<_, StepRow>))
    }

    fn list_workflows<'py>(
        &self,
        py: Python<'py>,
        status: Option<&Bound<'py, PyAny>>,
        limit: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = int("limit", limit)?;
        let status = match status.map(|s| text("status", s)).transpose()? {
            Some(s) => Some(pgqrs::RunStatus::parse(&s).ok_or_else(|| {
                validation(
                    "status",
                    format!(
                        "unknown run status {:?}: use pending, running, succeeded, failed or cancelled",
                        s.chars().take(40).collect::<String>()
                    ),
                )
            })?),
            None => None,
        };
        native_call!(self, py, |s| pgqrs::admin(&s)
            .list_workflows(status, limit)
            .await
            .map(rows::<_, RunRow>))
    }

    fn cancel_workflow<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("run id", id)?;
        native_call!(self, py, |s| pgqrs::admin(&s).cancel_workflow(id).await)
    }

    /// Create a schedule; options not given take the core's defaults, and the core checks
    /// them all (the Python layer only encodes the payload).
    #[pyo3(signature = (
        name, queue, *, cron=None, every=None, timezone=None, payload_json=None,
        catch_up=None, workflow=None, priority=None, max_attempts=None
    ))]
    #[allow(clippy::too_many_arguments)] // keyword-only options, each forwarded by name
    fn create_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        queue: &Bound<'py, PyAny>,
        cron: Option<&Bound<'py, PyAny>>,
        every: Option<f64>,
        timezone: Option<&Bound<'py, PyAny>>,
        payload_json: Option<String>,
        catch_up: Option<&Bound<'py, PyAny>>,
        workflow: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        max_attempts: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("schedule name", name)?;
        let queue = text("queue name", queue)?;
        let mut o = pgqrs::ScheduleOptions::new();
        if let Some(c) = cron {
            o = o.set_cron(text("cron", c)?);
        }
        if let Some(e) = every {
            o = o.set_every(pgqrs::interval_from_secs(e).map_err(to_py)?);
        }
        if let Some(tz) = timezone {
            o = o.timezone(text("timezone", tz)?);
        }
        if let Some(p) = payload_json {
            o = o.payload_json(p);
        }
        if let Some(n) = catch_up {
            o = o.catch_up(pgqrs::catch_up_from(int("catch_up", n)?).map_err(to_py)?);
        }
        if let Some(w) = workflow {
            o = o.workflow(text("workflow name", w)?);
        }
        if let Some(p) = priority {
            o = o.priority(int("priority", p)?);
        }
        if let Some(n) = max_attempts {
            o = o.max_attempts(count::<u32>("max_attempts", n)?);
        }
        native_call!(self, py, |s| pgqrs::admin(&s)
            .create_schedule(&name, &queue, o)
            .await
            .map(ScheduleRow::from))
    }

    fn get_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("schedule name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .get_schedule(&name)
            .await
            .map(ScheduleRow::from))
    }

    fn list_schedules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s)
            .list_schedules()
            .await
            .map(rows::<_, ScheduleRow>))
    }

    fn pause_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("schedule name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .pause_schedule(&name)
            .await
            .map(ScheduleRow::from))
    }

    fn resume_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("schedule name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .resume_schedule(&name)
            .await
            .map(ScheduleRow::from))
    }

    fn delete_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("schedule name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s).delete_schedule(&name).await)
    }

    fn trigger_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("schedule name", name)?;
        native_call!(self, py, |s| pgqrs::admin(&s)
            .trigger_schedule(&name)
            .await
            .map(FiredRow::from))
    }

    fn fire_due_schedules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| pgqrs::admin(&s).fire_due_schedules().await)
    }
}

/// A queue's limits from the keyword arguments (the core checks their values): a count is
/// an int; the rate limit is `rate_limit` jobs per `rate_period` seconds, both or neither.
fn queue_limits(
    concurrency: Option<&Bound<'_, PyAny>>,
    group: Option<&Bound<'_, PyAny>>,
    rate: Option<&Bound<'_, PyAny>>,
    period: Option<&Bound<'_, PyAny>>,
) -> PyResult<pgqrs::QueueLimits> {
    let mut limits = pgqrs::QueueLimits::new();
    if let Some(n) = concurrency {
        limits = limits.concurrency(int("concurrency_limit", n)?);
    }
    if let Some(n) = group {
        limits = limits.group_concurrency(int("group_concurrency_limit", n)?);
    }
    let period = opt_secs_any("rate_limit", period)?;
    match (rate, period) {
        (Some(n), Some(per)) => {
            limits = limits.rate(pgqrs::RateLimit::new(int("rate_limit", n)?, per));
        }
        (None, None) => {}
        _ => {
            return Err(validation(
                "rate_limit",
                "a rate limit is a number of jobs and a period: give rate_limit=(jobs, seconds)",
            ))
        }
    }
    Ok(limits)
}
