//! Inspecting and acting on jobs on PostgreSQL (the inspection API, `inspect.rs`); the SQL is in `queries.rs`.

use super::*;

#[async_trait]
impl JobAdmin for PgBackend {
    async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        let r = self.opt(self.stmt(&self.q.get_job).bind(id)).await?;
        r.map(|r| decode::job(&r)).transpose()
    }

    async fn list_jobs(&self, p: ListJobsParams<'_>) -> Result<Vec<Job>> {
        let queue_id = self.get_queue(p.queue).await?.id;
        let q = match (p.state, p.after) {
            (
                JobState::Ready | JobState::Delayed | JobState::Leased,
                JobKey::Pending {
                    priority,
                    visible_at,
                    id,
                },
            ) => {
                let sql = match p.state {
                    JobState::Ready => &self.q.list_ready,
                    JobState::Delayed => &self.q.list_delayed,
                    _ => &self.q.list_leased,
                };
                self.stmt(sql)
                    .bind(queue_id)
                    .bind(priority)
                    .bind(visible_at)
                    .bind(id)
                    .bind(p.fetch)
            }
            (JobState::Archived, JobKey::Archived { at, id }) => self
                .stmt(&self.q.list_archived)
                .bind(queue_id)
                .bind(at)
                .bind(id)
                .bind(p.fetch),
            (JobState::Dead, JobKey::Dead { id }) => self
                .stmt(&self.q.list_dead)
                .bind(queue_id)
                .bind(id)
                .bind(p.fetch),
            (state, key) => {
                return Err(Error::validation(
                    "cursor",
                    format!("a key {key:?} does not page the {state} jobs"),
                ))
            }
        };
        let rows = self.all(q).await?;
        rows.iter()
            .map(|r| decode::job_in(r, p.queue.to_string()))
            .collect()
    }

    async fn cancel_job(&self, id: i64) -> Result<Option<Job>> {
        let r = self.opt(self.stmt(&self.q.cancel_job).bind(id)).await?;
        r.map(|r| decode::job(&r)).transpose()
    }

    async fn reschedule_job(&self, id: i64, at: Visibility) -> Result<Option<Job>> {
        let (at, delay): (Option<DateTime<Utc>>, f64) = match at {
            Visibility::Now => (None, 0.0),
            Visibility::After(d) => (None, secs(d)),
            Visibility::At(t) => (Some(t), 0.0),
        };
        let q = self
            .stmt(&self.q.reschedule_job)
            .bind(id)
            .bind(at)
            .bind(delay);
        let Some(job) = self.opt(q).await?.map(|r| decode::job(&r)).transpose()? else {
            return Ok(None);
        };
        if job.state == JobState::Ready {
            self.wakers.wake(&job.queue);
            if self.cfg.notify && self.notifier.leading_edge(&job.queue) {
                let q = self.query("SELECT pg_notify($1, $2)");
                if let Err(e) = self
                    .exec(q.bind(&self.notifier.channel).bind(&job.queue))
                    .await
                {
                    tracing::debug!(error = %e, "NOTIFY failed; workers fall back to polling");
                }
            }
        }
        Ok(Some(job))
    }

    async fn set_job_priority(&self, id: i64, priority: i16) -> Result<Option<Job>> {
        let q = self.stmt(&self.q.set_job_priority).bind(id).bind(priority);
        let r = self.opt(q).await?;
        r.map(|r| decode::job(&r)).transpose()
    }
}
