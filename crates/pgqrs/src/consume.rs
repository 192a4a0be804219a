//! Consuming: the one-shot [`dequeue`] builder and the low-level [`Consumer`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::deadline::run_within;
use crate::error::{BoxError, Error, Result};
use crate::handler::{FnHandler, Handler};
use crate::limits::{validate_batch, validate_lease};
use crate::retry::{failure, RetryPolicy};
use crate::store::{validate_queue_name, Backend, ClaimParams, Completion, Failure, Store};
use crate::types::{Lease, Message};

/// Builds a one-shot consume. Start with [`dequeue`].
#[must_use = "a dequeue does nothing until .handle(..).execute(&store) is awaited"]
#[derive(Debug, Default, Clone)]
pub struct DequeueBuilder {
    queue: Option<String>,
    batch: Option<usize>,
    visibility_timeout: Option<Duration>,
    retry: RetryPolicy,
}

/// Start building a one-shot consume: claim what is ready now (up to the batch size), run the
/// handler on each message, archive the successes, apply the retry policy to the failures, and
/// return how many messages were handled.
pub fn dequeue() -> DequeueBuilder {
    DequeueBuilder::default()
}

impl DequeueBuilder {
    /// The queue to consume.
    pub fn from(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// How many messages to claim at most (default 1). They are handled concurrently.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = Some(n);
        self
    }

    /// Lease length (default from the store's config).
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = Some(d);
        self
    }

    /// What happens when the handler fails (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The handler: `Ok(())` archives the message; `Err` (or a panic) records a failed attempt.
    pub fn handle<F, Fut>(self, f: F) -> DequeueWith
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), BoxError>> + Send + 'static,
    {
        self.handler(Arc::new(FnHandler(f)))
    }

    /// Like [`handle`](Self::handle) with a [`Handler`] object (used by language bindings).
    pub fn handler(self, h: Arc<dyn Handler>) -> DequeueWith {
        DequeueWith {
            builder: self,
            handler: h,
        }
    }
}

/// A [`DequeueBuilder`] with its handler; run it with [`execute`](Self::execute).
#[must_use = "a dequeue does nothing until .execute(&store) is awaited"]
pub struct DequeueWith {
    builder: DequeueBuilder,
    handler: Arc<dyn Handler>,
}

impl DequeueWith {
    /// Claim, handle and complete. Returns how many messages were handled (successfully or
    /// not); 0 when nothing was ready.
    pub async fn execute(self, store: &Store) -> Result<usize> {
        let b = self.builder;
        let queue = b.queue.ok_or_else(|| {
            Error::validation("queue", "no queue given: call .from(\"queue-name\")")
        })?;
        validate_queue_name(&queue)?;
        let batch = b.batch.unwrap_or(1);
        validate_batch(batch)?;
        let lease = b
            .visibility_timeout
            .unwrap_or(store.config().visibility_timeout);
        validate_lease(lease)?;
        let backend = store.backend_impl();
        let msgs = backend
            .claim_jobs(ClaimParams {
                queue: &queue,
                limit: batch,
                lease,
                worker_id: None,
            })
            .await?
            .jobs;
        let n = msgs.len();
        if n == 0 {
            return Ok(0);
        }
        let handler = self.handler;
        let results = futures_util::future::join_all(msgs.into_iter().map(|m| {
            let h = handler.clone();
            async move {
                let (lease, attempts, max) = (m.lease(), m.attempts, m.max_attempts);
                // A job's own timeout bounds its handler here too.
                let timeout = m.timeout;
                let outcome = run_within(&*h, vec![m], false, timeout).await;
                let outcome = outcome.into_iter().next().unwrap_or(Ok(()));
                (lease, attempts, max, outcome)
            }
        }))
        .await;
        settle(backend, &b.retry, results).await?;
        backend.capacity_freed(&queue);
        Ok(n)
    }
}

