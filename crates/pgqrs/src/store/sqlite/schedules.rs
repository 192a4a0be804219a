//! The SQLite dialect: schedules. A firing is one `BEGIN IMMEDIATE` transaction on the
//! writer: it holds the database's write lock from its first statement (the one that takes
//! the tick), so two firers of one tick run one after the other and the second finds the
//! tick taken.

use super::*;
use crate::types::{run_job_payload, Fired, ScheduleInfo, SCHEDULE_WAKE};

impl<E: Engine> SqliteBackend<E> {
    pub(super) async fn insert_schedule(&self, s: NewSchedule<'_>) -> Result<ScheduleInfo> {
        let args = [
            s.name.into(),
            s.queue.into(),
            s.cron.into(),
            s.every_ms.into(),
            s.timezone.into(),
            s.payload.into(),
            s.workflow.into(),
            i64::from(s.priority).into(),
            s.max_attempts.into(),
            s.catch_up.into(),
            s.next_at.timestamp_micros().into(),
            s.created_at.timestamp_micros().into(),
        ];
        match first(self.write(CREATE_SCHEDULE, &args).await?) {
            Some(r) => {
                self.e.wakers().wake(SCHEDULE_WAKE);
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
        let args = [
            name.into(),
            i64::from(paused).into(),
            next_at.map(|t| t.timestamp_micros()).into(),
        ];
        match first(self.write(SET_SCHEDULE_PAUSED, &args).await?) {
            Some(r) => {
                self.e.wakers().wake(SCHEDULE_WAKE);
                decode::schedule(&r)
            }
            None => Err(Error::ScheduleNotFound {
                name: name.to_string(),
            }),
        }
    }

    pub(super) async fn fire(&self, f: FireParams<'_>) -> Result<Option<Fired>> {
        let now = now_us();
        let us_of = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        let mut tx = self.e.begin().await?;
        let r = async {
            let args = [
                f.id.into(),
                us_of(f.expected_next_at).into(),
                us_of(f.next_at).into(),
                us_of(f.last_tick_at).into(),
            ];
            if first(tx.rows(TAKE_TICK, &args).await?).is_none() {
                return Ok(None);
            }
            let mut fired = Fired::default();
            if f.ticks.is_empty() {
                return Ok(Some(fired));
            }
            let Some(q) = first(tx.rows(QUEUE_ID, &[f.queue.into()]).await?) else {
                return Err(Error::QueueNotFound {
                    queue: f.queue.to_string(),
                });
            };
            let queue_id = q.i64(0)?;
            for tick in f.ticks {
                let payload = match f.workflow {
                    Some(name) => {
                        let args = [name.into(), f.payload.into(), now.into()];
                        let run_id = one(tx.rows(CREATE_RUN, &args).await?)?.i64(0)?;
                        fired.run_ids.push(run_id);
                        run_job_payload(run_id).to_string()
                    }
                    None => f.payload.to_string(),
                };
                let args = [
                    queue_id.into(),
                    payload.as_str().into(),
                    f.max_attempts.into(),
                    tick.timestamp_micros().into(),
                    i64::from(f.priority).into(),
                    now.into(),
                ];
                let rows = tx
                    .rows(FIRE_JOB, &args)
                    .await
                    .map_err(|e| self.queue_gone(e, f.queue))?;
                fired.job_ids.push(one(rows)?.i64(0)?);
            }
            Ok(Some(fired))
        }
        .await;
        let fired = tx.finish(r).await?;
        if fired.as_ref().is_some_and(|f| !f.job_ids.is_empty()) {
            self.e.wakers().wake(f.queue);
        }
        Ok(fired)
    }
}
