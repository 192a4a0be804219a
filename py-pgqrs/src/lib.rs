//! The native module `pgqrs._pgqrs`: a thin layer over the Rust core, one file per native
//! class.
//!
//! Every async method runs its work on a tokio runtime (see [`runtime`]) and returns an asyncio
//! awaitable; the GIL is not held while the database works. Records cross the boundary as
//! frozen objects with named getters ([`rows`]: payloads as JSON text, times as microseconds
//! since the epoch); options are keywords, and those not given take the core's defaults. The
//! public Python package (`py-pgqrs/python/pgqrs`) turns rows into typed objects and holds
//! the docstrings and typing. Errors go through the single mapping in [`errors`].

mod consumer;
mod convert;
mod errors;
mod rows;
mod runtime;
mod store;
mod worker;
mod workflow;

use std::time::Duration;

use pyo3::prelude::*;

use rows::RetryRow;

/// The core's default retry policy (`pgqrs::RetryPolicy::default()`).
#[pyfunction]
fn default_retry_policy() -> RetryRow {
    pgqrs::RetryPolicy::default().into()
}

/// The retry policy of workers that execute workflow runs (`pgqrs::run_job_retry()`).
#[pyfunction]
fn run_job_retry_policy() -> RetryRow {
    pgqrs::run_job_retry().into()
}

/// Check a retry policy's fields (raises `ValidationError`); `pgqrs.RetryPolicy` calls it.
#[pyfunction]
fn check_retry_policy(policy: convert::RetrySpec<'_>) -> PyResult<()> {
    policy.policy().map(|_| ())
}

/// The error recorded with an attempt whose handler ran past its timeout of `seconds`.
#[pyfunction]
fn timeout_error(seconds: f64) -> PyResult<String> {
    Ok(pgqrs::timeout_error(convert::secs("timeout", seconds)?))
}

/// Stop the runtime at interpreter exit (registered with `atexit` by the package).
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    py.detach(|| runtime::shutdown(Duration::from_secs(2)));
}

/// Native core of pgqrs. Private: use the `pgqrs` package.
#[pymodule]
fn _pgqrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::check(m.py())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(store::connect, m)?)?;
    m.add_function(wrap_pyfunction!(default_retry_policy, m)?)?;
    m.add_function(wrap_pyfunction!(run_job_retry_policy, m)?)?;
    m.add_function(wrap_pyfunction!(check_retry_policy, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(timeout_error, m)?)?;
    m.add_class::<store::Store>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<worker::WorkerOptions>()?;
    m.add_class::<worker::WorkerSession>()?;
    m.add_class::<workflow::Workflow>()?;
    m.add_class::<workflow::Step>()?;
    m.add_class::<rows::MessageRow>()?;
    m.add_class::<rows::Claimed>()?;
    m.add_class::<rows::QueueRow>()?;
    m.add_class::<rows::PrunedRow>()?;
    m.add_class::<rows::ScheduleRow>()?;
    m.add_class::<rows::FiredRow>()?;
    m.add_class::<rows::MetricsRow>()?;
    m.add_class::<rows::DeadLetterRow>()?;
    m.add_class::<rows::ArchivedJobRow>()?;
    m.add_class::<rows::JobRow>()?;
    m.add_class::<rows::JobPageRow>()?;
    m.add_class::<rows::WorkerRow>()?;
    m.add_class::<rows::StatsRow>()?;
    m.add_class::<rows::RunRow>()?;
    m.add_class::<rows::StepRow>()?;
    m.add_class::<rows::RetryRow>()?;
    Ok(())
}
