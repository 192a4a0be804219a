//! # pgqrs
//!
//! A durable job queue (and workflow engine) as a library, stored in your own database:
//! PostgreSQL for production and many workers, SQLite for CLI tools, tests and embedded apps.
//! One API; the connection string picks the backend.
//!
//! ```no_run
//! use serde_json::json;
//!
//! # async fn run() -> pgqrs::Result<()> {
//! let store = pgqrs::connect("sqlite://jobs.db").await?;
//! pgqrs::admin(&store).install().await?;
//! pgqrs::admin(&store).create_queue("tasks").await?;
//!
//! let ids = pgqrs::enqueue()
//!     .message(&json!({"task": "send_email"}))
//!     .to("tasks")
//!     .execute(&store)
//!     .await?;
//!
//! let handled = pgqrs::dequeue()
//!     .from("tasks")
//!     .handle(|msg| async move {
//!         println!("{:?}", msg.payload);
//!         Ok(())
//!     })
//!     .execute(&store)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Job lifecycle
//!
//! ```text
//!  enqueue ──► ready ◄──────────── lease expires (worker died) ──┐
//!    │ delay     ▲  │ claim (attempts += 1, new lease token)      │
//!    ▼           │  ▼                                             │
//!  delayed ──────┘ leased ───────────────────────────────────────┘
//!                   │ ├─ handler Ok ──► archived (or deleted)
//!                   │ ├─ handler Err, attempts < max ──► delayed (backoff) ──► ready
//!                   │ └─ handler Err, attempts = max ──► dead letter ──(requeue)──► ready
//!                   └─ release ──► ready / delayed
//! ```
//!
//! Every transition out of `leased` is guarded by the lease token: a consumer whose lease
//! expired and whose job was claimed again gets [`Error::LeaseLost`] and changes nothing.

#![warn(missing_docs)]

mod admin;
mod caller;
mod config;
mod consume;
mod deadline;
mod error;
mod flow;
mod handler;
mod inspect;
mod job_state;
mod limits;
mod produce;
mod retention;
mod retry;
mod schedule;
mod schedule_admin;
mod session;
mod store;
mod types;
mod unique;
mod worker;
mod workflow;

pub use admin::{admin, Admin};
pub use caller::SqlxConnection;
pub use config::{BackendKind, Config, Durability};
pub use consume::{dequeue, Consumer, DequeueBuilder, DequeueWith};
pub use deadline::{timeout_error, MAX_JOB_TIMEOUT, MIN_JOB_TIMEOUT};
pub use error::{BoxError, Error, Result};
pub use flow::{
    QueueLimits, RateLimit, LIMITS_REFRESH, MAX_LIMIT, MAX_RATE_PERIOD, MIN_RATE_PERIOD,
};
pub use handler::{BoxFuture, Handler};
pub use inspect::{Job, JobPage, JobState, RunAt};
pub use limits::MAX_KEY_BYTES;
pub use produce::{enqueue, EnqueueBuilder, IntoKey, MAX_DEPTH, MAX_PRIORITY, MIN_PRIORITY};
pub use retention::{
    Pruned, QueueOptions, Retention, DEFAULT_ARCHIVE_RETENTION, DEFAULT_DEAD_RETENTION,
    DEFAULT_PRUNE_INTERVAL, DEFAULT_WORKFLOW_RETENTION, MAX_RETENTION, MIN_RETENTION,
};
pub use retry::{Backoff, RetryPolicy};
pub use schedule::{
    catch_up_from, interval_from_secs, Fired, ScheduleInfo, ScheduleOptions, MAX_CATCH_UP,
    MAX_SCHEDULE_INTERVAL, MIN_SCHEDULE_INTERVAL, MISSED_TICK_GRACE,
};
pub use session::{idle_wait, Claimed, SessionOptions, WorkerSession, WorkerStats};
pub use store::{connect_with, Store};
pub use types::{
    ArchivedJob, DeadLetter, Lease, Message, QueueInfo, QueueMetrics, RunStatus, StepRecord,
    StepStatus, WorkerInfo, WorkerStatus, WorkflowRun,
};
pub use unique::OnDuplicate;
pub use worker::{worker, ShutdownHandle, Worker, WorkerBuilder};
pub use workflow::{
    run_job_retry, Permanent, RunStart, StepError, StepStart, Workflow, WorkflowRegistry,
    WorkflowWorkerBuilder,
};

/// The sqlx that pgqrs is built with, for
/// [`EnqueueBuilder::execute_in`](crate::EnqueueBuilder::execute_in): begin your transaction
/// with this one (`pgqrs::sqlx::PgPool`, `pgqrs::sqlx::SqlitePool`, ...) so that its types are
/// the ones pgqrs accepts.
pub use sqlx;

/// Open a store. The scheme picks the backend:
///
/// * `postgresql://user@host:5432/db` or `postgres://…` — PostgreSQL (feature `postgres`)
/// * `sqlite://path/to/file.db` (created if missing) or `sqlite::memory:` — SQLite (feature
///   `sqlite`)
/// * `turso://path/to/file.db` (created if missing) or `turso::memory:` — Turso, the embedded
///   SQLite-compatible engine (feature `turso`; one process at a time per database)
///
/// Query parameters configure pgqrs (see [`Config`]); the rest go to the driver.
pub async fn connect(dsn: &str) -> Result<Store> {
    connect_with(Config::new(dsn)?).await
}
