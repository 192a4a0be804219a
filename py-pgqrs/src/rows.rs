//! Records crossing to Python: frozen native objects with one named getter per field.
//!
//! Payloads, inputs and outputs stay JSON text (the Python package decodes them with its own
//! `json`); times are microseconds since the Unix epoch (UTC). A row is one allocation; its
//! strings become Python strings only when read.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::{json_text, us};

/// A claimed job, with its lease.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct MessageRow {
    pub id: i64,
    pub queue: String,
    pub payload_json: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub enqueued_at_us: i64,
    pub visible_at_us: i64,
    pub last_error: Option<String>,
    pub lease_token: i64,
    pub priority: i16,
    /// The job's own handler timeout, in seconds.
    pub timeout: Option<f64>,
}

impl MessageRow {
    pub fn lease(&self) -> pgqrs::Lease {
        pgqrs::Lease {
            id: self.id,
            token: self.lease_token,
        }
    }
}

impl From<pgqrs::Message> for MessageRow {
    fn from(m: pgqrs::Message) -> Self {
        MessageRow {
            id: m.id,
            payload_json: json_text(&m.payload),
            queue: m.queue,
            attempts: m.attempts,
            max_attempts: m.max_attempts,
            enqueued_at_us: us(m.enqueued_at),
            visible_at_us: us(m.visible_at),
            last_error: m.last_error,
            lease_token: m.lease_token,
            priority: m.priority,
            timeout: m.timeout.map(|d| d.as_secs_f64()),
        }
    }
}

/// Rows of claimed jobs.
pub fn messages(v: Vec<pgqrs::Message>) -> Vec<MessageRow> {
    v.into_iter().map(MessageRow::from).collect()
}

/// What `WorkerSession.next_jobs` claimed, and when to ask again.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct Claimed {
    #[pyo3(get)]
    jobs: Py<PyList>,
    #[pyo3(get)]
    refill_below: usize,
}

/// A [`pgqrs::Claimed`] on its way to Python (the list is built with the GIL held).
pub struct ClaimedOut(pub pgqrs::Claimed);

impl<'py> IntoPyObject<'py> for ClaimedOut {
    type Target = Claimed;
    type Output = Bound<'py, Claimed>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, Claimed>> {
        let jobs = PyList::new(py, messages(self.0.jobs))?.unbind();
        Bound::new(
            py,
            Claimed {
                jobs,
                refill_below: self.0.refill_below,
            },
        )
    }
}

/// A queue.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct QueueRow {
    pub id: i64,
    pub name: String,
    pub created_at_us: i64,
    /// Seconds; `None`: kept forever.
    pub archive_retention: Option<f64>,
    /// Seconds; `None`: kept forever.
    pub dead_retention: Option<f64>,
    /// `None`: no limit.
    pub concurrency_limit: Option<i64>,
    /// `None`: no limit.
    pub group_concurrency_limit: Option<i64>,
    /// Jobs per period; `None`: no limit.
    pub rate_limit: Option<i64>,
    /// The rate limit's period in seconds.
    pub rate_period: Option<f64>,
}

/// A retention as Python sees it: seconds, `None` for forever.
pub fn retention_secs(r: pgqrs::Retention) -> Option<f64> {
    r.duration().map(|d| d.as_secs_f64())
}

impl From<pgqrs::QueueInfo> for QueueRow {
    fn from(q: pgqrs::QueueInfo) -> Self {
        QueueRow {
            id: q.id,
            name: q.name,
            created_at_us: us(q.created_at),
            archive_retention: retention_secs(q.archive_retention),
            dead_retention: retention_secs(q.dead_retention),
            concurrency_limit: q.limits.concurrency,
            group_concurrency_limit: q.limits.group_concurrency,
            rate_limit: q.limits.rate.map(|r| r.jobs),
            rate_period: q.limits.rate.map(|r| r.per.as_secs_f64()),
        }
    }
}

/// A schedule.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct ScheduleRow {
    pub id: i64,
    pub name: String,
    pub queue: String,
    pub cron: Option<String>,
    /// Seconds.
    pub every: Option<f64>,
    pub timezone: Option<String>,
    pub payload_json: String,
    pub workflow: Option<String>,
    pub priority: i16,
    pub max_attempts: Option<i32>,
    pub catch_up: u32,
    pub paused: bool,
    pub next_at_us: i64,
    pub last_tick_at_us: Option<i64>,
    pub created_at_us: i64,
}

