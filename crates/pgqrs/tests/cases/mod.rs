//! The conformance cases, one module per area. Each case is
//! `pub async fn name(db: &TestDb)` and panics on failure.

pub mod analyzed;
pub mod concurrency;
pub mod connect;
pub mod consume;
pub mod deadlines;
pub mod flow;
pub mod inspect;
pub mod jobs;
pub mod limits;
pub mod queues;
pub mod quickstart;
pub mod retention;
pub mod retry;
pub mod schedules;
pub mod schema;
pub mod sql_enqueue;
pub mod tx;
pub mod unique;
pub mod wakeup;
pub mod worker;
