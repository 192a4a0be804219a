//! PostgreSQL: schedules (the statements are in `queries.rs`, the time logic in the core's
//! `schedule.rs`).

use sqlx::PgConnection;

use super::*;
use crate::types::{run_job_payload, Fired, ScheduleInfo, SCHEDULE_WAKE};

impl PgBackend {
    pub(super) async fn insert_schedule(&self, s: NewSchedule<'_>) -> Result<ScheduleInfo> {
        let q = self
            .stmt(&self.q.create_schedule)
            .bind(s.name)
            .bind(s.queue)
            .bind(s.cron)
            .bind(s.every_ms)
            .bind(s.timezone)
            .bind(s.payload)
            .bind(s.workflow)
            .bind(s.priority)
            .bind(s.max_attempts)
            .bind(s.catch_up)
            .bind(s.next_at)
            .bind(s.created_at)
            .bind(&self.notifier.channel)
            .bind(self.cfg.notify);
        match self.opt(q).await? {
            Some(r) => {
                self.wakers.wake(SCHEDULE_WAKE);
                decode::schedule(&r)
            }
            None => Err(Error::ScheduleAlreadyExists {
                name: s.name.to_string(),
            }),
        }
    }

    pub(super) async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_at: Option<DateTime<Utc>>,
    ) -> Result<ScheduleInfo> {
        let q = self
            .stmt(&self.q.set_schedule_paused)
            .bind(name)
            .bind(paused)
            .bind(next_at)
            .bind(&self.notifier.channel)
            .bind(self.cfg.notify);
        match self.opt(q).await? {
            Some(r) => {
                self.wakers.wake(SCHEDULE_WAKE);
                decode::schedule(&r)
            }
            None => Err(Error::ScheduleNotFound {
                name: name.to_string(),
            }),
        }
    }

    /// One firing, in one transaction: take the tick, then make its jobs.
    pub(super) async fn fire(&self, f: FireParams<'_>) -> Result<Option<Fired>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let r = self.fire_in(&mut tx, &f).await;
        match r {
            Ok(Some(fired)) => {
                tx.commit().await.map_err(|e| self.err(e))?;
                if !fired.job_ids.is_empty() {
                    self.wakers.wake(f.queue);
                }
                Ok(Some(fired))
            }
            other => {
                let _ = tx.rollback().await;
                other
            }
        }
    }

    async fn fire_in(&self, c: &mut PgConnection, f: &FireParams<'_>) -> Result<Option<Fired>> {
        let taken = self
            .query(self.q.take_tick.clone())
            .bind(f.id)
            .bind(f.expected_next_at)
            .bind(f.next_at)
            .bind(f.last_tick_at)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        if taken.is_none() {
            return Ok(None);
        }
        let mut fired = Fired::default();
        if f.ticks.is_empty() {
            return Ok(Some(fired));
        }
        let queue_id: Option<i64> = self
            .query_scalar(self.q.queue_for_fire.clone())
            .bind(f.queue)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        let Some(queue_id) = queue_id else {
            return Err(Error::QueueNotFound {
                queue: f.queue.to_string(),
            });
        };
        for tick in f.ticks {
            let payload = match f.workflow {
                Some(name) => {
                    let run = self
                        .query(self.q.create_run.clone())
                        .bind(name)
                        .bind(f.payload)
                        .fetch_one(&mut *c)
                        .await
                        .map_err(|e| self.err(e))?;
                    let run_id = run.i64(0)?;
                    fired.run_ids.push(run_id);
                    run_job_payload(run_id).to_string()
                }
                None => f.payload.to_string(),
            };
            let id: i64 = self
                .query_scalar(self.q.fire_job.clone())
                .bind(queue_id)
                .bind(payload)
                .bind(f.max_attempts)
                .bind(*tick)
                .bind(f.priority)
                .fetch_one(&mut *c)
                .await
                .map_err(|e| self.err(e))?;
            fired.job_ids.push(id);
        }
        if self.cfg.notify {
            self.query(self.q.notify.clone())
                .bind(&self.notifier.channel)
                .bind(f.queue)
                .execute(&mut *c)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(Some(fired))
    }
}