impl From<pgqrs::ScheduleInfo> for ScheduleRow {
    fn from(s: pgqrs::ScheduleInfo) -> Self {
        ScheduleRow {
            id: s.id,
            name: s.name,
            queue: s.queue,
            cron: s.cron,
            every: s.every.map(|d| d.as_secs_f64()),
            timezone: s.timezone,
            payload_json: json_text(&s.payload),
            workflow: s.workflow,
            priority: s.priority,
            max_attempts: s.max_attempts,
            catch_up: s.catch_up,
            paused: s.paused,
            next_at_us: us(s.next_at),
            last_tick_at_us: s.last_tick_at.map(us),
            created_at_us: us(s.created_at),
        }
    }
}

/// What firing a schedule made.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct FiredRow {
    pub job_ids: Vec<i64>,
    pub run_ids: Vec<i64>,
}

impl From<pgqrs::Fired> for FiredRow {
    fn from(f: pgqrs::Fired) -> Self {
        FiredRow {
            job_ids: f.job_ids,
            run_ids: f.run_ids,
        }
    }
}

/// What a prune deleted, per table.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct PrunedRow {
    pub archived: u64,
    pub dead: u64,
    pub workflow_runs: u64,
}

impl From<pgqrs::Pruned> for PrunedRow {
    fn from(p: pgqrs::Pruned) -> Self {
        PrunedRow {
            archived: p.archived,
            dead: p.dead,
            workflow_runs: p.workflow_runs,
        }
    }
}

/// Counts for one queue.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct MetricsRow {
    pub queue: String,
    pub ready: i64,
    pub delayed: i64,
    pub leased: i64,
    pub archived: i64,
    pub dead: i64,
    pub oldest_ready_age: f64,
}

impl From<pgqrs::QueueMetrics> for MetricsRow {
    fn from(m: pgqrs::QueueMetrics) -> Self {
        MetricsRow {
            queue: m.queue,
            ready: m.ready,
            delayed: m.delayed,
            leased: m.leased,
            archived: m.archived,
            dead: m.dead,
            oldest_ready_age: m.oldest_ready_age_secs,
        }
    }
}

/// A dead letter.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct DeadLetterRow {
    pub id: i64,
    pub queue: String,
    pub payload_json: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at_us: i64,
    pub failed_at_us: i64,
}

impl From<pgqrs::DeadLetter> for DeadLetterRow {
    fn from(d: pgqrs::DeadLetter) -> Self {
        DeadLetterRow {
            id: d.id,
            payload_json: json_text(&d.payload),
            queue: d.queue,
            attempts: d.attempts,
            last_error: d.last_error,
            enqueued_at_us: us(d.enqueued_at),
            failed_at_us: us(d.failed_at),
        }
    }
}

/// An archived job.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct ArchivedJobRow {
    pub id: i64,
    pub queue: String,
    pub payload_json: String,
    pub attempts: i32,
    pub enqueued_at_us: i64,
    pub archived_at_us: i64,
}

impl From<pgqrs::ArchivedJob> for ArchivedJobRow {
    fn from(j: pgqrs::ArchivedJob) -> Self {
        ArchivedJobRow {
            id: j.id,
            payload_json: json_text(&j.payload),
            queue: j.queue,
            attempts: j.attempts,
            enqueued_at_us: us(j.enqueued_at),
            archived_at_us: us(j.archived_at),
        }
    }
}

/// A job in any state (`Admin.get_job`, `list_jobs` and the job actions).
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub payload_json: String,
    pub state: &'static str,
    pub priority: i16,
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    pub enqueued_at_us: i64,
    pub visible_at_us: Option<i64>,
    pub leased_at_us: Option<i64>,
    pub worker_id: Option<i64>,
    pub finished_at_us: Option<i64>,
    pub last_error: Option<String>,
    pub group: Option<String>,
}

impl From<pgqrs::Job> for JobRow {
    fn from(j: pgqrs::Job) -> Self {
        JobRow {
            id: j.id,
            payload_json: json_text(&j.payload),
            queue: j.queue,
            state: j.state.as_str(),
            priority: j.priority,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            enqueued_at_us: us(j.enqueued_at),
            visible_at_us: j.visible_at.map(us),
            leased_at_us: j.leased_at.map(us),
            worker_id: j.worker_id,
            finished_at_us: j.finished_at.map(us),
            last_error: j.last_error,
            group: j.group,
        }
    }
}

/// One page of `Admin.list_jobs`.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct JobPageRow {
    #[pyo3(get)]
    jobs: Py<PyList>,
    #[pyo3(get)]
    next_cursor: Option<String>,
}

