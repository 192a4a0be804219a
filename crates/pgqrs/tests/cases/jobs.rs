//! Jobs: payloads, batches, delays, leases, completion, metrics.

use std::collections::HashMap;

use chrono::Utc;
use pgqrs::{Consumer, Error, RetryPolicy};
use serde_json::{json, Value};

use crate::assert_err;
use crate::common::*;

fn payloads() -> Vec<(&'static str, Value)> {
    let mut deep = json!("bottom");
    for i in 0..40 {
        deep = json!({ "level": i, "next": [deep] });
    }
    vec![
        (
            "object",
            json!({"task": "send_email", "to": "user@example.com", "n": 3}),
        ),
        ("empty object", json!({})),
        ("array", json!([1, "two", 3.5, true, null, {"x": []}])),
        ("empty array", json!([])),
        ("string", json!("just a string")),
        ("empty string", json!("")),
        ("integer", json!(42)),
        ("negative", json!(-7)),
        ("i64 max", json!(i64::MAX)),
        ("i64 min", json!(i64::MIN)),
        ("float", json!(3.25)),
        ("decimal", json!(0.1)),
        ("big float", json!(1.5e300)),
        ("true", json!(true)),
        ("false", json!(false)),
        ("null", Value::Null),
        (
            "nested",
            json!({"a": {"b": {"c": [1, [2, [3, {"d": null}]]]}}}),
        ),
        ("deep", deep),
        (
            "unicode",
            json!({
                "emoji": "🦀🚀", "cjk": "日本語", "rtl": "שלום", "accents": "ünïcödé",
                "ключ": "значение", "escapes": "quote\" backslash\\ slash/ nl\n tab\t cr\r",
                "control": "\u{1}\u{1f}", "bmp edge": "\u{ffff}", "astral": "\u{10ffff}"
            }),
        ),
        ("long string", json!("x".repeat(100_000))),
    ]
}

/// Any JSON value comes back as it went in, through the single and the batch enqueue.
pub async fn payload_roundtrip(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let table = payloads();
    let mut expected: HashMap<i64, (&str, Value)> = HashMap::new();
    for (name, v) in &table {
        let ids = pgqrs::enqueue()
            .message(v)
            .to("q")
            .execute(&store)
            .await
            .unwrap_or_else(|e| panic!("enqueue {name}: {e}"));
        assert_eq!(ids.len(), 1);
        expected.insert(ids[0], (name, v.clone()));
    }
    let values: Vec<Value> = table.iter().map(|(_, v)| v.clone()).collect();
    let ids = pgqrs::enqueue()
        .messages(&values)
        .to("q")
        .execute(&store)
        .await
        .expect("batch enqueue of every payload");
    for (id, (name, v)) in ids.iter().zip(&table) {
        assert!(
            expected.insert(*id, (name, v.clone())).is_none(),
            "duplicate id {id}"
        );
    }
    // JSON given as text.
    let text_ids = pgqrs::enqueue()
        .message_json(r#"{"raw": [1, 2, {"three": "3"}], "ok": true}"#)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    expected.insert(
        text_ids[0],
        (
            "json text",
            json!({"raw": [1, 2, {"three": "3"}], "ok": true}),
        ),
    );

    let c = Consumer::new(&store, "q").await.unwrap();
    let msgs = c.dequeue(1000, None).await.unwrap();
    assert_eq!(msgs.len(), expected.len());
    for m in &msgs {
        let (name, v) = &expected[&m.id];
        assert_eq!(&m.payload, v, "payload {name} changed in the round trip");
        assert_eq!(m.queue, "q");
    }
    c.archive_many(&msgs.iter().map(|m| m.id).collect::<Vec<_>>())
        .await
        .unwrap();
    // The archive keeps the payload unchanged too.
    let archived = pgqrs::admin(&store).archived_jobs("q", 1000).await.unwrap();
    assert_eq!(archived.len(), expected.len());
    for a in &archived {
        let (name, v) = &expected[&a.id];
        assert_eq!(&a.payload, v, "archived payload {name} changed");
    }

    // Invalid JSON text is refused before anything is written.
    assert_err!(
        pgqrs::enqueue()
            .message_json("{not json")
            .to("q")
            .execute(&store)
            .await,
        Error::Serialization { .. }
    );
    assert_eq!(metrics(&store, "q").await.pending(), 0);
}

