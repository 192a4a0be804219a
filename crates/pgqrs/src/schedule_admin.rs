//! The schedule calls of [`Admin`]: create, get, list, pause, resume, delete, trigger (fire
//! now) and fire the due ticks. Apart from `schedule.rs` (ticks, the missed-ticks policy, the
//! worker's ticker) so that the ticker, which worker sessions start, does not depend on the
//! admin module (which depends on workflows and workers).

use chrono::Utc;

use crate::admin::Admin;
use crate::error::{Error, Result};
use crate::produce::validate_priority;
use crate::schedule::*;
use crate::store::{validate_name, validate_queue_name, FireParams, NewSchedule};

impl<'a> Admin<'a> {
    /// Create a schedule: a job on `queue` (or a workflow run) at each tick of a cron
    /// expression or of an interval. Running workers of any queue fire it; see
    /// [`ScheduleOptions`] and, for ticks missed while no worker ran,
    /// [`ScheduleOptions::catch_up`]. Names are free text like workflow names.
    /// [`Error::ScheduleAlreadyExists`] if the name is taken.
    pub async fn create_schedule(
        self,
        name: &str,
        queue: &str,
        options: ScheduleOptions,
    ) -> Result<ScheduleInfo> {
        validate_name("schedule name", name)?;
        validate_queue_name(queue)?;
        let now = to_micros(Utc::now());
        let (ticks, cron, every_ms, tz) = match (&options.cron, options.every) {
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "cron",
                    "give either cron or every, not both",
                ))
            }
            (None, None) => {
                return Err(Error::validation(
                    "cron",
                    "give a cron expression (cron=\"*/5 * * * *\") or an interval (every=30 \
                     seconds)",
                ))
            }
            (Some(c), None) => {
                let tz_name = options.timezone.as_deref().unwrap_or("UTC");
                let t = Ticks::Cron {
                    cron: Box::new(parse_cron(c)?),
                    tz: parse_tz(tz_name)?,
                };
                (t, Some(c.trim()), None, Some(tz_name))
            }
            (None, Some(e)) => {
                if options.timezone.is_some() {
                    return Err(Error::validation(
                        "timezone",
                        "applies to cron schedules only; an interval counts from the \
                         schedule's creation: drop timezone, or use a cron expression",
                    ));
                }
                let every = validate_every(e)?;
                let t = Ticks::Every { every, anchor: now };
                (t, None, Some(every.num_milliseconds()), None)
            }
        };
        let catch_up = validate_catch_up(options.catch_up.unwrap_or(0))?;
        let priority = validate_priority(options.priority.unwrap_or(0))?;
        if let Some(w) = &options.workflow {
            validate_name("workflow name", w)?;
            if options.max_attempts.is_some() {
                return Err(Error::validation(
                    "max_attempts",
                    "does not apply to workflow schedules (their jobs are run requests, \
                     delivered until the run is taken): drop max_attempts",
                ));
            }
        }
        let max_attempts = match options.max_attempts {
            Some(n) if n == 0 || n > i32::MAX as u32 => {
                return Err(Error::validation(
                    "max_attempts",
                    format!("must be between 1 and {}, got {n}", i32::MAX),
                ))
            }
            n => n.map(|n| n as i32),
        };
        let payload = match options.payload {
            None => "null".to_string(),
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(Error::Serialization { message: e }),
        };
        if let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(&payload) {
            return Err(Error::validation(
                "payload",
                format!("is not valid JSON ({e}); give a JSON value"),
            ));
        }
        crate::produce::check_json(&payload, "payload")?;
        let max = self.store.config().max_payload_bytes;
        if payload.len() > max {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let next_at = to_micros(ticks.next_after(now)?);
        let backend = self.store.backend_impl();
        backend.get_queue(queue).await?;
        backend
            .create_schedule(NewSchedule {
                name,
                queue,
                cron,
                every_ms,
                timezone: tz,
                payload: &payload,
                workflow: options.workflow.as_deref(),
                priority,
                max_attempts,
                catch_up: catch_up as i32,
                next_at,
                created_at: now,
            })
            .await
    }

    /// A schedule, or [`Error::ScheduleNotFound`].
    pub async fn get_schedule(self, name: &str) -> Result<ScheduleInfo> {
        validate_name("schedule name", name)?;
        self.store.backend_impl().get_schedule(name).await
    }

    /// Every schedule, by name.
    pub async fn list_schedules(self) -> Result<Vec<ScheduleInfo>> {
        self.store.backend_impl().list_schedules().await
    }

    /// Pause a schedule: no tick fires until [`resume_schedule`](Self::resume_schedule).
    /// Returns it as changed.
    pub async fn pause_schedule(self, name: &str) -> Result<ScheduleInfo> {
        validate_name("schedule name", name)?;
        self.store
            .backend_impl()
            .set_schedule_paused(name, true, None)
            .await
    }

    /// Resume a paused schedule from its first tick after now (ticks of the pause are not
    /// fired). Resuming one that is not paused changes nothing. Returns it as changed.
    pub async fn resume_schedule(self, name: &str) -> Result<ScheduleInfo> {
        validate_name("schedule name", name)?;
        let backend = self.store.backend_impl();
        let s = backend.get_schedule(name).await?;
        if !s.paused {
            return Ok(s);
        }
        let next = to_micros(Ticks::of(&s)?.next_after(Utc::now())?);
        backend.set_schedule_paused(name, false, Some(next)).await
    }

    /// Delete a schedule (the jobs it made stay). [`Error::ScheduleNotFound`] if there is
    /// none by that name.
    pub async fn delete_schedule(self, name: &str) -> Result<()> {
        validate_name("schedule name", name)?;
        if self.store.backend_impl().delete_schedule(name).await? {
            Ok(())
        } else {
            Err(Error::ScheduleNotFound {
                name: name.to_string(),
            })
        }
    }

    /// Fire a schedule now, once, paused or not: one job (or run) beside its ticks, whose
    /// times do not change.
    pub async fn trigger_schedule(self, name: &str) -> Result<Fired> {
        validate_name("schedule name", name)?;
        let backend = self.store.backend_impl();
        let s = backend.get_schedule(name).await?;
        let payload = s.payload.to_string();
        let now = [to_micros(Utc::now())];
        let fired = backend
            .fire_schedule(FireParams {
                id: s.id,
                queue: &s.queue,
                expected_next_at: None,
                next_at: None,
                ticks: &now,
                payload: &payload,
                workflow: s.workflow.as_deref(),
                priority: s.priority,
                max_attempts: job_attempts(backend, &s),
                last_tick_at: None,
            })
            .await?;
        fired.ok_or(Error::ScheduleNotFound {
            name: name.to_string(),
        })
    }

    /// Fire every due tick of every schedule now, as a running worker does; how many jobs
    /// were made. For programs that run no worker (a cron-driven script, a test).
    pub async fn fire_due_schedules(self) -> Result<usize> {
        Ok(fire_due(self.store.backend_impl(), Utc::now()).await?.0)
    }
}