/// A [`pgqrs::JobPage`] on its way to Python (the list is built with the GIL held).
pub struct JobPageOut(pub pgqrs::JobPage);

impl<'py> IntoPyObject<'py> for JobPageOut {
    type Target = JobPageRow;
    type Output = Bound<'py, JobPageRow>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, JobPageRow>> {
        let jobs = PyList::new(py, rows::<_, JobRow>(self.0.jobs))?.unbind();
        Bound::new(
            py,
            JobPageRow {
                jobs,
                next_cursor: self.0.next_cursor,
            },
        )
    }
}

/// A registered worker.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct WorkerRow {
    pub id: i64,
    pub hostname: String,
    pub pid: i64,
    pub queue: String,
    pub started_at_us: i64,
    pub heartbeat_at_us: i64,
    pub status: &'static str,
}

impl From<pgqrs::WorkerInfo> for WorkerRow {
    fn from(w: pgqrs::WorkerInfo) -> Self {
        WorkerRow {
            id: w.id,
            hostname: w.hostname,
            pid: w.pid,
            queue: w.queue,
            started_at_us: us(w.started_at),
            heartbeat_at_us: us(w.heartbeat_at),
            status: match w.status {
                pgqrs::WorkerStatus::Running => "running",
                pgqrs::WorkerStatus::Stopping => "stopping",
                _ => "stopped",
            },
        }
    }
}

/// What a worker did.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct StatsRow {
    pub worker_id: i64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub lease_lost: u64,
    pub released: u64,
}

impl From<pgqrs::WorkerStats> for StatsRow {
    fn from(s: pgqrs::WorkerStats) -> Self {
        StatsRow {
            worker_id: s.worker_id,
            succeeded: s.succeeded,
            failed: s.failed,
            dead: s.dead,
            lease_lost: s.lease_lost,
            released: s.released,
        }
    }
}

/// A workflow run.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct RunRow {
    pub id: i64,
    pub name: String,
    pub input_json: String,
    pub status: &'static str,
    pub output_json: Option<String>,
    pub error: Option<String>,
    pub owner: Option<String>,
    pub lease_until_us: Option<i64>,
    pub attempts: i32,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub finished_at_us: Option<i64>,
}

impl From<pgqrs::WorkflowRun> for RunRow {
    fn from(r: pgqrs::WorkflowRun) -> Self {
        RunRow {
            id: r.id,
            input_json: json_text(&r.input),
            name: r.name,
            status: r.status.as_str(),
            output_json: r.output.as_ref().map(json_text),
            error: r.error,
            owner: r.owner,
            lease_until_us: r.lease_until.map(us),
            attempts: r.attempts,
            created_at_us: us(r.created_at),
            updated_at_us: us(r.updated_at),
            finished_at_us: r.finished_at.map(us),
        }
    }
}

/// A journaled step.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct StepRow {
    pub run_id: i64,
    pub position: i32,
    pub name: String,
    pub status: &'static str,
    pub output_json: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    pub next_retry_at_us: Option<i64>,
}

impl From<pgqrs::StepRecord> for StepRow {
    fn from(s: pgqrs::StepRecord) -> Self {
        StepRow {
            run_id: s.run_id,
            position: s.position,
            name: s.name,
            status: s.status.as_str(),
            output_json: s.output.as_ref().map(json_text),
            error: s.error,
            attempts: s.attempts,
            next_retry_at_us: s.next_retry_at.map(us),
        }
    }
}

/// A retry policy of the core, as `pgqrs.RetryPolicy` spells it.
#[pyclass(module = "pgqrs._pgqrs", frozen, get_all)]
pub struct RetryRow {
    pub max_attempts: Option<u32>,
    pub backoff: &'static str,
    pub base: f64,
    pub max: f64,
}

impl From<pgqrs::RetryPolicy> for RetryRow {
    fn from(p: pgqrs::RetryPolicy) -> Self {
        let (backoff, base, max) = match p.backoff {
            pgqrs::Backoff::Fixed(d) => ("fixed", d, d),
            pgqrs::Backoff::Exponential { base, max } => ("exponential", base, max),
            pgqrs::Backoff::ExponentialJitter { base, max } => ("exponential_jitter", base, max),
        };
        RetryRow {
            max_attempts: p.max_attempts,
            backoff,
            base: base.as_secs_f64(),
            max: max.as_secs_f64(),
        }
    }
}

/// Rows from core records.
pub fn rows<T, R: From<T>>(v: Vec<T>) -> Vec<R> {
    v.into_iter().map(R::from).collect()
}
