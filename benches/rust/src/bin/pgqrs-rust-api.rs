//! The benchmark's S1–S3 through pgqrs's Rust API: what pgqrs costs without Python in the way.
//! Same command line and output as `pgqrs-ceiling`; run by `benches/run.py`.
//!
//! ```text
//! pgqrs-rust-api s1 --dsn DSN --count 5000
//! pgqrs-rust-api s2 --dsn DSN --count 50000 --batch 500
//! pgqrs-rust-api s3 --dsn DSN --count 20000 --consumers 4 --batch 50 [--analyze ready|leased]
//! ```
//!
//! `--consumers` is the worker's concurrency; with `--batch` above 1 the handler receives
//! batches (`handle_batch`), as the Python driver's `batch=True`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const QUEUE: &str = "bench";

struct Args {
    command: String,
    dsn: String,
    count: usize,
    batch: usize,
    consumers: usize,
    /// S3: `ready` or `leased`: analyze the filled table (see `pgqrs-ceiling analyze-*`).
    analyze: Option<String>,
}

fn parse_args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or(
        "usage: pgqrs-rust-api <s1|s2|s3> --dsn DSN [--count N] [--batch N] [--consumers N] [--analyze ready|leased]",
    )?;
    let mut a = Args {
        command,
        dsn: String::new(),
        count: 1000,
        batch: 1,
        consumers: 1,
        analyze: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dsn" => a.dsn = value,
            "--count" => a.count = value.parse()?,
            "--batch" => a.batch = value.parse()?,
            "--consumers" => a.consumers = value.parse()?,
            "--analyze" => a.analyze = Some(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if a.dsn.is_empty() || a.batch == 0 || a.consumers == 0 {
        return Err("--dsn is required; --batch and --consumers must be at least 1".into());
    }
    Ok(a)
}

fn payload(i: usize) -> Value {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    json!({"i": i, "t": t})
}

async fn setup(dsn: &str) -> Res<pgqrs::Store> {
    let store = pgqrs::connect(dsn).await?;
    pgqrs::admin(&store).install().await?;
    pgqrs::admin(&store).create_queue(QUEUE).await?;
    Ok(store)
}

async fn enqueue_batches(store: &pgqrs::Store, count: usize, batch: usize) -> Res<()> {
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let ids = pgqrs::enqueue()
            .messages((done..done + n).map(payload))
            .to(QUEUE)
            .execute(store)
            .await?;
        done += ids.len();
    }
    Ok(())
}

/// Drain `count` jobs with a worker; returns the seconds until `run` returned.
async fn drain(store: pgqrs::Store, count: usize, consumers: usize, batch: usize) -> Res<f64> {
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let builder = pgqrs::worker(QUEUE)
        .concurrency(consumers)
        .batch_size(batch);
    let worker = if batch > 1 {
        let (handled, all_done) = (handled.clone(), all_done.clone());
        builder.handle_batch(move |msgs: Vec<pgqrs::Message>| {
            let (handled, all_done) = (handled.clone(), all_done.clone());
            async move {
                if handled.fetch_add(msgs.len(), Ordering::Relaxed) + msgs.len() >= count {
                    all_done.notify_one();
                }
                Ok(())
            }
        })
    } else {
        let (handled, all_done) = (handled.clone(), all_done.clone());
        builder.handle(move |_msg: pgqrs::Message| {
            let (handled, all_done) = (handled.clone(), all_done.clone());
            async move {
                if handled.fetch_add(1, Ordering::Relaxed) + 1 >= count {
                    all_done.notify_one();
                }
                Ok(())
            }
        })
    };
    let stop = worker.shutdown_handle();
    let start = Instant::now();
    let run = tokio::spawn(async move { worker.run(&store).await });
    all_done.notified().await;
    stop.shutdown();
    let stats = run.await??;
    let elapsed = start.elapsed().as_secs_f64();
    if stats.succeeded as usize != count {
        return Err(format!(
            "the worker completed {} jobs, expected {count}",
            stats.succeeded
        )
        .into());
    }
    Ok(elapsed)
}

async fn run(a: Args) -> Res<()> {
    let store = setup(&a.dsn).await?;
    let elapsed = match a.command.as_str() {
        "s1" => {
            let start = Instant::now();
            for i in 0..a.count {
                pgqrs::enqueue()
                    .message(&payload(i))
                    .to(QUEUE)
                    .execute(&store)
                    .await?;
            }
            start.elapsed().as_secs_f64()
        }
        "s2" => {
            let start = Instant::now();
            enqueue_batches(&store, a.count, a.batch).await?;
            start.elapsed().as_secs_f64()
        }
        "s3" => {
            enqueue_batches(&store, a.count, 500).await?;
            if let Some(state) = &a.analyze {
                analyze(&a.dsn, state)?;
            }
            drain(store, a.count, a.consumers, a.batch).await?
        }
        other => return Err(format!("unknown command {other:?}").into()),
    };
    println!(
        "{}",
        json!({"value": a.count as f64 / elapsed, "unit": "jobs/s",
               "count": a.count, "elapsed_s": elapsed})
    );
    Ok(())
}

/// Take planner statistics with the sibling `pgqrs-ceiling` binary (it speaks raw SQL).
fn analyze(dsn: &str, state: &str) -> Res<()> {
    let ceiling = std::env::current_exe()?.with_file_name("pgqrs-ceiling");
    let out = std::process::Command::new(&ceiling)
        .args([&format!("analyze-{state}"), "--dsn", dsn])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{} analyze-{state}: {}",
            ceiling.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

fn main() {
    let result = parse_args().and_then(|a| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(a))
    });
    if let Err(e) = result {
        eprintln!("pgqrs-rust-api: {e}");
        std::process::exit(1);
    }
}
