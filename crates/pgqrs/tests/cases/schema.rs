//! The schema: install, verify, versions, upgrades, refusal of a newer schema.

use pgqrs::Error;
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// `install` is idempotent, also when two stores race to do it; `verify` passes after it.
pub async fn install_idempotent(db: &TestDb) {
    let a = db.connect().await;
    let b = db.connect().await;
    assert_eq!(pgqrs::admin(&a).schema_version().await.unwrap(), None);

    let (admin_a, admin_b) = (pgqrs::admin(&a), pgqrs::admin(&b));
    let (ra, rb) = tokio::join!(admin_a.install(), admin_b.install());
    ra.expect("first concurrent install");
    rb.expect("second concurrent install");
    let v = pgqrs::admin(&a)
        .schema_version()
        .await
        .unwrap()
        .expect("a version after install");
    assert!(v >= 1, "version {v}");
    pgqrs::admin(&a)
        .verify()
        .await
        .expect("verify after install");

    // Data survives a repeated install.
    pgqrs::admin(&a).create_queue("keep").await.unwrap();
    pgqrs::enqueue()
        .message(&json!({"k": 1}))
        .to("keep")
        .execute(&a)
        .await
        .unwrap();
    pgqrs::admin(&a).install().await.expect("install again");
    pgqrs::admin(&b)
        .install()
        .await
        .expect("and again from another store");
    assert_eq!(pgqrs::admin(&a).schema_version().await.unwrap(), Some(v));
    pgqrs::admin(&a)
        .verify()
        .await
        .expect("verify after re-install");
    assert_eq!(metrics(&a, "keep").await.ready, 1);
    let names: Vec<String> = pgqrs::admin(&a)
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["keep".to_string()]);
}

/// Before `install`: `verify` and every operation say the schema is not installed.
pub async fn not_installed(db: &TestDb) {
    let store = db.connect().await;
    let admin = pgqrs::admin(&store);
    assert_eq!(admin.schema_version().await.unwrap(), None);
    let e = admin.verify().await.unwrap_err();
    assert!(matches!(e, Error::SchemaNotInstalled { .. }), "{e:?}");
    assert!(e.to_string().contains("install"), "{e}");
    assert_err!(
        admin.create_queue("q").await,
        Error::SchemaNotInstalled { .. }
    );
    assert_err!(admin.list_queues().await, Error::SchemaNotInstalled { .. });
    assert_err!(admin.list_workers().await, Error::SchemaNotInstalled { .. });
    assert_err!(
        pgqrs::enqueue().message(&1).to("q").execute(&store).await,
        Error::SchemaNotInstalled { .. }
    );
    assert_err!(
        pgqrs::dequeue()
            .from("q")
            .handle(|_m| async { Ok(()) })
            .execute(&store)
            .await,
        Error::SchemaNotInstalled { .. }
    );
}

/// A database at migration 1 is upgraded by `install`, keeping its data; `verify` refuses
/// the old version until then.
pub async fn schema_upgrade(db: &TestDb) {
    let store = db.connect().await;
    let admin = pgqrs::admin(&store);
    admin.install_up_to(1).await.expect("install_up_to(1)");
    assert_eq!(admin.schema_version().await.unwrap(), Some(1));
    let e = admin
        .verify()
        .await
        .expect_err("verify must fail on an old schema");
    assert!(
        matches!(
            e,
            Error::SchemaInvalid { .. } | Error::SchemaNotInstalled { .. }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("install"),
        "the message says what to do: {e}"
    );

    // Version 1 already holds queues and jobs, written as version 1's pgqrs wrote them (the
    // queue and enqueue statements of this build name later columns).
    let (jobs, queues) = (db.table("pgqrs_jobs"), db.table("pgqrs_queues"));
    db.exec_raw(&if db.is_postgres() {
        format!(
            "INSERT INTO {queues} (name) VALUES ('old');
             INSERT INTO {jobs} (queue_id, payload, max_attempts)
             SELECT id, '{{\"from\": \"v1\"}}', 5 FROM {queues} WHERE name = 'old'"
        )
    } else {
        format!(
            "INSERT INTO {queues} (name, created_at) VALUES ('old', 0);
             INSERT INTO {jobs} (queue_id, payload, max_attempts, enqueued_at, visible_at)
             SELECT id, '{{\"from\": \"v1\"}}', 5, 0, 0 FROM {queues} WHERE name = 'old'"
        )
    })
    .await;

    admin.install().await.expect("upgrade");
    let v = admin.schema_version().await.unwrap().expect("version");
    assert!(v > 1, "upgraded version {v}");
    admin.verify().await.expect("verify after upgrade");
    admin
        .install()
        .await
        .expect("install after upgrade is a no-op");
    assert_eq!(admin.schema_version().await.unwrap(), Some(v));

    // Fresh install reaches the same version.
    let fresh = TestDb::same_kind(db).await;
    let fs = fresh.store().await;
    assert_eq!(pgqrs::admin(&fs).schema_version().await.unwrap(), Some(v));

    // The data written at version 1 is intact and usable; later tables work.
    let c = pgqrs::Consumer::new(&store, "old").await.unwrap();
    let msgs = c.dequeue(10, None).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, json!({"from": "v1"}));
    assert_eq!(
        msgs[0].priority, 0,
        "jobs from before priorities have the default"
    );
    c.archive(msgs[0].id).await.unwrap();
    admin
        .list_workers()
        .await
        .expect("workers table after upgrade");
    // An upgrade deletes nothing: queues from before retention keep everything.
    let old = admin.list_queues().await.unwrap().remove(0);
    assert_eq!(
        (old.name.as_str(), old.archive_retention, old.dead_retention),
        ("old", pgqrs::Retention::Forever, pgqrs::Retention::Forever)
    );
    assert_eq!(
        admin.prune(None, None).await.unwrap(),
        pgqrs::Pruned::default()
    );
    assert_eq!(metrics(&store, "old").await.archived, 1);
    assert_eq!(
        admin.workflow_retention().await.unwrap(),
        pgqrs::DEFAULT_WORKFLOW_RETENTION
    );
}

/// A schema newer than this pgqrs is refused by `install` and `verify`.
pub async fn schema_too_new(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let v = admin.schema_version().await.unwrap().unwrap();
    let future = v + 100;
    let sql = if db.is_postgres() {
        format!(
            "INSERT INTO {} (version) VALUES ({future})",
            db.table("pgqrs_schema_version")
        )
    } else {
        format!("INSERT INTO pgqrs_schema_version (version, installed_at) VALUES ({future}, 0)")
    };
    db.exec_raw(&sql).await;
    assert_eq!(admin.schema_version().await.unwrap(), Some(future));
    match admin.install().await {
        Err(Error::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (future, v));
        }
        other => panic!("install on a newer schema: expected SchemaTooNew, got {other:?}"),
    }
    assert_err!(admin.verify().await, Error::SchemaTooNew { .. });
    let text = admin.verify().await.unwrap_err().to_string();
    assert!(text.contains("upgrade pgqrs"), "{text}");
}
