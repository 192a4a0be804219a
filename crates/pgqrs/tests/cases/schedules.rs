//! Schedules: cron expressions and intervals, stored in the database, fired by workers or
//! `fire_due_schedules`; one job per tick however many firers race for it; the missed-ticks
//! policy; pause, resume, trigger, delete; workflow schedules; bad input.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use pgqrs::{Error, JobState, ScheduleOptions};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// Every job of `queue` waiting to be claimed (the ticks' jobs are ready at once).
async fn ready_jobs(store: &pgqrs::Store, queue: &str) -> Vec<pgqrs::Job> {
    pgqrs::admin(store)
        .list_jobs(queue, JobState::Ready, Some(10_000), None)
        .await
        .expect("list_jobs")
        .jobs
}

/// Set a schedule's `created_at` (the start of an interval's ticks) and `next_at`, outside
/// pgqrs: a schedule whose ticks were missed while nothing ran.
async fn rewind(db: &TestDb, name: &str, created: DateTime<Utc>, next: DateTime<Utc>) {
    let t = db.table("pgqrs_schedules");
    let sql = if db.is_postgres() {
        format!(
            "UPDATE {t} SET created_at = '{}', next_at = '{}' WHERE name = '{name}'",
            created.to_rfc3339(),
            next.to_rfc3339()
        )
    } else {
        format!(
            "UPDATE {t} SET created_at = {}, next_at = {} WHERE name = '{name}'",
            created.timestamp_micros(),
            next.timestamp_micros()
        )
    };
    db.exec_raw(&sql).await;
}

/// A whole second, `s` seconds before now (interval ticks then fall on whole seconds).
fn secs_ago(s: i64) -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - s, 0).unwrap()
}

pub async fn schedule_lifecycle(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let before = Utc::now();
    let c = admin
        .create_schedule(
            "nightly",
            "q",
            ScheduleOptions::cron("0 30 3 * * *")
                .timezone("Europe/Paris")
                .payload(&json!({"kind": "daily"}))
                .catch_up(2)
                .priority(5)
                .max_attempts(3),
        )
        .await
        .unwrap();
    assert_eq!(c.name, "nightly");
    assert_eq!(c.queue, "q");
    assert_eq!(c.cron.as_deref(), Some("0 30 3 * * *"));
    assert_eq!(c.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(c.every, None);
    assert_eq!(c.payload, json!({"kind": "daily"}));
    assert_eq!((c.priority, c.max_attempts, c.catch_up), (5, Some(3), 2));
    assert!(!c.paused);
    assert!(c.next_at > before && c.next_at <= before + TimeDelta::days(1));
    assert_eq!(c.last_tick_at, None);
    // 03:30 in Paris is 01:30 or 02:30 UTC.
    assert_eq!(c.next_at.format("%M:%S").to_string(), "30:00");

    let e = admin
        .create_schedule("every-minute", "q", ScheduleOptions::every(secs(60)))
        .await
        .unwrap();
    assert_eq!(e.every, Some(secs(60)));
    assert_eq!((e.cron.clone(), e.timezone.clone()), (None, None));
    assert_eq!(e.payload, json!(null));
    assert_eq!(e.max_attempts, None);
    assert_eq!(e.next_at - e.created_at, TimeDelta::seconds(60));

    assert_err!(
        admin
            .create_schedule("nightly", "q", ScheduleOptions::every(secs(5)))
            .await,
        Error::ScheduleAlreadyExists { ref name } if name == "nightly"
    );
    assert_err!(
        admin
            .create_schedule("x", "nope", ScheduleOptions::every(secs(5)))
            .await,
        Error::QueueNotFound { .. }
    );
    let names: Vec<String> = admin
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["every-minute", "nightly"]);
    assert_eq!(admin.get_schedule("nightly").await.unwrap(), c);

    let p = admin.pause_schedule("nightly").await.unwrap();
    assert!(p.paused);
    assert_eq!(p.next_at, c.next_at);
    let r = admin.resume_schedule("nightly").await.unwrap();
    assert!(!r.paused);
    assert!(r.next_at > Utc::now());

    admin.delete_schedule("nightly").await.unwrap();
    for r in [
        admin.get_schedule("nightly").await.map(drop),
        admin.delete_schedule("nightly").await,
        admin.pause_schedule("nightly").await.map(drop),
        admin.resume_schedule("nightly").await.map(drop),
        admin.trigger_schedule("nightly").await.map(drop),
    ] {
        assert_err!(r, Error::ScheduleNotFound { ref name } if name == "nightly");
    }
    assert_eq!(admin.list_schedules().await.unwrap().len(), 1);
}

