//! Row decoding, written once for every backend: [`Cols`] reads one column of a fetched row
//! (each driver's row type implements it), and the functions below turn rows into the crate's
//! types. A new column is read here, in one place, whatever the backend.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job_state::{Job, JobState};
use crate::types::*;

use super::RunLease;

/// The typed error for a column that holds something pgqrs did not write there.
pub(crate) fn bad_value(i: usize, what: impl std::fmt::Display) -> Error {
    Error::Database {
        code: None,
        message: format!("unexpected value in column {i}: {what}"),
    }
}

/// Reads the columns of one row by position. A driver implements the two `opt_` readers;
/// the others default to the SQLite dialect's storage (JSON as text, timestamps as
/// microseconds since the epoch, booleans as 0/1) and PostgreSQL overrides them.
pub(crate) trait Cols {
    /// An integer column; `None` for NULL.
    fn opt_i64(&self, i: usize) -> Result<Option<i64>>;
    /// A text column; `None` for NULL.
    fn opt_str(&self, i: usize) -> Result<Option<&str>>;

    fn opt_i32(&self, i: usize) -> Result<Option<i32>> {
        self.opt_i64(i)?
            .map(|n| i32::try_from(n).map_err(|_| bad_value(i, format!("{n} (32 bits expected)"))))
            .transpose()
    }

    fn opt_json(&self, i: usize) -> Result<Option<Value>> {
        Ok(self.opt_str(i)?.map(serde_json::from_str).transpose()?)
    }

    fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .opt_i64(i)?
            .map(|us| DateTime::from_timestamp_micros(us).unwrap_or_default()))
    }

    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.i64(i)? != 0)
    }

    fn i64(&self, i: usize) -> Result<i64> {
        self.opt_i64(i)?.ok_or_else(|| bad_value(i, "NULL"))
    }

    fn i32(&self, i: usize) -> Result<i32> {
        self.opt_i32(i)?.ok_or_else(|| bad_value(i, "NULL"))
    }

    fn str(&self, i: usize) -> Result<&str> {
        self.opt_str(i)?.ok_or_else(|| bad_value(i, "NULL"))
    }

    fn string(&self, i: usize) -> Result<String> {
        self.str(i).map(str::to_string)
    }

    fn opt_string(&self, i: usize) -> Result<Option<String>> {
        Ok(self.opt_str(i)?.map(str::to_string))
    }

    fn json(&self, i: usize) -> Result<Value> {
        self.opt_json(i)?.ok_or_else(|| bad_value(i, "NULL"))
    }

    fn time(&self, i: usize) -> Result<DateTime<Utc>> {
        self.opt_time(i)?.ok_or_else(|| bad_value(i, "NULL"))
    }
}

/// `id, name, created_at, archive_retention, dead_retention`
pub(crate) fn queue_info(r: &impl Cols) -> Result<QueueInfo> {
    Ok(QueueInfo {
        id: r.i64(0)?,
        name: r.string(1)?,
        created_at: r.time(2)?,
        archive_retention: crate::Retention::from_stored(r.opt_i64(3)?),
        dead_retention: crate::Retention::from_stored(r.opt_i64(4)?),
        limits: crate::QueueLimits::from_stored(
            r.opt_i64(5)?,
            r.opt_i64(6)?,
            r.opt_i64(7)?,
            r.opt_i64(8)?,
        ),
    })
}

