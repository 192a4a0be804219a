//! Inspecting and acting on jobs in the SQLite dialect (the inspection API, `inspect.rs`), for both engines;
//! the SQL is in `queries.rs`.

use super::*;

impl<E: Engine> SqliteBackend<E> {
    /// The job a writing statement returned (queue id in column 1), with its queue's name.
    async fn returned_job(&self, rows: Vec<Row<'_, E>>) -> Result<Option<Job>> {
        let Some(r) = first(rows) else {
            return Ok(None);
        };
        let queue_id = r.i64(1)?;
        let name = match first(self.read(QUEUE_NAME, &[queue_id.into()]).await?) {
            Some(q) => q.string(0)?,
            None => queue_id.to_string(),
        };
        decode::job_in(&r, name).map(Some)
    }
}

#[async_trait]
impl<E: Engine> JobAdmin for SqliteBackend<E> {
    async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        let rows = self.read(GET_JOB, &[id.into(), now_us().into()]).await?;
        first(rows).map(|r| decode::job(&r)).transpose()
    }

    async fn list_jobs(&self, p: ListJobsParams<'_>) -> Result<Vec<Job>> {
        let queue_id = self.queue_id(p.queue).await?;
        let mut r = self.e.reader().await?;
        let rows = match (p.state, p.after) {
            (
                JobState::Ready | JobState::Delayed | JobState::Leased,
                JobKey::Pending {
                    priority,
                    visible_at,
                    id,
                },
            ) => {
                let sql = match p.state {
                    JobState::Ready => &LIST_READY,
                    JobState::Delayed => &LIST_DELAYED,
                    _ => &LIST_LEASED,
                };
                let args = [
                    queue_id.into(),
                    now_us().into(),
                    i64::from(priority).into(),
                    visible_at.timestamp_micros().into(),
                    id.into(),
                    p.fetch.into(),
                ];
                let mut rows = r.rows(sql.same_priority, &args).await?;
                rows.extend(r.rows(sql.lower, &args).await?);
                if p.state != JobState::Ready {
                    // A ready job has attempts left, so never holds a final attempt.
                    rows.extend(r.rows(sql.exhausted, &args).await?);
                }
                rows
            }
            (JobState::Archived, JobKey::Archived { at, id }) => {
                let args = [
                    queue_id.into(),
                    at.timestamp_micros().into(),
                    id.into(),
                    p.fetch.into(),
                ];
                r.rows(LIST_ARCHIVED, &args).await?
            }
            (JobState::Dead, JobKey::Dead { id }) => {
                r.rows(LIST_DEAD, &[queue_id.into(), id.into(), p.fetch.into()])
                    .await?
            }
            (state, key) => {
                return Err(Error::validation(
                    "cursor",
                    format!("a key {key:?} does not page the {state} jobs"),
                ))
            }
        };
        let mut jobs = rows
            .iter()
            .map(|r| decode::job_in(r, p.queue.to_string()))
            .collect::<Result<Vec<_>>>()?;
        if matches!(p.after, JobKey::Pending { .. }) {
            // The three takes, merged in claim order.
            jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.visible_at, j.id));
            jobs.truncate(usize::try_from(p.fetch).unwrap_or(usize::MAX));
        }
        Ok(jobs)
    }

    async fn cancel_job(&self, id: i64) -> Result<Option<Job>> {
        let rows = self
            .write(CANCEL_JOB, &[id.into(), now_us().into()])
            .await?;
        self.returned_job(rows).await
    }

    async fn reschedule_job(&self, id: i64, at: Visibility) -> Result<Option<Job>> {
        let now = now_us();
        let visible_at = match at {
            Visibility::Now => now,
            Visibility::After(d) => now.saturating_add(us(d)),
            Visibility::At(t) => t.timestamp_micros(),
        };
        let args = [id.into(), now.into(), visible_at.into()];
        let rows = self.write(RESCHEDULE_JOB, &args).await?;
        let job = self.returned_job(rows).await?;
        if let Some(j) = &job {
            if j.state == JobState::Ready {
                self.e.wakers().wake(&j.queue);
            }
        }
        Ok(job)
    }

    async fn set_job_priority(&self, id: i64, priority: i16) -> Result<Option<Job>> {
        let args = [id.into(), now_us().into(), i64::from(priority).into()];
        let rows = self.write(SET_JOB_PRIORITY, &args).await?;
        self.returned_job(rows).await
    }
}