pub async fn schedule_bad_input(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let cases: Vec<(ScheduleOptions, &str, &str)> = vec![
        (ScheduleOptions::cron("* * *"), "cron", "give 5"),
        (ScheduleOptions::cron("61 * * * *"), "cron", "give 5"),
        (ScheduleOptions::cron("every day"), "cron", "give 5"),
        (ScheduleOptions::cron("0 0 30 2 *"), "cron", "no time"),
        (
            ScheduleOptions::cron("* * * * *").timezone("Mars/Olympus"),
            "timezone",
            "IANA",
        ),
        (ScheduleOptions::every(secs(0)), "every", "from 1s"),
        (ScheduleOptions::every(ms(999)), "every", "from 1s"),
        (ScheduleOptions::every(secs(400 * 86_400)), "every", "cron"),
        (
            ScheduleOptions::every(secs(5)).timezone("UTC"),
            "timezone",
            "drop timezone",
        ),
        (
            ScheduleOptions::every(secs(5)).catch_up(1_001),
            "catch_up",
            "from 0",
        ),
        (
            ScheduleOptions::cron("* * * * *").set_every(secs(5)),
            "cron",
            "not both",
        ),
        (ScheduleOptions::new(), "cron", "every="),
        (
            ScheduleOptions::every(secs(5)).priority(40_000),
            "priority",
            "between",
        ),
        (
            ScheduleOptions::every(secs(5)).max_attempts(0),
            "max_attempts",
            "between",
        ),
        (
            ScheduleOptions::every(secs(5))
                .workflow("wf")
                .max_attempts(3),
            "max_attempts",
            "drop max_attempts",
        ),
        (
            ScheduleOptions::every(secs(5)).payload_json("{not json"),
            "payload",
            "valid JSON",
        ),
    ];
    for (opts, field, hint) in cases {
        let shown = format!("{opts:?}");
        match admin.create_schedule("s", "q", opts).await {
            Err(Error::Validation { field: f, message }) => {
                assert_eq!(f, field, "{shown}: {message}");
                assert!(message.contains(hint), "{shown}: {message}");
            }
            other => panic!("{shown}: expected a validation error, got {other:?}"),
        }
    }
    for bad in ["", "  ", "a\nb"] {
        assert_err!(
            admin
                .create_schedule(bad, "q", ScheduleOptions::every(secs(5)))
                .await,
            Error::Validation {
                field: "schedule name",
                ..
            }
        );
    }
    assert_err!(
        pgqrs::interval_from_secs(-5.0),
        Error::Validation { field: "every", .. }
    );
    assert_err!(
        pgqrs::interval_from_secs(f64::NAN),
        Error::Validation { field: "every", .. }
    );
    assert_err!(
        pgqrs::catch_up_from(-1),
        Error::Validation {
            field: "catch_up",
            ..
        }
    );
    assert!(admin.list_schedules().await.unwrap().is_empty());
}

