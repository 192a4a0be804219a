//! Inspecting and acting on single jobs: look one up by id in any state, list a queue's jobs
//! of one state a page at a time, cancel a waiting job, retry a dead one now, move a waiting
//! job's run time or change its priority. What a CLI or a dashboard calls.
//!
//! A job's state means exactly what the counts of [`QueueMetrics`](crate::QueueMetrics) mean:
//!
//! | state      | where                 | condition (`now`: the database's clock)                   |
//! |------------|-----------------------|-----------------------------------------------------------|
//! | `ready`    | the job table         | `visible_at <= now` and attempts left                     |
//! | `delayed`  | the job table         | `visible_at > now` and not leased                         |
//! | `leased`   | the job table         | the rest: a lease not expired yet, or a final attempt whose lease expired (a worker moves it to the dead letters) |
//! | `archived` | the archive           | completed                                                 |
//! | `dead`     | the dead letters      | failed on its last allowed attempt                        |
//!
//! A *waiting* job is `ready` or `delayed`. Cancel, reschedule and priority changes act on
//! waiting jobs only, each in one statement whose condition is "still waiting", so a
//! concurrent claim and the action never both succeed.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::admin::Admin;
use crate::error::{Error, Result};
use crate::limits::validate_list_limit;
use crate::produce::{validate_priority, visibility, MAX_PRIORITY};
use crate::store::{validate_queue_name, JobKey, ListJobsParams};

pub use crate::job_state::{Job, JobState};

impl std::str::FromStr for JobState {
    type Err = Error;

    /// A state's name, or [`Error::Validation`] listing the names.
    fn from_str(s: &str) -> Result<Self> {
        JobState::parse(s).ok_or_else(|| {
            Error::validation(
                "state",
                format!(
                    "unknown job state {}: use ready, delayed, leased, archived or dead",
                    crate::error::preview(s)
                ),
            )
        })
    }
}

/// One page of [`Admin::list_jobs`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// The jobs, in the state's order (see [`Admin::list_jobs`]).
    pub jobs: Vec<Job>,
    /// Pass it to the next call to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// When a rescheduled job becomes claimable ([`Admin::reschedule_job`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunAt {
    /// At once.
    Now,
    /// After this delay (from the database's clock on PostgreSQL), at most 100 years.
    After(Duration),
    /// At this time (a past time means now), at most 100 years ahead.
    At(DateTime<Utc>),
}

impl RunAt {
    /// From a delay or a time, as the Python binding passes them: exactly one of the two.
    #[doc(hidden)]
    pub fn from_options(delay: Option<Duration>, at: Option<DateTime<Utc>>) -> Result<RunAt> {
        match (delay, at) {
            (None, None) => Err(Error::validation(
                "delay",
                "give a delay (0 runs the job now) or a time (at) to reschedule to",
            )),
            (Some(_), Some(_)) => Err(Error::validation(
                "delay",
                "give either a delay or a time (at), not both",
            )),
            (Some(d), None) => Ok(RunAt::After(d)),
            (None, Some(t)) => Ok(RunAt::At(t)),
        }
    }
}

/// How many times an action is tried again when it found the job leased or changed, but a
/// fresh look finds it waiting (a lease expired in between).
const ACTION_TRIES: usize = 5;

impl<'a> Admin<'a> {
    /// The job with this id, in any state (waiting, leased, archived or dead): one statement
    /// over the job table, the archive and the dead letters. [`Error::JobNotFound`] when no
    /// job has this id (never enqueued, cancelled, deleted on completion, or its queue
    /// deleted).
    pub async fn get_job(self, id: i64) -> Result<Job> {
        self.store
            .backend_impl()
            .get_job(id)
            .await?
            .ok_or(Error::JobNotFound { id })
    }

