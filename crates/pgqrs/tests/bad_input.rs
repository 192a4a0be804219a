//! Bad input, property-based (proptest): the Rust builders and parsers, fed what they must
//! refuse.
//!
//! ```text
//! cargo test --release ... --test bad_input            # PROPTEST_CASES per property
//! ```
//!
//! Each bad input must give a `pgqrs::Error` of the expected kind whose message says what was
//! wrong (no panic, no hang: every call is bounded), and nothing may be written: the queues,
//! job counts per state and workflow runs are compared before and after. After each property
//! a valid enqueue and claim round trip shows the store still works, and valid inputs at the
//! edge (NUL characters, unicode, 64-bit integers, the largest allowed payload) must read back
//! exactly. Runs on SQLite, Turso, and PostgreSQL when `PGQRS_TEST_DSN` is set (required under
//! `CI=true`). With `PGQRS_BAD_INPUT_REPORT=<path>`, the count of distinct bad inputs is
//! written to `<path>.rust.json` for `make chaos` (failures show in the exit status).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use common::TestDb;
use pgqrs::{Config, Error, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};

/// No call may take longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Distinct bad inputs, as "entry point | input".
static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn seen(entry: &str, input: &str) {
    let mut s = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let key = if input.len() > 200 {
        let head: String = input.chars().take(100).collect();
        format!("{entry}|{head}..{}", input.len())
    } else {
        format!("{entry}|{input}")
    };
    s.get_or_insert_with(HashSet::new).insert(key);
}

fn runner() -> TestRunner {
    // PROPTEST_CASES sets `cases` (default 256; `make test` sets a small number).
    TestRunner::new(RunnerConfig {
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// What a bad input must not change.
async fn snapshot(store: &Store) -> (BTreeMap<String, [i64; 5]>, Vec<(i64, String, String)>) {
    let admin = pgqrs::admin(store);
    let mut queues = BTreeMap::new();
    for q in admin.list_queues().await.expect("list queues") {
        let m = pgqrs::admin(store)
            .queue_metrics(&q.name)
            .await
            .expect("metrics");
        queues.insert(q.name, [m.ready, m.delayed, m.leased, m.archived, m.dead]);
    }
    let runs = admin
        .list_workflows(None, 100_000)
        .await
        .expect("list runs")
        .into_iter()
        .map(|r| (r.id, r.name, format!("{:?}", r.status)))
        .collect();
    (queues, runs)
}

/// Check one bad input: `call` must fail with an error `expected` accepts, with a useful
/// message, within the time bound, writing nothing.
async fn refused<T, F>(
    store: &Store,
    entry: &str,
    input: &str,
    call: F,
    expected: impl Fn(&Error) -> bool,
) -> Result<(), TestCaseError>
where
    F: Future<Output = pgqrs::Result<T>>,
{
    seen(entry, input);
    let shown: String = input.chars().take(80).collect();
    let before = snapshot(store).await;
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "{entry}({shown:?}): no answer in {CALL_TIMEOUT:?}"
            )))
        }
        Ok(Ok(_)) => return Err(TestCaseError::fail(format!("{entry}({shown:?}): accepted"))),
        Ok(Err(e)) => {
            let text = e.to_string();
            if !expected(&e) {
                return Err(TestCaseError::fail(format!(
                    "{entry}({shown:?}): unexpected error {e:?}"
                )));
            }
            if !(10..=2000).contains(&text.len()) {
                return Err(TestCaseError::fail(format!(
                    "{entry}({shown:?}): message of {} bytes",
                    text.len()
                )));
            }
        }
    }
    let after = snapshot(store).await;
    prop_assert_eq!(before, after, "{}({:?}) wrote something", entry, shown);
    Ok(())
}

fn validation(field: &'static str) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Validation { field: f, .. } if *f == field)
}

fn is_validation(e: &Error) -> bool {
    matches!(e, Error::Validation { .. })
}

fn is_queue_name(e: &Error) -> bool {
    validation("queue name")(e)
}

fn is_payload(e: &Error) -> bool {
    matches!(
        e,
        Error::Validation { .. } | Error::Serialization { .. } | Error::PayloadTooLarge { .. }
    )
}