/// A NUL character is valid JSON (`"\u0000"`); it must round-trip or be refused with a clear
/// error before anything is written — never a raw database error.
pub async fn payload_nul_char(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let v = json!({"nul": "a\u{0}b"});
    match pgqrs::enqueue().message(&v).to("q").execute(&store).await {
        Ok(ids) => {
            let c = Consumer::new(&store, "q").await.unwrap();
            let m = c.dequeue(1, None).await.unwrap();
            assert_eq!(m[0].id, ids[0]);
            assert_eq!(m[0].payload, v);
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Validation { .. } | Error::Serialization { .. }),
                "a NUL in a payload gave {e:?}"
            );
            assert_eq!(metrics(&store, "q").await.pending(), 0);
        }
    }
}

/// A deeply nested payload (valid JSON, 300 levels) must be refused at enqueue with a clear
/// error, or round-trip. It must never be accepted and then break the claims of its queue.
pub async fn payload_deep_nesting(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let mut deep = json!(0);
    for _ in 0..300 {
        deep = json!([deep]);
    }
    let before = pgqrs::enqueue()
        .message(&json!("before"))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let r = pgqrs::enqueue()
        .message(&deep)
        .to("q")
        .execute(&store)
        .await;
    let c = Consumer::new(&store, "q").await.unwrap();
    match r {
        Ok(ids) => {
            let got = match c.dequeue(10, None).await {
                Ok(got) => got,
                Err(e) => {
                    let m = metrics(&store, "q").await;
                    panic!(
                        "a 300-deep payload was accepted (id {}) but claiming it fails: {e}; \
                         after the failed claim: {m:?} (the innocent job {} was leased too)",
                        ids[0], before[0]
                    )
                }
            };
            let deep_msg = got
                .iter()
                .find(|m| m.id == ids[0])
                .expect("deep job claimed");
            assert_eq!(deep_msg.payload, deep);
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Validation { .. } | Error::Serialization { .. }),
                "{e:?}"
            );
            let got = c.dequeue(10, None).await.unwrap();
            assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), before);
        }
    }
}

/// Payloads over `max_payload_bytes` are refused and nothing of the batch is written.
pub async fn payload_too_large(db: &TestDb) {
    let store = db.store_with("max_payload_bytes=100").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    // `"` + 98 × x + `"` = 100 bytes: accepted. 101 bytes: refused.
    let fits = json!("x".repeat(98));
    let over = json!("x".repeat(99));
    pgqrs::enqueue()
        .message(&fits)
        .to("q")
        .execute(&store)
        .await
        .expect("exactly the maximum");
    match pgqrs::enqueue()
        .message(&over)
        .to("q")
        .execute(&store)
        .await
    {
        Err(Error::PayloadTooLarge { size, max }) => assert_eq!((size, max), (101, 100)),
        other => panic!("101 bytes: {other:?}"),
    }
    let r = pgqrs::enqueue()
        .message(&json!("small"))
        .message(&over)
        .message(&json!("small too"))
        .to("q")
        .execute(&store)
        .await;
    assert_err!(r, Error::PayloadTooLarge { .. });
    let m = metrics(&store, "q").await;
    assert_eq!(
        m.pending(),
        1,
        "only the first, fitting payload was written: {m:?}"
    );
    let e = pgqrs::enqueue()
        .message(&over)
        .to("q")
        .execute(&store)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_payload_bytes"), "{e}");

    // The default maximum is 1 MiB.
    let big = db.store().await;
    pgqrs::admin(&big).create_queue("big").await.unwrap();
    let mib = 1024 * 1024;
    pgqrs::enqueue()
        .message(&json!("y".repeat(mib - 2)))
        .to("big")
        .execute(&big)
        .await
        .expect("1 MiB payload");
    match pgqrs::enqueue()
        .message(&json!("y".repeat(mib - 1)))
        .to("big")
        .execute(&big)
        .await
    {
        Err(Error::PayloadTooLarge { size, max }) => assert_eq!((size, max), (mib + 1, mib)),
        other => panic!("1 MiB + 1: {other:?}"),
    }
    assert_eq!(metrics(&big, "big").await.pending(), 1);
    let c = Consumer::new(&big, "big").await.unwrap();
    let m = c.dequeue(1, None).await.unwrap();
    assert_eq!(m[0].payload.as_str().map(str::len), Some(mib - 2));
}