    /// One page of the jobs of `queue` in `state`, at most `limit` (default 100, at most
    /// 10,000), after `cursor` (the [`JobPage::next_cursor`] of the previous page; `None` for
    /// the first page). Paging is by key, never by offset: each page costs the same however
    /// deep it is.
    ///
    /// Order:
    /// * `ready`, `delayed`, `leased`: claim order — highest priority first, then earliest
    ///   `visible_at` (for ready jobs, the order claims take them; for leased jobs, the lease
    ///   that expires first), then lowest id;
    /// * `archived`: newest first (`finished_at` descending, then id descending);
    /// * `dead`: by id, oldest job first (as [`dead_letters`](Self::dead_letters)).
    ///
    /// Jobs move between states while a client pages: a job that changes state between two
    /// pages shows in the list of its new state, not twice in this one. A cursor is opaque
    /// text; one from another state's list, or mangled, is refused with
    /// [`Error::Validation`].
    pub async fn list_jobs(
        self,
        queue: &str,
        state: JobState,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<JobPage> {
        validate_queue_name(queue)?;
        let limit = validate_list_limit(limit)?;
        let after = match cursor {
            Some(c) => decode_cursor(state, c)?,
            None => first_key(state),
        };
        let mut jobs = self
            .store
            .backend_impl()
            .list_jobs(ListJobsParams {
                queue,
                state,
                after,
                fetch: limit + 1,
            })
            .await?;
        let next_cursor = if jobs.len() as i64 > limit {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| encode_cursor(state, j))
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// Cancel a waiting (ready or delayed) job: delete it, in one statement that deletes
    /// only while the job is still waiting, so a consumer claiming it at the same moment and
    /// this call never both succeed. Returns the job as it was.
    ///
    /// [`Error::JobStateConflict`] (nothing changed) when the job is leased, archived or
    /// dead; [`Error::JobNotFound`] when no job has this id.
    pub async fn cancel_job(self, id: i64) -> Result<Job> {
        let b = self.store.backend_impl();
        self.on_waiting(id, "cancel", || b.cancel_job(id)).await
    }

    /// Put a dead letter back in its queue, ready now, with its attempt count reset (what
    /// [`requeue_dead`](Self::requeue_dead) does for one job). Returns the job as stored
    /// after (it may already be leased again by a worker).
    ///
    /// [`Error::JobStateConflict`] when the job is not dead (a waiting job runs now with
    /// [`reschedule_job`](Self::reschedule_job)`(id, RunAt::Now)`); [`Error::JobNotFound`]
    /// when no job has this id.
    pub async fn retry_job(self, id: i64) -> Result<Job> {
        let b = self.store.backend_impl();
        let job = self.get_job(id).await?;
        if job.state != JobState::Dead {
            return Err(conflict(id, job.state, "retry"));
        }
        if b.requeue_dead(&job.queue, Some(&[id])).await? == 0 {
            // Another call retried it first.
            let now = self.get_job(id).await?;
            return Err(conflict(id, now.state, "retry"));
        }
        self.get_job(id).await
    }

    /// Move a waiting job's run time: it becomes claimable `when` (a delayed job can be made
    /// ready now, a ready one put off). One statement, only while the job is still waiting.
    /// A job whose lease had expired counts as ready and loses that old lease: its consumer
    /// can no longer complete it. Returns the job as changed.
    ///
    /// [`Error::Validation`] for a delay or time more than 100 years ahead;
    /// [`Error::JobStateConflict`] when the job is leased, archived or dead;
    /// [`Error::JobNotFound`] when no job has this id.
    pub async fn reschedule_job(self, id: i64, when: RunAt) -> Result<Job> {
        let vis = match when {
            RunAt::Now => visibility(None, None)?,
            RunAt::After(d) => visibility(Some(d), None)?,
            RunAt::At(t) => visibility(None, Some(t))?,
        };
        let b = self.store.backend_impl();
        self.on_waiting(id, "reschedule", || b.reschedule_job(id, vis))
            .await
    }

    /// Change a waiting job's priority (checked like an enqueue's: -32768 to 32767, higher
    /// runs first). One statement, only while the job is still waiting. Returns the job as
    /// changed.
    ///
    /// [`Error::Validation`] for a priority out of range; [`Error::JobStateConflict`] when
    /// the job is leased, archived or dead; [`Error::JobNotFound`] when no job has this id.
    pub async fn set_job_priority(self, id: i64, priority: i64) -> Result<Job> {
        let priority = validate_priority(priority)?;
        let b = self.store.backend_impl();
        self.on_waiting(id, "set_priority", || b.set_job_priority(id, priority))
            .await
    }

    /// Run `op`, a statement that changes the job only while it is waiting. When it changed
    /// nothing, say why: no such job, or its state. A job found waiting again (a lease that
    /// expired between the statement and the look) is tried again.
    async fn on_waiting<F, Fut>(self, id: i64, action: &'static str, op: F) -> Result<Job>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Job>>>,
    {
        let mut state = JobState::Leased;
        for _ in 0..ACTION_TRIES {
            if let Some(job) = op().await? {
                return Ok(job);
            }
            state = self.get_job(id).await?.state;
            if !state.is_waiting() {
                break;
            }
        }
        Err(conflict(id, state, action))
    }
}

fn conflict(id: i64, state: JobState, action: &'static str) -> Error {
    Error::JobStateConflict { id, state, action }
}

// Cursors: `<state>:<key>`, where the key is the last job's sort key in that state's order
// (see `store::JobKey`). Opaque to callers; checked when read back.

fn encode_cursor(state: JobState, j: &Job) -> String {
    let us = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_micros());
    let key = match state {
        JobState::Ready | JobState::Delayed | JobState::Leased => {
            format!("{}:{}:{}", j.priority, us(j.visible_at), j.id)
        }
        JobState::Archived => format!("{}:{}", us(j.finished_at), j.id),
        JobState::Dead => j.id.to_string(),
    };
    format!("{state}:{key}")
}

/// The key before every job of `state`'s order.
fn first_key(state: JobState) -> JobKey {
    match state {
        JobState::Ready | JobState::Delayed | JobState::Leased => JobKey::Pending {
            // Above every priority: the first page starts at the highest one present.
            priority: MAX_PRIORITY as i32 + 1,
            visible_at: DateTime::UNIX_EPOCH,
            id: 0,
        },
        JobState::Archived => JobKey::Archived {
            at: last_time(),
            id: i64::MAX,
        },
        JobState::Dead => JobKey::Dead { id: i64::MIN },
    }
}

/// Later than any time a job can hold (and within every backend's range).
fn last_time() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::UNIX_EPOCH)
    // 9999-12-31
}

