//! Records returned by pgqrs: messages, queues, metrics, workers, dead letters.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, Result};

/// A job claimed by a consumer, together with its lease.
///
/// The lease is identified by `(id, lease_token)`: completing, extending or releasing the job
/// succeeds only while nobody else has claimed it since.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Job id, unique across queues.
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// The JSON payload.
    pub payload: Value,
    /// How many times the job has been claimed, this claim included.
    pub attempts: i32,
    /// Attempts allowed before the job becomes a dead letter.
    pub max_attempts: i32,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When the current lease expires (the job becomes claimable again then).
    pub visible_at: DateTime<Utc>,
    /// Error text of the previous failed attempt, if any.
    pub last_error: Option<String>,
    /// Identifies this claim; changes every time the job is claimed.
    pub lease_token: i64,
    /// Claims take higher priorities first (default 0).
    pub priority: i16,
    /// The handler timeout the job was enqueued with; `None`: the worker's
    /// [`job_timeout`](crate::WorkerBuilder::job_timeout) applies, if any.
    pub timeout: Option<std::time::Duration>,
}

impl Message {
    /// The lease held on this message.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.lease_token,
        }
    }
}

/// A claim on a job: its id and the token of the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Job id.
    pub id: i64,
    /// Lease token (see [`Message::lease_token`]).
    pub token: i64,
}

/// A queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    /// Internal id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// How long completed jobs stay in the archive.
    pub archive_retention: crate::Retention,
    /// How long dead letters are kept.
    pub dead_retention: crate::Retention,
    /// Its concurrency and rate limits (see [`QueueLimits`](crate::QueueLimits)).
    pub limits: crate::QueueLimits,
}

/// Counts for one queue at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMetrics {
    /// Queue name.
    pub queue: String,
    /// Claimable now.
    pub ready: i64,
    /// Waiting for a delay or a retry backoff to pass.
    pub delayed: i64,
    /// Claimed, lease not yet expired.
    pub leased: i64,
    /// Completed and kept in the archive.
    pub archived: i64,
    /// Dead letters: failed on every allowed attempt.
    pub dead: i64,
    /// Age in seconds of the oldest claimable job (0 when none).
    pub oldest_ready_age_secs: f64,
}

impl QueueMetrics {
    /// Jobs still to be done: ready + delayed + leased.
    pub fn pending(&self) -> i64 {
        self.ready + self.delayed + self.leased
    }
}

/// A job that failed on its last allowed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Job id (kept from the original job).
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// The payload.
    pub payload: Value,
    /// Attempts made.
    pub attempts: i32,
    /// Error text of the last attempt.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it died.
    pub failed_at: DateTime<Utc>,
}

/// A completed job kept in the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedJob {
    /// Job id.
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// The payload.
    pub payload: Value,
    /// Attempts made.
    pub attempts: i32,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it was archived.
    pub archived_at: DateTime<Utc>,
}

/// Lifecycle of a worker: `running` → `stopping` → `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Claiming and handling jobs.
    Running,
    /// Shutting down: claims nothing new, finishing what it has.
    Stopping,
    /// Exited cleanly.
    Stopped,
}

impl WorkerStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Running => "running",
            WorkerStatus::Stopping => "stopping",
            WorkerStatus::Stopped => "stopped",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "running" => WorkerStatus::Running,
            "stopping" => WorkerStatus::Stopping,
            _ => WorkerStatus::Stopped,
        }
    }
}

/// A registered worker, as listed by [`Admin::list_workers`](crate::Admin::list_workers).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: i64,
    /// Host name of its machine.
    pub hostname: String,
    /// Process id.
    pub pid: i64,
    /// The queue it consumes.
    pub queue: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Its declared status.
    pub status: WorkerStatus,
}

impl WorkerInfo {
    /// A running worker whose last heartbeat is older than `stale_after` is presumed dead.
    pub fn is_healthy(&self, stale_after: std::time::Duration) -> bool {
        self.status != WorkerStatus::Stopped
            && (Utc::now() - self.heartbeat_at)
                .to_std()
                .unwrap_or_default()
                <= stale_after
    }
}

/// Where a workflow run stands.
///
/// ```text
///  pending ──acquire──► running ──body returns Ok──► succeeded
///     │                  │  ▲ ──body returns Err / step failed for good──► failed
///     │                  │  └─ owner's lease expired: another executor acquires it
///     └──────cancel──────┴──────────────────────────────────────────────► cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Created, not started.
    Pending,
    /// An executor owns it (or owned it and died; see [`WorkflowRun::lease_expired`]).
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled: no new step starts.
    Cancelled,
}

