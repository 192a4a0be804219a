//! The SQLite dialect: keyed enqueues.
//!
//! One `BEGIN IMMEDIATE` transaction on the writer: it holds the database's write lock from
//! its first statement, so no other connection or process can add, finish or requeue a job
//! between the look-up of the keys and the insert. The partial unique index backs this up.

use std::collections::HashMap;

use super::*;

/// Keys per look-up statement, and rows per insert (two parameters each).
const KEY_CHUNK: usize = 2500;

impl<E: Engine> SqliteBackend<E> {
    pub(super) async fn enqueue_unique_jobs(
        &self,
        p: EnqueueParams<'_>,
        u: UniqueParams<'_>,
    ) -> Result<Vec<Placed>> {
        let queue_id = self.queue_id(p.queue).await?;
        let now = now_us();
        let visible_at = match p.visibility {
            Visibility::Now => now,
            Visibility::After(d) => now.saturating_add(us(d)),
            Visibility::At(t) => t.timestamp_micros(),
        };
        let keyed: Vec<&str> = u.keys.iter().flatten().map(String::as_str).collect();
        let mut tx = self.e.begin().await?;
        let r = async {
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
        .await;
        let placed = tx.finish(r).await?;
        if visible_at <= now && placed.iter().any(|x| matches!(x, Placed::New(_))) {
            self.e.wakers().wake(p.queue);
        }
        Ok(placed)
    }
}
