//! Durable workflows, on every backend compiled in.
//!
//! ```text
//! PGQRS_TEST_DSN=postgresql://postgres@127.0.0.1:5432/test \
//!   cargo test --release -p pgqrs --features full --test workflows
//! cargo test ... --test workflows -- sqlite::        # one backend
//! cargo test ... --test workflows -- crash           # the crash tests, on every backend
//! ```
//!
//! Each case is `cases::<case>(db: &TestDb)`; [`workflow_cases!`] instantiates it as
//! `<backend>::<case>`, with a fresh database per test (the conformance suite's `common`
//! helpers). Cases that need other processes (the seed example as written, 200 runs shared by
//! 4 worker processes, SIGKILL crash recovery, a SIGSTOPped "zombie" executor) re-execute this
//! test binary selecting only the ignored [`child_process`], which does what `PGQRS_WF_CHILD`
//! says.
//!
//! Side effects are counted outside the workflow tables: in memory ([`Probe`]) for in-process
//! cases, and in an append-only file (one `run step pid` line per step execution, written with
//! `O_APPEND`) when processes are involved.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgqrs::{Permanent, Workflow, WorkflowRegistry};
use pgqrs_macros::{pgqrs_step, pgqrs_workflow};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use common::*;

// =======================================================================================
// Instantiation: every case on every backend.
// =======================================================================================

macro_rules! workflow_cases {
    ($ctor:path) => {
        workflow_cases!(@cases $ctor;
            seed_workflow,
            seed_example_process,
            replay_after_crash,
            loop_positions,
            non_determinism,
            retry_fixed_backoff,
            retry_exponential_backoff,
            retry_exhausted_fails_run,
            permanent_error_not_retried,
            retry_delay_survives_resume,
            cancel_between_steps,
            cancel_during_step,
            cancel_pending_run,
            cancel_after_last_step,
            same_context_concurrent_calls,
            failed_run_idempotent,
            lease_locking,
            step_output_not_serializable,
            workflow_output_not_serializable,
            input_not_serializable,
            queue_worker_in_process,
            queue_200_runs_4_processes,
            crash_sigkill_each_step,
            crash_queue_worker_process,
            zombie_executor_cannot_record,
            edge_inputs,
            edge_step_outputs,
            edge_workflow_outputs,
        );
    };
    (@cases $ctor:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(db) = $ctor().await else { return };
                $crate::common::bounded(stringify!($case), $crate::cases::$case(&db)).await;
            }
        )*
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    workflow_cases!(crate::common::TestDb::sqlite);
}

#[cfg(feature = "postgres")]
mod postgres {
    workflow_cases!(crate::common::TestDb::postgres);
}

#[cfg(feature = "turso")]
mod turso {
    workflow_cases!(crate::common::TestDb::turso);

    /// The one-process-at-a-time limit is a typed error, not a hang or a corrupt file: while
    /// this process has the database open, a child process's `connect` fails with
    /// `Error::Connection` saying so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_process_is_refused() {
        use super::*;
        let db = TestDb::turso().await.unwrap();
        let store = db.store().await;
        let dir = tmpdir();
        let input = ChainInput {
            log: dir.path().join("steps.log").display().to_string(),
            steps: 1,
            step_ms: 0,
        };
        let id = pgqrs::admin(&store)
            .create_workflow("chain", &input)
            .await
            .unwrap()
            .id();
        let mut p = Proc::spawn(
            "second",
            dir.path(),
            "run",
            &[(DSN_ENV, db.dsn()), (RUN_ENV, id.to_string())],
        );
        let (st, _) = p.wait(secs(60)).await;
        let err = p.stderr();
        assert!(!st.success(), "the second process connected: {err}");
        assert!(
            err.contains("Connection") && err.contains("one process at a time"),
            "{err}"
        );
        // This process is unaffected.
        assert_eq!(run_of(&store, id).await.status, pgqrs::RunStatus::Pending);
        // Once it closes the store, another process may open the file.
        store.close().await;
        let mut p = Proc::spawn(
            "after",
            dir.path(),
            "run",
            &[(DSN_ENV, db.dsn()), (RUN_ENV, id.to_string())],
        );
        let out = p.wait_ok(secs(60)).await;
        assert_eq!(wfresult(&out), "ok 1", "{out}");
    }
}

// =======================================================================================
// The seed README's workflow.
// =======================================================================================

/// The README's `main`, as written: only the connection string comes from `PGQRS_DSN` (as in
/// `examples/workflow.rs`). Run in a child process by `seed_example_process`.
///
/// (`examples/workflow.rs` itself cannot be `include!`d here the way the conformance suite
/// includes `examples/quickstart.rs`: it starts with `//!` inner doc comments, which are
/// rejected inside `include!`; and through `#[path]` its items are private.)
mod seed_main {
    use super::seed_counted::data_pipeline;

    #[tokio::main]
    pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
        let dsn = std::env::var("PGQRS_DSN").unwrap_or_else(|_| "sqlite://workflow.db".into());
        let store = pgqrs::connect(&dsn).await?;
        pgqrs::admin(&store).install().await?;

        let url = "https://example.com/data.txt";
        let workflow = pgqrs::admin(&store)
            .create_workflow("data_pipeline", &url)
            .await?;

        let result = data_pipeline(&workflow, url).await?;
        println!("Result: {}", result);
        Ok(())
    }
}

/// The seed's workflow as in `examples/workflow.rs` (same signatures, `fetch_data` reads a
/// local stand-in), with step executions counted (keyed by the URL, so that cases running at
/// the same time do not see each other's counts).
mod seed_counted {
    use super::*;

    pub static FETCHED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    pub static PROCESSED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// (fetch_data, process_data) executions for `url`.
    pub fn counts(url: &str) -> (usize, usize) {
        let f = FETCHED.lock().unwrap().iter().filter(|u| *u == url).count();
        let p = PROCESSED
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.contains(url))
            .count();
        (f, p)
    }

    #[pgqrs_step]
    pub async fn fetch_data(ctx: &pgqrs::Workflow, url: &str) -> Result<String, anyhow::Error> {
        FETCHED.lock().unwrap().push(url.to_string());
        Ok(format!("line 1 of {url}\nline 2\nline 3\n"))
    }

    #[pgqrs_step]
    pub async fn process_data(ctx: &pgqrs::Workflow, data: String) -> Result<i32, anyhow::Error> {
        PROCESSED.lock().unwrap().push(data.clone());
        Ok(data.lines().count() as i32)
    }

    #[pgqrs_workflow]
    pub async fn data_pipeline(ctx: &pgqrs::Workflow, url: &str) -> Result<String, anyhow::Error> {
        let data = fetch_data(ctx, url).await?;
        let count = process_data(ctx, data).await?;
        Ok(format!("Processed {} lines", count))
    }
}

// =======================================================================================
// In-process probes and the workflows that use them.
// =======================================================================================

const NONE: u32 = u32::MAX;

/// Counts executions of step bodies by index; can make a step hang or fail for good.
struct Probe {
    hits: Vec<AtomicUsize>,
    hang_at: AtomicU32,
    fail_at: AtomicU32,
    /// Notified when a step starts hanging.
    entered: Notify,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            hits: (0..16).map(|_| AtomicUsize::new(0)).collect(),
            hang_at: AtomicU32::new(NONE),
            fail_at: AtomicU32::new(NONE),
            entered: Notify::new(),
        }
    }

    fn hang_at(self, i: u32) -> Self {
        self.hang_at.store(i, Ordering::SeqCst);
        self
    }

    fn fail_at(self, i: u32) -> Self {
        self.fail_at.store(i, Ordering::SeqCst);
        self
    }

    fn hit(&self, i: u32) {
        self.hits[i as usize].fetch_add(1, Ordering::SeqCst);
    }

    /// Executions of steps `0..n`.
    fn hits(&self, n: usize) -> Vec<usize> {
        self.hits[..n]
            .iter()
            .map(|h| h.load(Ordering::SeqCst))
            .collect()
    }
}

/// Lets a case hold a workflow at a point and release it.
#[derive(Default)]
struct Gate {
    reached: Notify,
    go: Notify,
    open: AtomicBool,
}

impl Gate {
    async fn pass(&self) {
        if !self.open.load(Ordering::SeqCst) {
            self.reached.notify_one();
            self.go.notified().await;
        }
    }
}

#[pgqrs_step]
async fn probe_step(ctx: &Workflow, p: &Probe, i: u32) -> anyhow::Result<u32> {
    p.hit(i);
    if p.fail_at.load(Ordering::SeqCst) == i {
        return Err(Permanent::new(format!("step {i} failed for good")).into());
    }
    if p.hang_at.load(Ordering::SeqCst) == i {
        p.entered.notify_one();
        std::future::pending::<()>().await;
    }
    Ok(i * 100)
}

#[pgqrs_step]
async fn gated_step(ctx: &Workflow, p: &Probe, g: &Gate, i: u32) -> anyhow::Result<u32> {
    p.hit(i);
    g.pass().await;
    Ok(i * 100)
}

/// The same step, `n` times in a loop.
#[pgqrs_workflow]
async fn probe_wf(ctx: &Workflow, p: &Probe, n: u32) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(probe_step(ctx, p, i).await?);
    }
    Ok(out)
}

/// Step 0, a gate in the workflow body (between steps), step 1.
#[pgqrs_workflow]
async fn gate_between_wf(ctx: &Workflow, p: &Probe, g: &Gate) -> anyhow::Result<u32> {
    let a = probe_step(ctx, p, 0).await?;
    g.pass().await;
    let b = probe_step(ctx, p, 1).await?;
    Ok(a + b)
}

/// Step 0, step 1 held at a gate inside its body, step 2.
#[pgqrs_workflow]
async fn gate_inside_wf(ctx: &Workflow, p: &Probe, g: &Gate) -> anyhow::Result<Vec<u32>> {
    let a = probe_step(ctx, p, 0).await?;
    let b = gated_step(ctx, p, g, 1).await?;
    let c = probe_step(ctx, p, 2).await?;
    Ok(vec![a, b, c])
}

/// Step 0, then a gate in the body after the last step.
#[pgqrs_workflow]
async fn gate_after_wf(ctx: &Workflow, p: &Probe, g: &Gate) -> anyhow::Result<u32> {
    let a = probe_step(ctx, p, 0).await?;
    g.pass().await;
    Ok(a + 1)
}

