//! The handler abstraction: what a consumer or a worker calls with each message, and how its
//! result (or panic) becomes an outcome.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::error::BoxError;
use crate::types::Message;

/// A boxed future, as handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Handles messages. Closures `Fn(Message) -> impl Future<Output = Result<(), BoxError>>` are
/// turned into handlers by [`WorkerBuilder::handle`](crate::WorkerBuilder::handle); language
/// bindings implement it directly.
pub trait Handler: Send + Sync + 'static {
    /// Handle one message. `Ok` archives it; `Err` records a failed attempt.
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>>;

    /// Handle several messages in one call; the result applies to all of them. By default,
    /// calls [`call`](Self::call) on each concurrently and fails the batch if any failed.
    fn call_batch(&self, msgs: Vec<Message>) -> BoxFuture<Vec<std::result::Result<(), BoxError>>> {
        let futs: Vec<_> = msgs.into_iter().map(|m| self.call(m)).collect();
        Box::pin(futures_util::future::join_all(futs))
    }
}

impl Handler for Arc<dyn Handler> {
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>> {
        (**self).call(msg)
    }
    fn call_batch(&self, msgs: Vec<Message>) -> BoxFuture<Vec<std::result::Result<(), BoxError>>> {
        (**self).call_batch(msgs)
    }
}

/// A closure as a [`Handler`].
pub(crate) struct FnHandler<F>(pub F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
{
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>> {
        Box::pin((self.0)(msg))
    }
}

/// A batch closure as a [`Handler`].
pub(crate) struct BatchFnHandler<F>(pub F);

impl<F, Fut> Handler for BatchFnHandler<F>
where
    F: Fn(Vec<Message>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
{
    fn call(&self, msg: Message) -> BoxFuture<std::result::Result<(), BoxError>> {
        Box::pin((self.0)(vec![msg]))
    }
    fn call_batch(&self, msgs: Vec<Message>) -> BoxFuture<Vec<std::result::Result<(), BoxError>>> {
        let n = msgs.len();
        let fut = (self.0)(msgs);
        Box::pin(async move {
            match fut.await {
                Ok(()) => (0..n).map(|_| Ok(())).collect(),
                Err(e) => {
                    let text = e.to_string();
                    (0..n).map(|_| Err(text.clone().into())).collect()
                }
            }
        })
    }
}

/// What a handler made of one message: `Ok`, or the error text recorded with the failed
/// attempt.
pub(crate) type Outcome = std::result::Result<(), String>;

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("handler panicked: {what}")
}

/// Run a handler on several messages: in one [`Handler::call_batch`] when `batch`, else one
/// [`Handler::call`] after the other. A panic fails every message.
pub(crate) async fn run_batch(h: &dyn Handler, msgs: Vec<Message>, batch: bool) -> Vec<Outcome> {
    let n = msgs.len();
    let fut = async {
        if batch {
            h.call_batch(msgs).await
        } else {
            let mut out = Vec::with_capacity(n);
            for m in msgs {
                out.push(h.call(m).await);
            }
            out
        }
    };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(rs) => rs
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect(),
        Err(p) => {
            let text = panic_text(p);
            (0..n).map(|_| Err(text.clone())).collect()
        }
    }
}