/// A batch is inserted in one call; ids come back in the order of the messages.
pub async fn batch_enqueue_ids_in_order(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let n = 200;
    let ids = pgqrs::enqueue()
        .messages((0..n).map(|i| json!({ "i": i })))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(ids.len(), n);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let c = Consumer::new(&store, "q").await.unwrap();
    let msgs = c.dequeue(n, None).await.unwrap();
    assert_eq!(msgs.len(), n);
    for m in &msgs {
        let i = m.payload["i"].as_u64().unwrap() as usize;
        assert_eq!(
            ids[i], m.id,
            "message {i} got id {} but enqueue said {}",
            m.id, ids[i]
        );
    }
    // Claims come oldest first.
    let c2 = Consumer::new(&store, "q").await.unwrap();
    c.release(ids[5], secs(0)).await.unwrap();
    c.release(ids[3], secs(0)).await.unwrap();
    let again = c2.dequeue(1, None).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(
        again[0].id == ids[3] || again[0].id == ids[5],
        "{:?}",
        again[0].id
    );

    // An empty batch writes nothing; a batch without a queue is refused.
    let none = pgqrs::enqueue()
        .messages(Vec::<Value>::new())
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_err!(
        pgqrs::enqueue().messages([1, 2]).execute(&store).await,
        Error::Validation { field: "queue", .. }
    );
    assert_eq!(metrics(&store, "q").await.pending(), n as i64);
}

/// Delayed jobs (by a duration or until a time) are not claimable before their time, and are
/// after it.
pub async fn delayed_enqueue(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let t0 = Utc::now();
    let by_delay = pgqrs::enqueue()
        .message(&json!("delay"))
        .delay(secs(2))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let by_time = pgqrs::enqueue()
        .message(&json!("at"))
        .at(t0 + chrono::Duration::milliseconds(2000))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let past = pgqrs::enqueue()
        .message(&json!("past"))
        .at(t0 - chrono::Duration::seconds(3600))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let now = pgqrs::enqueue()
        .message(&json!("now"))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let m = metrics(&store, "q").await;
    assert_eq!((m.ready, m.delayed), (2, 2), "{m:?}");

    let c = Consumer::new(&store, "q").await.unwrap();
    let got: Vec<i64> = c
        .dequeue(10, None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&past) && got.contains(&now), "{got:?}");
    c.archive_many(&got).await.unwrap();

    sleep_ms(1000).await;
    assert!(
        c.dequeue(10, None).await.unwrap().is_empty(),
        "claimable before its time"
    );
    assert_eq!(metrics(&store, "q").await.delayed, 2);

    let mut seen: Vec<i64> = claim_until(&c, 2, None, secs(5))
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    seen.sort();
    let mut want = vec![by_delay, by_time];
    want.sort();
    assert_eq!(seen, want);
    let elapsed = Utc::now() - t0;
    assert!(
        elapsed >= chrono::Duration::milliseconds(1900),
        "claimed after {elapsed:?}"
    );

    assert_err!(
        pgqrs::enqueue()
            .message(&1)
            .delay(secs(1))
            .at(Utc::now())
            .to("q")
            .execute(&store)
            .await,
        Error::Validation { .. }
    );
}

/// A claim takes a lease: the job is invisible to others until it expires; attempts count.
pub async fn claim_with_visibility_timeout(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&json!("job"))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let a = Consumer::new(&store, "q").await.unwrap();
    let b = Consumer::new(&store, "q").await.unwrap();
    let before = Utc::now();
    let msgs = a.dequeue(5, Some(secs(10))).await.unwrap();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!((m.id, m.attempts, m.queue.as_str()), (id, 1, "q"));
    assert_eq!(m.last_error, None);
    assert!(m.max_attempts >= 1);
    assert!(m.enqueued_at <= Utc::now());
    let lease_left = m.visible_at - before;
    assert!(
        lease_left > chrono::Duration::seconds(8) && lease_left < chrono::Duration::seconds(12),
        "visible_at should be about 10 s ahead, is {lease_left:?}"
    );
    assert!(
        b.dequeue(5, None).await.unwrap().is_empty(),
        "leased jobs are invisible"
    );
    assert!(a.dequeue(5, None).await.unwrap().is_empty());
    let mt = metrics(&store, "q").await;
    assert_eq!((mt.ready, mt.leased), (0, 1), "{mt:?}");

    // Validation of the claim arguments.
    assert_err!(a.dequeue(0, None).await, Error::Validation { .. });
    assert_err!(a.dequeue(1, Some(secs(0))).await, Error::Validation { .. });
    a.archive(id).await.unwrap();
}

