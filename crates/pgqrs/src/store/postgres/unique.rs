//! PostgreSQL: keyed enqueues (the statement is `enqueue_unique` in `queries.rs`).
//!
//! One job: one statement, on its own. A batch: the same statement in a transaction (in a
//! caller's transaction: a savepoint), so that with `only_new` nothing of it stays when one of
//! its keys turns out to be taken.

use sqlx::PgConnection;

use super::*;

/// Most rounds of one keyed enqueue. A round ends with every job placed unless the job
/// holding one of its keys was committed, or finished, while the round ran; the next round
/// sees that. Only jobs of that key coming and going faster than a round could exhaust this.
const ROUNDS: usize = 100;

/// How often a batch is tried again after PostgreSQL broke a deadlock by failing it.
const DEADLOCK_TRIES: usize = 3;

/// The rounds found the queue's row gone.
struct QueueGone;

impl PgBackend {
    pub(super) async fn enqueue_unique_jobs(
        &self,
        p: EnqueueParams<'_>,
        u: UniqueParams<'_>,
        mut caller: Option<&mut PgConnection>,
    ) -> Result<Vec<Placed>> {
        let notify = self.notify_in_statement(p.queue, p.visibility, caller.is_some());
        let mut queue_id = self.queue_id_on(p.queue, caller.as_deref_mut()).await?;
        let mut tries = 0;
        let placed = loop {
            let r = if p.payloads.len() == 1 {
                match caller.as_deref_mut() {
                    Some(c) => self.rounds(c, queue_id, &p, &u, notify).await,
                    None => {
                        let mut c = self.pool.acquire().await.map_err(|e| self.err(e))?;
                        self.rounds(&mut c, queue_id, &p, &u, notify).await
                    }
                }
            } else {
                let mut tx = match caller.as_deref_mut() {
                    Some(c) => self.savepoint(c).await?,
                    None => self.pool.begin().await.map_err(|e| self.err(e))?,
                };
                let r = self.rounds(&mut tx, queue_id, &p, &u, notify).await;
                // With `only_new`, a taken key undoes the whole batch (earlier rounds too).
                let keep = matches!(&r, Ok(Ok(placed)) if !placed.iter().any(|x| {
                    *x == Placed::NotWritten || (u.only_new && matches!(x, Placed::Existing(_)))
                }));
                if keep {
                    tx.commit().await.map_err(|e| self.err(e))?;
                } else {
                    let _ = tx.rollback().await;
                }
                r
            };
            match r {
                Ok(Ok(placed)) => break placed,
                Ok(Err(QueueGone)) => {
                    // As in `enqueue_jobs`: deleted, or re-created under a new id meanwhile.
                    self.queue_ids.forget(p.queue);
                    let fresh = self.queue_id_on(p.queue, caller.as_deref_mut()).await?;
                    if fresh == queue_id {
                        return Err(Error::QueueNotFound {
                            queue: p.queue.to_string(),
                        });
                    }
                    queue_id = fresh;
                }
                // A batch's deadlock undid only its own transaction or savepoint; one job
                // in a caller's transaction aborted that transaction, which is the caller's.
                Err(Error::Database { code: Some(c), .. })
                    if c == "40P01"
                        && tries + 1 < DEADLOCK_TRIES
                        && (caller.is_none() || p.payloads.len() > 1) =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if caller.is_none()
            && matches!(p.visibility, Visibility::Now)
            && placed.iter().any(|x| matches!(x, Placed::New(_)))
        {
            self.wakers.wake(p.queue);
        }
        Ok(placed)
    }

    /// A savepoint in the caller's transaction (sqlx's nested transaction), or a transaction
    /// of its own when the connection is in none. A transaction that sqlx did not start (a
    /// raw `BEGIN` statement) is refused: sqlx would send `BEGIN` again, PostgreSQL would only
    /// warn, and the batch's `COMMIT` would commit the caller's transaction.
    async fn savepoint<'c>(
        &self,
        c: &'c mut PgConnection,
    ) -> Result<sqlx::Transaction<'c, Postgres>> {
        use sqlx::Connection;
        if !c.is_in_transaction() {
            let probe = sqlx::raw_sql("SAVEPOINT pgqrs_probe")
                .execute(&mut *c)
                .await;
            match probe {
                Ok(_) => {
                    let _ = sqlx::raw_sql("RELEASE SAVEPOINT pgqrs_probe")
                        .execute(&mut *c)
                        .await;
                    return Err(Error::validation(
                        "connection",
                        "the connection is in a transaction that sqlx did not start (a raw \
                         BEGIN statement), and a keyed batch needs a savepoint that sqlx \
                         tracks: begin the transaction with sqlx (pool.begin() or \
                         conn.begin())",
                    ));
                }
                // 25P01: no transaction block, so the connection is in autocommit.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P01") => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        c.begin().await.map_err(|e| self.err(e))
    }

    /// Run the statement until every job is placed (or, with `only_new`, one key is taken).
    async fn rounds(
        &self,
        c: &mut PgConnection,
        queue_id: i64,
        p: &EnqueueParams<'_>,
        u: &UniqueParams<'_>,
        notify: bool,
    ) -> Result<std::result::Result<Vec<Placed>, QueueGone>> {
        let (at, delay): (Option<DateTime<Utc>>, f64) = match p.visibility {
            Visibility::Now => (None, 0.0),
            Visibility::After(d) => (None, secs(d)),
            Visibility::At(t) => (Some(t), 0.0),
        };
        let window = u.window.map(secs);
        let n = p.payloads.len();
        let mut out: Vec<Option<Placed>> = vec![None; n];
        let mut pending: Vec<usize> = (0..n).collect();
        for _ in 0..ROUNDS {
            let payloads: Vec<&str> = pending.iter().map(|&i| p.payloads[i].as_str()).collect();
            let keys: Vec<Option<&str>> = pending.iter().map(|&i| u.keys[i].as_deref()).collect();
            let rows = self
                .stmt(&self.q.enqueue_unique)
                .bind(queue_id)
                .bind(&payloads)
                .bind(p.max_attempts)
                .bind(at)
                .bind(delay)
                .bind(&self.notifier.channel)
                .bind(p.queue)
                .bind(notify)
                .bind(p.priority)
                .bind(&keys)
                .bind(window)
                .bind(u.only_new)
                .bind(p.timeout_ms)
                .bind(p.group.as_deref())
                .fetch_all(&mut *c)
                .await
                .map_err(|e| self.err(e))?;
            let mut unplaced = Vec::new();
            for r in &rows {
                let pos = usize::try_from(r.i64(0)? - 1).map_err(|_| bad_value(0, "position"))?;
                let i = *pending.get(pos).ok_or_else(|| bad_value(0, pos))?;
                out[i] = match (r.opt_i64(1)?, r.flag(2)?) {
                    (Some(id), true) => Some(Placed::New(id)),
                    (Some(id), false) => Some(Placed::Existing(id)),
                    (None, _) => {
                        unplaced.push(i);
                        None
                    }
                };
            }
            if unplaced.is_empty() {
                return Ok(Ok(out
                    .into_iter()
                    .map(|x| x.unwrap_or(Placed::NotWritten))
                    .collect()));
            }
            if u.only_new && out.iter().any(|x| matches!(x, Some(Placed::Existing(_)))) {
                return Ok(Ok(out
                    .into_iter()
                    .map(|x| x.unwrap_or(Placed::NotWritten))
                    .collect()));
            }
            // A job without a key is always inserted while the queue's row exists; a keyed
            // one is also skipped when its key was taken after the statement's snapshot.
            let gone = unplaced.iter().any(|&i| u.keys[i].is_none())
                || self
                    .query_scalar::<i64>(self.q.queue_exists.clone())
                    .bind(queue_id)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| self.err(e))?
                    == 0;
            if gone {
                return Ok(Err(QueueGone));
            }
            pending = unplaced;
        }
        Err(Error::Busy {
            message: format!(
                "the jobs holding the keys of this enqueue kept changing over {ROUNDS} tries"
            ),
        })
    }
}
