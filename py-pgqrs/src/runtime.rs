//! The tokio runtime behind every awaitable, rebuilt in a child process after `os.fork()`.
//!
//! A forked child inherits the parent's memory but none of its threads: a runtime created
//! before the fork would accept tasks in the child and never run them. This runtime notices
//! the pid change and starts afresh (the parent's copy is leaked, never dropped: dropping it
//! would wait for threads that do not exist in the child).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

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
    // One worker thread by default: the Python side is one event loop per thread and the
    // runtime only waits on I/O for it, and with several workers each call paid for workers
    // waking one another (about 30% more time per call on 2 cores).
    // PGQRS_TOKIO_WORKER_THREADS overrides it (for several busy event loops in threads).
    let workers = std::env::var("PGQRS_TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
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

/// Run `fut` and return an asyncio awaitable for its result.
///
/// The future is first polled right here, on the calling thread (inside the runtime's
/// context), before anything is handed to a tokio worker:
///
/// * If it finishes at once (no I/O: a cached answer, a full claim buffer, a validation
///   error), the awaitable is an asyncio future that is already done.
/// * Otherwise it has started its I/O (sent its statement, queued for a connection), and it
///   moves to the runtime only when that I/O wakes it, from the thread that woke it (usually
///   the tokio thread that saw the socket become readable).
///
/// Handing a fresh future to a parked tokio worker costs a thread wake-up (45-50 µs on a
/// small VM) that sits on the critical path of every call; polling first takes it off. The
/// result reaches the event loop through pyo3-async-runtimes as before; cancelling the
/// awaitable drops the work, wherever it is.
pub fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let handle = runtime();
    let mut fut: Pin<Box<dyn Future<Output = PyResult<T>> + Send>> = Box::pin(fut);
    let deferred = Arc::new(Deferred {
        state: Mutex::new(State::Polling),
        handle: handle.clone(),
    });
    let polled = {
        let _ctx = handle.enter();
        let waker = Waker::from(deferred.clone());
        fut.as_mut().poll(&mut Context::from_waker(&waker))
    };
    match polled {
        Poll::Ready(result) => ready_future(py, result),
        Poll::Pending => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let rest: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                let _ = tx.send(fut.await);
            });
            deferred.park(rest);
            let guard = CancelOnDrop(deferred);
            pyo3_async_runtimes::generic::future_into_py::<ForkSafeTokio, _, T>(py, async move {
                let _guard = guard;
                rx.await.unwrap_or_else(|_| {
                    Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "pgqrs: the runtime stopped before the call finished",
                    ))
                })
            })
        }
    }
}

/// An asyncio future of the running loop, already done with `result`.
fn ready_future<'py, T>(py: Python<'py>, result: PyResult<T>) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a>,
{
    let running_loop = py
        .import(pyo3::intern!(py, "asyncio"))?
        .call_method0(pyo3::intern!(py, "get_running_loop"))?;
    let fut = running_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    match result {
        Ok(v) => {
            let v = pyo3::IntoPyObjectExt::into_bound_py_any(v, py)?;
            fut.call_method1(pyo3::intern!(py, "set_result"), (v,))?;
        }
        Err(e) => {
            fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?;
        }
    }
    Ok(fut)
}

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

enum State {
    /// Being polled on the calling thread.
    Polling,
    /// Woken while still being polled there: spawn as soon as it is parked.
    WokenWhilePolling,
    /// Waiting for its first wake-up.
    Parked(Work),
    /// Handed to the runtime (or dropped).
    Gone(Option<tokio::task::AbortHandle>),
}

/// A future polled once on the calling thread, waiting for the wake-up that moves it onto
/// the runtime.
struct Deferred {
    state: Mutex<State>,
    handle: tokio::runtime::Handle,
}

impl Deferred {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After the first poll: wait for the wake-up, or spawn now if it already came.
    fn park(&self, work: Work) {
        let mut st = self.lock();
        match *st {
            State::WokenWhilePolling => {
                *st = State::Gone(Some(self.handle.spawn(work).abort_handle()))
            }
            State::Gone(_) => {} // cancelled meanwhile: drop the work
            _ => *st = State::Parked(work),
        }
    }
}

impl Wake for Deferred {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut st = self.lock();
        match std::mem::replace(&mut *st, State::Gone(None)) {
            State::Polling => *st = State::WokenWhilePolling,
            State::Parked(work) => *st = State::Gone(Some(self.handle.spawn(work).abort_handle())),
            other => *st = other,
        }
    }
}

/// Dropped with the awaitable's future (done or cancelled): drops or aborts the work.
struct CancelOnDrop(Arc<Deferred>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let taken = std::mem::replace(&mut *self.0.lock(), State::Gone(None));
        match taken {
            State::Gone(Some(abort)) => abort.abort(),
            // Dropped outside the lock: dropping the work may wake or drop other things.
            other => drop(other),
        }
    }
}

/// `$self.get()?` (the native object, checked to be of this process), then an awaitable of
/// `$body` with the core's error mapped to Python.
macro_rules! native_call {
    ($self:ident, $py:ident, |$s:ident| $body:expr) => {{
        let $s = $self.get()?;
        $crate::runtime::awaitable($py, async move { $body.map_err($crate::errors::to_py) })
    }};
}
pub(crate) use native_call;
