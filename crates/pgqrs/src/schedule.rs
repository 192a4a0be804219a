//! Schedules: jobs (or workflow runs) made at the ticks of a cron expression or of a fixed
//! interval, stored in the database and fired by every running worker.
//!
//! All the time logic lives here: parsing and checking a schedule, its ticks (cron
//! expressions with an optional seconds field, in an IANA time zone, or every *n* seconds
//! from the schedule's creation), what to fire for ticks that were missed, and the ticker
//! that a worker runs. The backends only store schedules and fire one in a transaction
//! ([`Backend::fire_schedule`]): a conditional update of the schedule's next tick, keyed by
//! the schedule and the tick it expects, and the jobs of the ticks fired, together. However
//! many processes fire a schedule at once, one of them moves it past a tick and makes its
//! job; the others find the tick gone and make nothing.
//!
//! ## Missed ticks
//!
//! A schedule remembers its next tick (`next_at`). When a worker fires it at `now`, the
//! ticks due are those from `next_at` to `now`; the schedule's `catch_up` says which of them
//! make a job:
//!
//! * `catch_up = 0` (the default): the latest due tick only, and only if it is at most
//!   [`MISSED_TICK_GRACE`] late: a tick that a busy or restarting worker fires a little late
//!   still runs, ticks missed while nothing ran are skipped.
//! * `catch_up = n` (1 to [`MAX_CATCH_UP`]): the `n` latest due ticks, however late, each
//!   once, oldest first; earlier ones are skipped.
//!
//! Either way the schedule then moves to its first tick after `now`. Each job is claimable at
//! once and records its tick as its `visible_at` (or the database's `now`, if earlier).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::{Backend, FireParams};
pub use crate::types::{Fired, ScheduleInfo};
use crate::types::{RUN_JOB_ATTEMPTS, SCHEDULE_WAKE};

/// How late the latest due tick of a schedule with `catch_up = 0` may be and still fire.
pub const MISSED_TICK_GRACE: Duration = Duration::from_secs(60);
/// Most missed ticks a schedule may catch up at once.
pub const MAX_CATCH_UP: u32 = 1_000;
/// Shortest interval of an interval schedule.
pub const MIN_SCHEDULE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval of an interval schedule (a cron expression serves longer periods).
pub const MAX_SCHEDULE_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);
/// A worker reads the schedules at least this often, to see those other processes created
/// (those created through its own store wake it at once, and on PostgreSQL those of every
/// process do).
pub(crate) const SCHEDULE_REREAD: Duration = Duration::from_secs(1);
/// Schedules looked at per read.
const SCHEDULE_BATCH: i64 = 100;

/// What a schedule is made of: pass it to [`Admin::create_schedule`].
///
/// ```no_run
/// # async fn run(store: &pgqrs::Store) -> pgqrs::Result<()> {
/// use pgqrs::ScheduleOptions;
/// use std::time::Duration;
/// let admin = pgqrs::admin(store);
/// // 03:30 every day, Paris time, catching up at most one missed night.
/// admin
///     .create_schedule(
///         "nightly-report",
///         "reports",
///         ScheduleOptions::cron("0 30 3 * * *")
///             .timezone("Europe/Paris")
///             .payload(&serde_json::json!({"kind": "daily"}))
///             .catch_up(1),
///     )
///     .await?;
/// // Every 30 seconds.
/// admin
///     .create_schedule("poll", "tasks", ScheduleOptions::every(Duration::from_secs(30)))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    pub(crate) cron: Option<String>,
    pub(crate) every: Option<Duration>,
    pub(crate) timezone: Option<String>,
    pub(crate) payload: Option<std::result::Result<String, String>>,
    pub(crate) catch_up: Option<u32>,
    pub(crate) workflow: Option<String>,
    pub(crate) priority: Option<i64>,
    pub(crate) max_attempts: Option<u32>,
}

impl ScheduleOptions {
    /// No timing yet: give one of [`set_cron`](Self::set_cron) and
    /// [`set_every`](Self::set_every) (language bindings build options field by field).
    pub fn new() -> Self {
        Self::default()
    }

    /// Ticks at the times a cron expression matches: five fields (minute, hour, day of month,
    /// month, day of week) or six with the seconds first; names (`MON`, `JAN`), ranges,
    /// steps and lists as usual, and `@daily`-style nicknames.
    pub fn cron(expr: impl Into<String>) -> Self {
        Self::new().set_cron(expr)
    }