/// Record handlers' outcomes: the successes archived in one statement, the failures recorded
/// under `policy` in another. Returns, per outcome, whether its lease was still held.
async fn settle(
    backend: &dyn Backend,
    policy: &RetryPolicy,
    outcomes: impl IntoIterator<Item = (Lease, i32, i32, std::result::Result<(), String>)>,
) -> Result<Vec<(Lease, bool)>> {
    let mut ok = Vec::new();
    let mut failed: Vec<Failure> = Vec::new();
    for (lease, attempts, max, outcome) in outcomes {
        match outcome {
            Ok(()) => ok.push(lease),
            Err(error) => failed.push(failure(policy, lease, attempts, max, error)),
        }
    }
    let mut held = Vec::with_capacity(ok.len() + failed.len());
    if !ok.is_empty() {
        let r = backend.complete_jobs(&ok, Completion::Archive).await?;
        held.extend(ok.into_iter().zip(r));
    }
    if !failed.is_empty() {
        let r = backend.fail_jobs(&failed).await?;
        held.extend(failed.iter().map(|f| f.lease).zip(r));
    }
    Ok(held)
}

/// Low-level access to one queue: claim messages and settle each one yourself.
///
/// The consumer remembers the lease of every message it claimed, so settling takes just the
/// message id. Settling a message whose lease was lost fails with [`Error::LeaseLost`].
#[derive(Debug, Clone)]
pub struct Consumer {
    store: Store,
    queue: String,
    leases: Arc<Mutex<HashMap<i64, Claimed>>>,
}

/// What a consumer remembers of a job it claimed: (lease token, attempts, max attempts).
type Claimed = (i64, i32, i32);

impl Consumer {
    /// A consumer of `queue`. Fails with [`Error::QueueNotFound`] if the queue does not exist.
    pub async fn new(store: &Store, queue: &str) -> Result<Self> {
        validate_queue_name(queue)?;
        store.backend_impl().get_queue(queue).await?;
        Ok(Consumer {
            store: store.clone(),
            queue: queue.to_string(),
            leases: Arc::default(),
        })
    }

    /// The queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Claim up to `batch` messages that are ready now, leased for `visibility_timeout`
    /// (the store's default when `None`). Returns an empty list when nothing is ready.
    pub async fn dequeue(
        &self,
        batch: usize,
        visibility_timeout: Option<Duration>,
    ) -> Result<Vec<Message>> {
        validate_batch(batch)?;
        let lease = visibility_timeout.unwrap_or(self.store.config().visibility_timeout);
        validate_lease(lease)?;
        let msgs = self
            .store
            .backend_impl()
            .claim_jobs(ClaimParams {
                queue: &self.queue,
                limit: batch,
                lease,
                worker_id: None,
            })
            .await?
            .jobs;
        let mut l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for m in &msgs {
            l.insert(m.id, (m.lease_token, m.attempts, m.max_attempts));
        }
        Ok(msgs)
    }

    fn leases_of(&self, ids: &[i64]) -> Result<Vec<Lease>> {
        let l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .map(|&id| {
                l.get(&id)
                    .map(|&(token, _, _)| Lease { id, token })
                    .ok_or(Error::JobNotFound { id })
            })
            .collect()
    }

    /// Drop leases that were settled (or found lost).
    fn forget(&self, leases: &[Lease]) {
        let mut l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for lease in leases {
            l.remove(&lease.id);
        }
    }

    fn one(id: i64, r: Vec<bool>) -> Result<()> {
        if r.first().copied().unwrap_or(false) {
            Ok(())
        } else {
            Err(Error::LeaseLost { id })
        }
    }

    async fn complete(&self, ids: &[i64], how: Completion) -> Result<Vec<bool>> {
        let leases = self.leases_of(ids)?;
        let r = self
            .store
            .backend_impl()
            .complete_jobs(&leases, how)
            .await?;
        self.forget(&leases);
        self.store.backend_impl().capacity_freed(&self.queue);
        Ok(r)
    }

    /// Archive a message this consumer claimed.
    pub async fn archive(&self, id: i64) -> Result<()> {
        Self::one(id, self.complete(&[id], Completion::Archive).await?)
    }

    /// Archive many; returns, per id, whether it was archived (`false`: lease lost).
    pub async fn archive_many(&self, ids: &[i64]) -> Result<Vec<bool>> {
        self.complete(ids, Completion::Archive).await
    }