pub async fn schedule_fires_each_tick_once(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let s = admin
        .create_schedule(
            "tick",
            "q",
            ScheduleOptions::every(secs(1)).payload(&json!({"n": 1})),
        )
        .await
        .unwrap();
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 0, "not due yet");
    let wait = (s.next_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + ms(50)).await;
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 1);
    assert_eq!(
        admin.fire_due_schedules().await.unwrap(),
        0,
        "the tick is taken"
    );
    let jobs = ready_jobs(&store, "q").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].payload, json!({"n": 1}));
    assert_eq!(
        jobs[0].visible_at,
        Some(s.next_at),
        "a job records its tick"
    );
    let after = admin.get_schedule("tick").await.unwrap();
    assert_eq!(after.last_tick_at, Some(s.next_at));
    assert!(after.next_at > s.next_at && after.next_at > Utc::now() - TimeDelta::seconds(1));

    // Paused: nothing fires; a trigger still makes one job, and the ticks do not move.
    let p = admin.pause_schedule("tick").await.unwrap();
    sleep_ms(1_100).await;
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 0);
    let fired = admin.trigger_schedule("tick").await.unwrap();
    assert_eq!(fired.job_ids.len(), 1);
    assert!(fired.run_ids.is_empty());
    let still = admin.get_schedule("tick").await.unwrap();
    assert_eq!(
        (still.next_at, still.last_tick_at),
        (p.next_at, p.last_tick_at)
    );
    assert_eq!(ready_jobs(&store, "q").await.len(), 2);
    // Resumed: from the next tick after now; the pause's ticks are not fired.
    let r = admin.resume_schedule("tick").await.unwrap();
    assert!(r.next_at > Utc::now() - TimeDelta::milliseconds(10));
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 0);
}

pub async fn missed_ticks_policy(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    // Hourly ticks from 5.5 hours ago: five missed, the latest half an hour late.
    let t0 = secs_ago(5 * 3600 + 1800);
    let hour = TimeDelta::hours(1);
    for (name, catch_up) in [("skip", 0), ("three", 3), ("all", 100)] {
        admin
            .create_schedule(
                name,
                "q",
                ScheduleOptions::every(secs(3600))
                    .catch_up(catch_up)
                    .payload(&json!(name)),
            )
            .await
            .unwrap();
        rewind(db, name, t0, t0 + hour).await;
    }
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 3 + 5);
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 0);
    let jobs = ready_jobs(&store, "q").await;
    let ticks_of = |who: &str| -> Vec<DateTime<Utc>> {
        let mut v: Vec<_> = jobs
            .iter()
            .filter(|j| j.payload == json!(who))
            .filter_map(|j| j.visible_at)
            .collect();
        v.sort();
        v
    };
    assert!(ticks_of("skip").is_empty(), "30 minutes late: skipped");
    assert_eq!(
        ticks_of("three"),
        [t0 + hour * 3, t0 + hour * 4, t0 + hour * 5],
        "the three latest"
    );
    assert_eq!(
        ticks_of("all"),
        (1..=5).map(|k| t0 + hour * k).collect::<Vec<_>>()
    );
    for s in admin.list_schedules().await.unwrap() {
        assert_eq!(s.next_at, t0 + hour * 6, "{}: moved past now", s.name);
        let last = (s.name != "skip").then_some(t0 + hour * 5);
        assert_eq!(s.last_tick_at, last, "{}", s.name);
    }
    // A tick a little late (a busy or restarting worker) still fires with catch_up 0.
    let t1 = secs_ago(3600 + 20);
    rewind(db, "skip", t1, t1 + hour).await;
    assert_eq!(admin.fire_due_schedules().await.unwrap(), 1);
}

fn race_size(db: &TestDb) -> (usize, usize) {
    if db.is_postgres() {
        (4, 3)
    } else if db.is_sqlite() {
        (3, 3)
    } else {
        (1, 8)
    }
}

