//! The README's Rust examples are `examples/quickstart.rs`, `examples/tx_enqueue.rs`,
//! `examples/limits.rs`, `examples/schedules.rs` and `examples/workflow.rs`, word for word
//! except for the connection string; this test checks that, then runs them on every backend,
//! except `tx_enqueue` (which uses sqlx's PostgreSQL pool): on PostgreSQL only.

use std::path::PathBuf;
use std::process::Command;

const README_DSN: &str = "\"postgresql://localhost/mydb\"";

/// The code without `//!` lines, whitespace, or the trailing commas rustfmt adds when it
/// breaks a call over several lines.
fn squash(s: &str) -> String {
    let code: String = s
        .lines()
        .filter(|l| !l.trim_start().starts_with("//!"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    code.replace(",)", ")")
}

fn readme_rust_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the repository root");
    let mut blocks = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        blocks.push(body[..end].to_string());
        rest = &body[end..][3..];
    }
    blocks
}

#[test]
fn readme_rust_examples_are_the_example_files() {
    let blocks = readme_rust_blocks();
    assert_eq!(
        blocks.len(),
        5,
        "README has a job-queue, an enqueue-in-a-transaction, a limits, a schedules and a \
         workflow Rust example"
    );
    for (block, name) in blocks.iter().zip([
        "quickstart",
        "tx_enqueue",
        "limits",
        "schedules",
        "workflow",
    ]) {
        assert!(
            block.contains(README_DSN),
            "README {name} example connects to {README_DSN}"
        );
        let path = format!("{}/examples/{name}.rs", env!("CARGO_MANIFEST_DIR"));
        let file = std::fs::read_to_string(&path).expect("example file");
        let default = match name {
            "tx_enqueue" => README_DSN.to_string(),
            _ => format!("\"sqlite://{name}.db\""),
        };
        let expected = squash(&block.replace(
            README_DSN,
            &format!("&std::env::var(\"PGQRS_DSN\").unwrap_or_else(|_| {default}.into())"),
        ));
        assert_eq!(
            squash(&file),
            expected,
            "{path} differs from the README's example (whitespace and //! lines aside)"
        );
    }
}

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/readme-… → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .expect("examples directory")
}

fn run_example(name: &str, dsn: &str) {
    let bin = example(name);
    assert!(
        bin.exists(),
        "{} not built (cargo test builds examples)",
        bin.display()
    );
    let out = Command::new(&bin)
        .env("PGQRS_DSN", dsn)
        .output()
        .expect("run example");
    assert!(
        out.status.success(),
        "{name} on {dsn} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    match name {
        "quickstart" => assert!(stdout.contains("Processing: Object"), "{stdout}"),
        "tx_enqueue" => assert!(stdout.contains("Order 1: job "), "{stdout}"),
        "limits" => assert!(
            stdout.contains("Claimed 2 jobs, one per customer"),
            "{stdout}"
        ),
        "schedules" => assert!(stdout.contains("Tick: {\"kind\":\"beat\"}"), "{stdout}"),
        _ => assert!(stdout.contains("Result: Processed 3 lines"), "{stdout}"),
    }
}

fn postgres_dsn(schema: &str) -> Option<String> {
    match std::env::var("PGQRS_TEST_DSN") {
        Ok(dsn) => {
            let sep = if dsn.contains('?') { '&' } else { '?' };
            Some(format!("{dsn}{sep}schema={schema}_{}", std::process::id()))
        }
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("PGQRS_TEST_DSN is not set: under CI the PostgreSQL tests must run")
        }
        Err(_) => {
            eprintln!("PGQRS_TEST_DSN not set: skipping the PostgreSQL run");
            None
        }
    }
}

#[cfg(feature = "postgres")]
fn drop_schema(dsn: &str) {
    let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
    let schema = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("schema="))
        .expect("schema parameter");
    let base = base.to_string();
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            use sqlx::Executor;
            let pool = sqlx::postgres::PgPool::connect(&base)
                .await
                .expect("connect for cleanup");
            pool.execute(sqlx::AssertSqlSafe(sql))
                .await
                .expect("drop test schema");
        });
}

#[test]
fn readme_examples_run_on_every_backend() {
    let dir = std::env::temp_dir().join(format!("pgqrs-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["quickstart", "limits", "schedules", "workflow"] {
        let db = dir.join(format!("{name}.db"));
        run_example(name, &format!("sqlite://{}", db.display()));
        #[cfg(feature = "postgres")]
        if let Some(dsn) = postgres_dsn(&format!("readme_{name}")) {
            run_example(name, &dsn);
            drop_schema(&dsn);
        }
    }
    // PostgreSQL only; the application's own table goes to the test's schema too (its
    // search_path, through the driver's `options`), dropped with it.
    #[cfg(feature = "postgres")]
    if let Some(dsn) = postgres_dsn("readme_tx_enqueue") {
        let schema = dsn.rsplit_once("schema=").map(|(_, s)| s.to_string());
        let schema = schema.expect("schema parameter");
        run_example(
            "tx_enqueue",
            &format!("{dsn}&options=-c%20search_path%3D{schema}"),
        );
        drop_schema(&dsn);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