    /// Ticks every `interval` (at least 1 s), counted from the schedule's creation: the first
    /// one `interval` after it.
    pub fn every(interval: Duration) -> Self {
        Self::new().set_every(interval)
    }

    /// The cron expression (see [`cron`](Self::cron)).
    pub fn set_cron(mut self, expr: impl Into<String>) -> Self {
        self.cron = Some(expr.into());
        self
    }

    /// The interval (see [`every`](Self::every)).
    pub fn set_every(mut self, interval: Duration) -> Self {
        self.every = Some(interval);
        self
    }

    /// The IANA time zone a cron expression reads its times in (`Europe/Paris`,
    /// `America/New_York`; default `UTC`). Across a daylight-saving change a local time that
    /// does not exist has no tick, and one that happens twice ticks once.
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = Some(tz.into());
        self
    }

    /// The payload of each job (the input of each run, for a workflow schedule); default
    /// `null`.
    pub fn payload<T: Serialize + ?Sized>(mut self, payload: &T) -> Self {
        self.payload = Some(serde_json::to_string(payload).map_err(|e| e.to_string()));
        self
    }

    /// The payload as JSON text.
    pub fn payload_json(mut self, json: impl Into<String>) -> Self {
        self.payload = Some(Ok(json.into()));
        self
    }

    /// How many ticks missed while no worker ran are fired when one runs again: 0 (the
    /// default) fires only a tick at most [`MISSED_TICK_GRACE`] late; `n` (up to
    /// [`MAX_CATCH_UP`]) fires the `n` latest missed ticks, however late.
    pub fn catch_up(mut self, n: u32) -> Self {
        self.catch_up = Some(n);
        self
    }

    /// Start a run of this workflow at each tick (its input is the payload) instead of
    /// enqueueing a plain job: a worker built with
    /// [`WorkflowRegistry::worker`](crate::WorkflowRegistry::worker) executes it.
    pub fn workflow(mut self, name: impl Into<String>) -> Self {
        self.workflow = Some(name.into());
        self
    }

    /// The priority of each job (default 0).
    pub fn priority(mut self, p: i64) -> Self {
        self.priority = Some(p);
        self
    }

    /// The attempts of each job (default: the store's `max_attempts` when the job is made).
    /// Not for workflow schedules, whose jobs are run requests.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
}

/// A schedule's ticks.
#[derive(Debug, Clone)]
pub(crate) enum Ticks {
    Cron {
        cron: Box<croner::Cron>,
        tz: chrono_tz::Tz,
    },
    Every {
        every: TimeDelta,
        anchor: DateTime<Utc>,
    },
}

/// Times as stored: whole microseconds, so that a stored tick compares equal to the one the
/// core computed.
pub(crate) fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// `t` without its fraction of a second.
pub(crate) fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

pub(crate) fn parse_cron(expr: &str) -> Result<croner::Cron> {
    let fields = expr.split_whitespace().count();
    if expr.trim().starts_with('@') {
        // A nickname.
    } else if !(5..=6).contains(&fields) {
        return Err(Error::validation(
            "cron",
            format!(
                "{} has {fields} field(s); give 5 (minute hour day-of-month month day-of-week, \
                 e.g. \"*/5 * * * *\") or 6 with seconds first (e.g. \"*/10 * * * * *\")",
                crate::error::preview(expr)
            ),
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| {
            Error::validation(
                "cron",
                format!(
                    "{} is not a valid cron expression ({e}); give 5 fields (minute hour \
                     day-of-month month day-of-week, e.g. \"0 3 * * MON\") or 6 with seconds \
                     first (e.g. \"*/10 * * * * *\")",
                    crate::error::preview(expr)
                ),
            )
        })
}

pub(crate) fn parse_tz(name: &str) -> Result<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        Error::validation(
            "timezone",
            format!(
                "unknown time zone {}: give an IANA name such as \"UTC\", \"Europe/Paris\" or \
                 \"America/New_York\"",
                crate::error::preview(name)
            ),
        )
    })
}

