//! A worker process for the chaos harness (`tests/chaos/run.py`, `make chaos`): it consumes a
//! queue (or executes queued workflow runs) through pgqrs's public Rust API until it is told
//! to stop, and appends one line per handler run (or step execution) to a side log *before*
//! the handler returns, so that the harness can count executions outside the database.
//!
//! ```text
//! pgqrs-chaos-worker queue    --dsn DSN --queue Q --log PATH [--concurrency N] [--batch-size N]
//!                             [--heartbeat-ms N] [--handler-ms N] [--max-seconds N]
//! pgqrs-chaos-worker workflow --dsn DSN --queue Q --log PATH [--concurrency N]
//!                             [--heartbeat-ms N] [--handler-ms N] [--max-seconds N]
//! ```
//!
//! `--handler-ms N`: each handler run (each step body) sleeps 0..N ms after writing its log
//! line, so that kills land between a run's side effect and its completion (or journal entry).
//!
//! Log lines (one `write` each, on a file opened with `O_APPEND`, so a SIGKILL never leaves
//! half a line behind another process's):
//! * `J <job id> <pid> <unix time ns>`: a queue handler ran for the job;
//! * `S <run id> <position> <nonce> <pid> <unix time ns>`: a workflow step body ran and is
//!   about to return `nonce` as its output;
//! * `D <run id> <pid> <unix time ns>`: a workflow body finished its last step.
//!
//! It prints `ready` once connected and stops (gracefully: `shutdown()`, then `run` returns)
//! on SIGTERM, when its standard input reaches end of file (the harness died) or after
//! `--max-seconds`; it then prints its stats as one JSON line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The workflow both the Python and the Rust chaos workers register (same name, same steps).
const WORKFLOW: &str = "chaos_chain";
const STEP: &str = "chaos_step";
const STEPS: usize = 5;

struct Args {
    mode: String,
    dsn: String,
    queue: String,
    log: String,
    concurrency: usize,
    batch_size: usize,
    heartbeat_ms: u64,
    handler_ms: u64,
    max_seconds: f64,
}

fn parse_args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: pgqrs-chaos-worker <queue|workflow> --dsn DSN --queue Q --log PATH [...]")?;
    let mut a = Args {
        mode,
        dsn: String::new(),
        queue: String::new(),
        log: String::new(),
        concurrency: 8,
        batch_size: 1,
        heartbeat_ms: 0,
        handler_ms: 0,
        max_seconds: 3600.0,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dsn" => a.dsn = value,
            "--queue" => a.queue = value,
            "--log" => a.log = value,
            "--concurrency" => a.concurrency = value.parse()?,
            "--batch-size" => a.batch_size = value.parse()?,
            "--heartbeat-ms" => a.heartbeat_ms = value.parse()?,
            "--handler-ms" => a.handler_ms = value.parse()?,
            "--max-seconds" => a.max_seconds = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if a.dsn.is_empty() || a.queue.is_empty() || a.log.is_empty() {
        return Err("--dsn, --queue and --log are required".into());
    }
    if a.mode != "queue" && a.mode != "workflow" {
        return Err(format!("unknown mode {:?} (queue or workflow)", a.mode).into());
    }
    Ok(a)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The side log: one unbuffered `write` per line on an `O_APPEND` file.
#[derive(Clone)]
struct SideLog(Arc<Mutex<std::fs::File>>);

impl SideLog {
    fn open(path: &str) -> Res<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self(Arc::new(Mutex::new(f))))
    }

    fn line(&self, text: String) -> std::io::Result<()> {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(format!("{text}\n").as_bytes())
    }
}

/// A handler pause of 0..=`max_ms` milliseconds, spread without a random-number crate.
fn pause(max_ms: u64, seed: i64) -> Duration {
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let x = (seed as u64 ^ (now_ns() as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Duration::from_micros((x >> 11) % (max_ms * 1000 + 1))
}

fn worker_builder(a: &Args) -> pgqrs::WorkerBuilder {
    let b = pgqrs::worker(a.queue.clone())
        .concurrency(a.concurrency)
        .batch_size(a.batch_size);
    if a.heartbeat_ms > 0 {
        b.heartbeat_interval(Duration::from_millis(a.heartbeat_ms))
    } else {
        b
    }
}

fn queue_worker(a: &Args, log: SideLog) -> pgqrs::Worker {
    let handler_ms = a.handler_ms;
    worker_builder(a).handle(move |msg: pgqrs::Message| {
        let log = log.clone();
        async move {
            log.line(format!("J {} {} {}", msg.id, std::process::id(), now_ns()))?;
            let wait = pause(handler_ms, msg.id);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
    })
}

async fn chaos_chain(
    ctx: &pgqrs::Workflow,
    log: &SideLog,
    step_ms: u64,
) -> Result<Vec<String>, pgqrs::BoxError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut nonces = Vec::with_capacity(STEPS);
    for position in 0..STEPS {
        let nonce: String = ctx
            .step(STEP, || async {
                let nonce = format!(
                    "r{}-{}-{}",
                    std::process::id(),
                    now_ns(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                log.line(format!(
                    "S {} {position} {nonce} {} {}",
                    ctx.id(),
                    std::process::id(),
                    now_ns()
                ))?;
                let wait = pause(step_ms, ctx.id() + position as i64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok::<_, pgqrs::BoxError>(nonce)
            })
            .await?;
        nonces.push(nonce);
    }
    log.line(format!(
        "D {} {} {}",
        ctx.id(),
        std::process::id(),
        now_ns()
    ))?;
    Ok(nonces)
}

fn workflow_worker(a: &Args, store: &pgqrs::Store, log: SideLog) -> pgqrs::Worker {
    let heartbeat_ms = a.heartbeat_ms;
    let step_ms = a.handler_ms;
    pgqrs::WorkflowRegistry::new()
        .register(WORKFLOW, move |ctx: pgqrs::Workflow| {
            let log = log.clone();
            async move {
                let nonces = ctx.run(|| chaos_chain(&ctx, &log, step_ms)).await?;
                Ok::<Value, pgqrs::BoxError>(json!(nonces))
            }
        })
        .worker(&a.queue)
        .concurrency(a.concurrency)
        .configure(move |b| {
            if heartbeat_ms > 0 {
                b.heartbeat_interval(Duration::from_millis(heartbeat_ms))
            } else {
                b
            }
        })
        .build(store)
}

async fn run(a: Args) -> Res<()> {
    let log = SideLog::open(&a.log)?;
    let store = pgqrs::connect(&a.dsn).await?;
    let worker = if a.mode == "queue" {
        queue_worker(&a, log)
    } else {
        workflow_worker(&a, &store, log)
    };
    let stop = worker.shutdown_handle();
    // Stop on SIGTERM, on end of standard input (the harness is gone) or at the deadline.
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            stop.shutdown();
        });
    }
    {
        let stop = stop.clone();
        let deadline = Duration::from_secs_f64(a.max_seconds.max(0.0));
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::time::sleep(deadline) => {}
            }
            stop.shutdown();
        });
    }
    println!("ready");
    std::io::stdout().flush()?;
    let stats = worker.run(&store).await?;
    println!(
        "{}",
        json!({"succeeded": stats.succeeded, "failed": stats.failed})
    );
    store.close().await;
    Ok(())
}

fn main() {
    let result = parse_args().and_then(|a| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run(a))
    });
    if let Err(e) = result {
        eprintln!("pgqrs-chaos-worker: {e}");
        std::process::exit(1);
    }
}