/// Returns `v` from a step, then runs step 1 (which the case may make hang).
#[pgqrs_workflow]
async fn value_wf(
    ctx: &Workflow,
    p: &Probe,
    v: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let out = value_step(ctx, p, v).await?;
    probe_step(ctx, p, 1).await?;
    Ok(out)
}

#[pgqrs_step]
async fn value_step(
    ctx: &Workflow,
    p: &Probe,
    v: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    p.hit(0);
    Ok(v.clone())
}

/// Returns `v` as the run's output.
#[pgqrs_workflow]
async fn value_out_wf(
    ctx: &Workflow,
    p: &Probe,
    v: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    probe_step(ctx, p, 1).await?;
    Ok(v.clone())
}

/// A NUL character in a string; 300 levels of nesting (serde_json parses at most 128).
fn edge_values() -> Vec<(&'static str, serde_json::Value)> {
    let mut deep = serde_json::json!(0);
    for _ in 0..300 {
        deep = serde_json::json!([deep]);
    }
    vec![("nul", serde_json::json!({"s": "a\u{0}b"})), ("deep", deep)]
}

fn typed_rejection(e: &pgqrs::Error) -> bool {
    matches!(
        e,
        pgqrs::Error::Serialization { .. } | pgqrs::Error::Validation { .. }
    )
}

// --- non-determinism: version 1 journals A, B (then hangs); version 2 calls A, C ---------

#[pgqrs_step]
async fn step_a(ctx: &Workflow, p: &Probe) -> anyhow::Result<String> {
    p.hit(0);
    Ok("a".into())
}

#[pgqrs_step]
async fn step_b(ctx: &Workflow, p: &Probe) -> anyhow::Result<String> {
    p.hit(1);
    Ok("b".into())
}

#[pgqrs_step]
async fn step_c(ctx: &Workflow, p: &Probe) -> anyhow::Result<String> {
    p.hit(2);
    Ok("c".into())
}

#[pgqrs_workflow]
async fn nd_v1(ctx: &Workflow, p: &Probe) -> anyhow::Result<String> {
    let a = step_a(ctx, p).await?;
    let b = step_b(ctx, p).await?;
    let h = probe_step(ctx, p, 3).await?;
    Ok(format!("{a}{b}{h}"))
}

#[pgqrs_workflow]
async fn nd_v2(ctx: &Workflow, p: &Probe) -> anyhow::Result<String> {
    let a = step_a(ctx, p).await?;
    let c = step_c(ctx, p).await?;
    Ok(format!("{a}{c}"))
}

// --- retries ----------------------------------------------------------------------------

/// A step body that fails its first `fail_first` attempts (or always, permanently).
#[derive(Default)]
struct Flaky {
    fail_first: usize,
    permanent: bool,
    /// When each attempt started.
    times: Mutex<Vec<Instant>>,
    /// The step's journal record as seen at the start of attempts 2, 3, ...
    seen: Mutex<Vec<Option<pgqrs::StepRecord>>>,
}

impl Flaky {
    fn attempts(&self) -> usize {
        self.times.lock().unwrap().len()
    }

    /// Gaps between consecutive attempt starts.
    fn gaps(&self) -> Vec<Duration> {
        let t = self.times.lock().unwrap();
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

async fn flaky_body(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    let n = {
        let mut t = f.times.lock().unwrap();
        t.push(Instant::now());
        t.len()
    };
    if n > 1 {
        let steps = ctx.steps().await?;
        f.seen.lock().unwrap().push(steps.last().cloned());
    }
    if f.permanent {
        return Err(Permanent::new("bad input: not retryable").into());
    }
    if n <= f.fail_first {
        anyhow::bail!("transient failure #{n}");
    }
    Ok(n)
}

#[pgqrs_step(max_attempts = 3, fixed_backoff_ms = 200)]
async fn flaky_fixed(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    flaky_body(ctx, f).await
}

#[pgqrs_step(max_attempts = 4, backoff_ms = 100, max_backoff_ms = 1000)]
async fn flaky_exp(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    flaky_body(ctx, f).await
}

#[pgqrs_step(max_attempts = 3, fixed_backoff_ms = 1500)]
async fn flaky_slow(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    flaky_body(ctx, f).await
}

#[pgqrs_workflow]
async fn flaky_fixed_wf(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    flaky_fixed(ctx, f).await
}

#[pgqrs_workflow]
async fn flaky_exp_wf(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    flaky_exp(ctx, f).await
}

#[pgqrs_workflow]
async fn flaky_slow_wf(ctx: &Workflow, f: &Flaky) -> anyhow::Result<usize> {
    flaky_slow(ctx, f).await
}

// --- serialization ----------------------------------------------------------------------

/// Serializable by serde, but not to JSON: map keys must be strings.
type BadMap = BTreeMap<(u8, u8), u8>;

fn bad_map() -> BadMap {
    [((1, 2), 3)].into_iter().collect()
}

#[pgqrs_step]
async fn bad_output_step(ctx: &Workflow, p: &Probe) -> anyhow::Result<BadMap> {
    p.hit(1);
    Ok(bad_map())
}

#[pgqrs_workflow]
async fn bad_step_wf(ctx: &Workflow, p: &Probe) -> anyhow::Result<usize> {
    probe_step(ctx, p, 0).await?;
    let m = bad_output_step(ctx, p).await?;
    probe_step(ctx, p, 2).await?;
    Ok(m.len())
}

#[pgqrs_workflow]
async fn bad_output_wf(ctx: &Workflow, p: &Probe) -> anyhow::Result<BadMap> {
    probe_step(ctx, p, 0).await?;
    Ok(bad_map())
}

// =======================================================================================
// The "chain" workflow, shared by processes: N steps, each appending a line to a log file.
// =======================================================================================

/// Input of a chain run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChainInput {
    /// Append-only side-effect log: one `run step pid` line per step execution.
    log: String,
    steps: u32,
    #[serde(default)]
    step_ms: u64,
}

/// What a chain of `n` steps returns: its step numbers as decimal digits (5 → 12345).
fn chain_output(n: u32) -> u64 {
    (1..=n as u64).fold(0, |acc, i| acc * 10 + i)
}

const CHILD_ENV: &str = "PGQRS_WF_CHILD";
/// Child processes use small pools: a case may start several at once, next to other suites
/// sharing the PostgreSQL server's connection limit.
const CHILD_POOL: &str = "pool_size=4";
const DSN_ENV: &str = "PGQRS_WF_DSN";
const RUN_ENV: &str = "PGQRS_WF_RUN";
const QUEUE_ENV: &str = "PGQRS_WF_QUEUE";
const EXPECT_ENV: &str = "PGQRS_WF_EXPECT";
/// In a child: the step number (1-based) at which to stop inside the step body.
const CRASH_AT_ENV: &str = "PGQRS_WF_CRASH_AT";
/// Written inside step CRASH_AT, before stopping.
const MARKER_ENV: &str = "PGQRS_WF_MARKER";
/// If set, step CRASH_AT continues once this file exists; otherwise it sleeps 10 minutes.
const RELEASE_ENV: &str = "PGQRS_WF_RELEASE";
/// If set, a `run` child retries while the run is locked by another executor.
const RETRY_LOCKED_ENV: &str = "PGQRS_WF_RETRY_LOCKED";

fn append_line(path: &str, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    // One write(2) per line on an O_APPEND file: lines of concurrent processes don't mix.
    f.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("append to {path}: {e}"));
}

/// `(run, step, pid)` per line of a chain log.
fn read_log(path: &Path) -> Vec<(i64, u32, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "malformed log line {l:?}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[pgqrs_step]
async fn chain_step(ctx: &Workflow, input: &ChainInput, i: u32, acc: u64) -> anyhow::Result<u64> {
    append_line(
        &input.log,
        &format!("{} {i} {}", ctx.id(), std::process::id()),
    );
    if input.step_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.step_ms)).await;
    }
    if let Some(f) = FREEZE.with(|f| f.borrow().clone()) {
        if f.at == i {
            f.freeze_here().await;
        }
    }
    let crash_at = std::env::var(CRASH_AT_ENV)
        .ok()
        .and_then(|s| s.parse::<u32>().ok());
    if crash_at == Some(i) {
        if let Ok(marker) = std::env::var(MARKER_ENV) {
            std::fs::write(&marker, format!("{}", std::process::id()))?;
        }
        match std::env::var(RELEASE_ENV) {
            Ok(release) => {
                while !Path::new(&release).exists() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(600)).await,
        }
    }
    Ok(acc * 10 + i as u64)
}

/// A thread's frozen executor (the Turso zombie): step `at` of a chain run on the thread that
/// set [`FREEZE`] blocks that whole thread (its runtime, and so the run's lease renewals)
/// until released, the way SIGSTOP freezes a process.
struct Freeze {
    at: u32,
    state: Mutex<FreezeState>,
    cond: std::sync::Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FreezeState {
    /// Not yet at the freeze point.
    Before,
    Frozen,
    /// Let the runtime run its other tasks for a moment, then freeze again.
    Thaw,
    Released,
}

thread_local! {
    static FREEZE: std::cell::RefCell<Option<std::sync::Arc<Freeze>>> =
        const { std::cell::RefCell::new(None) };
}

impl Freeze {
    fn new(at: u32) -> Freeze {
        Freeze {
            at,
            state: Mutex::new(FreezeState::Before),
            cond: std::sync::Condvar::new(),
        }
    }

    fn state(&self) -> FreezeState {
        *self.state.lock().unwrap()
    }

    fn set(&self, st: FreezeState) {
        *self.state.lock().unwrap() = st;
        self.cond.notify_all();
    }

