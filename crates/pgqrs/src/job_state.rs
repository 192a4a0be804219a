//! [`Job`] and [`JobState`], on their own so that the error type and the store can name them
//! without depending on the inspection API (which depends on both).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Where a job stands: the same definitions as the counts of
/// [`QueueMetrics`](crate::QueueMetrics) (`now` is the database's clock).
///
/// | state      | where            | condition                                                |
/// |------------|------------------|----------------------------------------------------------|
/// | `ready`    | the job table    | `visible_at <= now` and attempts left                    |
/// | `delayed`  | the job table    | `visible_at > now` and not leased                        |
/// | `leased`   | the job table    | the rest: a lease not expired yet, or a final attempt whose lease expired |
/// | `archived` | the archive      | completed                                                |
/// | `dead`     | the dead letters | failed on its last allowed attempt                       |
///
/// A *waiting* job is ready or delayed ([`is_waiting`](Self::is_waiting)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Claimable now.
    Ready,
    /// Waiting for its run time (a delay, a retry's backoff, a reschedule).
    Delayed,
    /// Claimed by a consumer whose lease has not expired (or its final attempt's lease
    /// expired and a worker will move it to the dead letters).
    Leased,
    /// Completed and kept in the archive.
    Archived,
    /// A dead letter: failed on its last allowed attempt.
    Dead,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] = [
        JobState::Ready,
        JobState::Delayed,
        JobState::Leased,
        JobState::Archived,
        JobState::Dead,
    ];

    /// `ready`, `delayed`, `leased`, `archived` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Delayed => "delayed",
            JobState::Leased => "leased",
            JobState::Archived => "archived",
            JobState::Dead => "dead",
        }
    }

    /// Parse a state's name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Ready or delayed: not claimed, not finished.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobState::Ready | JobState::Delayed)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as stored, in whichever state it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Job id, unique across queues (kept in the archive and the dead letters).
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// The JSON payload.
    pub payload: Value,
    /// Where it stands.
    pub state: JobState,
    /// Claims take higher priorities first.
    pub priority: i16,
    /// Attempts made so far (a leased job's current attempt included).
    pub attempts: i32,
    /// Attempts allowed before it becomes a dead letter; `None` for an archived job (the
    /// archive does not keep it).
    pub max_attempts: Option<i32>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// Waiting: when it becomes (or became) claimable. Leased: when the lease expires.
    /// `None` once archived or dead.
    pub visible_at: Option<DateTime<Utc>>,
    /// When its current (or last) claim was taken; `None` if never claimed since it was
    /// enqueued, retried or rescheduled, and once archived or dead.
    pub leased_at: Option<DateTime<Utc>>,
    /// The worker that claimed it, when a registered worker did (`None` once finished).
    pub worker_id: Option<i64>,
    /// When it was archived (archived) or died (dead); `None` before.
    pub finished_at: Option<DateTime<Utc>>,
    /// The error of its last failed attempt, if any.
    pub last_error: Option<String>,
    /// Its group (see [`EnqueueBuilder::group`](crate::EnqueueBuilder::group)).
    pub group: Option<String>,
}