/// A lease that expires makes the job claimable again by itself; each claim counts an
/// attempt and gets a new lease token.
pub async fn lease_expiry_redelivery(db: &TestDb) {
    // The store's default visibility timeout comes from the DSN.
    let store = db.store_with("visibility_timeout=1").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    let id = pgqrs::enqueue()
        .message(&json!("job"))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let mut tokens = Vec::new();
    for attempt in 1..=3 {
        let c = Consumer::new(&store, "q").await.unwrap();
        let msgs = c.dequeue(1, None).await.unwrap();
        assert_eq!(msgs.len(), 1, "attempt {attempt}");
        assert_eq!((msgs[0].id, msgs[0].attempts), (id, attempt));
        tokens.push(msgs[0].lease_token);
        assert!(c.dequeue(1, None).await.unwrap().is_empty());
        // The consumer "dies": nobody completes the job.
        drop(c);
        sleep_ms(1200).await;
        let m = metrics(&store, "q").await;
        assert_eq!(
            (m.ready, m.leased),
            (1, 0),
            "expired lease counts as ready: {m:?}"
        );
    }
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), 3, "a new lease token per claim: {tokens:?}");

    let c = Consumer::new(&store, "q").await.unwrap();
    let msgs = c.dequeue(1, Some(secs(30))).await.unwrap();
    assert_eq!(msgs[0].attempts, 4);
    c.archive(id).await.unwrap();
    let archived = pgqrs::admin(&store).archived_jobs("q", 10).await.unwrap();
    assert_eq!(archived[0].attempts, 4);
}

/// A consumer whose lease expired and whose job was claimed again can't archive, delete,
/// extend, release or fail it: `LeaseLost`, and nothing changes. The new holder can.
pub async fn lease_guarded_completion(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages((0..5).map(|i| json!(i)))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let a = Consumer::new(&store, "q").await.unwrap();
    let b = Consumer::new(&store, "q").await.unwrap();
    let a_msgs = a.dequeue(5, Some(secs(1))).await.unwrap();
    assert_eq!(a_msgs.len(), 5);
    sleep_ms(1300).await;
    let b_msgs = b.dequeue(5, Some(secs(60))).await.unwrap();
    assert_eq!(b_msgs.len(), 5, "B claims the expired jobs");
    assert!(b_msgs.iter().all(|m| m.attempts == 2));

    let lost = |r: Result<(), Error>, id: i64, what: &str| match r {
        Err(Error::LeaseLost { id: got }) => assert_eq!(got, id, "{what}"),
        other => panic!("A's {what} after losing the lease: expected LeaseLost, got {other:?}"),
    };
    lost(a.archive(ids[0]).await, ids[0], "archive");
    lost(a.delete(ids[1]).await, ids[1], "delete");
    lost(a.extend(ids[2], secs(60)).await, ids[2], "extend");
    lost(a.release(ids[3], secs(0)).await, ids[3], "release");
    lost(
        a.fail(a_msgs[4].id, "A's error", &RetryPolicy::none())
            .await,
        ids[4],
        "fail",
    );

    // Nothing changed: still five jobs leased by B, none archived, dead or released.
    assert_eq!(counts(&store, "q").await, (0, 0, 5, 0, 0));
    assert!(pgqrs::admin(&store)
        .dead_letters("q", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(Consumer::new(&store, "q")
        .await
        .unwrap()
        .dequeue(5, None)
        .await
        .unwrap()
        .is_empty());

    // B holds the leases and settles every job.
    b.archive(ids[0]).await.expect("B archives");
    b.delete(ids[1]).await.expect("B deletes");
    b.extend(ids[2], secs(60)).await.expect("B extends");
    b.release(ids[3], secs(0)).await.expect("B releases");
    b.fail(b_msgs[4].id, "B's error", &RetryPolicy::none())
        .await
        .expect("B fails");
    b.archive(ids[2])
        .await
        .expect("B archives the extended job");
    assert_eq!(counts(&store, "q").await, (1, 0, 0, 2, 1));
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    assert_eq!(dead[0].last_error.as_deref(), Some("B's error"));

    // Many at once: per-job results. An expired lease nobody took over is still good.
    let c = Consumer::new(&store, "q").await.unwrap();
    let more = pgqrs::enqueue()
        .messages([10, 11])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let got = c.dequeue(10, Some(secs(1))).await.unwrap();
    assert_eq!(got.len(), 3); // the released one + 2 new
    sleep_ms(1300).await;
    let d = Consumer::new(&store, "q").await.unwrap();
    let taken = d.dequeue(1, Some(secs(60))).await.unwrap();
    assert_eq!(taken.len(), 1);
    let all: Vec<i64> = got.iter().map(|m| m.id).collect();
    let r = c.archive_many(&all).await.unwrap();
    let expect: Vec<bool> = all.iter().map(|id| *id != taken[0].id).collect();
    assert_eq!(r, expect, "only the job D took over is refused");
    d.archive(taken[0].id).await.unwrap();
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 5, 1));
    let _ = more;

    // A job this consumer never claimed.
    assert_err!(c.archive(i64::MAX).await, Error::JobNotFound { .. });
}