pub(crate) fn validate_every(every: Duration) -> Result<TimeDelta> {
    if every < MIN_SCHEDULE_INTERVAL || every > MAX_SCHEDULE_INTERVAL {
        return Err(Error::validation(
            "every",
            format!(
                "must be from {}s to {} days, got {every:?}; for longer periods use a cron \
                 expression",
                MIN_SCHEDULE_INTERVAL.as_secs(),
                MAX_SCHEDULE_INTERVAL.as_secs() / 86_400
            ),
        ));
    }
    // Whole milliseconds, as stored.
    Ok(TimeDelta::milliseconds(every.as_millis() as i64))
}

pub(crate) fn validate_catch_up(n: u32) -> Result<u32> {
    if n > MAX_CATCH_UP {
        return Err(Error::validation(
            "catch_up",
            format!(
                "must be from 0 (fire only a tick at most {}s late) to {MAX_CATCH_UP} (the latest \
                 missed ticks to fire), got {n}",
                MISSED_TICK_GRACE.as_secs()
            ),
        ));
    }
    Ok(n)
}

/// An interval given in seconds (the language bindings): checked as
/// [`ScheduleOptions::every`] is, negative and non-finite values included.
pub fn interval_from_secs(secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(Error::validation(
            "every",
            format!(
                "must be a positive number of seconds (at least {}), got {secs}",
                MIN_SCHEDULE_INTERVAL.as_secs()
            ),
        ));
    }
    let d = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    validate_every(d)?;
    Ok(d)
}

/// Check a `catch_up` given as a signed number (the language bindings).
pub fn catch_up_from(n: i64) -> Result<u32> {
    if n < 0 {
        return Err(Error::validation(
            "catch_up",
            format!(
                "must be from 0 (fire only a tick at most {}s late) to {MAX_CATCH_UP} (the latest \
                 missed ticks to fire), got {n}",
                MISSED_TICK_GRACE.as_secs()
            ),
        ));
    }
    validate_catch_up(u32::try_from(n).unwrap_or(u32::MAX))
}

impl Ticks {
    /// The ticks of a stored schedule.
    pub(crate) fn of(s: &ScheduleInfo) -> Result<Ticks> {
        match (&s.cron, s.every) {
            (Some(c), _) => Ok(Ticks::Cron {
                cron: Box::new(parse_cron(c)?),
                tz: parse_tz(s.timezone.as_deref().unwrap_or("UTC"))?,
            }),
            (None, Some(every)) => Ok(Ticks::Every {
                every: validate_every(every)?,
                anchor: s.created_at,
            }),
            (None, None) => Err(Error::Database {
                code: None,
                message: format!("schedule {:?} has neither cron nor interval", s.name),
            }),
        }
    }

    /// The first tick strictly after `t`.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>> {
        match self {
            Ticks::Cron { cron, tz } => {
                // Cron ticks fall on whole seconds: search from the second `t` is in.
                let local = whole_second(t).with_timezone(tz);
                cron.find_next_occurrence(&local, false)
                    .map(|n| n.with_timezone(&Utc))
                    .map_err(|e| {
                        Error::validation(
                            "cron",
                            format!(
                                "{} has no time after {t} ({e}); check the day and month fields",
                                crate::error::preview(&cron.pattern.to_string())
                            ),
                        )
                    })
            }
            Ticks::Every { every, anchor } => {
                let k = self.index_at(t).map_or(1, |k| k + 1);
                Ok(*anchor + *every * k as i32)
            }
        }
    }

    /// Interval schedules: the index of the latest tick at or before `t` (tick `k` is
    /// `anchor + k * every`), `None` before the first.
    fn index_at(&self, t: DateTime<Utc>) -> Option<i64> {
        let Ticks::Every { every, anchor } = self else {
            return None;
        };
        let since = (t - *anchor).num_microseconds()?;
        let step = every.num_microseconds()?.max(1);
        let k = since.div_euclid(step);
        (k >= 1).then_some(k)
    }

    /// Up to `n` ticks from `from` to `to` (both included), the latest ones, oldest first.
    pub(crate) fn latest(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        n: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        if n == 0 || from > to {
            return out;
        }
        match self {
            Ticks::Cron { cron, tz } => {
                let mut at = whole_second(to).with_timezone(tz);
                let mut inclusive = true;
                while out.len() < n {
                    let Ok(prev) = cron.find_previous_occurrence(&at, inclusive) else {
                        break;
                    };
                    let utc = prev.with_timezone(&Utc);
                    if utc < from {
                        break;
                    }
                    out.push(utc);
                    at = prev;
                    inclusive = false;
                }
            }
            Ticks::Every { every, anchor } => {
                let Some(mut k) = self.index_at(to) else {
                    return out;
                };
                while out.len() < n && k >= 1 {
                    let t = *anchor + *every * k as i32;
                    if t < from {
                        break;
                    }
                    out.push(t);
                    k -= 1;
                }
            }
        }
        out.reverse();
        out
    }
}