fn is_dsn(e: &Error) -> bool {
    matches!(e, Error::InvalidDsn { .. } | Error::Validation { .. })
}

/// A valid enqueue and claim: the store keeps working.
async fn round_trip(store: &Store, n: u64) {
    let payload = json!({"round": n, "text": "ok \u{e9}\u{4e2d}\u{1f600}"});
    let ids = pgqrs::enqueue()
        .message(&payload)
        .to("rt")
        .execute(store)
        .await
        .expect("a valid enqueue after bad input");
    let c = pgqrs::Consumer::new(store, "rt").await.expect("consumer");
    let got = c.dequeue(1, None).await.expect("claim");
    assert_eq!(got.len(), 1, "the store stopped working after bad input");
    assert_eq!(got[0].id, ids[0]);
    assert_eq!(got[0].payload, payload);
    c.archive(ids[0]).await.expect("archive");
}

// --- Strategies ----------------------------------------------------------------------------

const INJECTION: &[&str] = &[
    "'; DROP TABLE pgqrs_jobs; --",
    "\"; DROP SCHEMA public CASCADE; --",
    "x' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "$$; DELETE FROM pgqrs_jobs; $$",
];

fn bad_queue_names() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9_-]{49,120}",
        // At least one character outside [A-Za-z0-9_-].
        ("[a-z]{0,8}", "[^A-Za-z0-9_-]", "[a-z]{0,8}").prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        proptest::sample::select(INJECTION).prop_map(str::to_string),
    ]
}

fn bad_workflow_names() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t\r\n]{0,5}",
        "[a-z]{201,260}",
        ("[a-z]{0,5}", "[\u{0}-\u{1f}\u{7f}]", "[a-z]{0,5}")
            .prop_map(|(a, b, c)| format!("x{a}{b}{c}")),
    ]
}

/// JSON texts that are not one valid, storable payload.
fn bad_json() -> impl Strategy<Value = String> {
    prop_oneof![
        // Not JSON at all.
        "[^\\[\\]{}\"0-9tfn -]{1,20}",
        Just(String::new()),
        Just("{".into()),
        Just("[1,2".into()),
        Just("NaN".into()),
        Just("Infinity".into()),
        Just("-Infinity".into()),
        Just("{\"a\":1}}".into()),
        Just("'single'".into()),
        Just("\"unterminated".into()),
        Just("1e400".into()),
        Just("\"\\ud800\"".into()),
        Just("\"raw \u{0} nul\"".into()),
        // Integers beyond 64 bits, anywhere.
        (19u32..60, any::<bool>()).prop_map(|(digits, neg)| {
            let n = format!(
                "{}{}",
                if neg { "-" } else { "" },
                "9".repeat(digits as usize + 1)
            );
            format!("{{\"n\":[{n}]}}")
        }),
        // Nested deeper than MAX_DEPTH.
        (101usize..400).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
    ]
}

fn bad_dsn_params() -> impl Strategy<Value = (String, String)> {
    let key = proptest::sample::select(vec![
        "pool_size",
        "visibility_timeout",
        "max_attempts",
        "poll_interval_ms",
        "max_payload_bytes",
        "connect_timeout",
        "busy_timeout_ms",
        "synchronous",
        "statement_cache",
        "notify",
    ]);
    let value = prop_oneof![
        "-[0-9]{1,5}",
        "[a-z]{1,6}",
        "[0-9]{1,3}\\.[0-9]",
        Just("18446744073709551615".to_string()),
        Just("99999999999999999999999".to_string()),
        Just(String::new()),
    ];
    (key.prop_map(str::to_string), value).prop_filter("a valid value", |(k, v)| !valid_param(k, v))
}

/// Whether `k=v` is a valid setting (the strategy above draws a few by chance).
fn valid_param(k: &str, v: &str) -> bool {
    match k {
        "synchronous" => matches!(v, "full" | "normal"),
        "statement_cache" | "notify" => {
            matches!(
                v,
                "true" | "false" | "yes" | "no" | "on" | "off" | "1" | "0"
            )
        }
        _ => false,
    }
}

// --- Parsers (no database) -----------------------------------------------------------------

