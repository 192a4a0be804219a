//! The SQLite dialect: keyed enqueues.
//!
//! One `BEGIN IMMEDIATE` transaction on the writer: it holds the database's write lock from
//! its first statement, so no other connection or process can add, finish or requeue a job
//! between the look-up of the keys and the insert. The partial unique index backs this up.
//! On a caller's connection: a savepoint in the caller's transaction (which should be a
//! `BEGIN IMMEDIATE` one for the same reason), or a `BEGIN IMMEDIATE` of its own.

use std::collections::HashMap;

use super::*;

/// Keys per look-up statement, and rows per insert (two parameters each).
const KEY_CHUNK: usize = 2500;

impl<E: Engine> SqliteBackend<E> {
    pub(super) async fn enqueue_unique_jobs(
        &self,
        p: EnqueueParams<'_>,
        u: UniqueParams<'_>,
        on: On<'_>,
    ) -> Result<Vec<Placed>> {
        let now = now_us();
        let visible_at = visible_at(p.visibility, now);
        match on {
            On::Pool => {
                let queue_id = self.queue_id(p.queue).await?;
                let mut tx = self.e.begin().await?;
                let r = self
                    .place_keyed(&mut tx, queue_id, &p, &u, now, visible_at)
                    .await;
                let placed = tx.finish(r).await?;
                if visible_at <= now && placed.iter().any(|x| matches!(x, Placed::New(_))) {
                    self.e.wakers().wake(p.queue);
                }
                Ok(placed)
            }
            On::Caller(c) => {
                let mut tx = self.caller_tx(c).await?;
                let r = async {
                    let queue_id = caller_queue_id(&mut tx, p.queue).await?;
                    self.place_keyed(&mut tx, queue_id, &p, &u, now, visible_at)
                        .await
                }
                .await;
                tx.finish(r).await
            }
        }
    }

    /// Look the keys up and insert the jobs whose key is free, in `tx`.
    async fn place_keyed<C: Conn>(
        &self,
        tx: &mut C,
        queue_id: i64,
        p: &EnqueueParams<'_>,
        u: &UniqueParams<'_>,
        now: i64,
        visible_at: i64,
    ) -> Result<Vec<Placed>> {
        let keyed: Vec<&str> = u.keys.iter().flatten().map(String::as_str).collect();
        let mut held: HashMap<String, i64> = HashMap::new();
        for chunk in keyed.chunks(KEY_CHUNK) {
            let mut args = vec![Arg::Int(queue_id)];
            args.extend(chunk.iter().map(|k| Arg::Text(k)));
            for r in tx.rows(live_keys(chunk.len()), &args).await? {
                held.insert(r.string(0)?, r.i64(1)?);
            }
        }
        if let Some(w) = u.window {
            let since = now.saturating_sub(us(w));
            let free: Vec<&str> = keyed
                .iter()
                .copied()
                .filter(|k| !held.contains_key(*k))
                .collect();
            for chunk in free.chunks(KEY_CHUNK) {
                let mut args = vec![Arg::Int(queue_id), Arg::Int(since)];
                args.extend(chunk.iter().map(|k| Arg::Text(k)));
                // The latest first for each key: keep the first seen.
                for r in tx.rows(archived_keys(chunk.len()), &args).await? {
                    held.entry(r.string(0)?).or_insert(r.i64(1)?);
                }
            }
        }
        let held_by = |k: &Option<String>| k.as_deref().and_then(|k| held.get(k)).copied();
        let mut out: Vec<Placed> = u
            .keys
            .iter()
            .map(|k| held_by(k).map_or(Placed::NotWritten, Placed::Existing))
            .collect();
        if u.only_new && !held.is_empty() {
            return Ok(out);
        }
        let new: Vec<usize> = (0..out.len())
            .filter(|&i| out[i] == Placed::NotWritten)
            .collect();
        for chunk in new.chunks(KEY_CHUNK) {
            let mut args = Vec::with_capacity(7 + 2 * chunk.len());
            args.extend(
                [
                    queue_id,
                    p.max_attempts.into(),
                    now,
                    visible_at,
                    p.priority.into(),
                ]
                .map(Arg::Int),
            );
            args.push(p.timeout_ms.into());
            args.push(p.group.as_deref().into());
            for &i in chunk {
                args.push(Arg::Text(&p.payloads[i]));
                args.push(u.keys[i].as_deref().into());
            }
            let rows = tx
                .rows(enqueue_keyed(chunk.len()), &args)
                .await
                .map_err(|e| self.queue_gone(e, p.queue))?;
            // Ids are drawn in the rows' order.
            let mut ids = ids(rows)?;
            ids.sort_unstable();
            for (&i, id) in chunk.iter().zip(ids) {
                out[i] = Placed::New(id);
            }
        }
        Ok(out)
    }
}