    /// In the frozen thread: block it until released (a thaw lets it run for 20 ms).
    async fn freeze_here(&self) {
        self.set(FreezeState::Frozen);
        loop {
            {
                let mut st = self.state.lock().unwrap();
                while *st == FreezeState::Frozen {
                    st = self.cond.wait(st).unwrap();
                }
                if *st == FreezeState::Released {
                    return;
                }
                *st = FreezeState::Frozen;
            }
            sleep_ms(20).await;
        }
    }
}

#[pgqrs_workflow]
async fn chain(ctx: &Workflow, input: ChainInput) -> anyhow::Result<u64> {
    let mut acc = 0;
    for i in 1..=input.steps {
        acc = chain_step(ctx, &input, i, acc).await?;
    }
    Ok(acc)
}

#[pgqrs_step]
async fn doomed(ctx: &Workflow) -> anyhow::Result<u32> {
    Err(Permanent::new("doomed step gives up").into())
}

#[pgqrs_workflow]
async fn doomed_wf(ctx: &Workflow) -> anyhow::Result<u32> {
    doomed(ctx).await
}

/// The workflows a queue worker knows.
fn registry() -> WorkflowRegistry {
    WorkflowRegistry::new()
        .register("chain", |ctx: Workflow| async move {
            let input: ChainInput = serde_json::from_value(ctx.input().clone())?;
            chain(&ctx, input).await
        })
        .register(
            "doomed",
            |ctx: Workflow| async move { doomed_wf(&ctx).await },
        )
}

// =======================================================================================
// Child processes.
// =======================================================================================

/// Not a test of its own: the cases run this binary again with only this test selected
/// (`--ignored --exact child_process`) and `PGQRS_WF_CHILD` set to `example`, `run` or
/// `worker`. Ignored in a normal run, so that it never reports a pass for checking nothing;
/// run without `PGQRS_WF_CHILD`, it fails.
#[test]
#[ignore = "the entry point of the cases' child processes (run with PGQRS_WF_CHILD set)"]
fn child_process() {
    let mode = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!("child_process is run by the workflow cases in a child process with {CHILD_ENV} set to example, run or worker")
    });
    if mode == "example" {
        if let Err(e) = seed_main::main() {
            panic!("the workflow example failed: {e}");
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match mode.as_str() {
            "run" => child_run().await,
            "worker" => child_worker().await,
            other => panic!("unknown {CHILD_ENV}={other:?}"),
        }
    });
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Execute (or resume) chain run `PGQRS_WF_RUN` with a fresh context; print `WFRESULT ...`.
async fn child_run() {
    let store = pgqrs::connect(&env(DSN_ENV)).await.expect("connect");
    let id: i64 = env(RUN_ENV).parse().unwrap();
    let retry_locked = std::env::var_os(RETRY_LOCKED_ENV).is_some();
    let start = Instant::now();
    loop {
        let ctx = pgqrs::admin(&store)
            .get_workflow(id)
            .await
            .expect("get_workflow");
        let input: ChainInput = serde_json::from_value(ctx.input().clone()).unwrap();
        match chain(&ctx, input).await {
            Ok(v) => {
                println!("WFRESULT ok {v}");
                return;
            }
            Err(e) if retry_locked && is_locked(&e) && start.elapsed() < secs(60) => {
                sleep_ms(50).await;
            }
            Err(e) => {
                println!("WFRESULT err {}", describe(&e));
                return;
            }
        }
    }
}

/// A registry worker on `PGQRS_WF_QUEUE` until `PGQRS_WF_EXPECT` runs have finished.
async fn child_worker() {
    let store = pgqrs::connect(&env(DSN_ENV)).await.expect("connect");
    let queue = env(QUEUE_ENV);
    let expect: usize = env(EXPECT_ENV).parse().unwrap();
    let w = registry()
        .worker(&queue)
        .concurrency(4)
        .configure(|b| b.poll_interval(ms(50)).heartbeat_interval(ms(250)))
        .build(&store);
    let (stop, task) = spawn_worker(&store, w);
    let admin = pgqrs::admin(&store);
    let start = Instant::now();
    loop {
        match admin.list_workflows(None, 100_000).await {
            Ok(runs) if runs.iter().filter(|r| r.status.is_finished()).count() >= expect => break,
            Ok(_) => {}
            Err(e) => eprintln!("child worker: list_workflows: {e}"),
        }
        assert!(
            start.elapsed() < secs(120),
            "child worker: runs not finished within 120 s"
        );
        sleep_ms(100).await;
    }
    stop.shutdown();
    let stats = task.await.expect("worker task").expect("worker run");
    println!(
        "WFSTATS pid={} succeeded={} failed={} lease_lost={} released={}",
        std::process::id(),
        stats.succeeded,
        stats.failed,
        stats.lease_lost,
        stats.released
    );
}

/// A child process running this binary's [`child_process`] test; killed if still running
/// when dropped. Its stdout and stderr go to files.
struct Proc {
    child: Child,
    label: String,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(label: &str, dir: &Path, mode: &str, envs: &[(&str, String)]) -> Proc {
        let exe = std::env::current_exe().expect("current test binary");
        let out = dir.join(format!("{label}.stdout"));
        let err = dir.join(format!("{label}.stderr"));
        let mut cmd = Command::new(exe);
        cmd.args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn child process");
        Proc {
            child,
            label: label.to_string(),
            out,
            err,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Wait for the child to exit (panics after `within`); its status and stdout.
    async fn wait(&mut self, within: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return (st, self.stdout());
            }
            if start.elapsed() > within {
                panic!(
                    "child {} did not exit within {within:?}\nstdout:\n{}\nstderr:\n{}",
                    self.label,
                    self.stdout(),
                    self.stderr()
                );
            }
            sleep_ms(20).await;
        }
    }

    /// Wait for a successful exit in which the child test ran; its stdout.
    async fn wait_ok(&mut self, within: Duration) -> String {
        let (st, out) = self.wait(within).await;
        assert!(
            st.success() && out.contains("1 passed"),
            "child {} failed ({st}):\nstdout:\n{out}\nstderr:\n{}",
            self.label,
            self.stderr()
        );
        out
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("kill child");
        self.child.wait().expect("wait child")
    }

    /// Send a signal by name (`STOP`, `CONT`).
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-CONT".to_string(), self.pid().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `WFRESULT ...` line of a `run` child.
fn wfresult(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split_once("WFRESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no WFRESULT line in:\n{out}"))
        .to_string()
}

// =======================================================================================
// Small helpers.
// =======================================================================================

fn pgqrs_error(e: &anyhow::Error) -> Option<&pgqrs::Error> {
    e.downcast_ref::<pgqrs::Error>()
}

fn is_locked(e: &anyhow::Error) -> bool {
    matches!(pgqrs_error(e), Some(pgqrs::Error::WorkflowLocked { .. }))
}

fn describe(e: &anyhow::Error) -> String {
    match pgqrs_error(e) {
        Some(pe) => format!("{} {pe}", kind_of(pe)),
        None => format!("other {e}"),
    }
}

/// Call `f` (which makes a fresh attempt at the run each time) until it is no longer
/// `WorkflowLocked`, i.e. until the previous owner's lease expired.
async fn until_unlocked<T, Fut>(what: &str, mut f: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Err(e) if is_locked(&e) => {
                assert!(
                    start.elapsed() < secs(30),
                    "{what}: still locked after 30 s"
                );
                sleep_ms(50).await;
            }
            r => return r,
        }
    }
}

/// Drive `fut` until `signal` fires, then drop it: the executor "dies" in the middle.
async fn crash_when<F>(fut: F, signal: &Notify)
where
    F: Future,
    F::Output: std::fmt::Debug,
{
    tokio::select! {
        r = fut => panic!("the run was expected to stop in the middle, it returned {r:?}"),
        _ = signal.notified() => {}
    }
}

async fn run_of(store: &pgqrs::Store, id: i64) -> pgqrs::WorkflowRun {
    pgqrs::admin(store)
        .workflow_run(id)
        .await
        .expect("workflow_run")
}

async fn steps_of(store: &pgqrs::Store, id: i64) -> Vec<pgqrs::StepRecord> {
    pgqrs::admin(store)
        .workflow_steps(id)
        .await
        .expect("workflow_steps")
}

fn names(steps: &[pgqrs::StepRecord]) -> Vec<(i32, String, pgqrs::StepStatus)> {
    steps
        .iter()
        .map(|s| (s.position, s.name.clone(), s.status))
        .collect()
}

/// Cases where several processes use one database at once cannot run on Turso: Turso 0.8
/// lets one process at a time open a database file (its multi-process WAL is experimental),
/// and a second process gets `Error::Connection` at `connect` (checked by
/// `turso::second_process_is_refused`). Prints the skip and returns true there.
/// A store for a look at the database from the test; close it when done (on Turso, so that
/// the next child process may open the file).
async fn look(dsn: &str) -> pgqrs::Store {
    pgqrs::connect(dsn)
        .await
        .unwrap_or_else(|e| panic!("connect {dsn}: {e}"))
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pgqrs-workflows-")
        .tempdir()
        .expect("temp dir")
}

// =======================================================================================
// The cases.
// =======================================================================================

mod cases {
    use super::*;
    use pgqrs::{Error, RunStatus, StepStatus};
    use serde_json::json;