#[test]
fn dsn_parser_never_panics_and_says_what_is_wrong() {
    let mut r = runner();
    r.run(&any::<String>(), |s| {
        seen("Config::new", &s);
        // Anything may come in; only a typed error or a configuration may come out.
        match Config::new(&s) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(is_dsn(&e), "{s:?}: {e:?}");
                prop_assert!(e.to_string().len() <= 2000);
            }
        }
        Ok(())
    })
    .unwrap();
    let mut r = runner();
    let base = prop_oneof![
        Just("postgresql://u@h/db"),
        Just("sqlite:///tmp/x.db"),
        Just("turso:///tmp/x.db"),
    ];
    r.run(&(base, bad_dsn_params()), |(base, (k, v))| {
        let dsn = format!("{base}?{k}={v}");
        seen("Config::new", &dsn);
        let e = Config::new(&dsn).err();
        prop_assert!(e.as_ref().is_some_and(is_dsn), "{dsn}: {e:?}");
        Ok(())
    })
    .unwrap();
    // Typos and unknown parameters are refused, naming the parameter they resemble.
    for (dsn, hint) in [
        (
            "postgresql://h/db?visiblity_timeout=2",
            "visibility_timeout",
        ),
        ("postgresql://h/db?poll_interval=100", "poll_interval_ms"),
        ("sqlite:///tmp/x.db?pool-size=3", "pool_size"),
        ("turso:///tmp/x.db?foo=bar", "pgqrs reads"),
    ] {
        seen("Config::new", dsn);
        let e = Config::new(dsn).expect_err(dsn);
        assert!(
            matches!(e, Error::InvalidDsn { .. }) && e.to_string().contains(hint),
            "{dsn}: {e}"
        );
    }
    // A DSN without a scheme is refused (it once opened a file named "sqlite").
    for dsn in [
        "sqlite",
        "turso",
        "postgresql",
        "x".repeat(100_000).as_str(),
    ] {
        seen("Config::new", dsn);
        let e = Config::new(dsn).expect_err(dsn);
        assert!(e.to_string().len() <= 2000, "{}", e.to_string().len());
    }
    report();
}

// --- Every backend ---------------------------------------------------------------------------

async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![];
    dbs.extend(TestDb::sqlite().await);
    dbs.extend(TestDb::turso().await);
    dbs.extend(TestDb::postgres().await);
    dbs
}

#[test]
fn bad_input_on_every_backend() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dbs = rt.block_on(backends());
    for db in &dbs {
        let store = rt.block_on(async {
            let s = db.store().await;
            for q in ["bad", "rt"] {
                pgqrs::admin(&s).create_queue(q).await.unwrap();
            }
            s
        });
        properties(&rt, &store, db);
        rt.block_on(store.close());
    }
    report();
}