/// Many stores and tasks fire the same schedules at the same moments: every tick makes
/// exactly one job, a catch-up of several ticks too.
pub async fn many_firers_one_job_per_tick(db: &TestDb) {
    let (stores, tasks) = race_size(db);
    let pool = format!("pool_size={}", tasks + 1);
    let first = db.store_with(&pool).await;
    let admin = pgqrs::admin(&first);
    admin.create_queue("q").await.unwrap();
    admin
        .create_schedule(
            "catch-up",
            "q",
            ScheduleOptions::every(secs(3600))
                .catch_up(4)
                .payload(&json!("c")),
        )
        .await
        .unwrap();
    let t0 = secs_ago(10 * 3600 + 60);
    rewind(db, "catch-up", t0, t0 + TimeDelta::hours(1)).await;
    admin
        .create_schedule(
            "every-second",
            "q",
            ScheduleOptions::cron("* * * * * *")
                .catch_up(1000)
                .payload(&json!("s")),
        )
        .await
        .unwrap();
    let mut all = vec![first];
    for _ in 1..stores {
        all.push(db.connect_with(&pool).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(stores * tasks));
    let until = tokio::time::Instant::now() + ms(3_200);
    let mut runs = Vec::new();
    for store in &all {
        for _ in 0..tasks {
            let (store, start) = (store.clone(), start.clone());
            runs.push(tokio::spawn(async move {
                start.wait().await;
                let mut made = 0;
                while tokio::time::Instant::now() < until {
                    made += pgqrs::admin(&store).fire_due_schedules().await.unwrap();
                    sleep_ms(fastrand::u64(0..30)).await;
                }
                made
            }));
        }
    }
    let mut made = 0;
    for r in runs {
        made += r.await.unwrap();
    }
    let jobs = ready_jobs(&all[0], "q").await;
    assert_eq!(made, jobs.len(), "every job made was counted once");
    let catch_up: Vec<_> = jobs.iter().filter(|j| j.payload == json!("c")).collect();
    assert_eq!(catch_up.len(), 4, "catch_up=4: four jobs, whoever fired");
    let seconds: Vec<DateTime<Utc>> = jobs
        .iter()
        .filter(|j| j.payload == json!("s"))
        .filter_map(|j| j.visible_at)
        .collect();
    let distinct: HashSet<_> = seconds.iter().collect();
    assert_eq!(
        distinct.len(),
        seconds.len(),
        "one job per tick: {seconds:?}"
    );
    assert!(
        (2..=5).contains(&seconds.len()),
        "a tick each second for ~3 s: {seconds:?}"
    );
    // Consecutive ticks: none skipped (catch_up covers any tick a slow round missed).
    let mut sorted = seconds.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        assert_eq!(w[1] - w[0], TimeDelta::seconds(1), "{sorted:?}");
    }
}

/// A running worker of any queue fires every schedule, waking at its ticks; a workflow
/// schedule starts a run per tick.
pub async fn worker_fires_schedules(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    admin.create_queue("other").await.unwrap();
    let (stop, task) = spawn_worker(&store, pgqrs::worker("other").handle(|_m| async { Ok(()) }));
    admin
        .create_schedule(
            "tick",
            "q",
            ScheduleOptions::cron("* * * * * *").payload(&json!("t")),
        )
        .await
        .unwrap();
    eventually(secs(10), "three ticks fired by the worker", || async {
        ready_jobs(&store, "q").await.len() >= 3
    })
    .await;
    let wf = admin
        .create_schedule(
            "runs",
            "q",
            ScheduleOptions::every(secs(3600))
                .workflow("report")
                .payload(&json!({"day": 1})),
        )
        .await
        .unwrap();
    assert_eq!(wf.workflow.as_deref(), Some("report"));
    let fired = admin.trigger_schedule("runs").await.unwrap();
    assert_eq!((fired.job_ids.len(), fired.run_ids.len()), (1, 1));
    let run = admin.workflow_run(fired.run_ids[0]).await.unwrap();
    assert_eq!(run.name, "report");
    assert_eq!(run.input, json!({"day": 1}));
    assert_eq!(run.status, pgqrs::RunStatus::Pending);
    let job = admin.get_job(fired.job_ids[0]).await.unwrap();
    assert_eq!(job.payload, json!({"workflow_run": fired.run_ids[0]}));
    stop.shutdown();
    task.await.unwrap().unwrap();

    // Without a worker (and with one that does not fire schedules), nothing fires.
    admin.delete_schedule("tick").await.unwrap();
    admin
        .create_schedule("quiet", "other", ScheduleOptions::cron("* * * * * *"))
        .await
        .unwrap();
    let (stop, task) = spawn_worker(
        &store,
        pgqrs::worker("q")
            .fire_schedules(false)
            .handle(|_m| async { Ok(()) }),
    );
    sleep_ms(1_500).await;
    assert_eq!(counts(&store, "other").await.0, 0);
    stop.shutdown();
    task.await.unwrap().unwrap();
}