    /// The seed's workflow runs and returns the right result; calling it again with the same
    /// context or a fresh one returns the stored result and runs no step.
    pub async fn seed_workflow(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let url = format!(
            "https://example.com/{:?}-{:016x}.txt",
            db.kind(),
            fastrand::u64(..)
        );

        let wf = admin.create_workflow("data_pipeline", &url).await.unwrap();
        let run = run_of(&store, wf.id()).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Pending, 0));
        assert_eq!(run.input, json!(url));

        let result = seed_counted::data_pipeline(&wf, &url).await.unwrap();
        assert_eq!(result, "Processed 3 lines");
        assert_eq!(seed_counted::counts(&url), (1, 1));

        let run = run_of(&store, wf.id()).await;
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.output, Some(json!("Processed 3 lines")));
        assert_eq!((run.error.as_deref(), run.attempts), (None, 1));
        assert!(run.finished_at.is_some());
        let steps = steps_of(&store, wf.id()).await;
        assert_eq!(
            names(&steps),
            vec![
                (0, "fetch_data".into(), StepStatus::Succeeded),
                (1, "process_data".into(), StepStatus::Succeeded)
            ]
        );
        assert_eq!(
            steps[0].output,
            Some(json!(format!("line 1 of {url}\nline 2\nline 3\n")))
        );
        assert_eq!(steps[1].output, Some(json!(3)));
        assert_eq!((steps[0].attempts, steps[1].attempts), (1, 1));

        // Same context again: stored result, nothing runs.
        assert_eq!(
            seed_counted::data_pipeline(&wf, &url).await.unwrap(),
            result
        );
        // A fresh context for the run.
        let again = admin.get_workflow(wf.id()).await.unwrap();
        assert_eq!(
            seed_counted::data_pipeline(&again, &url).await.unwrap(),
            result
        );
        assert_eq!(
            seed_counted::counts(&url),
            (1, 1),
            "a finished run ran a step again"
        );
        assert_eq!(
            run_of(&store, wf.id()).await,
            run,
            "a finished run was modified"
        );
        assert_eq!(steps_of(&store, wf.id()).await, steps);

        // A second run, with the README's URL.
        let url2 = "https://example.com/data.txt";
        let wf2 = admin.create_workflow("data_pipeline", &url2).await.unwrap();
        let before = seed_counted::counts(url2);
        let r2 = seed_counted::data_pipeline(&wf2, url2).await.unwrap();
        assert_eq!(r2, "Processed 3 lines");
        let run2 = run_of(&store, wf2.id()).await;
        let steps2 = steps_of(&store, wf2.id()).await;
        assert_eq!(run2.status, RunStatus::Succeeded);
        assert_eq!(steps2.len(), 2);
        let fresh = admin.get_workflow(wf2.id()).await.unwrap();
        assert_eq!(seed_counted::data_pipeline(&fresh, url2).await.unwrap(), r2);
        assert_eq!(run_of(&store, wf2.id()).await, run2);
        assert_eq!(steps_of(&store, wf2.id()).await, steps2);
        let after = seed_counted::counts(url2);
        // (Other cases use this URL too, so only this case's own effect is bounded below.)
        assert!(after.0 > before.0 && after.1 > before.1);

        let ok = admin
            .list_workflows(Some(RunStatus::Succeeded), 10)
            .await
            .unwrap();
        assert_eq!(
            ok.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![wf.id(), wf2.id()]
        );
    }

    /// `examples/workflow.rs` as written (only the connection string changed), in a process of
    /// its own.
    pub async fn seed_example_process(db: &TestDb) {
        let dir = tmpdir();
        let mut p = Proc::spawn("example", dir.path(), "example", &[("PGQRS_DSN", db.dsn())]);
        let out = p.wait_ok(secs(60)).await;
        assert!(out.contains("Result: Processed 3 lines"), "{out}");
        let store = db.connect().await;
        let runs = pgqrs::admin(&store).list_workflows(None, 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].name, "data_pipeline");
        assert_eq!(runs[0].status, RunStatus::Succeeded);
        assert_eq!(runs[0].input, json!("https://example.com/data.txt"));
        assert_eq!(runs[0].output, Some(json!("Processed 3 lines")));
        assert_eq!(steps_of(&store, runs[0].id).await.len(), 2);
    }

    /// The executor dies inside step 3 of 5 (steps 0..3 journaled); a fresh context resumes
    /// after the lease expired, skipping the completed steps.
    pub async fn replay_after_crash(db: &TestDb) {
        let store = db.store_with("visibility_timeout=1").await;
        let admin = pgqrs::admin(&store);
        let p = Probe::new().hang_at(3);
        let ctx = admin
            .create_workflow("probe", &json!({"n": 5}))
            .await
            .unwrap();
        let id = ctx.id();
        crash_when(probe_wf(&ctx, &p, 5), &p.entered).await;
        drop(ctx);
        assert_eq!(p.hits(5), vec![1, 1, 1, 1, 0]);
        let run = run_of(&store, id).await;
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(steps_of(&store, id).await.len(), 3, "steps 0..3 journaled");

        p.hang_at.store(NONE, Ordering::SeqCst);
        let (store_ref, pr) = (&store, &p);
        let out = until_unlocked("resume", move || async move {
            let ctx = pgqrs::admin(store_ref).get_workflow(id).await?;
            probe_wf(&ctx, pr, 5).await
        })
        .await
        .unwrap();
        assert_eq!(out, vec![0, 100, 200, 300, 400]);
        assert_eq!(
            p.hits(5),
            vec![1, 1, 1, 2, 1],
            "completed steps ran once; the interrupted one ran again"
        );
        let run = run_of(&store, id).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Succeeded, 2));
        assert_eq!(run.output, Some(json!([0, 100, 200, 300, 400])));
        let steps = steps_of(&store, id).await;
        assert_eq!(steps.len(), 5);
        assert!(steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded && s.attempts == 1));
    }

    /// The same step called N times in a loop journals N positions.
    pub async fn loop_positions(db: &TestDb) {
        let store = db.store().await;
        let p = Probe::new();
        let ctx = pgqrs::admin(&store)
            .create_workflow("loop", &7)
            .await
            .unwrap();
        let out = probe_wf(&ctx, &p, 7).await.unwrap();
        assert_eq!(out, (0..7).map(|i| i * 100).collect::<Vec<u32>>());
        let steps = steps_of(&store, ctx.id()).await;
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.position, s.name.as_str()))
                .collect::<Vec<_>>(),
            (0..7).map(|i| (i, "probe_step")).collect::<Vec<_>>()
        );
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s.output, Some(json!(i * 100)), "position {i}");
        }
        let fresh = pgqrs::admin(&store).get_workflow(ctx.id()).await.unwrap();
        assert_eq!(probe_wf(&fresh, &p, 7).await.unwrap(), out);
        assert_eq!(p.hits(7), vec![1; 7]);
    }

    /// Journal A, B; resume with code that calls A, C: NonDeterministic, the run not succeeded.
    pub async fn non_determinism(db: &TestDb) {
        let store = db.store_with("visibility_timeout=1").await;
        let p = Probe::new().hang_at(3);
        let ctx = pgqrs::admin(&store)
            .create_workflow("nd", &())
            .await
            .unwrap();
        let id = ctx.id();
        crash_when(nd_v1(&ctx, &p), &p.entered).await;
        drop(ctx);
        assert_eq!(
            names(&steps_of(&store, id).await),
            vec![
                (0, "step_a".into(), StepStatus::Succeeded),
                (1, "step_b".into(), StepStatus::Succeeded)
            ]
        );

        let (store_ref, pr) = (&store, &p);
        let err = until_unlocked("resume v2", move || async move {
            let ctx = pgqrs::admin(store_ref).get_workflow(id).await?;
            nd_v2(&ctx, pr).await
        })
        .await
        .expect_err("a different step at a journaled position must fail");
        match pgqrs_error(&err) {
            Some(Error::NonDeterministic {
                run_id,
                position,
                recorded,
                called,
            }) => {
                assert_eq!((*run_id, *position), (id, 1));
                assert_eq!((recorded.as_str(), called.as_str()), ("step_b", "step_c"));
            }
            other => panic!("expected NonDeterministic, got {other:?} ({err:#})"),
        }
        assert_eq!(
            p.hits(4),
            vec![1, 1, 0, 1],
            "step_c must not run; step_a replayed"
        );
        let run = run_of(&store, id).await;
        assert_ne!(run.status, RunStatus::Succeeded);
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.error
                .as_deref()
                .is_some_and(|e| e.contains("non-deterministic")),
            "{:?}",
            run.error
        );
        // And it stays that way.
        let ctx = pgqrs::admin(&store).get_workflow(id).await.unwrap();
        let err = nd_v2(&ctx, &p).await.unwrap_err();
        assert!(
            matches!(pgqrs_error(&err), Some(Error::WorkflowFailed { .. })),
            "{err:#}"
        );
        assert_eq!(p.hits(4), vec![1, 1, 0, 1]);
    }

    /// `max_attempts = 3, fixed_backoff_ms = 200`, failing twice: 3 attempts ≥ 200 ms apart,
    /// each failed attempt journaled as `retrying`, the step record ends with attempts = 3.
    pub async fn retry_fixed_backoff(db: &TestDb) {
        let store = db.store().await;
        let f = Flaky {
            fail_first: 2,
            ..Default::default()
        };
        let ctx = pgqrs::admin(&store)
            .create_workflow("flaky", &())
            .await
            .unwrap();
        assert_eq!(flaky_fixed_wf(&ctx, &f).await.unwrap(), 3);
        assert_eq!(f.attempts(), 3);
        for g in f.gaps() {
            assert!(g >= ms(200), "attempts only {g:?} apart, backoff is 200 ms");
        }
        let seen = f.seen.lock().unwrap().clone();
        for (k, rec) in seen.iter().enumerate() {
            let rec = rec.as_ref().expect("a failed attempt is journaled");
            assert_eq!(
                (rec.status, rec.attempts),
                (StepStatus::Retrying, k as i32 + 1)
            );
            assert!(rec
                .error
                .as_deref()
                .unwrap()
                .contains(&format!("#{}", k + 1)));
            assert!(rec.next_retry_at.is_some());
        }
        let steps = steps_of(&store, ctx.id()).await;
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].status, steps[0].attempts),
            (StepStatus::Succeeded, 3)
        );
        assert_eq!(steps[0].output, Some(json!(3)));
        assert_eq!(run_of(&store, ctx.id()).await.status, RunStatus::Succeeded);
    }

    /// `max_attempts = 4, backoff_ms = 100` (exponential with jitter): the delays after attempts
    /// 1, 2, 3 are at least 50, 100, 200 ms (half of 100·2^(n-1)).
    pub async fn retry_exponential_backoff(db: &TestDb) {
        let store = db.store().await;
        let f = Flaky {
            fail_first: 3,
            ..Default::default()
        };
        let ctx = pgqrs::admin(&store)
            .create_workflow("flaky", &())
            .await
            .unwrap();
        assert_eq!(flaky_exp_wf(&ctx, &f).await.unwrap(), 4);
        let gaps = f.gaps();
        assert_eq!(gaps.len(), 3);
        for (g, min) in gaps.iter().zip([50, 100, 200]) {
            assert!(*g >= ms(min), "gaps {gaps:?}: expected at least {min} ms");
        }
        assert_eq!(steps_of(&store, ctx.id()).await[0].attempts, 4);
    }

    /// Retries exhausted: the run fails with the error journaled.
    pub async fn retry_exhausted_fails_run(db: &TestDb) {
        let store = db.store().await;
        let f = Flaky {
            fail_first: 99,
            ..Default::default()
        };
        let ctx = pgqrs::admin(&store)
            .create_workflow("flaky", &())
            .await
            .unwrap();
        let err = flaky_fixed_wf(&ctx, &f).await.unwrap_err();
        assert!(err.to_string().contains("transient failure #3"), "{err:#}");
        assert_eq!(f.attempts(), 3);
        assert!(f.gaps().iter().all(|g| *g >= ms(200)), "{:?}", f.gaps());
        let run = run_of(&store, ctx.id()).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.error
                .as_deref()
                .is_some_and(|e| e.contains("transient failure #3")),
            "{:?}",
            run.error
        );
        let steps = steps_of(&store, ctx.id()).await;
        assert_eq!(
            (steps[0].status, steps[0].attempts),
            (StepStatus::Failed, 3)
        );
        assert!(steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("transient failure #3"));
        assert_eq!(steps[0].next_retry_at, None);
        // A failed run called again: its stored error, no attempt.
        let err = flaky_fixed_wf(&ctx, &f).await.unwrap_err();
        match pgqrs_error(&err) {
            Some(Error::WorkflowFailed { message, .. }) => {
                assert!(message.contains("transient failure #3"))
            }
            other => panic!("expected WorkflowFailed, got {other:?}"),
        }
        assert_eq!(f.attempts(), 3);
    }

    /// `pgqrs::Permanent` is not retried: 1 attempt, the run fails.
    pub async fn permanent_error_not_retried(db: &TestDb) {
        let store = db.store().await;
        let f = Flaky {
            permanent: true,
            ..Default::default()
        };
        let ctx = pgqrs::admin(&store)
            .create_workflow("flaky", &())
            .await
            .unwrap();
        let err = flaky_fixed_wf(&ctx, &f).await.unwrap_err();
        assert!(err.downcast_ref::<Permanent>().is_some(), "{err:#}");
        assert_eq!(f.attempts(), 1, "a permanent error was retried");
        let run = run_of(&store, ctx.id()).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run
            .error
            .as_deref()
            .unwrap()
            .contains("bad input: not retryable"));
        let steps = steps_of(&store, ctx.id()).await;
        assert_eq!(
            (steps[0].status, steps[0].attempts),
            (StepStatus::Failed, 1)
        );
    }

    /// The executor dies during a step's backoff; the resumed run continues the attempt count
    /// and still waits out the journaled delay (1.5 s from the failure).
    pub async fn retry_delay_survives_resume(db: &TestDb) {
        let store = db.store_with("visibility_timeout=1").await;
        let f = Flaky {
            fail_first: 1,
            ..Default::default()
        };
        let ctx = pgqrs::admin(&store)
            .create_workflow("slow", &())
            .await
            .unwrap();
        let id = ctx.id();
        let journaled_retry = async {
            eventually(secs(20), "attempt 1 journaled as retrying", || async {
                steps_of(&store, id)
                    .await
                    .first()
                    .is_some_and(|s| s.status == StepStatus::Retrying)
            })
            .await
        };
        tokio::select! {
            r = flaky_slow_wf(&ctx, &f) => panic!("expected to stop during the backoff: {r:?}"),
            _ = journaled_retry => {}
        }
        drop(ctx);
        assert_eq!(f.attempts(), 1);

        let (store_ref, fr) = (&store, &f);
        let n = until_unlocked("resume", move || async move {
            let ctx = pgqrs::admin(store_ref).get_workflow(id).await?;
            flaky_slow_wf(&ctx, fr).await
        })
        .await
        .unwrap();
        assert_eq!(n, 2);
        let gaps = f.gaps();
        assert!(
            gaps[0] >= ms(1500),
            "attempt 2 came {:?} after attempt 1",
            gaps[0]
        );
        let steps = steps_of(&store, id).await;
        assert_eq!(
            (steps[0].status, steps[0].attempts),
            (StepStatus::Succeeded, 2)
        );
    }

    /// Cancelled between steps: the next step does not start, WorkflowCancelled, Cancelled.
    pub async fn cancel_between_steps(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let (p, g) = (Probe::new(), Gate::default());
        let ctx = admin.create_workflow("cancel", &()).await.unwrap();
        let id = ctx.id();
        let control = async {
            g.reached.notified().await;
            assert!(admin.cancel_workflow(id).await.unwrap());
            g.go.notify_one();
        };
        let (r, ()) = tokio::join!(gate_between_wf(&ctx, &p, &g), control);
        let err = r.unwrap_err();
        assert!(
            matches!(pgqrs_error(&err), Some(Error::WorkflowCancelled { run_id }) if *run_id == id),
            "{err:#}"
        );
        assert_eq!(p.hits(2), vec![1, 0], "a step started after cancellation");
        let run = run_of(&store, id).await;
        assert_eq!(run.status, RunStatus::Cancelled);
        assert!(run.finished_at.is_some());
        assert_eq!(steps_of(&store, id).await.len(), 1);

        // Finished-run idempotency for a cancelled run.
        g.open.store(true, Ordering::SeqCst);
        for c in [ctx.clone(), admin.get_workflow(id).await.unwrap()] {
            let err = gate_between_wf(&c, &p, &g).await.unwrap_err();
            assert!(
                matches!(pgqrs_error(&err), Some(Error::WorkflowCancelled { .. })),
                "{err:#}"
            );
        }
        assert_eq!(p.hits(2), vec![1, 0]);
        assert_eq!(run_of(&store, id).await, run);
        assert!(
            !admin.cancel_workflow(id).await.unwrap(),
            "cancelling twice"
        );
    }

    /// Cancelled while a step runs: the step's result is not journaled, the next step does not
    /// start, the run ends cancelled.
    pub async fn cancel_during_step(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let (p, g) = (Probe::new(), Gate::default());
        let ctx = admin.create_workflow("cancel", &()).await.unwrap();
        let id = ctx.id();
        let control = async {
            g.reached.notified().await;
            assert!(admin.cancel_workflow(id).await.unwrap());
            g.go.notify_one();
        };
        let (r, ()) = tokio::join!(gate_inside_wf(&ctx, &p, &g), control);
        let err = r.unwrap_err();
        assert!(
            matches!(pgqrs_error(&err), Some(Error::WorkflowCancelled { .. })),
            "{err:#}"
        );
        assert_eq!(p.hits(3), vec![1, 1, 0]);
        assert_eq!(
            names(&steps_of(&store, id).await),
            vec![(0, "probe_step".into(), StepStatus::Succeeded)]
        );
        assert_eq!(run_of(&store, id).await.status, RunStatus::Cancelled);
    }

    /// A run cancelled before it started never runs.
    pub async fn cancel_pending_run(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let p = Probe::new();
        let ctx = admin.create_workflow("cancel", &()).await.unwrap();
        assert!(admin.cancel_workflow(ctx.id()).await.unwrap());
        let err = probe_wf(&ctx, &p, 2).await.unwrap_err();
        assert!(
            matches!(pgqrs_error(&err), Some(Error::WorkflowCancelled { .. })),
            "{err:#}"
        );
        assert_eq!(p.hits(2), vec![0, 0]);
        let run = run_of(&store, ctx.id()).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Cancelled, 0));
        assert!(matches!(
            admin.cancel_workflow(i64::MAX).await,
            Err(Error::WorkflowNotFound { .. })
        ));
        assert!(matches!(
            admin.get_workflow(i64::MAX).await,
            Err(Error::WorkflowNotFound { .. })
        ));
    }

    /// Cancelled after the last step, before the outcome is recorded: the run ends cancelled,
    /// so the call must not report success either (the outcome the caller sees is the one
    /// recorded).
    pub async fn cancel_after_last_step(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let (p, g) = (Probe::new(), Gate::default());
        let ctx = admin.create_workflow("cancel", &()).await.unwrap();
        let id = ctx.id();
        let control = async {
            g.reached.notified().await;
            assert!(admin.cancel_workflow(id).await.unwrap());
            g.go.notify_one();
        };
        let (r, ()) = tokio::join!(gate_after_wf(&ctx, &p, &g), control);
        let run = run_of(&store, id).await;
        assert_eq!(run.status, RunStatus::Cancelled);
        assert_eq!(run.output, None);
        // What a later call reports:
        g.open.store(true, Ordering::SeqCst);
        let later = gate_after_wf(&ctx, &p, &g).await;
        assert!(
            matches!(
                later.as_ref().map_err(pgqrs_error),
                Err(Some(Error::WorkflowCancelled { .. }))
            ),
            "{later:?}"
        );
        // ... and what the executing call reported.
        assert!(
            matches!(
                r.as_ref().map_err(pgqrs_error),
                Err(Some(Error::WorkflowCancelled { .. }))
            ),
            "the executing call returned {:?} although the run ended cancelled (a later call \
             says {:?})",
            r.map_err(|e| describe(&e)),
            later.map_err(|e| describe(&e))
        );
    }

    /// Two concurrent calls of the workflow with the same context (or clones of it, which
    /// "share the same execution"): the second must not execute steps the first is executing.
    pub async fn same_context_concurrent_calls(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let (p, g) = (Probe::new(), Gate::default());
        let ctx = admin.create_workflow("twice", &()).await.unwrap();
        let id = ctx.id();
        let clone = ctx.clone();
        let second = async {
            g.reached.notified().await; // the first call is inside step 1
            g.open.store(true, Ordering::SeqCst);
            let r = gate_inside_wf(&clone, &p, &g).await;
            g.go.notify_one();
            r
        };
        let (first, second) = tokio::join!(gate_inside_wf(&ctx, &p, &g), second);
        let (first, second) = (
            first.map_err(|e| describe(&e)),
            second.map_err(|e| describe(&e)),
        );
        let steps = steps_of(&store, id).await;
        eprintln!(
            "same_context_concurrent_calls[{:?}]: first {first:?}, second {second:?}, hits {:?}, run {:?}, steps {:?}",
            db.kind(),
            p.hits(3),
            run_of(&store, id).await.status,
            names(&steps)
        );
        assert_eq!(
            p.hits(3),
            vec![1, 1, 1],
            "a step ran twice: the second call on the same context executed it while the first \
             was executing it (first call: {first:?}; second call: {second:?})"
        );
    }

    /// Inputs that JSON can express but a backend may not store or read back: either they
    /// round-trip, or create_workflow refuses them with a typed error and creates nothing.
    /// Either way the run table stays listable.
    pub async fn edge_inputs(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let mut problems = Vec::new();
        for (what, v) in edge_values() {
            match admin.create_workflow(what, &v).await {
                Ok(ctx) => match admin.workflow_run(ctx.id()).await {
                    Ok(run) if run.input == v => {}
                    Ok(_) => problems.push(format!("{what}: input changed in storage")),
                    Err(e) => {
                        problems.push(format!("{what}: accepted, then workflow_run fails: {e}"))
                    }
                },
                Err(e) if typed_rejection(&e) => {}
                Err(e) => problems.push(format!("{what}: create_workflow gave an untyped {e:?}")),
            }
            if let Err(e) = admin.list_workflows(None, 100).await {
                problems.push(format!("{what}: afterwards list_workflows fails: {e}"));
            }
        }
        assert!(problems.is_empty(), "[{:?}] {problems:#?}", db.kind());
    }

    /// Step outputs of the same kinds: either journaled so that a resumed run replays them,
    /// or a typed error at the step that produced them.
    pub async fn edge_step_outputs(db: &TestDb) {
        let store = db.store_with("visibility_timeout=1").await;
        let admin = pgqrs::admin(&store);
        let mut problems = Vec::new();
        for (what, v) in edge_values() {
            let p = Probe::new().hang_at(1);
            let ctx = admin.create_workflow(what, &()).await.unwrap();
            let id = ctx.id();
            let first = tokio::select! {
                r = value_wf(&ctx, &p, &v) => Some(r),
                _ = p.entered.notified() => None,
            };
            drop(ctx);
            match first {
                Some(Err(e)) if pgqrs_error(&e).is_some_and(typed_rejection) => continue,
                Some(r) => {
                    let r = r.map_err(|e| describe(&e));
                    problems.push(format!("{what}: the first execution returned {r:?}"));
                    continue;
                }
                None => {} // journaled; step 1 hangs: resume
            }
            p.hang_at.store(NONE, Ordering::SeqCst);
            let (store_ref, pr, vr) = (&store, &p, &v);
            let resumed = tokio::time::timeout(
                secs(20),
                until_unlocked("resume", move || async move {
                    let ctx = pgqrs::admin(store_ref).get_workflow(id).await?;
                    value_wf(&ctx, pr, vr).await
                }),
            )
            .await;
            match resumed {
                Ok(Ok(out)) if out == v && p.hits(2) == vec![1, 2] => {}
                other => problems.push(format!(
                    "{what}: journaled, but resuming gives {:?} (hits {:?}); run {:?}",
                    other.map(|r| r.map_err(|e| describe(&e))),
                    p.hits(2),
                    admin.workflow_run(id).await.map(|r| (r.status, r.error))
                )),
            }
            if let Err(e) = admin.workflow_steps(id).await {
                problems.push(format!("{what}: workflow_steps fails: {e}"));
            }
        }
        assert!(problems.is_empty(), "[{:?}] {problems:#?}", db.kind());
    }

    /// Run outputs of the same kinds: either stored and returned again, or a typed error
    /// (and then the run is finished, not left running). The run table stays listable.
    pub async fn edge_workflow_outputs(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let mut problems = Vec::new();
        for (what, v) in edge_values() {
            let p = Probe::new();
            let ctx = admin.create_workflow(what, &()).await.unwrap();
            match value_out_wf(&ctx, &p, &v).await {
                Ok(out) => {
                    assert_eq!(out, v);
                    let fresh = admin.get_workflow(ctx.id()).await;
                    match fresh {
                        Ok(f) => match value_out_wf(&f, &p, &v).await {
                            Ok(again) if again == v => {}
                            other => problems.push(format!(
                                "{what}: stored, then a call returns {:?}",
                                other.map_err(|e| describe(&e))
                            )),
                        },
                        Err(e) => {
                            problems.push(format!("{what}: stored, then get_workflow fails: {e}"))
                        }
                    }
                }
                Err(e) if pgqrs_error(&e).is_some_and(typed_rejection) => {}
                Err(e) => problems.push(format!("{what}: untyped error {}", describe(&e))),
            }
            if let Err(e) = admin.list_workflows(None, 100).await {
                problems.push(format!("{what}: afterwards list_workflows fails: {e}"));
            }
        }
        assert!(problems.is_empty(), "[{:?}] {problems:#?}", db.kind());
    }

    /// A failed run called again (same or fresh context) returns its stored error and runs
    /// nothing.
    pub async fn failed_run_idempotent(db: &TestDb) {
        let store = db.store().await;
        let admin = pgqrs::admin(&store);
        let p = Probe::new().fail_at(2);
        let ctx = admin.create_workflow("fails", &()).await.unwrap();
        let id = ctx.id();
        let err = probe_wf(&ctx, &p, 4).await.unwrap_err();
        assert!(
            err.to_string().contains("step 2 failed for good"),
            "{err:#}"
        );
        assert_eq!(p.hits(4), vec![1, 1, 1, 0]);
        let run = run_of(&store, id).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Failed, 1));
        assert_eq!(run.error.as_deref(), Some("step 2 failed for good"));
        let steps = steps_of(&store, id).await;
        assert_eq!(
            names(&steps),
            vec![
                (0, "probe_step".into(), StepStatus::Succeeded),
                (1, "probe_step".into(), StepStatus::Succeeded),
                (2, "probe_step".into(), StepStatus::Failed)
            ]
        );

        p.fail_at.store(NONE, Ordering::SeqCst);
        for c in [ctx.clone(), admin.get_workflow(id).await.unwrap()] {
            let err = probe_wf(&c, &p, 4).await.unwrap_err();
            match pgqrs_error(&err) {
                Some(Error::WorkflowFailed { run_id, message }) => {
                    assert_eq!((*run_id, message.as_str()), (id, "step 2 failed for good"))
                }
                other => panic!("expected WorkflowFailed, got {other:?} ({err:#})"),
            }
        }
        assert_eq!(p.hits(4), vec![1, 1, 1, 0], "a failed run ran steps again");
        assert_eq!(run_of(&store, id).await, run);
        assert_eq!(steps_of(&store, id).await, steps);
        assert!(
            !admin.cancel_workflow(id).await.unwrap(),
            "cancelled a finished run"
        );
    }

    /// Two contexts for one run: while one holds the lease (and keeps renewing it), the other
    /// gets WorkflowLocked; once the holder is gone and its 1 s lease expired, the other
    /// resumes.
    pub async fn lease_locking(db: &TestDb) {
        let store = db.store_with("visibility_timeout=1").await;
        let admin = pgqrs::admin(&store);
        let (p, g) = (Probe::new(), Gate::default());
        let ctx1 = admin.create_workflow("locked", &()).await.unwrap();
        let id = ctx1.id();
        let ctx2 = admin.get_workflow(id).await.unwrap();

        let probe = async {
            g.reached.notified().await; // ctx1 is inside step 1
            assert!(
                matches!(ctx2.start().await, Err(Error::WorkflowLocked { run_id }) if run_id == id)
            );
            let err = gate_inside_wf(&ctx2, &p, &g).await.unwrap_err();
            assert!(is_locked(&err), "{err:#}");
            assert_eq!(
                p.hits(3),
                vec![1, 1, 0],
                "the locked-out context ran a step"
            );
            // Longer than two leases: the holder's renewals keep it.
            sleep_ms(2500).await;
            assert!(matches!(
                ctx2.start().await,
                Err(Error::WorkflowLocked { .. })
            ));
            let run = run_of(&store, id).await;
            assert_eq!(run.status, RunStatus::Running);
            assert!(
                !run.lease_expired(),
                "the holder's lease was not renewed: {run:?}"
            );
        };
        tokio::select! {
            r = gate_inside_wf(&ctx1, &p, &g) => panic!("ctx1 should be held in step 1: {r:?}"),
            _ = probe => {}
        }
        drop(ctx1); // the holder dies: no more renewals

        g.open.store(true, Ordering::SeqCst);
        let (c2, pr, gr) = (&ctx2, &p, &g);
        let out = until_unlocked("ctx2 resume", move || gate_inside_wf(c2, pr, gr))
            .await
            .unwrap();
        assert_eq!(out, vec![0, 100, 200]);
        assert_eq!(p.hits(3), vec![1, 2, 1]);
        let run = run_of(&store, id).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Succeeded, 2));
    }

    /// A step whose output is not JSON-serializable: Error::Serialization at that step; it is
    /// not journaled; the next step does not run; the run fails with the error.
    pub async fn step_output_not_serializable(db: &TestDb) {
        let store = db.store().await;
        let p = Probe::new();
        let ctx = pgqrs::admin(&store)
            .create_workflow("bad", &())
            .await
            .unwrap();
        let err = bad_step_wf(&ctx, &p).await.unwrap_err();
        assert!(
            matches!(pgqrs_error(&err), Some(Error::Serialization { .. })),
            "expected Error::Serialization, got {err:#}"
        );
        assert_eq!(p.hits(3), vec![1, 1, 0]);
        assert_eq!(
            steps_of(&store, ctx.id()).await.len(),
            1,
            "only step 0 journaled"
        );
        let run = run_of(&store, ctx.id()).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.error
                .as_deref()
                .is_some_and(|e| e.contains("JSON serialization")),
            "{:?}",
            run.error
        );
    }

    /// A workflow whose own output is not JSON-serializable: Error::Serialization, and the run
    /// is finished (failed) rather than left running.
    pub async fn workflow_output_not_serializable(db: &TestDb) {
        let store = db.store().await;
        let p = Probe::new();
        let ctx = pgqrs::admin(&store)
            .create_workflow("bad", &())
            .await
            .unwrap();
        let err = bad_output_wf(&ctx, &p).await.unwrap_err();
        assert!(
            matches!(pgqrs_error(&err), Some(Error::Serialization { .. })),
            "expected Error::Serialization, got {err:#}"
        );
        assert_eq!(p.hits(1), vec![1]);
        let run = run_of(&store, ctx.id()).await;
        assert_eq!(
            run.status,
            RunStatus::Failed,
            "a run whose output cannot be stored must fail, not stay {:?} (lease held until \
             {:?} and renewed while the context lives; re-executed by whoever resumes it)",
            run.status,
            run.lease_until
        );
        assert!(run
            .error
            .as_deref()
            .is_some_and(|e| e.contains("JSON serialization")));
    }

    /// A non-serializable input is a typed error; no run (and no job) is created.
    pub async fn input_not_serializable(db: &TestDb) {
        let store = db.store_with_queue("q").await;
        let admin = pgqrs::admin(&store);
        assert!(matches!(
            admin.create_workflow("bad", &bad_map()).await,
            Err(Error::Serialization { .. })
        ));
        assert!(matches!(
            admin.enqueue_workflow("q", "bad", &bad_map()).await,
            Err(Error::Serialization { .. })
        ));
        assert!(matches!(
            admin.enqueue_workflow("nope", "chain", &1).await,
            Err(Error::QueueNotFound { .. })
        ));
        assert!(admin.list_workflows(None, 10).await.unwrap().is_empty());
        assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));
    }

    /// Runs started through a queue, executed by a registry worker in this process.
    pub async fn queue_worker_in_process(db: &TestDb) {
        let store = db.store_with_queue("wfq").await;
        let admin = pgqrs::admin(&store);
        let dir = tmpdir();
        let log = dir.path().join("steps.log");
        let input = ChainInput {
            log: log.display().to_string(),
            steps: 3,
            step_ms: 0,
        };
        let mut ids = Vec::new();
        for _ in 0..20 {
            let run = admin
                .enqueue_workflow("wfq", "chain", &input)
                .await
                .unwrap();
            assert_eq!(run.status, RunStatus::Pending);
            ids.push(run.id);
        }
        let doomed_id = admin
            .enqueue_workflow("wfq", "doomed", &())
            .await
            .unwrap()
            .id;

        let w = registry()
            .worker("wfq")
            .concurrency(4)
            .configure(|b| b.poll_interval(ms(50)))
            .build(&store);
        let (stop, task) = spawn_worker(&store, w);
        eventually(
            secs(60),
            "every run finished and every job archived",
            || async {
                let runs = admin.list_workflows(None, 100).await.unwrap();
                runs.iter().all(|r| r.status.is_finished())
                    && metrics(&store, "wfq").await.archived == 21
            },
        )
        .await;
        stop.shutdown();
        let stats = task.await.unwrap().unwrap();

        for id in &ids {
            let run = run_of(&store, *id).await;
            assert_eq!(run.status, RunStatus::Succeeded, "run {id}");
            assert_eq!(run.output, Some(json!(123)));
            assert_eq!(run.attempts, 1);
        }
        let doomed = run_of(&store, doomed_id).await;
        assert_eq!(doomed.status, RunStatus::Failed);
        assert_eq!(doomed.error.as_deref(), Some("doomed step gives up"));

        let lines = read_log(&log);
        assert_eq!(lines.len(), 60, "each of 20 runs × 3 steps executed once");
        let mut per: HashMap<(i64, u32), usize> = HashMap::new();
        for (run, step, _) in lines {
            *per.entry((run, step)).or_default() += 1;
        }
        for id in &ids {
            for s in 1..=3 {
                assert_eq!(per.get(&(*id, s)), Some(&1), "run {id} step {s}");
            }
        }
        // 21 jobs done; the doomed run's job failed once, then found its run finished.
        assert_eq!(
            (stats.succeeded, stats.failed, stats.dead),
            (21, 1, 0),
            "{stats:?}"
        );
        assert_eq!(counts(&store, "wfq").await, (0, 0, 0, 21, 0));
    }

    /// 200 queued runs executed by 4 worker processes: each run completes exactly once.
    /// On Turso (one process at a time on a file) the 4 processes run one after another,
    /// each until a quarter more of the runs have finished, and hand the rest over.
    pub async fn queue_200_runs_4_processes(db: &TestDb) {
        const RUNS: usize = 200;
        const PROCS: usize = 4;
        let store = db.store_with_queue("wf200").await;
        let admin = pgqrs::admin(&store);
        let dir = tmpdir();
        let log = dir.path().join("steps.log");
        let input = ChainInput {
            log: log.display().to_string(),
            steps: 3,
            step_ms: 5,
        };
        let mut ids = Vec::new();
        for _ in 0..RUNS {
            ids.push(
                admin
                    .enqueue_workflow("wf200", "chain", &input)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let sequential = db.kind() == Kind::Turso;
        if sequential {
            store.close().await;
        }
        let t = Instant::now();
        let spawn = |i: usize| {
            let expect = if sequential {
                RUNS * (i + 1) / PROCS
            } else {
                RUNS
            };
            Proc::spawn(
                &format!("worker{i}"),
                dir.path(),
                "worker",
                &[
                    (DSN_ENV, db.dsn_with(CHILD_POOL)),
                    (QUEUE_ENV, "wf200".into()),
                    (EXPECT_ENV, expect.to_string()),
                ],
            )
        };
        let mut procs: Vec<Proc> = if sequential {
            Vec::new()
        } else {
            (0..PROCS).map(spawn).collect()
        };
        let mut succeeded = 0u64;
        for i in 0..PROCS {
            if sequential {
                procs.push(spawn(i));
            }
            let p = &mut procs[i];
            let out = p.wait_ok(secs(140)).await;
            let line = out
                .lines()
                .find_map(|l| l.split_once("WFSTATS ").map(|(_, r)| r))
                .unwrap_or_else(|| panic!("no WFSTATS in {out}"));
            let n: u64 = line
                .split(' ')
                .find_map(|f| f.strip_prefix("succeeded="))
                .unwrap()
                .parse()
                .unwrap();
            if sequential {
                assert!(n > 0, "worker {i} ran nothing:\n{out}");
            }
            succeeded += n;
        }
        let elapsed = t.elapsed();
        let store = if sequential {
            look(&db.dsn()).await
        } else {
            store
        };
        let admin = pgqrs::admin(&store);

        let runs = admin.list_workflows(None, 1000).await.unwrap();
        assert_eq!(runs.len(), RUNS);
        for r in &runs {
            assert_eq!(
                r.status,
                RunStatus::Succeeded,
                "run {}: {:?}",
                r.id,
                r.error
            );
            assert_eq!(r.output, Some(json!(123)), "run {}", r.id);
            assert_eq!(r.attempts, 1, "run {} acquired more than once", r.id);
        }
        let lines = read_log(&log);
        let mut per: HashMap<(i64, u32), usize> = HashMap::new();
        let mut by_pid: HashMap<u32, usize> = HashMap::new();
        for (run, step, pid) in &lines {
            *per.entry((*run, *step)).or_default() += 1;
            *by_pid.entry(*pid).or_default() += 1;
        }
        let dup: Vec<_> = per.iter().filter(|(_, c)| **c != 1).take(10).collect();
        assert!(dup.is_empty(), "steps executed more than once: {dup:?}");
        for id in &ids {
            for s in 1..=3 {
                assert!(
                    per.contains_key(&(*id, s)),
                    "run {id} step {s} never executed"
                );
            }
        }
        assert_eq!(lines.len(), RUNS * 3);
        eprintln!(
            "queue_200_runs_4_processes[{:?}]: {RUNS} runs, {PROCS} processes, {elapsed:?}; step executions per pid {by_pid:?}",
            db.kind()
        );
        assert!(by_pid.len() >= 2, "the work was not shared: {by_pid:?}");
        assert_eq!(succeeded, RUNS as u64, "jobs completed by the workers");
        assert_eq!(counts(&store, "wf200").await, (0, 0, 0, RUNS as i64, 0));
    }

    /// A process running a 5-step workflow is SIGKILLed inside step k, for each k (the five
    /// crashes happen concurrently, each on its own run); a new process recovers the run.
    /// On Turso (one process at a time on a file) the test closes its store and the five
    /// crash–resume sequences run one after another.
    pub async fn crash_sigkill_each_step(db: &TestDb) {
        let dsn = db.dsn_with(&format!("visibility_timeout=1&{CHILD_POOL}"));
        let store = db.store_with("visibility_timeout=1").await;
        let dir = tmpdir();
        if db.kind() == Kind::Turso {
            store.close().await;
            for k in 1..=5u32 {
                crash_one(&dsn, dir.path(), k).await;
            }
        } else {
            let crashes = (1..=5u32).map(|k| crash_one(&dsn, dir.path(), k));
            futures_util::future::join_all(crashes).await;
        }
    }

    async fn crash_one(dsn: &str, dir: &Path, k: u32) {
        let log = dir.join(format!("k{k}.log"));
        let marker = dir.join(format!("k{k}.inside"));
        let input = ChainInput {
            log: log.display().to_string(),
            steps: 5,
            step_ms: 0,
        };
        let store = look(dsn).await;
        let id = pgqrs::admin(&store)
            .create_workflow("chain", &input)
            .await
            .unwrap()
            .id();
        store.close().await;

        let mut victim = Proc::spawn(
            &format!("k{k}-victim"),
            dir,
            "run",
            &[
                (DSN_ENV, dsn.to_string()),
                (RUN_ENV, id.to_string()),
                (CRASH_AT_ENV, k.to_string()),
                (MARKER_ENV, marker.display().to_string()),
            ],
        );
        let vpid = victim.pid();
        eventually(
            secs(60),
            &format!("k={k}: the child is inside step {k}"),
            || async { marker.exists() },
        )
        .await;
        let st = victim.kill();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(st.signal(), Some(9), "k={k}: {st}");
        }
        let store = look(dsn).await;
        let run = run_of(&store, id).await;
        assert_eq!(run.status, RunStatus::Running, "k={k}");
        let steps = steps_of(&store, id).await;
        assert_eq!(
            steps.len(),
            k as usize - 1,
            "k={k}: steps before k journaled"
        );
        store.close().await;

        let mut rescuer = Proc::spawn(
            &format!("k{k}-rescuer"),
            dir,
            "run",
            &[
                (DSN_ENV, dsn.to_string()),
                (RUN_ENV, id.to_string()),
                (RETRY_LOCKED_ENV, "1".into()),
            ],
        );
        let rpid = rescuer.pid();
        let out = rescuer.wait_ok(secs(90)).await;
        assert_eq!(wfresult(&out), "ok 12345", "k={k}");

        let store = look(dsn).await;
        let run = run_of(&store, id).await;
        assert_eq!(run.status, RunStatus::Succeeded, "k={k}");
        assert_eq!(run.output, Some(json!(chain_output(5))), "k={k}");
        assert_eq!(run.attempts, 2, "k={k}");
        let steps = steps_of(&store, id).await;
        store.close().await;
        assert_eq!(steps.len(), 5, "k={k}");
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(
                (s.status, s.attempts),
                (StepStatus::Succeeded, 1),
                "k={k} step {i}"
            );
        }

        let lines = read_log(&log);
        for i in 1..=5u32 {
            let pids: Vec<u32> = lines
                .iter()
                .filter(|(r, s, _)| *r == id && *s == i)
                .map(|(_, _, p)| *p)
                .collect();
            let want = match i.cmp(&k) {
                std::cmp::Ordering::Less => vec![vpid],
                std::cmp::Ordering::Equal => vec![vpid, rpid],
                std::cmp::Ordering::Greater => vec![rpid],
            };
            assert_eq!(
                pids, want,
                "k={k}: executions of step {i} (victim {vpid}, rescuer {rpid})"
            );
        }
    }

    /// A queue worker process dies (SIGKILL) inside step 3; a new worker process gets the job
    /// again once its lease expires and resumes the run from its journal.
    /// The test looks at the database only between the processes (Turso: one at a time).
    pub async fn crash_queue_worker_process(db: &TestDb) {
        let dsn = db.dsn_with(&format!("visibility_timeout=1&{CHILD_POOL}"));
        let store = db.store_with("visibility_timeout=1").await;
        pgqrs::admin(&store).create_queue("crashq").await.unwrap();
        let dir = tmpdir();
        let log = dir.path().join("steps.log");
        let marker = dir.path().join("inside");
        let input = ChainInput {
            log: log.display().to_string(),
            steps: 5,
            step_ms: 0,
        };
        let id = pgqrs::admin(&store)
            .enqueue_workflow("crashq", "chain", &input)
            .await
            .unwrap()
            .id;
        store.close().await;
        let common_env = [
            (DSN_ENV, dsn.clone()),
            (QUEUE_ENV, "crashq".to_string()),
            (EXPECT_ENV, "1".to_string()),
        ];
        let mut env1 = common_env.to_vec();
        env1.push((CRASH_AT_ENV, "3".into()));
        env1.push((MARKER_ENV, marker.display().to_string()));
        let mut victim = Proc::spawn("qvictim", dir.path(), "worker", &env1);
        let vpid = victim.pid();
        eventually(secs(60), "the worker is inside step 3", || async {
            marker.exists()
        })
        .await;
        victim.kill();
        let store = look(&dsn).await;
        assert_eq!(steps_of(&store, id).await.len(), 2);
        store.close().await;

        let mut rescuer = Proc::spawn("qrescuer", dir.path(), "worker", &common_env);
        let rpid = rescuer.pid();
        rescuer.wait_ok(secs(90)).await;
        let store = look(&dsn).await;
        let run = run_of(&store, id).await;
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.output, Some(json!(12345)));
        let lines: Vec<(u32, u32)> = read_log(&log).into_iter().map(|(_, s, p)| (s, p)).collect();
        assert_eq!(
            lines,
            vec![
                (1, vpid),
                (2, vpid),
                (3, vpid),
                (3, rpid),
                (4, rpid),
                (5, rpid)
            ]
        );
        assert_eq!(metrics(&store, "crashq").await.archived, 1);
    }

    /// A frozen executor (SIGSTOP inside step 3) loses its lease; this process resumes and
    /// finishes the run; when the old executor wakes up and completes its step, nothing it
    /// does is recorded: it gets WorkflowLocked and the run keeps the first outcome.
    ///
    /// On Turso (one process at a time on a file) the zombie is a thread of this process
    /// with a runtime of its own, blocked inside step 3 ([`Freeze`]).
    pub async fn zombie_executor_cannot_record(db: &TestDb) {
        if db.kind() == Kind::Turso {
            return zombie_thread_cannot_record(db).await;
        }
        let dsn = db.dsn_with(&format!("visibility_timeout=1&{CHILD_POOL}"));
        let store = db.store_with("visibility_timeout=1").await;
        let dir = tmpdir();
        let log = dir.path().join("steps.log");
        let marker = dir.path().join("inside");
        let release = dir.path().join("release");
        let input = ChainInput {
            log: log.display().to_string(),
            steps: 5,
            step_ms: 0,
        };
        let id = pgqrs::admin(&store)
            .create_workflow("chain", &input)
            .await
            .unwrap()
            .id();
        let mut zombie = Proc::spawn(
            "zombie",
            dir.path(),
            "run",
            &[
                (DSN_ENV, dsn.clone()),
                (RUN_ENV, id.to_string()),
                (CRASH_AT_ENV, "3".into()),
                (MARKER_ENV, marker.display().to_string()),
                (RELEASE_ENV, release.display().to_string()),
            ],
        );
        let zpid = zombie.pid();
        eventually(secs(60), "the child is inside step 3", || async {
            marker.exists()
        })
        .await;
        zombie.signal("STOP");

        // Resume here. Should the child have been frozen in the middle of a lease renewal
        // (holding a row lock / the SQLite write lock), let it run for a moment.
        let start = Instant::now();
        let out = loop {
            assert!(start.elapsed() < secs(60), "could not resume the run");
            let ctx = pgqrs::admin(&store).get_workflow(id).await.unwrap();
            match tokio::time::timeout(secs(8), chain(&ctx, input.clone())).await {
                Ok(Ok(v)) => break v,
                Ok(Err(e)) if is_locked(&e) => sleep_ms(50).await,
                Ok(Err(e)) => panic!("resume failed: {e:#}"),
                Err(_) => {
                    zombie.signal("CONT");
                    sleep_ms(20).await;
                    zombie.signal("STOP");
                }
            }
        };
        assert_eq!(out, 12345);
        let run = run_of(&store, id).await;
        let steps = steps_of(&store, id).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Succeeded, 2));

        std::fs::write(&release, "go").unwrap();
        zombie.signal("CONT");
        let out = zombie.wait_ok(secs(60)).await;
        assert!(
            wfresult(&out).starts_with("err WorkflowLocked"),
            "the zombie's outcome: {}",
            wfresult(&out)
        );
        assert_eq!(
            run_of(&store, id).await,
            run,
            "the zombie changed the finished run"
        );
        assert_eq!(
            steps_of(&store, id).await,
            steps,
            "the zombie changed the journal"
        );

        let me = std::process::id();
        let lines: Vec<(u32, u32)> = read_log(&log).into_iter().map(|(_, s, p)| (s, p)).collect();
        assert_eq!(
            lines,
            vec![(1, zpid), (2, zpid), (3, zpid), (3, me), (4, me), (5, me)],
            "zombie {zpid}, resumer {me}"
        );
    }

    /// [`zombie_executor_cannot_record`] inside one process: the zombie executor runs on a
    /// thread with a current-thread runtime of its own (its lease renewals too), and is frozen
    /// by blocking that thread inside step 3.
    async fn zombie_thread_cannot_record(db: &TestDb) {
        let store = db.store_with("visibility_timeout=1").await;
        let dir = tmpdir();
        let log = dir.path().join("steps.log");
        let input = ChainInput {
            log: log.display().to_string(),
            steps: 5,
            step_ms: 0,
        };
        let id = pgqrs::admin(&store)
            .create_workflow("chain", &input)
            .await
            .unwrap()
            .id();
        let freeze = std::sync::Arc::new(Freeze::new(3));
        let zombie = {
            let (dsn, freeze, input) = (
                db.dsn_with("visibility_timeout=1"),
                freeze.clone(),
                input.clone(),
            );
            std::thread::spawn(move || {
                FREEZE.with(|f| *f.borrow_mut() = Some(freeze));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let store = look(&dsn).await;
                    let ctx = pgqrs::admin(&store).get_workflow(id).await.unwrap();
                    let out = match chain(&ctx, input).await {
                        Ok(v) => format!("ok {v}"),
                        Err(e) => format!("err {}", describe(&e)),
                    };
                    drop(ctx);
                    store.close().await;
                    out
                })
            })
        };
        eventually(secs(60), "the zombie thread is inside step 3", || async {
            freeze.state() == FreezeState::Frozen
        })
        .await;

        // Resume here; should the zombie have been frozen in the middle of a lease renewal
        // (holding the write gate), let it run for a moment.
        let start = Instant::now();
        let out = loop {
            assert!(start.elapsed() < secs(60), "could not resume the run");
            let ctx = pgqrs::admin(&store).get_workflow(id).await.unwrap();
            match tokio::time::timeout(secs(8), chain(&ctx, input.clone())).await {
                Ok(Ok(v)) => break v,
                Ok(Err(e)) if is_locked(&e) => sleep_ms(50).await,
                Ok(Err(e)) => panic!("resume failed: {e:#}"),
                Err(_) => {
                    freeze.set(FreezeState::Thaw);
                    sleep_ms(50).await;
                }
            }
        };
        assert_eq!(out, 12345);
        let run = run_of(&store, id).await;
        let steps = steps_of(&store, id).await;
        assert_eq!((run.status, run.attempts), (RunStatus::Succeeded, 2));

        freeze.set(FreezeState::Released);
        let outcome = tokio::task::spawn_blocking(move || zombie.join())
            .await
            .unwrap()
            .expect("the zombie thread panicked");
        assert!(
            outcome.starts_with("err WorkflowLocked"),
            "the zombie's outcome: {outcome}"
        );
        assert_eq!(
            run_of(&store, id).await,
            run,
            "the zombie changed the finished run"
        );
        assert_eq!(
            steps_of(&store, id).await,
            steps,
            "the zombie changed the journal"
        );
        // Steps 1–3 by the zombie, 3–5 by the resumer (one process: one pid).
        let steps_run: Vec<u32> = read_log(&log).into_iter().map(|(_, s, _)| s).collect();
        assert_eq!(steps_run, vec![1, 2, 3, 3, 4, 5]);
    }
}
