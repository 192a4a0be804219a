//! `Consumer`: low-level access to one queue (claim, then settle each job).

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{
    count, int, ints, opt_secs, policy_or, same_process, secs, text_lossy, RetrySpec,
};
use crate::errors::to_py;
use crate::rows::messages;
use crate::runtime::{awaitable, native_call};

/// Low-level access to one queue.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct Consumer {
    inner: pgqrs::Consumer,
    pid: u32,
}

impl Consumer {
    pub fn new(inner: pgqrs::Consumer, pid: u32) -> Self {
        Consumer { inner, pid }
    }

    fn get(&self) -> PyResult<pgqrs::Consumer> {
        same_process(self.pid, "consumer")?;
        Ok(self.inner.clone())
    }
}

#[pymethods]
impl Consumer {
    #[getter]
    fn queue(&self) -> String {
        self.inner.queue().to_string()
    }

    fn dequeue<'py>(
        &self,
        py: Python<'py>,
        batch_size: &Bound<'py, PyAny>,
        visibility_timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batch_size = count::<usize>("batch_size", batch_size)?;
        let c = self.get()?;
        let vt = opt_secs("visibility_timeout", visibility_timeout)?;
        awaitable(py, async move {
            c.dequeue(batch_size, vt).await.map(messages).map_err(to_py)
        })
    }

    fn archive<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let id = int("id", id)?;
        native_call!(self, py, |c| c.archive(id).await)
    }

    fn archive_many<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = ints("ids", ids)?;
        native_call!(self, py, |c| c.archive_many(&ids).await)
    }

    fn delete<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let id = int("id", id)?;
        native_call!(self, py, |c| c.delete(id).await)
    }

    fn delete_many<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = ints("ids", ids)?;
        native_call!(self, py, |c| c.delete_many(&ids).await)
    }

    fn extend<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        seconds: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("id", id)?;
        let d = secs("seconds", seconds)?;
        native_call!(self, py, |c| c.extend(id, d).await)
    }

    fn release<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        delay: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("id", id)?;
        let d = secs("delay", delay)?;
        native_call!(self, py, |c| c.release(id, d).await)
    }

    #[pyo3(signature = (id, error, retry=None))]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        error: &Bound<'py, PyAny>,
        retry: Option<RetrySpec<'py>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = int("id", id)?;
        let error = text_lossy("error", error)?;
        let p = policy_or(retry, pgqrs::RetryPolicy::default())?;
        native_call!(self, py, |c| c.fail(id, &error, &p).await)
    }

    /// Wait for jobs after `rounds` idle waits that found nothing: the core's idle wait for
    /// `poll_interval` (the store's when `None`), cut short when jobs may have arrived.
    #[pyo3(signature = (rounds, poll_interval=None))]
    fn wait_idle<'py>(
        &self,
        py: Python<'py>,
        rounds: u32,
        poll_interval: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let poll = opt_secs("poll_interval", poll_interval)?;
        let c = self.get()?;
        awaitable(py, async move {
            c.wait_idle(rounds, poll).await;
            Ok(())
        })
    }

    /// Record handlers' outcomes, `{job id: None (success) or error text}`, in two
    /// statements; returns, per id in order, whether it was settled (False: lease lost).
    #[pyo3(signature = (outcomes, retry=None))]
    fn settle<'py>(
        &self,
        py: Python<'py>,
        outcomes: &Bound<'py, PyDict>,
        retry: Option<RetrySpec<'py>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = policy_or(retry, pgqrs::RetryPolicy::default())?;
        let outcomes = outcomes
            .iter()
            .map(|(id, error)| {
                let error = match error.is_none() {
                    true => None,
                    false => Some(text_lossy("error", &error)?),
                };
                Ok((int("id", &id)?, error.map_or(Ok(()), Err)))
            })
            .collect::<PyResult<Vec<_>>>()?;
        native_call!(self, py, |c| c.settle(outcomes, &p).await)
    }
}