impl RunStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    /// Succeeded, failed or cancelled.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A workflow run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRun {
    /// Run id.
    pub id: i64,
    /// Workflow name.
    pub name: String,
    /// The input it was created with.
    pub input: Value,
    /// Where it stands.
    pub status: RunStatus,
    /// The output, once succeeded.
    pub output: Option<Value>,
    /// The error, once failed.
    pub error: Option<String>,
    /// The executor that owns (or last owned) it.
    pub owner: Option<String>,
    /// When the owner's lease expires.
    pub lease_until: Option<DateTime<Utc>>,
    /// How many times an executor acquired it.
    pub attempts: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl WorkflowRun {
    /// A running run whose owner's lease expired: its executor died and it can be resumed.
    pub fn lease_expired(&self) -> bool {
        self.status == RunStatus::Running && self.lease_until.is_none_or(|t| t < Utc::now())
    }

    /// What a finished run stored: its output (`null` when it stored none), or its error,
    /// [`Error::WorkflowFailed`] or [`Error::WorkflowCancelled`]. A run that has not finished
    /// has no outcome yet: [`Error::WorkflowLocked`].
    pub fn outcome(&self) -> Result<Value> {
        let run_id = self.id;
        match self.status {
            RunStatus::Succeeded => Ok(self.output.clone().unwrap_or(Value::Null)),
            RunStatus::Cancelled => Err(Error::WorkflowCancelled { run_id }),
            RunStatus::Failed => Err(Error::WorkflowFailed {
                run_id,
                message: self.error.clone().unwrap_or_default(),
            }),
            RunStatus::Pending | RunStatus::Running => Err(Error::WorkflowLocked { run_id }),
        }
    }
}

/// Where a journaled step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepStatus {
    /// Done; its output is journaled and it never runs again.
    Succeeded,
    /// Failed for good; the run failed with its error.
    Failed,
    /// Failed an attempt; runs again at `next_retry_at`.
    Retrying,
}

impl StepStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Retrying => "retrying",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "retrying" => StepStatus::Retrying,
            _ => return None,
        })
    }
}

/// One journaled step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The run.
    pub run_id: i64,
    /// 0-based position of the step call in the run.
    pub position: i32,
    /// Step name.
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Its output, once succeeded.
    pub output: Option<Value>,
    /// Its last error.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt may start (retrying only).
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// How long finished jobs (or runs) are kept before pruning deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retention {
    /// Never pruned.
    Forever,
    /// Deleted once older than this (whole seconds; a fraction is rounded up). From 1 s to
    /// 100 years.
    For(Duration),
}

impl Retention {
    /// The retention of `secs` seconds.
    pub fn secs(secs: u64) -> Self {
        Retention::For(Duration::from_secs(secs))
    }

    /// The retention of `days` days.
    pub fn days(days: u64) -> Self {
        Retention::For(Duration::from_secs(days.saturating_mul(86_400)))
    }

    /// How long things are kept; `None` for [`Forever`](Self::Forever).
    pub fn duration(self) -> Option<Duration> {
        match self {
            Retention::Forever => None,
            Retention::For(d) => Some(d),
        }
    }

    /// As stored: whole seconds, rounded up; `None` for forever.
    pub(crate) fn stored(self) -> Option<i64> {
        self.duration().map(|d| {
            let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            i64::try_from(s).unwrap_or(i64::MAX)
        })
    }

    /// From the stored value (NULL = forever). A value pgqrs never writes (zero or negative)
    /// reads as forever: nothing is deleted on a doubtful setting.
    pub(crate) fn from_stored(v: Option<i64>) -> Self {
        match v {
            Some(s) if s > 0 => Retention::For(Duration::from_secs(s as u64)),
            _ => Retention::Forever,
        }
    }
}

/// What can be pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prunable {
    /// A queue's archive (by `archived_at`).
    Archive,
    /// A queue's dead letters (by `failed_at`).
    Dead,
    /// Finished workflow runs (by `finished_at`), with their steps; not per queue.
    WorkflowRuns,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Id (a schedule deleted and created again gets a new one).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The cron expression, for a cron schedule.
    pub cron: Option<String>,
    /// The interval, for an interval schedule.
    pub every: Option<Duration>,
    /// The time zone of a cron schedule.
    pub timezone: Option<String>,
    /// Each job's payload (each run's input).
    pub payload: serde_json::Value,
    /// The workflow each tick starts a run of, if any.
    pub workflow: Option<String>,
    /// Each job's priority.
    pub priority: i16,
    /// Each job's attempts; `None`: the store's default when the job is made.
    pub max_attempts: Option<i32>,
    /// Missed ticks fired when workers run again (see `ScheduleOptions::catch_up`).
    pub catch_up: u32,
    /// Paused: no tick fires until resumed.
    pub paused: bool,
    /// Its next tick (while paused: the one it had when paused).
    pub next_at: DateTime<Utc>,
    /// The latest tick that made a job, if any (`Admin::trigger_schedule` does not count).
    pub last_tick_at: Option<DateTime<Utc>>,
    /// When it was created (the start of an interval schedule's ticks).
    pub created_at: DateTime<Utc>,
}

/// What a schedule made: one job per tick fired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// The ids of the jobs made, oldest tick first.
    pub job_ids: Vec<i64>,
    /// The workflow runs started, for workflow schedules, in the same order.
    pub run_ids: Vec<i64>,
}

/// The wake-up name of the schedule tickers (not a queue name: queue names have no `:`).
pub(crate) const SCHEDULE_WAKE: &str = ":schedules";

/// The key of the run id in the payload of a job that asks for a workflow run.
/// Attempts allowed to a job that asks for a workflow run (see `Admin::enqueue_workflow`).
pub(crate) const RUN_JOB_ATTEMPTS: u32 = 100;

pub(crate) const RUN_JOB_KEY: &str = "workflow_run";

/// The payload of a job that asks for a workflow run.
pub(crate) fn run_job_payload(run_id: i64) -> Value {
    Value::Object(serde_json::Map::from_iter([(
        RUN_JOB_KEY.to_string(),
        Value::from(run_id),
    )]))
}
