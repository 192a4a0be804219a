//! The seed README's Rust example, `examples/quickstart.rs`, run as written on each backend.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// The example binary cargo built next to this test binary:
/// `target/<profile>/deps/conformance-…` → `target/<profile>/examples/quickstart`.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe
        .parent()?
        .parent()?
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

/// Runs the example binary (what `cargo run --example quickstart` runs) with `PGQRS_DSN`
/// pointing at the test's database, then checks what it left behind. `cargo test` builds the
/// examples; with `--test conformance` alone it does not, and this case then skips (fails under
/// `CI=true`).
pub async fn seed_example(db: &TestDb) {
    let Some(bin) = example_binary() else {
        let msg = "examples/quickstart is not built: run `cargo test` without `--test`, or \
                   `cargo build --release --features full --example quickstart` first";
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let dsn = db.dsn();
    let run = move || {
        Command::new(&bin)
            .env("PGQRS_DSN", &dsn)
            .output()
            .expect("run the quickstart example")
    };
    let out = tokio::task::spawn_blocking(run).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the quickstart example failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("Enqueued: ["), "{stdout}");
    assert!(
        stdout.contains("Processing: Object {") && stdout.contains("send_email"),
        "{stdout}"
    );

    // The example created the queue and handled its one job; it ended by itself.
    let store = db.connect().await;
    pgqrs::admin(&store).verify().await.unwrap();
    assert_eq!(counts(&store, "tasks").await, (0, 0, 0, 1, 0));
    let archived = pgqrs::admin(&store)
        .archived_jobs("tasks", 10)
        .await
        .unwrap();
    assert_eq!(
        archived[0].payload,
        serde_json::json!({"task": "send_email", "to": "user@example.com"})
    );
}