fn properties(rt: &tokio::runtime::Runtime, store: &Store, db: &TestDb) {
    let mut rounds = 0;
    let mut round_trip_now = || {
        rounds += 1;
        rt.block_on(round_trip(store, rounds));
    };
    let s = store;

    // Queue names, on every entry point that takes one.
    runner()
        .run(&bad_queue_names(), |q| {
            rt.block_on(async {
                let a = || pgqrs::admin(s);
                refused(s, "create_queue", &q, a().create_queue(&q), is_queue_name).await?;
                refused(
                    s,
                    "delete_queue",
                    &q,
                    a().delete_queue(&q, true),
                    is_queue_name,
                )
                .await?;
                refused(s, "purge_queue", &q, a().purge_queue(&q), is_queue_name).await?;
                refused(s, "queue_metrics", &q, a().queue_metrics(&q), is_queue_name).await?;
                refused(
                    s,
                    "dead_letters",
                    &q,
                    a().dead_letters(&q, 10),
                    is_queue_name,
                )
                .await?;
                refused(
                    s,
                    "requeue_dead",
                    &q,
                    a().requeue_all_dead(&q),
                    is_queue_name,
                )
                .await?;
                refused(
                    s,
                    "archived_jobs",
                    &q,
                    a().archived_jobs(&q, 10),
                    is_queue_name,
                )
                .await?;
                let enq = pgqrs::enqueue().message(&1).to(q.clone()).execute(s);
                refused(s, "enqueue.to", &q, enq, is_queue_name).await?;
                refused(
                    s,
                    "Consumer::new",
                    &q,
                    pgqrs::Consumer::new(s, &q),
                    is_queue_name,
                )
                .await?;
                let deq = pgqrs::dequeue()
                    .from(q.clone())
                    .handle(|_m| async { Ok(()) })
                    .execute(s);
                refused(s, "dequeue.from", &q, deq, is_queue_name).await?;
                let (admin, empty) = (a(), json!({}));
                let ew = admin.enqueue_workflow(&q, "wf", &empty);
                refused(s, "enqueue_workflow.queue", &q, ew, is_queue_name).await?;
                Ok(())
            })
        })
        .unwrap();
    round_trip_now();

    // Payloads given as JSON text, and workflow inputs.
    runner()
        .run(&bad_json(), |text| {
            rt.block_on(async {
                let one = pgqrs::enqueue()
                    .message_json(text.clone())
                    .to("bad")
                    .execute(s);
                refused(s, "enqueue.message_json", &text, one, is_payload).await?;
                let arr = format!("[1,{text}]");
                let many = pgqrs::enqueue()
                    .messages_json_array(&arr)
                    .to("bad")
                    .execute(s);
                refused(s, "enqueue.messages_json_array", &arr, many, is_payload).await?;
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    // Parses (as a rounded float or too deep): refused as a workflow input too.
                    let admin = pgqrs::admin(s);
                    let cw = admin.create_workflow("wf", &v);
                    refused(s, "create_workflow.input", &text, cw, is_payload).await?;
                }
                Ok(())
            })
        })
        .unwrap();
    // Not an array of messages.
    for text in ["{}", "1", "\"s\"", "null", "[1,", ""] {
        let many = pgqrs::enqueue()
            .messages_json_array(text)
            .to("bad")
            .execute(s);
        rt.block_on(refused(
            s,
            "enqueue.messages_json_array",
            text,
            many,
            is_validation,
        ))
        .unwrap();
    }
    // Too large: 100 MB, and one byte over the limit; as payloads and as workflow inputs.
    for size in [100 * 1024 * 1024, 1024 * 1024 + 1] {
        let big = "x".repeat(size - 2);
        let text = format!("\"{big}\"");
        let too_large = |e: &Error| matches!(e, Error::PayloadTooLarge { .. });
        let one = pgqrs::enqueue()
            .message_json(text.clone())
            .to("bad")
            .execute(s);
        rt.block_on(refused(s, "enqueue.message_json", &text, one, too_large))
            .unwrap();
        let admin = pgqrs::admin(s);
        let cw = admin.create_workflow("wf", &big);
        rt.block_on(refused(s, "create_workflow.input", &text, cw, too_large))
            .unwrap();
        let ew = admin.enqueue_workflow("bad", "wf", &big);
        rt.block_on(refused(s, "enqueue_workflow.input", &text, ew, too_large))
            .unwrap();
    }
    round_trip_now();

    // Counts, leases and delays out of range.
    let durations = prop_oneof![
        Just(Duration::ZERO),
        (7 * 24 * 3600 + 1..u64::MAX / 2).prop_map(Duration::from_secs),
    ];
    runner()
        .run(
            &(
                prop_oneof![Just(0usize), 10_001usize..usize::MAX],
                durations,
            ),
            |(batch, lease)| {
                rt.block_on(async {
                    let c = pgqrs::Consumer::new(s, "bad").await.unwrap();
                    let b = format!("{batch}");
                    let vt = format!("{lease:?}");
                    refused(
                        s,
                        "dequeue.batch",
                        &b,
                        c.dequeue(batch, None),
                        validation("batch_size"),
                    )
                    .await?;
                    let deq = pgqrs::dequeue()
                        .from("bad")
                        .batch(batch)
                        .handle(|_m| async { Ok(()) })
                        .execute(s);
                    refused(s, "dequeue.batch", &b, deq, validation("batch_size")).await?;
                    let vis = validation("visibility_timeout");
                    refused(
                        s,
                        "dequeue.visibility_timeout",
                        &vt,
                        c.dequeue(1, Some(lease)),
                        vis,
                    )
                    .await?;
                    let deq = pgqrs::dequeue()
                        .from("bad")
                        .visibility_timeout(lease)
                        .handle(|_m| async { Ok(()) })
                        .execute(s);
                    refused(
                        s,
                        "dequeue.visibility_timeout",
                        &vt,
                        deq,
                        validation("visibility_timeout"),
                    )
                    .await?;
                    Ok(())
                })
            },
        )
        .unwrap();
    runner()
        .run(
            &(
                prop_oneof![Just(0u32), (i32::MAX as u32 + 1)..=u32::MAX],
                (100 * 365 * 24 * 3600 + 1..u64::MAX).prop_map(Duration::from_secs),
            ),
            |(attempts, delay)| {
                rt.block_on(async {
                    let enq = pgqrs::enqueue()
                        .message(&1)
                        .max_attempts(attempts)
                        .to("bad");
                    refused(
                        s,
                        "enqueue.max_attempts",
                        &attempts.to_string(),
                        enq.execute(s),
                        validation("max_attempts"),
                    )
                    .await?;
                    let enq = pgqrs::enqueue().message(&1).delay(delay).to("bad");
                    refused(
                        s,
                        "enqueue.delay",
                        &format!("{delay:?}"),
                        enq.execute(s),
                        validation("delay"),
                    )
                    .await?;
                    Ok(())
                })
            },
        )
        .unwrap();
    for limit in [0i64, -1, i64::MIN, 10_001, i64::MAX] {
        let a = pgqrs::admin(s);
        let l = limit.to_string();
        rt.block_on(async {
            refused(
                s,
                "list_jobs.limit",
                &l,
                a.list_jobs("bad", pgqrs::JobState::Ready, Some(limit), None),
                validation("limit"),
            )
            .await?;
            if limit > 0 {
                // Too large only for list_jobs: the other listings take any positive limit.
                return Ok(());
            }
            refused(
                s,
                "dead_letters.limit",
                &l,
                a.dead_letters("bad", limit),
                validation("limit"),
            )
            .await?;
            refused(
                s,
                "archived_jobs.limit",
                &l,
                a.archived_jobs("bad", limit),
                validation("limit"),
            )
            .await?;
            refused(
                s,
                "list_workflows.limit",
                &l,
                a.list_workflows(None, limit),
                validation("limit"),
            )
            .await
        })
        .unwrap();
    }
    round_trip_now();

    // Ids that do not exist.
    runner()
        .run(
            &prop_oneof![i64::MIN..0, 1_000_000_000i64..i64::MAX],
            |id| {
                rt.block_on(async {
                    let c = pgqrs::Consumer::new(s, "bad").await.unwrap();
                    let i = id.to_string();
                    let job = |e: &Error| matches!(e, Error::JobNotFound { .. });
                    let run = |e: &Error| matches!(e, Error::WorkflowNotFound { .. });
                    refused(s, "archive.id", &i, c.archive(id), job).await?;
                    refused(s, "delete.id", &i, c.delete(id), job).await?;
                    refused(
                        s,
                        "extend.id",
                        &i,
                        c.extend(id, Duration::from_secs(5)),
                        job,
                    )
                    .await?;
                    refused(s, "release.id", &i, c.release(id, Duration::ZERO), job).await?;
                    let a = pgqrs::admin(s);
                    refused(s, "get_workflow.id", &i, a.get_workflow(id), run).await?;
                    refused(s, "workflow_run.id", &i, a.workflow_run(id), run).await?;
                    refused(s, "workflow_steps.id", &i, a.workflow_steps(id), run).await?;
                    refused(s, "cancel_workflow.id", &i, a.cancel_workflow(id), run).await?;
                    refused(s, "get_job.id", &i, a.get_job(id), job).await?;
                    refused(s, "cancel_job.id", &i, a.cancel_job(id), job).await?;
                    refused(s, "retry_job.id", &i, a.retry_job(id), job).await?;
                    let now = pgqrs::RunAt::Now;
                    refused(s, "reschedule_job.id", &i, a.reschedule_job(id, now), job).await?;
                    refused(s, "set_job_priority.id", &i, a.set_job_priority(id, 1), job).await?;
                    Ok(())
                })
            },
        )
        .unwrap();
    round_trip_now();

    // Workflow and step names.
    let running = rt.block_on(async {
        let w = pgqrs::admin(s)
            .create_workflow("steps", &json!({}))
            .await
            .unwrap();
        assert!(matches!(w.start().await.unwrap(), pgqrs::RunStart::Execute));
        w
    });
    runner()
        .run(&bad_workflow_names(), |name| {
            rt.block_on(async {
                let (a, empty) = (pgqrs::admin(s), json!({}));
                let cw = a.create_workflow(&name, &empty);
                refused(
                    s,
                    "create_workflow.name",
                    &name,
                    cw,
                    validation("workflow name"),
                )
                .await?;
                let ew = a.enqueue_workflow("bad", &name, &empty);
                refused(
                    s,
                    "enqueue_workflow.name",
                    &name,
                    ew,
                    validation("workflow name"),
                )
                .await?;
                let step = running.begin_step(&name);
                refused(s, "begin_step.name", &name, step, validation("step name")).await?;
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(async {
        assert!(
            running.steps().await.unwrap().is_empty(),
            "a refused step wrote a step"
        );
        // SQL-looking names are text: stored and read back as they are.
        for name in INJECTION {
            let w = pgqrs::admin(s)
                .create_workflow(name, &json!({}))
                .await
                .unwrap();
            let run = pgqrs::admin(s).workflow_run(w.id()).await.unwrap();
            assert_eq!(run.name, *name);
        }
    });
    round_trip_now();

    // The other side of the boundary: valid payloads at the edge read back exactly.
    let edge = vec![
        json!("nul \u{0} inside"),
        json!({"\u{0}key": "\u{0}"}),
        json!("\u{e9} \u{4e2d}\u{6587} \u{1f600} \u{202e}rtl e\u{301}"),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(5e-324),
        json!(INJECTION),
        json!("z".repeat(1024 * 1024 - 2)),
    ];
    rt.block_on(async {
        let c = pgqrs::Consumer::new(s, "rt").await.unwrap();
        for v in edge {
            let ids = pgqrs::enqueue()
                .message(&v)
                .to("rt")
                .execute(s)
                .await
                .unwrap();
            let got = c.dequeue(1, None).await.unwrap();
            assert_eq!(got[0].id, ids[0]);
            assert_eq!(
                got[0].payload,
                v,
                "{} on {:?}",
                v.to_string().chars().take(60).collect::<String>(),
                db.kind()
            );
            c.archive(ids[0]).await.unwrap();
        }
        // A surrogate pair written as escapes is one valid character.
        let ids = pgqrs::enqueue()
            .message_json(r#"{"e":"\ud83d\ude00"}"#)
            .to("rt")
            .execute(s)
            .await
            .unwrap();
        let got = c.dequeue(1, None).await.unwrap();
        assert_eq!(got[0].payload, json!({"e": "\u{1f600}"}));
        c.archive(ids[0]).await.unwrap();
        // Error texts with NUL characters are recorded (they once failed the whole write on
        // PostgreSQL), and a 100 KB one is cut, saying so.
        for text in ["fail \u{0} nul", &"e".repeat(100_000)] {
            let ids = pgqrs::enqueue()
                .message(&1)
                .max_attempts(1)
                .to("rt")
                .execute(s)
                .await
                .unwrap();
            let got = c.dequeue(1, None).await.unwrap();
            c.fail(got[0].id, text, &pgqrs::RetryPolicy::none())
                .await
                .unwrap();
            let dead = pgqrs::admin(s).dead_letters("rt", 1000).await.unwrap();
            let stored = dead
                .iter()
                .find(|d| d.id == ids[0])
                .unwrap()
                .last_error
                .clone()
                .unwrap();
            assert!(!stored.contains('\u{0}'));
            assert!(stored.len() <= 64 * 1024 + 64, "{}", stored.len());
        }
    });
    round_trip_now();
}

/// Write the count of distinct bad inputs for `make chaos`, when asked.
fn report() {
    let Ok(path) = std::env::var("PGQRS_BAD_INPUT_REPORT") else {
        return;
    };
    let n = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(0, HashSet::len);
    // Both tests of this file share SEEN: the one that ends last writes the run's total.
    let _ = std::fs::write(
        format!("{path}.rust.json"),
        json!({ "rust_cases": n }).to_string(),
    );
}
