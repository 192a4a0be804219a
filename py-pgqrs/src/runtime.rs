//! The tokio runtime behind every awaitable, rebuilt in a child process after `os.fork()`.
//!
//! A forked child inherits the parent's memory but none of its threads: a runtime created
//! before the fork would accept tasks in the child and never run them. This runtime notices
//! the pid change and starts afresh (the parent's copy is leaked, never dropped: dropping it
//! would wait for threads that do not exist in the child).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, Runtime};
use pyo3_async_runtimes::TaskLocals;
use std::cell::OnceCell;

static RUNTIME: Mutex<Option<(u32, tokio::runtime::Runtime)>> = Mutex::new(None);

/// This process's runtime, created on first use (and again after a fork).
pub fn runtime() -> tokio::runtime::Handle {
    let pid = std::process::id();
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, rt)) = guard.as_ref() {
        if *owner == pid {
            return rt.handle().clone();
        }
    }
    if let Some((_, stale)) = guard.take() {
        // Inherited from the parent: its threads are gone. Never drop it.
        std::mem::forget(stale);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("pgqrs-tokio")
        .enable_all()
        .build()
        .expect("failed to start the tokio runtime");
    let handle = rt.handle().clone();
    *guard = Some((pid, rt));
    handle
}

/// Stop the runtime's threads (at interpreter exit), waiting up to `timeout` for running tasks.
///
/// Called from an `atexit` hook with the GIL released: a worker thread that is finishing an
/// awaitable (it writes to the event loop's wake-up socket) must not still be inside Python
/// when the interpreter finalizes, or the interpreter would terminate that thread mid-Rust and
/// abort the process.
pub fn shutdown(timeout: std::time::Duration) {
    let taken = {
        let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
        guard.take()
    };
    if let Some((pid, rt)) = taken {
        if pid == std::process::id() {
            rt.shutdown_timeout(timeout);
        } else {
            std::mem::forget(rt);
        }
    }
}

/// The runtime as pyo3-async-runtimes sees it.
pub struct ForkSafeTokio;

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

impl Runtime for ForkSafeTokio {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        runtime().spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        runtime().spawn_blocking(f)
    }
}

impl ContextExt for ForkSafeTokio {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}

/// Run `fut` on the runtime and return an asyncio awaitable for its result.
pub fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<ForkSafeTokio, _, T>(py, fut)
}