/// The archive keeps the payload, the attempts and the timestamps; newest first.
pub async fn archive_keeps_payload(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let payload = json!({"order": 17, "items": ["a", "b"], "note": "ünïcödé"});
    let id = pgqrs::enqueue()
        .message(&payload)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let c = Consumer::new(&store, "q").await.unwrap();
    let first = c.dequeue(1, Some(secs(1))).await.unwrap();
    sleep_ms(1200).await;
    let second = c.dequeue(1, Some(secs(30))).await.unwrap();
    assert_eq!(second[0].attempts, 2);
    assert_eq!(first[0].enqueued_at, second[0].enqueued_at);
    c.archive(id).await.unwrap();
    assert_err!(c.archive(id).await, Error::JobNotFound { .. });

    let later = pgqrs::enqueue()
        .message(&json!("later"))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let m = c.dequeue(1, None).await.unwrap();
    assert_eq!(m[0].id, later);
    c.archive(later).await.unwrap();

    let archived = pgqrs::admin(&store).archived_jobs("q", 10).await.unwrap();
    assert_eq!(archived.len(), 2);
    assert_eq!(archived[0].id, later, "newest first");
    let a = &archived[1];
    assert_eq!(a.id, id);
    assert_eq!(a.queue, "q");
    assert_eq!(a.payload, payload);
    assert_eq!(a.attempts, 2);
    assert_eq!(a.enqueued_at, first[0].enqueued_at);
    assert!(a.archived_at >= a.enqueued_at);
    assert!(archived[0].archived_at >= a.archived_at);
    assert_eq!(
        pgqrs::admin(&store)
            .archived_jobs("q", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_err!(
        pgqrs::admin(&store).archived_jobs("q", 0).await,
        Error::Validation { .. }
    );
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 2, 0));
}

/// Deleting a claimed job removes it without archiving.
pub async fn delete_job(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages([1, 2, 3])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let c = Consumer::new(&store, "q").await.unwrap();
    assert_eq!(c.dequeue(3, None).await.unwrap().len(), 3);
    c.delete(ids[0]).await.unwrap();
    assert_eq!(c.delete_many(&ids[1..]).await.unwrap(), vec![true, true]);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));
    assert!(pgqrs::admin(&store)
        .archived_jobs("q", 10)
        .await
        .unwrap()
        .is_empty());
    assert_err!(c.delete(ids[0]).await, Error::JobNotFound { .. });
}

/// Extending a lease keeps the job invisible past its first expiry.
pub async fn extend_lease(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let a = Consumer::new(&store, "q").await.unwrap();
    let b = Consumer::new(&store, "q").await.unwrap();
    assert_eq!(a.dequeue(1, Some(secs(1))).await.unwrap().len(), 1);
    a.extend(id, secs(4)).await.unwrap();
    sleep_ms(1500).await;
    assert!(
        b.dequeue(1, None).await.unwrap().is_empty(),
        "extended lease still holds"
    );
    assert_eq!(metrics(&store, "q").await.leased, 1);
    assert_err!(a.extend(id, secs(0)).await, Error::Validation { .. });
    a.extend(id, secs(4)).await.expect("extend twice");
    a.archive(id)
        .await
        .expect("archive within the extended lease");
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 1, 0));
}