fn decode_cursor(state: JobState, cursor: &str) -> Result<JobKey> {
    let bad = |why: &str| {
        Error::validation(
            "cursor",
            format!(
                "{} {why}: pass the next_cursor of the previous page of this list unchanged",
                crate::error::preview(cursor)
            ),
        )
    };
    let mut parts = cursor.split(':');
    let from = parts.next().unwrap_or_default();
    match JobState::parse(from) {
        Some(s) if s == state => {}
        Some(s) => {
            return Err(bad(&format!(
                "is a cursor of the {s} jobs, not of the {state} jobs"
            )))
        }
        None => return Err(bad("is not a cursor of list_jobs")),
    }
    let fields: Vec<&str> = parts.collect();
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| bad("is not a cursor of list_jobs"))
    };
    let time = |s: &str| {
        int(s).and_then(|us| {
            DateTime::from_timestamp_micros(us)
                // Within every backend's range (PostgreSQL's starts in 4713 BC).
                .filter(|t| *t <= last_time() && t.timestamp() >= -210_000_000_000)
                .ok_or_else(|| bad("holds a time out of range"))
        })
    };
    match (state, fields.as_slice()) {
        (JobState::Ready | JobState::Delayed | JobState::Leased, [p, t, id]) => {
            let priority = int(p)?;
            validate_priority(priority).map_err(|_| bad("holds a priority out of range"))?;
            Ok(JobKey::Pending {
                priority: priority as i32,
                visible_at: time(t)?,
                id: int(id)?,
            })
        }
        (JobState::Archived, [t, id]) => Ok(JobKey::Archived {
            at: time(t)?,
            id: int(id)?,
        }),
        (JobState::Dead, [id]) => Ok(JobKey::Dead { id: int(id)? }),
        _ => Err(bad("is not a cursor of list_jobs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(priority: i16, visible_us: i64, id: i64) -> Job {
        Job {
            id,
            queue: "q".into(),
            payload: serde_json::Value::Null,
            state: JobState::Ready,
            priority,
            attempts: 0,
            max_attempts: Some(3),
            enqueued_at: DateTime::UNIX_EPOCH,
            visible_at: DateTime::from_timestamp_micros(visible_us),
            leased_at: None,
            worker_id: None,
            finished_at: DateTime::from_timestamp_micros(visible_us),
            last_error: None,
            group: None,
        }
    }

    #[test]
    fn cursors_read_back() {
        let j = job(-7, 1_733_150_000_123_456, 42);
        for state in JobState::ALL {
            let c = encode_cursor(state, &j);
            let k = decode_cursor(state, &c).unwrap();
            let want = match state {
                JobState::Archived => JobKey::Archived {
                    at: j.finished_at.unwrap(),
                    id: 42,
                },
                JobState::Dead => JobKey::Dead { id: 42 },
                _ => JobKey::Pending {
                    priority: -7,
                    visible_at: j.visible_at.unwrap(),
                    id: 42,
                },
            };
            assert_eq!(k, want, "{c}");
        }
    }

    #[test]
    fn bad_cursors_are_refused() {
        let ready = encode_cursor(JobState::Ready, &job(1, 5, 9));
        for (state, c) in [
            (JobState::Delayed, ready.as_str()),
            (JobState::Ready, ""),
            (JobState::Ready, "ready"),
            (JobState::Ready, "ready:1:2"),
            (JobState::Ready, "ready:1:2:3:4"),
            (JobState::Ready, "ready:40000:2:3"),
            (JobState::Ready, "ready:x:2:3"),
            (JobState::Ready, "ready:1:9223372036854775807:3"),
            (JobState::Dead, "dead:"),
            (JobState::Dead, "finished:1"),
            (JobState::Archived, "archived:1"),
        ] {
            assert!(
                matches!(
                    decode_cursor(state, c),
                    Err(Error::Validation {
                        field: "cursor",
                        ..
                    })
                ),
                "{state} {c:?}"
            );
        }
    }

    #[test]
    fn states_parse_by_name() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!(matches!(
            "done".parse::<JobState>(),
            Err(Error::Validation { field: "state", .. })
        ));
    }
}