    /// Delete a message this consumer claimed.
    pub async fn delete(&self, id: i64) -> Result<()> {
        Self::one(id, self.complete(&[id], Completion::Delete).await?)
    }

    /// Delete many; returns, per id, whether it was deleted (`false`: lease lost).
    pub async fn delete_many(&self, ids: &[i64]) -> Result<Vec<bool>> {
        self.complete(ids, Completion::Delete).await
    }

    /// Extend the lease: the message stays invisible for `by` from now.
    pub async fn extend(&self, id: i64, by: Duration) -> Result<()> {
        validate_lease(by)?;
        let leases = self.leases_of(&[id])?;
        let r = self.store.backend_impl().extend_leases(&leases, by).await?;
        if !r.first().copied().unwrap_or(false) {
            self.forget(&leases);
        }
        Self::one(id, r)
    }

    /// Give the message back unhandled: claimable again after `delay` (zero: at once). The
    /// attempt it used is given back too.
    pub async fn release(&self, id: i64, delay: Duration) -> Result<()> {
        crate::limits::validate_delay("delay", delay)?;
        let leases = self.leases_of(&[id])?;
        let r = self
            .store
            .backend_impl()
            .release_jobs(&leases, delay)
            .await?;
        self.forget(&leases);
        Self::one(id, r)
    }

    /// Wait as an idle consumer does after `rounds` waits that found nothing:
    /// [`idle_wait`](crate::idle_wait) of `poll` (the store's poll interval when `None`), cut
    /// short when jobs may have arrived (an enqueue in this process, a notification, another
    /// connection's commit).
    pub async fn wait_idle(&self, rounds: u32, poll: Option<Duration>) {
        let poll = poll.unwrap_or(self.store.config().idle_poll_interval());
        self.store
            .backend_impl()
            .wait_for_jobs(&self.queue, crate::session::idle_wait(poll, rounds))
            .await
    }

    /// Record the outcomes of messages this consumer claimed, in two statements: each id with
    /// `Ok` is archived, each with `Err(text)` records a failed attempt under `policy` (see
    /// [`fail`](Self::fail)). Returns, per id in order, whether it was settled (`false`: its
    /// lease was lost and nothing changed). This is what [`dequeue`]`…execute()` does after
    /// its handlers ran.
    pub async fn settle(
        &self,
        outcomes: Vec<(i64, std::result::Result<(), String>)>,
        policy: &RetryPolicy,
    ) -> Result<Vec<bool>> {
        let claimed: Vec<(Lease, i32, i32, std::result::Result<(), String>)> = {
            let l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            outcomes
                .into_iter()
                .map(|(id, outcome)| {
                    let &(token, attempts, max) = l.get(&id).ok_or(Error::JobNotFound { id })?;
                    Ok((Lease { id, token }, attempts, max, outcome))
                })
                .collect::<Result<_>>()?
        };
        let order: Vec<i64> = claimed.iter().map(|c| c.0.id).collect();
        let held = settle(self.store.backend_impl(), policy, claimed).await?;
        self.store.backend_impl().capacity_freed(&self.queue);
        let leases: Vec<Lease> = held.iter().map(|(l, _)| *l).collect();
        self.forget(&leases);
        let by_id: HashMap<i64, bool> = held.into_iter().map(|(l, ok)| (l.id, ok)).collect();
        Ok(order.iter().map(|id| by_id[id]).collect())
    }

    /// Record a failed attempt of a message this consumer claimed, under `policy`: it is
    /// retried later, or becomes a dead letter with `error` as its last error if no attempt
    /// is left.
    pub async fn fail(&self, id: i64, error: &str, policy: &RetryPolicy) -> Result<()> {
        let (token, attempts, max_attempts) = {
            let l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            *l.get(&id).ok_or(Error::JobNotFound { id })?
        };
        let lease = Lease { id, token };
        let f = failure(policy, lease, attempts, max_attempts, error.to_string());
        let r = self.store.backend_impl().fail_jobs(&[f]).await?;
        self.forget(&[lease]);
        self.store.backend_impl().capacity_freed(&self.queue);
        Self::one(id, r)
    }
}