/// The rows of a claim (`id, payload, attempts, max_attempts, enqueued_at, visible_at,
/// last_error, lease_token, priority, timeout_ms`) as messages of `queue`, in the order handlers should
/// get them: highest priority first, then by id.
pub(crate) fn claimed<R: Cols>(rows: &[R], queue: &str) -> Result<Vec<Message>> {
    let mut msgs = rows
        .iter()
        .map(|r| {
            Ok(Message {
                id: r.i64(0)?,
                queue: queue.to_string(),
                payload: r.json(1)?,
                attempts: r.i32(2)?,
                max_attempts: r.i32(3)?,
                enqueued_at: r.time(4)?,
                visible_at: r.time(5)?,
                last_error: r.opt_string(6)?,
                lease_token: r.i64(7)?,
                priority: r
                    .i32(8)
                    .and_then(|p| i16::try_from(p).map_err(|_| bad_value(8, p)))?,
                timeout: crate::deadline::from_stored_ms(r.opt_i64(9)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    msgs.sort_unstable_by_key(|m| (std::cmp::Reverse(m.priority), m.id));
    Ok(msgs)
}

/// `ready, delayed, leased, (column 3: the backend's own), archived, dead`
pub(crate) fn queue_metrics(r: &impl Cols, queue: &str, oldest_age: f64) -> Result<QueueMetrics> {
    Ok(QueueMetrics {
        queue: queue.to_string(),
        ready: r.i64(0)?,
        delayed: r.i64(1)?,
        leased: r.i64(2)?,
        oldest_ready_age_secs: oldest_age,
        archived: r.i64(4)?,
        dead: r.i64(5)?,
    })
}

/// `id, payload, attempts, last_error, enqueued_at, failed_at`
pub(crate) fn dead_letter(r: &impl Cols, queue: &str) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.i64(0)?,
        queue: queue.to_string(),
        payload: r.json(1)?,
        attempts: r.i32(2)?,
        last_error: r.opt_string(3)?,
        enqueued_at: r.time(4)?,
        failed_at: r.time(5)?,
    })
}

/// `id, payload, attempts, enqueued_at, archived_at`
pub(crate) fn archived_job(r: &impl Cols, queue: &str) -> Result<ArchivedJob> {
    Ok(ArchivedJob {
        id: r.i64(0)?,
        queue: queue.to_string(),
        payload: r.json(1)?,
        attempts: r.i32(2)?,
        enqueued_at: r.time(3)?,
        archived_at: r.time(4)?,
    })
}

/// `id, hostname, pid, queue, started_at, heartbeat_at, status`
pub(crate) fn worker_info(r: &impl Cols) -> Result<WorkerInfo> {
    Ok(WorkerInfo {
        id: r.i64(0)?,
        hostname: r.string(1)?,
        pid: r.i64(2)?,
        queue: r.string(3)?,
        started_at: r.time(4)?,
        heartbeat_at: r.time(5)?,
        status: WorkerStatus::parse(r.str(6)?),
    })
}

fn run_status(r: &impl Cols, i: usize) -> Result<RunStatus> {
    let s = r.str(i)?;
    RunStatus::parse(s).ok_or_else(|| bad_value(i, format!("run status {s:?}")))
}

/// `id, name, input, status, output, error, owner, lease_until, attempts, created_at,
/// updated_at, finished_at`
pub(crate) fn workflow_run(r: &impl Cols) -> Result<WorkflowRun> {
    Ok(WorkflowRun {
        id: r.i64(0)?,
        name: r.string(1)?,
        input: r.json(2)?,
        status: run_status(r, 3)?,
        output: r.opt_json(4)?,
        error: r.opt_string(5)?,
        owner: r.opt_string(6)?,
        lease_until: r.opt_time(7)?,
        attempts: r.i32(8)?,
        created_at: r.time(9)?,
        updated_at: r.time(10)?,
        finished_at: r.opt_time(11)?,
    })
}

/// `id, name, queue, cron, every_ms, timezone, payload, workflow, priority, max_attempts,
/// catch_up, paused, next_at, last_tick_at, created_at`
pub(crate) fn schedule(r: &impl Cols) -> Result<crate::types::ScheduleInfo> {
    let priority = r.i32(8)?;
    Ok(crate::types::ScheduleInfo {
        id: r.i64(0)?,
        name: r.string(1)?,
        queue: r.string(2)?,
        cron: r.opt_string(3)?,
        every: r
            .opt_i64(4)?
            .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
        timezone: r.opt_string(5)?,
        payload: r.json(6)?,
        workflow: r.opt_string(7)?,
        priority: i16::try_from(priority).map_err(|_| bad_value(8, priority))?,
        max_attempts: r.opt_i32(9)?,
        catch_up: r.i32(10)?.max(0) as u32,
        paused: r.flag(11)?,
        next_at: r.time(12)?,
        last_tick_at: r.opt_time(13)?,
        created_at: r.time(14)?,
    })
}

/// `status, owner, lease still valid`
pub(crate) fn run_lease(r: &impl Cols) -> Result<RunLease> {
    Ok(RunLease {
        status: run_status(r, 0)?,
        owner: r.opt_string(1)?,
        lease_valid: r.flag(2)?,
    })
}

/// `run_id, position, name, status, output, error, attempts, next_retry_at`
pub(crate) fn step_record(r: &impl Cols) -> Result<StepRecord> {
    let status = r.str(3)?;
    Ok(StepRecord {
        run_id: r.i64(0)?,
        position: r.i32(1)?,
        name: r.string(2)?,
        status: StepStatus::parse(status)
            .ok_or_else(|| bad_value(3, format!("step status {status:?}")))?,
        output: r.opt_json(4)?,
        error: r.opt_string(5)?,
        attempts: r.i32(6)?,
        next_retry_at: r.opt_time(7)?,
    })
}

/// `id, queue (name), payload, state, priority, attempts, max_attempts, enqueued_at,
/// visible_at, leased_at, worker_id, finished_at, last_error`
pub(crate) fn job(r: &impl Cols) -> Result<Job> {
    job_in(r, r.string(1)?)
}

/// [`job`] of a row whose column 1 is not the queue's name (its id): the job of `queue`.
pub(crate) fn job_in(r: &impl Cols, queue: String) -> Result<Job> {
    let state = r.str(3)?;
    Ok(Job {
        id: r.i64(0)?,
        queue,
        payload: r.json(2)?,
        state: JobState::parse(state)
            .ok_or_else(|| bad_value(3, format!("job state {state:?}")))?,
        priority: r
            .i32(4)
            .and_then(|p| i16::try_from(p).map_err(|_| bad_value(4, p)))?,
        attempts: r.i32(5)?,
        max_attempts: r.opt_i32(6)?,
        enqueued_at: r.time(7)?,
        visible_at: r.opt_time(8)?,
        leased_at: r.opt_time(9)?,
        worker_id: r.opt_i64(10)?,
        finished_at: r.opt_time(11)?,
        last_error: r.opt_string(12)?,
        group: r.opt_string(13)?,
    })
}