/// Releasing gives the job back (now or after a delay) and gives the attempt back.
pub async fn release_job(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let a = Consumer::new(&store, "q").await.unwrap();
    let b = Consumer::new(&store, "q").await.unwrap();
    let m1 = a.dequeue(1, Some(secs(30))).await.unwrap();
    assert_eq!(m1[0].attempts, 1);
    a.release(id, secs(0)).await.unwrap();
    assert_eq!(counts(&store, "q").await, (1, 0, 0, 0, 0));
    let m2 = b.dequeue(1, Some(secs(30))).await.unwrap();
    assert_eq!(m2.len(), 1, "released job is claimable at once");
    assert_eq!(m2[0].attempts, 1, "the attempt was given back");
    assert_ne!(m2[0].lease_token, m1[0].lease_token);

    b.release(id, secs(2)).await.unwrap();
    assert_eq!(counts(&store, "q").await, (0, 1, 0, 0, 0));
    assert!(
        a.dequeue(1, None).await.unwrap().is_empty(),
        "delayed release"
    );
    let t = std::time::Instant::now();
    let got = claim_until(&a, 1, None, secs(5)).await;
    assert!(t.elapsed() >= ms(1500), "came back after {:?}", t.elapsed());
    assert_eq!((got[0].id, got[0].attempts), (id, 1));
    // Released twice → the lease is gone.
    a.release(id, secs(0)).await.unwrap();
    assert_err!(a.release(id, secs(0)).await, Error::JobNotFound { .. });
}

/// Metrics after a known sequence of operations.
pub async fn metrics_after_sequence(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let t0 = std::time::Instant::now();
    let ids = pgqrs::enqueue()
        .messages(["a", "b", "c", "d", "e"])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    pgqrs::enqueue()
        .messages(["x", "y"])
        .delay(secs(60))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let c = Consumer::new(&store, "q").await.unwrap();
    let m = c.dequeue(3, Some(secs(60))).await.unwrap();
    let got: Vec<i64> = m.iter().map(|m| m.id).collect();
    assert_eq!(got, ids[..3], "claimed oldest first");
    c.archive(ids[0]).await.unwrap(); // a: archived
                                      // b: stays leased
    c.fail(m[2].id, "later", &RetryPolicy::fixed(5, secs(60)))
        .await
        .unwrap(); // c: retry backoff → delayed
    let d = c.dequeue(1, Some(secs(60))).await.unwrap();
    assert_eq!(d[0].id, ids[3]);
    c.fail(d[0].id, "fatal", &RetryPolicy::none())
        .await
        .unwrap(); // d: dead
                   // e: ready
    let wait = ms(1100).saturating_sub(t0.elapsed());
    tokio::time::sleep(wait).await;
    let m = metrics(&store, "q").await;
    assert_eq!(m.queue, "q");
    assert_eq!(
        (m.ready, m.delayed, m.leased, m.archived, m.dead),
        (1, 3, 1, 1, 1),
        "{m:?}"
    );
    assert_eq!(m.pending(), 5);
    assert!(
        m.oldest_ready_age_secs >= 1.0 && m.oldest_ready_age_secs < 60.0,
        "oldest ready age {}",
        m.oldest_ready_age_secs
    );
}

