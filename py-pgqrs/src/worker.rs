//! `WorkerOptions` and `WorkerSession`: the database side of a Python worker. The Python loop
//! hands jobs to handlers and reports outcomes; everything else (claim depth, refill, idle
//! polling, error back-off, heartbeats, retries, every default) is the core's
//! [`pgqrs::WorkerSession`].

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use crate::convert::{count, opt_secs, opt_secs_any, same_process, RetrySpec};
use crate::errors::to_py;
use crate::rows::{messages, ClaimedOut, MessageRow, StatsRow};
use crate::runtime::{awaitable, native_call};

/// A worker's settings; those not given take the core's defaults.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct WorkerOptions {
    concurrency: Option<usize>,
    batch_size: Option<usize>,
    visibility_timeout: Option<Duration>,
    retry: Option<pgqrs::RetryPolicy>,
    poll_interval: Option<Duration>,
    shutdown_grace: Option<Duration>,
    heartbeat_interval: Option<Duration>,
    delete_on_success: Option<bool>,
    flush_interval: Option<Duration>,
    claim_ahead_timeout: Option<Duration>,
    prune_interval: Option<Duration>,
    job_timeout: Option<Duration>,
    fire_schedules: Option<bool>,
}

impl WorkerOptions {
    /// The core's builder for `queue` with the settings given.
    pub fn builder(&self, queue: String) -> pgqrs::WorkerBuilder {
        let mut b = pgqrs::worker(queue);
        if let Some(n) = self.concurrency {
            b = b.concurrency(n);
        }
        if let Some(n) = self.batch_size {
            b = b.batch_size(n);
        }
        if let Some(d) = self.visibility_timeout {
            b = b.visibility_timeout(d);
        }
        if let Some(p) = self.retry {
            b = b.retry(p);
        }
        if let Some(d) = self.poll_interval {
            b = b.poll_interval(d);
        }
        if let Some(d) = self.shutdown_grace {
            b = b.shutdown_grace(d);
        }
        if let Some(d) = self.heartbeat_interval {
            b = b.heartbeat_interval(d);
        }
        if let Some(yes) = self.delete_on_success {
            b = b.delete_on_success(yes);
        }
        if let Some(d) = self.flush_interval {
            b = b.completion_flush(d, pgqrs::SessionOptions::default().flush_max);
        }
        if let Some(d) = self.claim_ahead_timeout {
            b = b.claim_ahead_timeout(d);
        }
        if let Some(d) = self.prune_interval {
            b = b.prune_interval(d);
        }
        if let Some(d) = self.job_timeout {
            b = b.job_timeout(d);
        }
        if let Some(yes) = self.fire_schedules {
            b = b.fire_schedules(yes);
        }
        b
    }
}

#[pymethods]
impl WorkerOptions {
    /// Checks what it can without a database (concurrency, batch size, durations).
    #[new]
    #[pyo3(signature = (*, concurrency=None, batch_size=None, visibility_timeout=None, retry=None, poll_interval=None, shutdown_grace=None, heartbeat_interval=None, delete_on_success=None, flush_interval=None, claim_ahead_timeout=None, prune_interval=None, job_timeout=None, fire_schedules=None))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        concurrency: Option<&Bound<'py, PyAny>>,
        batch_size: Option<&Bound<'py, PyAny>>,
        visibility_timeout: Option<&Bound<'py, PyAny>>,
        retry: Option<RetrySpec<'py>>,
        poll_interval: Option<&Bound<'py, PyAny>>,
        shutdown_grace: Option<&Bound<'py, PyAny>>,
        heartbeat_interval: Option<&Bound<'py, PyAny>>,
        delete_on_success: Option<bool>,
        flush_interval: Option<&Bound<'py, PyAny>>,
        claim_ahead_timeout: Option<&Bound<'py, PyAny>>,
        prune_interval: Option<&Bound<'py, PyAny>>,
        job_timeout: Option<&Bound<'py, PyAny>>,
        fire_schedules: Option<bool>,
    ) -> PyResult<Self> {
        let options = WorkerOptions {
            concurrency: concurrency.map(|n| count("concurrency", n)).transpose()?,
            batch_size: batch_size.map(|n| count("batch_size", n)).transpose()?,
            visibility_timeout: opt_secs_any("visibility_timeout", visibility_timeout)?,
            retry: retry.map(|r| r.policy()).transpose()?,
            poll_interval: opt_secs_any("poll_interval", poll_interval)?,
            shutdown_grace: opt_secs_any("shutdown_grace", shutdown_grace)?,
            heartbeat_interval: opt_secs_any("heartbeat_interval", heartbeat_interval)?,
            delete_on_success,
            flush_interval: opt_secs_any("flush_interval", flush_interval)?,
            claim_ahead_timeout: opt_secs_any("claim_ahead_timeout", claim_ahead_timeout)?,
            prune_interval: opt_secs_any("prune_interval", prune_interval)?,
            job_timeout: opt_secs_any("job_timeout", job_timeout)?,
            fire_schedules,
        };
        options.builder(String::new()).validate().map_err(to_py)?;
        Ok(options)
    }
}

