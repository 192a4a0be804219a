//! `Workflow` (the context of one run) and `Step` (one step of it, replayed or run). The
//! Python decorators await the bodies and report their outcomes; what an outcome means (the
//! stored result of a finished run, whether a failed step runs again, after which backoff)
//! is the core's.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;

use crate::convert::{json_text, policy_or, raw, same_process, text, text_lossy, RetrySpec};
use crate::errors::to_py;
use crate::rows::{rows, RunRow, StepRow};
use crate::runtime::{awaitable, native_call};

/// The context of one workflow run.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct Workflow {
    inner: pgqrs::Workflow,
    pid: u32,
}

impl Workflow {
    pub fn new(inner: pgqrs::Workflow, pid: u32) -> Self {
        Workflow { inner, pid }
    }

    fn get(&self) -> PyResult<pgqrs::Workflow> {
        same_process(self.pid, "workflow context")?;
        Ok(self.inner.clone())
    }
}

#[pymethods]
impl Workflow {
    #[getter]
    fn id(&self) -> i64 {
        self.inner.id()
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[getter]
    fn input_json(&self) -> String {
        json_text(self.inner.input())
    }

    /// Take ownership of the run: `None` to execute it; for a finished run, its stored
    /// output (JSON text) or its stored error raised.
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |w| match w.start().await {
            Ok(pgqrs::RunStart::Execute) => Ok(None),
            Ok(pgqrs::RunStart::Finished(run)) => run.outcome().map(|v| Some(json_text(&v))),
            Err(e) => Err(e),
        })
    }

    /// Begin the next step: replayed from the journal or to be run, retried per `retry`
    /// (none when not given).
    #[pyo3(signature = (name, retry=None))]
    fn begin_step<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        retry: Option<RetrySpec<'py>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = text("step name", name)?;
        let w = self.get()?;
        let pid = self.pid;
        let policy = policy_or(retry, pgqrs::RetryPolicy::none())?;
        awaitable(py, async move {
            let (output_json, position, attempt) = match w.begin_step(&name).await.map_err(to_py)? {
                pgqrs::StepStart::Replay(v) => (Some(json_text(&v)), 0, 0),
                pgqrs::StepStart::Run { position, attempt } => (None, position, attempt),
            };
            Ok(Step {
                run: Arc::new(StepRun {
                    workflow: w,
                    name,
                    position,
                    attempt: AtomicI32::new(attempt),
                    policy,
                }),
                output_json,
                pid,
            })
        })
    }

    /// End this execution without an outcome (its task was cancelled); the run can be resumed.
    fn suspend(&self) {
        self.inner.suspend();
    }

    /// Record the run's success. If the run is no longer this executor's (cancelled, failed
    /// or taken over meanwhile), raises what it stored instead (`WorkflowLockedError` while
    /// another executor runs it); nothing is changed then.
    fn finish_ok<'py>(&self, py: Python<'py>, output_json: String) -> PyResult<Bound<'py, PyAny>> {
        let w = self.get()?;
        awaitable(py, async move {
            let out = raw(output_json)?;
            if !w.finish_ok(&out).await.map_err(to_py)? {
                let run = w.status().await.map_err(to_py)?;
                run.outcome().map_err(to_py)?;
            }
            Ok(())
        })
    }

    /// Record the run's failure; False (and nothing changed) if it is no longer this
    /// executor's.
    fn finish_err<'py>(
        &self,
        py: Python<'py>,
        error: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let error = text_lossy("error", error)?;
        native_call!(self, py, |w| w.finish_err(&error).await)
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |w| w.status().await.map(RunRow::from))
    }

    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        native_call!(self, py, |w| w.steps().await.map(rows::<_, StepRow>))
    }
}

struct StepRun {
    workflow: pgqrs::Workflow,
    name: String,
    position: i32,
    attempt: AtomicI32,
    policy: pgqrs::RetryPolicy,
}

/// One step of a run, from `Workflow.begin_step`: replayed (`output_json` is its journaled
/// output) or to be run.
#[pyclass(module = "pgqrs._pgqrs", frozen)]
pub struct Step {
    run: Arc<StepRun>,
    output_json: Option<String>,
    pid: u32,
}

impl Step {
    fn get(&self) -> PyResult<Arc<StepRun>> {
        same_process(self.pid, "workflow step")?;
        Ok(self.run.clone())
    }
}

#[pymethods]
impl Step {
    /// The journaled output (JSON text) of a replayed step; `None`: run the body.
    #[getter]
    fn output_json(&self) -> Option<String> {
        self.output_json.clone()
    }

    /// The step's position in the run.
    #[getter]
    fn position(&self) -> i32 {
        self.run.position
    }

    /// The attempt being run (1-based).
    #[getter]
    fn attempt(&self) -> i32 {
        self.run.attempt.load(Ordering::Relaxed)
    }

    /// Journal the body's output; the step never runs again.
    fn complete<'py>(&self, py: Python<'py>, output_json: String) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        awaitable(py, async move {
            let out = raw(output_json)?;
            let attempt = s.attempt.load(Ordering::Relaxed);
            s.workflow
                .complete_step(s.position, &s.name, attempt, &out)
                .await
                .map_err(to_py)
        })
    }

    /// Journal a failed attempt. True: run the body again (its backoff has passed and the
    /// run is still this executor's); False: the step failed for good.
    #[pyo3(signature = (error, permanent=false))]
    fn retry<'py>(
        &self,
        py: Python<'py>,
        error: &Bound<'py, PyAny>,
        permanent: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let error = text_lossy("error", error)?;
        let s = self.get()?;
        awaitable(py, async move {
            let attempt = s.attempt.load(Ordering::Relaxed);
            let next = s
                .workflow
                .retry_step(s.position, &s.name, attempt, &error, &s.policy, permanent)
                .await
                .map_err(to_py)?;
            if let Some(n) = next {
                s.attempt.store(n, Ordering::Relaxed);
            }
            Ok(next.is_some())
        })
    }
}