/// Thousands of single-row writes (workflow runs and their steps, queues, workers): the
/// database's write-ahead log must be checkpointed and reused, not grow with every commit.
/// (It did on SQLite while single-row writes were fetched with `fetch_one`: a statement that
/// commits on reset skips the hook that runs the automatic checkpoint.)
pub async fn wal_stays_bounded(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    for i in 0..1_500u32 {
        let ctx = admin.create_workflow("w", &i).await.unwrap();
        let out: pgqrs::Result<u32> = ctx
            .run(|| async {
                let a = ctx
                    .step("a", || async { Ok::<_, pgqrs::Error>(1u32) })
                    .await?;
                let b = ctx
                    .step("b", || async { Ok::<_, pgqrs::Error>(2u32) })
                    .await?;
                Ok(a + b)
            })
            .await;
        assert_eq!(out.unwrap(), 3);
    }
    let path = db.dsn();
    let path = path
        .trim_start_matches("sqlite://")
        .trim_start_matches("turso://");
    // The bound below means something only if the database is in WAL mode and its log is the
    // file measured: a missing file (WAL off, or a different name) fails here, not passes
    // as size 0.
    assert_eq!(
        db.journal_mode().await,
        "wal",
        "the database is not in WAL mode"
    );
    let wal_path = format!("{path}-wal");
    let wal = std::fs::metadata(&wal_path)
        .unwrap_or_else(|e| panic!("the write-ahead log {wal_path} is missing: {e}"))
        .len();
    assert!(
        wal > 0,
        "the write-ahead log {wal_path} is empty: were the writes logged?"
    );
    // 1,500 runs are ~6,000 commits of a few pages each (~60 MB of log if never reused);
    // the automatic checkpoint keeps the log near 1,000 pages (4 MB).
    assert!(
        wal < 16 << 20,
        "the write-ahead log grew to {} MB: it is not being checkpointed",
        wal >> 20
    );
}

/// A write abandoned at any point where it waits (a timeout, a cancelled task, a dropped
/// future) commits all of it or nothing, and the store goes on working: an enqueue of two
/// statements' worth of jobs in one transaction is dropped after 1, 2, 3, ... polls (1 ms
/// apart, more apart as it goes) until one runs to the end. SQLite works on a thread of its
/// own, so these land before, inside and after its transaction. Turso works inside the poll:
/// pgqrs's writes yield only before their transaction (its unit test
/// `cancelled_transaction_rolls_back` drops one halfway).
pub async fn cancelled_write_leaves_nothing(db: &TestDb) {
    use std::task::Poll;
    // 5,000 jobs per INSERT statement: two statements.
    const N: i64 = 5_001;
    let store = db.store_with_queue("q").await;
    let batch = || pgqrs::enqueue().messages((0..N).map(|i| json!({ "i": i })));
    let mut polls = 1usize;
    let mut cancelled_before_commit = 0;
    loop {
        let before = metrics(&store, "q").await.ready;
        let mut write = Box::pin(batch().to("q").execute(&store));
        let mut finished = None;
        for _ in 0..polls {
            if let Poll::Ready(r) = futures_util::poll!(write.as_mut()) {
                finished = Some(r);
                break;
            }
            // (SQLite works on a thread of its own meanwhile; Turso only inside the poll.)
            sleep_ms(1).await;
        }
        drop(write);
        // The next operations work at once, and see a whole batch or none.
        let m = tokio::time::timeout(secs(10), pgqrs::admin(&store).queue_metrics("q"))
            .await
            .unwrap_or_else(|_| panic!("after a write dropped at poll {polls}: the store hangs"))
            .unwrap_or_else(|e| panic!("after a write dropped at poll {polls}: {e}"));
        let added = m.ready - before;
        assert!(
            added == 0 || added == N,
            "a write dropped after {polls} polls left {added} of {N} jobs: {m:?}"
        );
        if let Some(r) = finished {
            assert_eq!(r.unwrap().len() as i64, N);
            assert_eq!(added, N);
            break;
        }
        if added == 0 {
            cancelled_before_commit += 1;
        }
        polls += 1 + polls / 8;
        assert!(polls < 100_000, "the enqueue never finished");
    }
    assert!(cancelled_before_commit > 0);
    // Writes still commit, and what is there can be claimed and completed.
    let before = metrics(&store, "q").await.ready;
    pgqrs::enqueue()
        .message(&json!("after"))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let m = metrics(&store, "q").await;
    assert_eq!((m.ready, m.ready % N), (before + 1, 1), "{m:?}");
    let c = Consumer::new(&store, "q").await.unwrap();
    let got = c.dequeue(10, None).await.unwrap();
    assert_eq!(got.len(), 10);
    c.archive(got[0].id).await.unwrap();
    eprintln!(
        "cancelled_write_leaves_nothing[{:?}]: dropped at polls 1..{polls}, {cancelled_before_commit} before the commit",
        db.kind()
    );
}