/// What to fire for a schedule whose next tick is `next_at`, at `now`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The ticks that make a job, oldest first.
    pub ticks: Vec<DateTime<Utc>>,
    /// The schedule's next tick afterwards: the first after `now`.
    pub next_at: DateTime<Utc>,
}

/// The missed-ticks policy (see the module's documentation), at `now`.
pub(crate) fn plan(
    ticks: &Ticks,
    next_at: DateTime<Utc>,
    catch_up: u32,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let want = catch_up.max(1) as usize;
    let mut due = ticks.latest(next_at, now, want);
    // `next_at` is a tick by construction; count it even if the expression could not find it
    // again (a time zone change of the rules in between).
    if due.is_empty() && next_at <= now {
        due.push(next_at);
    }
    if catch_up == 0 {
        let grace = TimeDelta::from_std(MISSED_TICK_GRACE).unwrap_or(TimeDelta::MAX);
        due.retain(|t| now - *t <= grace);
    }
    let due = due.into_iter().map(to_micros).collect();
    Ok(Plan {
        ticks: due,
        next_at: to_micros(ticks.next_after(now.max(next_at - TimeDelta::microseconds(1)))?),
    })
}

/// Fire one due schedule at `now`: its jobs, or nothing when another firer got the tick
/// first. A schedule whose queue is gone skips its due ticks (there is nowhere to put them).
pub(crate) async fn fire_one(
    backend: &dyn Backend,
    s: &ScheduleInfo,
    now: DateTime<Utc>,
) -> Result<usize> {
    let ticks = Ticks::of(s)?;
    let p = plan(&ticks, s.next_at, s.catch_up, now)?;
    let payload = s.payload.to_string();
    let params = FireParams {
        id: s.id,
        queue: &s.queue,
        expected_next_at: Some(s.next_at),
        next_at: Some(p.next_at),
        ticks: &p.ticks,
        payload: &payload,
        workflow: s.workflow.as_deref(),
        priority: s.priority,
        max_attempts: job_attempts(backend, s),
        last_tick_at: p.ticks.last().copied(),
    };
    match backend.fire_schedule(params.clone()).await {
        Ok(f) => Ok(f.map_or(0, |f| f.job_ids.len())),
        Err(Error::QueueNotFound { queue }) => {
            tracing::warn!(schedule = %s.name, queue = %queue, skipped = p.ticks.len(), "the schedule's queue does not exist: its due ticks are skipped (create the queue, or delete the schedule)");
            backend
                .fire_schedule(FireParams {
                    ticks: &[],
                    last_tick_at: None,
                    ..params
                })
                .await?;
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn job_attempts(backend: &dyn Backend, s: &ScheduleInfo) -> i32 {
    if s.workflow.is_some() {
        return RUN_JOB_ATTEMPTS as i32;
    }
    s.max_attempts
        .unwrap_or(backend.config().max_attempts.min(i32::MAX as u32) as i32)
}

/// Fire every due schedule at `now`; how many jobs were made and the next tick of any
/// schedule not paused (when to look again).
pub(crate) async fn fire_due(
    backend: &dyn Backend,
    now: DateTime<Utc>,
) -> Result<(usize, Option<DateTime<Utc>>)> {
    let mut made = 0;
    // Each round moves every due schedule it read past `now` (or pauses it), so the rounds
    // end; the bound is a guard.
    for _ in 0..1_000 {
        let rows = backend.upcoming_schedules(SCHEDULE_BATCH).await?;
        let full = rows.len() as i64 == SCHEDULE_BATCH;
        let mut next = None;
        for s in &rows {
            if s.next_at > now {
                next = Some(s.next_at);
                break;
            }
            match fire_one(backend, s, now).await {
                Ok(n) => made += n,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // A schedule that cannot be fired (a stored expression this version cannot
                    // read) is paused, so that it does not hold up the others.
                    tracing::error!(schedule = %s.name, error = %e, "cannot fire the schedule: pausing it (fix it, then delete and create it again)");
                    backend.set_schedule_paused(&s.name, true, None).await?;
                }
            }
        }
        if next.is_some() || !full {
            return Ok((made, next));
        }
    }
    Ok((made, None))
}

/// A worker's schedule ticker: fires due ticks of every schedule, waking at the earliest next
/// tick (and at least every [`SCHEDULE_REREAD`], or when this process changes a schedule).
pub(crate) struct Ticker {
    pub backend: Arc<dyn Backend>,
}

impl Ticker {
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                return;
            }
            let now = Utc::now();
            let wait = match fire_due(&*self.backend, now).await {
                Ok((_, next)) => {
                    backoff = Duration::from_millis(50);
                    match next {
                        Some(t) => (t - Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .clamp(Duration::from_millis(1), SCHEDULE_REREAD),
                        None => SCHEDULE_REREAD,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "firing schedules failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                _ = self.backend.wait_for_jobs(SCHEDULE_WAKE, wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: &str) -> Ticks {
        Ticks::Cron {
            cron: Box::new(parse_cron(expr).unwrap()),
            tz: parse_tz(tz).unwrap(),
        }
    }

    #[test]
    fn cron_with_and_without_seconds() {
        let c = cron("*/15 * * * * *", "UTC");
        assert_eq!(
            c.next_after(t("2026-01-01T00:00:00Z")).unwrap(),
            t("2026-01-01T00:00:15Z")
        );
        let c = cron("30 3 * * *", "UTC");
        assert_eq!(
            c.next_after(t("2026-01-01T04:00:00Z")).unwrap(),
            t("2026-01-02T03:30:00Z")
        );
    }

    #[test]
    fn cron_in_a_time_zone() {
        // 03:30 in Paris is 02:30 UTC in winter, 01:30 in summer.
        let c = cron("0 30 3 * * *", "Europe/Paris");
        assert_eq!(
            c.next_after(t("2026-01-10T12:00:00Z")).unwrap(),
            t("2026-01-11T02:30:00Z")
        );
        assert_eq!(
            c.next_after(t("2026-07-10T12:00:00Z")).unwrap(),
            t("2026-07-11T01:30:00Z")
        );
    }

    #[test]
    fn bad_input_says_how_to_fix_it() {
        for (bad, field) in [("* * *", "cron"), ("61 * * * *", "cron"), ("hello", "cron")] {
            let e = parse_cron(bad).unwrap_err();
            assert!(
                matches!(&e, Error::Validation { field: f, .. } if *f == field),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("give"), "{e}");
        }
        let e = parse_tz("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("IANA"), "{e}");
        assert!(validate_every(Duration::ZERO).is_err());
        assert!(validate_every(Duration::from_millis(999)).is_err());
        assert!(validate_every(Duration::from_secs(1)).is_ok());
        assert!(catch_up_from(-1).is_err());
        assert!(catch_up_from(MAX_CATCH_UP as i64 + 1).is_err());
        assert_eq!(catch_up_from(3).unwrap(), 3);
    }

    #[test]
    fn any_text_is_a_schedule_or_a_typed_error_never_a_panic() {
        use proptest::test_runner::TestRunner;
        let now = t("2026-03-29T00:30:00Z");
        let mut runner = TestRunner::default();
        runner
            .run(
                &("[0-9*/,LW#?A-Za-z@ -]{0,40}", "\\PC{0,40}", 0u32..5),
                |(expr, tz, n)| {
                    match parse_cron(&expr) {
                        Ok(c) => {
                            let ticks = Ticks::Cron {
                                cron: Box::new(c),
                                tz: chrono_tz::Europe::Paris,
                            };
                            if let Ok(next) = ticks.next_after(now) {
                                assert!(next > now, "{expr:?}: {next}");
                                let p = plan(&ticks, next, n, next + TimeDelta::hours(3));
                                assert!(p.is_ok_and(|p| p.next_at > next), "{expr:?}");
                            }
                        }
                        Err(e) => assert!(e.to_string().contains("give"), "{expr:?}: {e}"),
                    }
                    if let Err(e) = parse_tz(&tz) {
                        assert!(e.to_string().contains("IANA"), "{tz:?}: {e}");
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn interval_ticks_count_from_the_anchor() {
        let anchor = t("2026-01-01T00:00:00Z");
        let e = Ticks::Every {
            every: TimeDelta::seconds(10),
            anchor,
        };
        assert_eq!(e.next_after(anchor).unwrap(), t("2026-01-01T00:00:10Z"));
        assert_eq!(
            e.next_after(t("2026-01-01T00:00:10Z")).unwrap(),
            t("2026-01-01T00:00:20Z")
        );
        assert_eq!(
            e.next_after(t("2026-01-01T00:00:19.5Z")).unwrap(),
            t("2026-01-01T00:00:20Z")
        );
        assert_eq!(
            e.latest(t("2026-01-01T00:00:10Z"), t("2026-01-01T00:00:45Z"), 10),
            vec![
                t("2026-01-01T00:00:10Z"),
                t("2026-01-01T00:00:20Z"),
                t("2026-01-01T00:00:30Z"),
                t("2026-01-01T00:00:40Z")
            ]
        );
        assert_eq!(
            e.latest(t("2026-01-01T00:00:10Z"), t("2026-01-01T00:00:45Z"), 2),
            vec![t("2026-01-01T00:00:30Z"), t("2026-01-01T00:00:40Z")]
        );
    }

    #[test]
    fn missed_ticks_policy() {
        let c = cron("0 * * * * *", "UTC"); // every minute
        let next = t("2026-01-01T00:01:00Z");
        // On time, or a little late: the tick fires.
        let p = plan(&c, next, 0, t("2026-01-01T00:01:00.005Z")).unwrap();
        assert_eq!(p.ticks, vec![next]);
        assert_eq!(p.next_at, t("2026-01-01T00:02:00Z"));
        let p = plan(&c, next, 0, t("2026-01-01T00:01:59Z")).unwrap();
        assert_eq!(p.ticks, vec![next]);
        // A minutely tick is never more than a minute late: the latest always fires.
        let p = plan(&c, next, 0, t("2026-01-01T01:00:30Z")).unwrap();
        assert_eq!(p.ticks, vec![t("2026-01-01T01:00:00Z")]);
        assert_eq!(p.next_at, t("2026-01-01T01:01:00Z"));
        // Hourly ticks, nothing ran for hours: catch_up 0 skips them all (the latest is 30
        // minutes late), catch_up 3 fires the three latest; either way the schedule moves
        // past now.
        let h = cron("0 0 * * * *", "UTC");
        let next = t("2026-01-01T01:00:00Z");
        let now = t("2026-01-01T05:30:00Z");
        let p = plan(&h, next, 0, now).unwrap();
        assert!(p.ticks.is_empty(), "{p:?}");
        assert_eq!(p.next_at, t("2026-01-01T06:00:00Z"));
        let p = plan(&h, next, 3, now).unwrap();
        assert_eq!(
            p.ticks,
            vec![
                t("2026-01-01T03:00:00Z"),
                t("2026-01-01T04:00:00Z"),
                t("2026-01-01T05:00:00Z")
            ]
        );
        assert_eq!(p.next_at, t("2026-01-01T06:00:00Z"));
        let next = t("2026-01-01T00:01:00Z");
        // Catching up more than were missed fires each missed tick once.
        let p = plan(&c, next, 1000, t("2026-01-01T00:03:10Z")).unwrap();
        assert_eq!(
            p.ticks,
            vec![
                t("2026-01-01T00:01:00Z"),
                t("2026-01-01T00:02:00Z"),
                t("2026-01-01T00:03:00Z")
            ]
        );
        // Not due yet: nothing.
        let p = plan(&c, next, 5, t("2026-01-01T00:00:59Z")).unwrap();
        assert!(p.ticks.is_empty());
        assert_eq!(p.next_at, next);
    }

    #[test]
    fn a_year_of_missed_second_ticks_is_cheap() {
        let c = cron("* * * * * *", "UTC");
        let next = t("2025-01-01T00:00:00Z");
        let now = t("2026-01-01T00:00:00.5Z");
        let p = plan(&c, next, 2, now).unwrap();
        assert_eq!(
            p.ticks,
            vec![t("2025-12-31T23:59:59Z"), t("2026-01-01T00:00:00Z")]
        );
        assert_eq!(p.next_at, t("2026-01-01T00:00:01Z"));
    }
}