/// The database side of a Python worker.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct WorkerSession {
    inner: Arc<pgqrs::WorkerSession>,
    pid: u32,
}

impl WorkerSession {
    pub fn new(inner: Arc<pgqrs::WorkerSession>, pid: u32) -> Self {
        WorkerSession { inner, pid }
    }

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

    /// Handler calls at once.
    #[getter]
    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    /// Messages per call of a batch handler.
    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    /// Seconds shutdown waits for running handlers.
    #[getter]
    fn shutdown_grace(&self) -> f64 {
        self.inner.shutdown_grace().as_secs_f64()
    }

    /// The idle polling interval in force, in seconds.
    #[getter]
    fn poll_interval(&self) -> f64 {
        self.inner.poll_interval().as_secs_f64()
    }

    /// The next jobs for the handlers (see `pgqrs::WorkerSession::next_jobs`).
    fn next_jobs<'py>(
        &self,
        py: Python<'py>,
        buffered: usize,
        starved: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |s| s
            .next_jobs(buffered, starved)
            .await
            .map(ClaimedOut))
    }

    /// Claim nothing more; a `next_jobs` in progress returns what its claim got.
    fn stop_claiming(&self) {
        self.inner.stop_claiming();
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
            .map(messages))
    }

    /// Claim again once fewer than this many claimed jobs wait for a handler.
    fn refill_below(&self) -> usize {
        self.inner.refill_below()
    }

    /// A handler is about to run this claimed job; `False`: the worker no longer holds it
    /// (see `pgqrs::WorkerSession::begin`) and it must not run.
    fn begin(&self, job: PyRef<'_, MessageRow>) -> bool {
        self.inner.begin(&job.lease())
    }

    /// Whether the worker still holds this claimed job.
    /// Seconds one handler call on these jobs may run (see
    /// `pgqrs::WorkerSession::handler_timeout`); `None`: no limit.
    fn handler_timeout(&self, jobs: Vec<PyRef<'_, MessageRow>>) -> PyResult<Option<f64>> {
        let timeouts = jobs
            .iter()
            .map(|j| opt_secs("timeout", j.timeout))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(self
            .inner
            .handler_timeout(timeouts)
            .map(|d| d.as_secs_f64()))
    }

    fn holds(&self, job: PyRef<'_, MessageRow>) -> bool {
        self.inner.holds(&job.lease())
    }

    /// How many jobs claimed ahead were given back so far for waiting too long.
    #[getter]
    fn given_back(&self) -> u64 {
        self.inner.given_back()
    }

    /// Report the outcome of a claimed job; returns at once (written in the next batch).
    /// `error=None` is success.
    #[pyo3(signature = (job, error=None))]
    fn complete(&self, job: PyRef<'_, MessageRow>, error: Option<String>) -> PyResult<()> {
        same_process(self.pid, "worker")?;
        self.inner
            .complete(
                job.lease(),
                job.attempts,
                job.max_attempts,
                error.map_or(Ok(()), Err),
            )
            .map_err(to_py)
    }

    /// Give claimed jobs back unhandled.
    fn release<'py>(
        &self,
        py: Python<'py>,
        jobs: Vec<PyRef<'py, MessageRow>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let leases: Vec<pgqrs::Lease> = jobs.iter().map(|j| j.lease()).collect();
        awaitable(py, async move {
            s.release(&leases).await;
            Ok(())
        })
    }

    fn wait_for_jobs<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let d = crate::convert::secs("timeout", timeout)?;
        awaitable(py, async move {
            s.wait_for_jobs(d).await;
            Ok(())
        })
    }

    fn stats(&self) -> StatsRow {
        self.inner.stats().into()
    }

    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        awaitable(py, async move { Ok(StatsRow::from(s.stop().await)) })
    }
}
