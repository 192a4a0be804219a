"""The chaos scenarios (issue 12): kill storms on a queue and on workflows, PostgreSQL and
PgBouncer restarts, a pinned snapshot, hostile neighbours. Each returns a `Row` of figures;
`run.py` runs them and prints the table.

Conventions: every worker uses a short lease (`visibility_timeout=2`) and the core's default
heartbeat (a third of the lease), so a killed worker's jobs come back within about 2 s. Times
are wall-clock nanoseconds (`time.time_ns()` in Python, `SystemTime` in Rust: the same clock).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pgqrs

from .infra import (
    Db,
    PrivatePgBouncer,
    PrivatePostgres,
    PsqlSession,
    WorkerPool,
    idle_connection,
    percentile,
    read_logs,
)

VT = "2"  # lease seconds for every scenario
HEARTBEAT: float | None = None  # the core's default: a third of the lease
KINDS = ("py", "rust")


@dataclasses.dataclass
class Row:
    scenario: str
    backend: str
    kills: int | str = "-"
    jobs: int | str = "-"
    lost: int | str = "-"
    dup_explained: int | str = "-"
    dup_unexplained: int | str = "-"
    rerun_after_commit: int | str = "-"
    recovery: str = "-"
    throughput: str = "-"
    notes: str = ""
    ok: bool = True
    problems: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.ok = False
        self.problems.append(why)


# --- Shared pieces ------------------------------------------------------------------------


async def open_store(db: Db) -> pgqrs.Store:
    store = await pgqrs.connect(db.dsn(visibility_timeout=VT))
    await pgqrs.admin(store).install()
    return store


async def produce_paced(
    store: pgqrs.Store,
    queue: str,
    total: int,
    seconds: float,
    ids: list[int],
    errors: list[str],
    batch: int = 200,
    upfront: float = 0.2,
    stop: asyncio.Event | None = None,
) -> None:
    """Enqueue `total` jobs: `upfront` of them at once (a backlog, so claim depths grow), the
    rest spread evenly over `seconds` (or until `stop` is set). Failed calls are retried
    (counted in `errors`)."""
    first = int(total * upfront)
    sent = 0

    async def send(n: int) -> None:
        nonlocal sent
        while True:
            try:
                got = await pgqrs.produce_batch(store, queue, [{"n": sent + i} for i in range(n)])
                ids.extend(got)
                sent += n
                return
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}"[:200])
                await asyncio.sleep(0.1)

    while sent < first:
        await send(min(batch, first - sent))
    t0 = time.monotonic()
    rest = total - first
    while sent < total and not (stop is not None and stop.is_set()):
        due = first + int(rest * min(1.0, (time.monotonic() - t0) / max(seconds, 0.001)))
        if due > sent:
            await send(min(batch, due - sent, total - sent))
        else:
            await asyncio.sleep(0.02)


async def killer(
    pool: WorkerPool,
    kills: int,
    lo: float,
    hi: float,
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    """SIGKILL a random live worker every lo..hi seconds, `kills` times; start a new worker
    of the same kind after each kill."""
    while len(pool.kills) < kills and not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(lo, hi))
            return
        except asyncio.TimeoutError:
            pass
        pool.check_exits()
        if not pool.live:
            continue
        victim = rng.choice(pool.live)
        pool.kill(victim)
        pool.spawn(victim.kind)


async def wait_drained(db: Db, queue: str, expect_archived: int, timeout: float) -> float | None:
    """Seconds until the queue has no job left and `expect_archived` in its archive; None on
    timeout. Polls with `oldest_job` (one primary-key descent), and counts the archive only
    once the queue is empty: a count over a backlog of millions holds a snapshot for about a
    second, and a poll every half second that holds one keeps every dead index entry alive
    for every claim (the poll would slow the very drain it waits for)."""
    t0 = time.monotonic()
    qid = queue_id(db, queue)
    while time.monotonic() - t0 < timeout:
        if oldest_job(db, qid) is None:
            done = int(
                db.query(f"SELECT count(*) FROM {db.t('pgqrs_archive')} WHERE queue_id={qid}")[0][0]
            )
            if done >= expect_archived:
                return time.monotonic() - t0
        await asyncio.sleep(0.5)
    return None


def oldest_job(db: Db, qid: int) -> int | None:
    """The lowest id still in the jobs table of queue `qid` (waiting, leased or out of
    attempts), or None when there is none."""
    r = db.query(f"SELECT id FROM {db.t('pgqrs_jobs')} WHERE queue_id={qid} ORDER BY id LIMIT 1")
    return int(r[0][0]) if r and r[0] and r[0][0] else None


def queue_id(db: Db, queue: str) -> int:
    return int(db.query(f"SELECT id FROM {db.t('pgqrs_queues')} WHERE name='{queue}'")[0][0])


def id_set(db: Db, table: str, qid: int) -> list[int]:
    return [int(r[0]) for r in db.query(f"SELECT id FROM {db.t(table)} WHERE queue_id={qid}")]


def check_jobs(db: Db, queue: str, enqueued: list[int], row: Row) -> None:
    """0 lost: every enqueued job archived exactly once, nothing ready, leased or dead."""
    qid = queue_id(db, queue)
    archived = id_set(db, "pgqrs_archive", qid)
    left = id_set(db, "pgqrs_jobs", qid)
    dead = id_set(db, "pgqrs_dead", qid)
    want = set(enqueued)
    lost = want - set(archived)
    row.lost = len(lost)
    row.jobs = len(enqueued)
    row.details.update(
        enqueued=len(enqueued),
        enqueued_distinct=len(want),
        archived=len(archived),
        left_in_queue=len(left),
        dead=len(dead),
        archived_unknown=len(set(archived) - want),
    )
    if lost:
        row.fail(
            f"{len(lost)} jobs not archived (e.g. {sorted(lost)[:5]}): {len(left)} "
            f"still in the queue, {len(dead)} dead"
        )
    if len(archived) != len(set(archived)):
        row.fail("a job archived twice")
    if left or dead:
        row.fail(f"{len(left)} jobs left in the queue, {len(dead)} dead letters")
    if len(want) != len(enqueued):
        row.fail("produce returned a job id twice")


def classify(
    runs: dict[Any, list[tuple[int, int]]], pool: WorkerPool, windows: list[tuple[int, int]]
) -> tuple[int, int, int, list[str], list[float]]:
    """Duplicate executions of each key (runs: [(t_ns, pid)]): explained when the earlier run
    was by a worker killed afterwards and the later one started after that kill (the later
    run then happened inside, or after, a lease the killed worker held), or when both fall in
    one of `windows` (a server restart); unexplained otherwise.

    Returns (explained by a kill, explained by a restart, unexplained, examples of
    unexplained, seconds from each kill to the re-run)."""
    killed = {k.pid: k for k in pool.kills}
    by_kill = by_restart = bad = 0
    examples: list[str] = []
    redelivery: list[float] = []
    for key, rs in runs.items():
        rs.sort()
        for (t1, p1), (t2, p2) in itertools.pairwise(rs):
            k = killed.get(p1)
            if k is not None and t1 <= k.after_ns and t2 >= k.before_ns:
                by_kill += 1
                redelivery.append((t2 - k.before_ns) / 1e9)
            elif any(lo <= t1 <= hi and lo <= t2 <= hi for lo, hi in windows):
                by_restart += 1
            else:
                bad += 1
                if len(examples) < 10:
                    why = (
                        f"pid {p1} was killed {(k.before_ns - t1) / 1e9:.3f}s after its run"
                        if k is not None
                        else f"pid {p1} was not killed"
                    )
                    examples.append(
                        f"{key}: run by pid {p1} at {t1 / 1e9:.3f}, again by pid {p2} "
                        f"{(t2 - t1) / 1e9:.3f}s later ({why})"
                    )
    return by_kill, by_restart, bad, examples, redelivery


def fmt_s(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"median {percentile(xs, 50):.1f}s, max {max(xs):.1f}s"


# --- 1. Kill storm, queue -------------------------------------------------------------------


async def kill_storm_queue(
    db: Db,
    workdir: Path,
    *,
    jobs: int,
    kills: int,
    workers: int = 6,
    lo: float = 0.2,
    hi: float = 2.0,
    handler_ms: int = 40,
    seed: int = 1,
    label: str = "1. kill storm, queue",
) -> Row:
    row = Row(label, db.kind)
    rng = random.Random(seed)
    queue = "chaos_q"
    store = await open_store(db)
    await pgqrs.admin(store).create_queue(queue)
    storm = kills * (lo + hi) / 2
    pool = WorkerPool(
        "queue",
        db.dsn(visibility_timeout=VT),
        queue,
        workdir,
        heartbeat=HEARTBEAT,
        handler_ms=handler_ms,
        max_seconds=storm * 3 + 600,
    )
    ids: list[int] = []
    errors: list[str] = []
    try:
        for i in range(workers):
            pool.spawn(KINDS[i % 2])
        await pool.wait_ready()
        t0 = time.time_ns()
        stop = asyncio.Event()
        producer = asyncio.create_task(produce_paced(store, queue, jobs, storm * 0.85, ids, errors))
        kill_task = asyncio.create_task(killer(pool, kills, lo, hi, rng, stop))
        await producer
        # The storm goes on until its kills are done (bounded: twice its expected length).
        try:
            await asyncio.wait_for(asyncio.shield(kill_task), storm * 2 + 60)
        except asyncio.TimeoutError:
            row.notes += "storm cut at its time bound; "
        stop.set()
        await kill_task
        drained = await wait_drained(db, queue, jobs, timeout=180)
        t1 = time.time_ns()
        if drained is None:
            row.fail("the queue did not drain within 180 s after the storm")
        await pool.stop()
    finally:
        pool.kill_all()
        await store.close()
    row.kills = len(pool.kills)
    check_jobs(db, queue, ids, row)
    rows, torn = read_logs(pool.log_files())
    runs: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        if r[0] == "J":
            runs[int(r[1])].append((int(r[3]), int(r[2])))
    by_kill, _, bad, examples, redelivery = classify(runs, pool, [])
    never_ran = set(ids) - set(runs)
    row.dup_explained, row.dup_unexplained = by_kill, bad
    row.recovery = "re-run after kill: " + fmt_s(redelivery)
    row.throughput = f"{jobs / ((t1 - t0) / 1e9):.0f} jobs/s (paced)"
    row.details.update(
        handler_runs=sum(len(v) for v in runs.values()),
        torn_log_lines=torn,
        never_ran=len(never_ran),
        unexplained_examples=examples,
        produce_errors=errors[:5],
        produce_error_count=len(errors),
        unexpected_exits=[e[:2] for e in pool.unexpected_exits][:5],
        kills_by_kind={k: sum(1 for x in pool.kills if x.kind == k) for k in KINDS},
        seconds=(t1 - t0) / 1e9,
    )
    if bad:
        row.fail(f"{bad} duplicate handler runs not explained by a kill: {examples[:3]}")
    if never_ran - set():
        row.fail(f"{len(never_ran)} archived jobs have no handler run in the side logs")
    if pool.unexpected_exits:
        row.fail(
            f"{len(pool.unexpected_exits)} workers exited by themselves: "
            f"{pool.unexpected_exits[:2]}"
        )
    return row


# --- 2. Kill storm, workflows ---------------------------------------------------------------


async def kill_storm_workflows(
    db: Db,
    workdir: Path,
    *,
    runs: int,
    kills: int,
    workers: int = 6,
    lo: float = 0.2,
    hi: float = 2.0,
    step_ms: int = 20,
    seed: int = 2,
    label: str = "2. kill storm, workflows",
) -> Row:
    row = Row(label, db.kind)
    rng = random.Random(seed)
    queue = "chaos_wf"
    store = await open_store(db)
    admin = pgqrs.admin(store)
    await admin.create_queue(queue)
    storm = kills * (lo + hi) / 2
    pool = WorkerPool(
        "workflow",
        db.dsn(visibility_timeout=VT),
        queue,
        workdir,
        concurrency=4,
        heartbeat=HEARTBEAT,
        handler_ms=step_ms,
        max_seconds=storm * 3 + 900,
    )
    run_ids: list[int] = []
    errors: list[str] = []

    async def produce() -> None:
        t0 = time.monotonic()
        for i in range(runs):
            await asyncio.sleep(max(0.0, t0 + storm * 0.85 * i / runs - time.monotonic()))
            while True:
                try:
                    run_ids.append(
                        (await admin.enqueue_workflow(queue, "chaos_chain", {"i": i})).id
                    )
                    break
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    await asyncio.sleep(0.1)

    try:
        for i in range(workers):
            pool.spawn(KINDS[i % 2])
        await pool.wait_ready()
        t0 = time.time_ns()
        stop = asyncio.Event()
        producer = asyncio.create_task(produce())
        kill_task = asyncio.create_task(killer(pool, kills, lo, hi, rng, stop))
        await producer
        try:
            await asyncio.wait_for(asyncio.shield(kill_task), storm * 2 + 60)
        except asyncio.TimeoutError:
            row.notes += "storm cut at its time bound; "
        stop.set()
        await kill_task
        # Every run finished, and its request job archived.
        deadline = time.monotonic() + 300
        ids_sql = ",".join(map(str, run_ids)) or "0"
        while time.monotonic() < deadline:
            left = db.query(
                f"SELECT count(*) FROM {db.t('pgqrs_workflow_runs')} "
                f"WHERE id IN ({ids_sql}) AND status NOT IN ('succeeded','failed','cancelled')"
            )[0][0]
            if int(left) == 0:
                break
            await asyncio.sleep(0.5)
        drained = await wait_drained(db, queue, len(run_ids), timeout=120)
        t1 = time.time_ns()
        if drained is None:
            row.fail("the run requests did not drain")
        await pool.stop()
    finally:
        pool.kill_all()
        await store.close()
    row.kills = len(pool.kills)
    row.jobs = f"{len(run_ids)} runs"
    ids_sql = ",".join(map(str, run_ids)) or "0"
    status = {
        int(r[0]): (r[1], r[2])
        for r in db.query(
            f"SELECT id, status, output FROM {db.t('pgqrs_workflow_runs')} WHERE id IN ({ids_sql})"
        )
    }
    committed: dict[tuple[int, int], str] = {}
    for r in db.query(
        f"SELECT run_id, position, status, output FROM {db.t('pgqrs_workflow_steps')} "
        f"WHERE run_id IN ({ids_sql})"
    ):
        if r[2] == "succeeded":
            committed[(int(r[0]), int(r[1]))] = json.loads(r[3])
    not_done = [rid for rid in run_ids if status.get(rid, ("missing", ""))[0] != "succeeded"]
    row.lost = len(not_done)
    if not_done:
        row.fail(
            f"{len(not_done)} runs did not succeed: "
            f"{[(rid, status.get(rid)) for rid in not_done[:5]]}"
        )
    # Side log: step executions per (run, position), in time order.
    lines, torn = read_logs(pool.log_files())
    execs: dict[tuple[int, int], list[tuple[int, str, int]]] = defaultdict(list)
    dones: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for r in lines:
        if r[0] == "S":
            execs[(int(r[1]), int(r[2]))].append((int(r[5]), r[3], int(r[4])))
        elif r[0] == "D":
            dones[int(r[1])].append((int(r[3]), int(r[2])))
    after_commit = 0
    before_commit: dict[Any, list[tuple[int, int]]] = {}
    problems: list[str] = []
    for rid in run_ids:
        want = []
        for pos in range(5):
            x = committed.get((rid, pos))
            ex = sorted(execs.get((rid, pos), []))
            if x is None:
                problems.append(f"run {rid} step {pos}: no committed output")
                continue
            want.append(x)
            idx = [i for i, (_, nonce, _) in enumerate(ex) if nonce == x]
            if len(idx) != 1:
                problems.append(f"run {rid} step {pos}: committed nonce {x} logged {len(idx)}x")
                continue
            after_commit += len(ex) - idx[0] - 1
            # Executions up to and including the committed one: re-runs of an uncommitted step.
            before_commit[(rid, pos)] = [(t, pid) for t, _, pid in ex[: idx[0] + 1]]
        out = status.get(rid, ("", ""))[1]
        if out and json.loads(out) != want and len(want) == 5:
            problems.append(f"run {rid}: output {out} is not its committed step outputs")
    step_kill, _, step_bad, step_examples, redelivery = classify(before_commit, pool, [])
    done_kill, _, done_bad, done_examples, _ = classify(dones, pool, [])
    row.rerun_after_commit = after_commit
    row.dup_explained = step_kill + done_kill
    row.dup_unexplained = step_bad + done_bad
    row.recovery = "step re-run after kill: " + fmt_s(redelivery)
    row.throughput = f"{len(run_ids) / ((t1 - t0) / 1e9):.1f} runs/s (paced)"
    row.notes += (
        f"re-runs of uncommitted steps: {step_kill + step_bad}; "
        f"bodies finished twice: {done_kill + done_bad}"
    )
    row.details.update(
        step_executions=sum(len(v) for v in execs.values()),
        reruns_uncommitted_explained=step_kill,
        reruns_uncommitted_unexplained=step_bad,
        finished_twice=done_kill + done_bad,
        torn_log_lines=torn,
        problems=problems[:10],
        unexplained_examples=(step_examples + done_examples)[:10],
        produce_errors=errors[:5],
        unexpected_exits=[e[:2] for e in pool.unexpected_exits][:5],
        seconds=(t1 - t0) / 1e9,
    )
    if after_commit:
        row.fail(f"{after_commit} step executions after the step's output was committed")
    if problems:
        row.fail(f"{len(problems)} journal problems: {problems[:3]}")
    if step_bad + done_bad:
        row.fail(
            f"{step_bad + done_bad} re-runs not explained by a kill: "
            f"{(step_examples + done_examples)[:3]}"
        )
    if pool.unexpected_exits:
        row.fail(
            f"{len(pool.unexpected_exits)} workers exited by themselves: "
            f"{pool.unexpected_exits[:2]}"
        )
    qid = queue_id(db, queue)
    dead = id_set(db, "pgqrs_dead", qid)
    if dead:
        row.fail(f"{len(dead)} run requests became dead letters")
    return row


# --- Figures over time (PostgreSQL) ---------------------------------------------------------


def archive_times(db: Db, queue: str) -> list[tuple[int, float, float]]:
    """(job id, enqueued at, archived at) in unix seconds."""
    qid = queue_id(db, queue)
    return [
        (int(r[0]), float(r[1]), float(r[2]))
        for r in db.query(
            f"SELECT id, extract(epoch from enqueued_at), extract(epoch from archived_at) "
            f"FROM {db.t('pgqrs_archive')} WHERE queue_id={qid}"
        )
    ]


def first_runs(pool: WorkerPool) -> dict[int, float]:
    rows, _ = read_logs(pool.log_files())
    first: dict[int, float] = {}
    for r in rows:
        if r[0] == "J":
            t = int(r[3]) / 1e9
            j = int(r[1])
            if j not in first or t < first[j]:
                first[j] = t
    return first


def windows(
    arch: list[tuple[int, float, float]], first: dict[int, float], t0: float, t1: float, step: float
) -> list[dict[str, float]]:
    """Per window of `step` seconds: completions/s, and the latency from enqueue to the
    handler's first run (p50/p99, ms) of the jobs enqueued in that window."""
    out = []
    t = t0
    while t < t1:
        done = sum(1 for _, _, a in arch if t <= a < t + step)
        lat = [(first[j] - e) * 1000 for j, e, _ in arch if t <= e < t + step and j in first]
        out.append(
            {
                "t": round(t - t0, 1),
                "jobs_per_s": round(done / step, 1),
                "latency_p50_ms": round(percentile(lat, 50), 1),
                "latency_p99_ms": round(percentile(lat, 99), 1),
            }
        )
        t += step
    return out


def dead_tuples(db: Db) -> int:
    r = db.query(
        "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables "
        f"WHERE schemaname='{db.schema}' AND relname='pgqrs_jobs'"
    )
    return int(r[0][0]) if r else 0


# --- 3. PostgreSQL and PgBouncer restarts ---------------------------------------------------


async def restarts(
    pg: PrivatePostgres,
    workdir: Path,
    *,
    count: int,
    every: float,
    rate: float,
    bouncer: PrivatePgBouncer | None = None,
    label: str = "3. PostgreSQL restarts",
) -> Row:
    """`count` restarts during a drain fed at `rate` jobs/s. Without a bouncer: PostgreSQL,
    alternately `-m immediate` and `-m fast`. With one: workers connect through it, and the
    restarts alternate between PgBouncer and PostgreSQL (fast) behind it."""
    schema = "chaos_s3b" if bouncer else "chaos_s3"
    db = pg.db(schema)
    wdb = bouncer.db(schema) if bouncer else db
    row = Row(label, "postgres" + (" + pgbouncer" if bouncer else ""))
    queue = "chaos_r"
    store = await open_store(db)
    await pgqrs.admin(store).create_queue(queue)
    await store.close()
    # The producer goes through the same path as the workers: it must reconnect as well.
    store = await pgqrs.connect(wdb.dsn(visibility_timeout=VT))
    pool = WorkerPool(
        "queue",
        wdb.dsn(visibility_timeout=VT),
        queue,
        workdir,
        heartbeat=HEARTBEAT,
        handler_ms=2,
        max_seconds=count * every * 3 + 600,
    )
    ids: list[int] = []
    errors: list[str] = []
    events: list[tuple[str, float, float]] = []  # (what, started, back up)
    stop_feeding = asyncio.Event()  # set: the producer stops
    total = int(rate * (count + 2) * every * 10)  # more than enough: stopped after the last
    try:
        for i in range(4):
            pool.spawn(KINDS[i % 2])
        await pool.wait_ready()
        producer = asyncio.create_task(
            produce_paced(
                store,
                queue,
                total,
                total / rate,
                ids,
                errors,
                batch=50,
                upfront=0.0,
                stop=stop_feeding,
            )
        )
        for i in range(count):
            await asyncio.sleep(every)
            pool.check_exits()
            t = time.time()
            if bouncer is not None and i % 2 == 0:
                await asyncio.to_thread(bouncer.restart)
                what = "pgbouncer"
            else:
                mode = "fast" if bouncer is not None or i % 2 else "immediate"
                await asyncio.to_thread(pg.restart, mode)
                what = f"postgres -m {mode}"
            events.append((what, t, time.time()))
        await asyncio.sleep(every)
        stop_feeding.set()
        await producer
        drained = await wait_drained(db, queue, len(ids), timeout=180)
        if drained is None:
            row.fail("the queue did not drain within 180 s after the last restart")
        pool.check_exits()
        await pool.stop()
    finally:
        pool.kill_all()
        await store.close()
    check_jobs(db, queue, ids, row)
    row.kills = f"{count} restarts"
    arch = archive_times(db, queue)
    done = sorted(a for _, _, a in arch)
    # Recovery: from the restart command to the first completion after the server (or the
    # bouncer) was back, and to the first 1 s window at half the producer's rate or more.
    rec_first: list[float] = []
    rec_rate: list[float] = []
    per: list[dict[str, Any]] = []
    for what, t, up in events:
        after = [a for a in done if a >= up]
        first = after[0] - t if after else float("nan")
        back = float("nan")
        s = up
        while s < up + 60:
            if sum(1 for a in done if s <= a < s + 1.0) >= rate / 2:
                back = s - t
                break
            s += 0.1
        rec_first.append(first)
        rec_rate.append(back)
        per.append(
            {
                "restart": what,
                "down_s": round(up - t, 2),
                "first_completion_s": round(first, 2),
                "throughput_back_s": round(back, 2),
            }
        )
    rows, _ = read_logs(pool.log_files())
    runs: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        if r[0] == "J":
            runs[int(r[1])].append((int(r[3]), int(r[2])))
    vt_ns = int(float(VT) * 1e9) + 2 * 10**9
    wins = [(int(t * 1e9) - vt_ns, int(up * 1e9) + vt_ns) for _, t, up in events]
    _, by_restart, bad, examples, _ = classify(runs, pool, wins)
    row.dup_explained = f"{by_restart} (restart)"
    row.dup_unexplained = bad
    valid = [x for x in rec_rate if x == x]
    row.recovery = (
        f"throughput back after median {percentile(valid, 50):.1f}s, max {max(valid):.1f}s"
        if valid
        else "throughput never came back"
    )
    if len(valid) < len(rec_rate):
        row.fail(
            f"throughput did not come back within 60 s after {len(rec_rate) - len(valid)} restarts"
        )
    row.throughput = f"{rate:.0f} jobs/s offered"
    row.notes = f"producer errors retried: {len(errors)}"
    row.details.update(
        per_restart=per,
        unexplained_examples=examples,
        unexpected_exits=[e[:2] for e in pool.unexpected_exits][:5],
        produce_errors=errors[:5],
    )
    if bad:
        row.fail(f"{bad} duplicate handler runs outside any restart window: {examples[:3]}")
    if pool.unexpected_exits:
        row.fail(
            f"{len(pool.unexpected_exits)} workers exited by themselves (they must "
            f"reconnect): {pool.unexpected_exits[:2]}"
        )
    return row


# --- 4. A transaction that pins xmin --------------------------------------------------------


async def steady_drain(
    db: Db,
    workdir: Path,
    queue: str,
    jobs: int,
    seconds: float,
    sample_every: float,
    samples: list[dict[str, Any]],
    during: Any = None,
) -> tuple[WorkerPool, list[int], list[str], float, float]:
    """Feed `jobs` jobs evenly over `seconds` to 4 workers; sample dead tuples and the
    backlog every `sample_every` s. `during` (a coroutine function) runs alongside."""
    store = await open_store(db)
    await pgqrs.admin(store).create_queue(queue)
    pool = WorkerPool(
        "queue",
        db.dsn(visibility_timeout=VT),
        queue,
        workdir,
        heartbeat=HEARTBEAT,
        max_seconds=seconds * 3 + 600,
    )
    ids: list[int] = []
    errors: list[str] = []
    try:
        for i in range(4):
            pool.spawn(KINDS[i % 2])
        await pool.wait_ready()
        t0 = time.time()
        producer = asyncio.create_task(
            produce_paced(store, queue, jobs, seconds, ids, errors, batch=100, upfront=0.0)
        )
        side = asyncio.create_task(during()) if during else None
        admin = pgqrs.admin(store)
        while not producer.done():
            m = await admin.queue_metrics(queue)
            samples.append(
                {
                    "t": round(time.time() - t0, 1),
                    "dead_tuples": dead_tuples(db),
                    "ready": m.ready,
                    "leased": m.leased,
                }
            )
            await asyncio.sleep(sample_every)
        await producer
        t1 = time.time()
        if side:
            await side
        await wait_drained(db, queue, len(ids), timeout=600)
        await pool.stop()
    finally:
        pool.kill_all()
        await store.close()
    return pool, ids, errors, t0, t1


async def pinned_snapshot(
    pg: PrivatePostgres,
    workdir: Path,
    *,
    jobs: int,
    seconds: float,
    base_seconds: float,
    window: float,
) -> Row:
    row = Row("4. pinned xmin", "postgres")
    results: dict[str, Any] = {}
    for pinned in (False, True):
        name = "pinned" if pinned else "unpinned"
        db = pg.db(f"chaos_s4_{name}")
        secs = seconds if pinned else base_seconds
        n = int(jobs * secs / seconds)
        samples: list[dict[str, Any]] = []
        pin_info: dict[str, Any] = {}

        async def pin(db: Db = db, secs: float = secs, info: dict[str, Any] = pin_info) -> None:
            s = PsqlSession(db.base, workdir / "pin.out")
            s.send("BEGIN ISOLATION LEVEL REPEATABLE READ;")
            s.send(f"SELECT count(*) FROM {db.t('pgqrs_jobs')};")
            s.send("SELECT 'pinned', txid_current_if_assigned(), pg_backend_pid();")
            await asyncio.sleep(1)
            r = db.query(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xmin IS NOT NULL "
                "AND state = 'idle in transaction'"
            )
            info["idle_in_transaction_with_xmin"] = int(r[0][0])
            await asyncio.sleep(max(0.0, secs - 1))
            s.send("COMMIT;")
            s.close()

        pool, ids, errors, t0, t1 = await steady_drain(
            db, workdir / name, "chaos_x", n, secs, window, samples, pin if pinned else None
        )
        sub = Row("", "")
        check_jobs(db, "chaos_x", ids, sub)
        if not sub.ok:
            row.fail(f"{name}: {sub.problems}")
        arch = archive_times(db, "chaos_x")
        first = first_runs(pool)
        win = windows(arch, first, t0, t1, window)
        for w, s in zip(win, samples, strict=False):
            w["dead_tuples"] = s["dead_tuples"]
            w["ready"] = s["ready"]
        lat = [(first[j] - e) * 1000 for j, e, _ in arch if j in first]
        results[name] = {
            "jobs": len(ids),
            "seconds": round(t1 - t0, 1),
            "jobs_per_s": round(len(arch) / max(t1 - t0, 0.001), 1),
            "offered_per_s": round(n / secs, 1),
            "latency_p50_ms": round(percentile(lat, 50), 1),
            "latency_p99_ms": round(percentile(lat, 99), 1),
            "max_dead_tuples": max((s["dead_tuples"] for s in samples), default=0),
            "windows": win,
            "pin": pin_info,
            "produce_errors": len(errors),
            "lost": sub.lost,
        }
    u, p = results["unpinned"], results["pinned"]
    row.jobs = p["jobs"] + u["jobs"]
    row.lost = int(u["lost"]) + int(p["lost"])
    row.throughput = (
        f"unpinned {u['jobs_per_s']:.0f}/s p99 {u['latency_p99_ms']:.0f} ms; "
        f"pinned {p['jobs_per_s']:.0f}/s p99 {p['latency_p99_ms']:.0f} ms"
    )
    last = p["windows"][-1] if p["windows"] else {}
    row.notes = (
        f"pinned {seconds:.0f}s, offered {p['offered_per_s']:.0f}/s; "
        f"dead tuples max {p['max_dead_tuples']} (unpinned {u['max_dead_tuples']}); "
        f"last window p99 {last.get('latency_p99_ms', '-')} ms"
    )
    if not p["pin"].get("idle_in_transaction_with_xmin"):
        row.fail("the pinning transaction did not hold a snapshot")
    row.details = results
    return row


# --- 5. Hostile neighbours ------------------------------------------------------------------


async def hostile_neighbours(
    pg: PrivatePostgres, workdir: Path, *, phase: float, capacity_jobs: int
) -> Row:
    row = Row("5. hostile neighbours", "postgres")
    db = pg.db("chaos_s5")
    queue = "chaos_h"
    store = await open_store(db)
    admin = pgqrs.admin(store)
    await admin.create_queue(queue)
    pool = WorkerPool(
        "queue",
        db.dsn(visibility_timeout=VT),
        queue,
        workdir / "workers",
        heartbeat=HEARTBEAT,
        max_seconds=phase * 20 + 900,
    )
    ids: list[int] = []
    errors: list[str] = []
    phases: list[dict[str, Any]] = []
    terminated = 0
    try:
        # Capacity: a backlog enqueued before the workers start, drained flat out (first to
        # last completion).
        await produce_paced(store, queue, capacity_jobs, 0, ids, errors, batch=500, upfront=1.0)
        for i in range(4):
            pool.spawn(KINDS[i % 2])
        await pool.wait_ready()
        await wait_drained(db, queue, len(ids), timeout=600)
        done_at = [a for _, _, a in archive_times(db, queue)]
        cap = len(done_at) / max(max(done_at) - min(done_at), 0.001)
        phases.append({"phase": "capacity", "jobs_per_s": round(cap, 1)})
        # The drain rate the phases below are paced by. Producers and workers share this
        # machine's cores (in production they would not), so the rate that matters is what
        # the workers keep while producers run: enqueue at the backlog capacity (more than
        # they can take meanwhile) for half a phase and count completions after a 2 s
        # ramp. Pacing by the backlog capacity instead would offer "0.5x" at about the full
        # mixed rate, and "recovery" could never work off the overload's backlog.
        qid = queue_id(db, queue)
        ts = time.time()
        await produce_paced(
            store, queue, int(cap * phase / 2), phase / 2, ids, errors, batch=500, upfront=0.0
        )
        te = time.time()
        done = int(
            db.query(
                f"SELECT count(*) FROM {db.t('pgqrs_archive')} WHERE queue_id={qid} "
                f"AND archived_at >= to_timestamp({ts + 2}) AND archived_at < to_timestamp({te})"
            )[0][0]
        )
        drain = done / max(te - ts - 2, 0.001)
        phases.append({"phase": "drain while producing", "jobs_per_s": round(drain, 1)})
        await wait_drained(db, queue, len(ids), timeout=600)

        async def hostile_terminate(stop: asyncio.Event) -> None:
            nonlocal terminated
            s = PsqlSession(db.base, workdir / "terminate.out")
            while not stop.is_set():
                s.send(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'pgqrs' AND datname = current_database() "
                    "ORDER BY random() LIMIT 1;"
                )
                await asyncio.sleep(0.25)
            s.close()
            terminated = (workdir / "terminate.out").read_text().count("t\n")

        async def hostile_idle(stop: asyncio.Event) -> None:
            conns = [await idle_connection(pg.port, "chaos", "chaos-idle") for _ in range(300)]
            await stop.wait()
            for w in conns:
                w.close()

        async def hostile_readers(stop: asyncio.Event) -> None:
            sessions = [PsqlSession(db.base, workdir / f"reader-{i}.out") for i in range(4)]
            while not stop.is_set():
                for s in sessions:
                    s.send(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ;"
                        f"SELECT count(*), max(id) FROM {db.t('pgqrs_jobs')};"
                        f"SELECT count(*) FROM {db.t('pgqrs_archive')};"
                        "SELECT pg_sleep(2);"
                        f"SELECT count(*) FROM {db.t('pgqrs_jobs')}; COMMIT;"
                    )
                await asyncio.sleep(2.5)
            for s in sessions:
                s.close()

        plan: list[tuple[str, float, Any]] = [
            ("baseline (0.5x)", 0.5, None),
            ("pg_terminate_backend 4/s", 0.5, hostile_terminate),
            ("300 idle connections", 0.5, hostile_idle),
            ("4 REPEATABLE READ readers", 0.5, hostile_readers),
            ("producers at 1.5x", 1.5, None),
        ]
        for name, factor, hostile in plan:
            stop = asyncio.Event()
            side = asyncio.create_task(hostile(stop)) if hostile else None
            n = int(drain * factor * phase)
            before = len(ids)
            ts = time.time()
            await produce_paced(
                store, queue, n, phase, ids, errors, batch=500 if factor > 1 else 100, upfront=0.0
            )
            te = time.time()
            stop.set()
            if side:
                await side
            pool.check_exits()
            m = await admin.queue_metrics(queue)
            phases.append(
                {
                    "phase": name,
                    "t0": ts,
                    "t1": te,
                    "offered_per_s": round((len(ids) - before) / max(te - ts, 0.001), 1),
                    "ids": (before, len(ids)),
                    "dead_tuples_end": dead_tuples(db),
                    "backlog_end": m.ready + m.leased,
                }
            )
        # Recovery: back to half the drain rate until every job enqueued up to the end of the
        # overload has run (polled with one primary-key descent; see `wait_drained`), for at
        # most six phases. The catch-up time reported is exact, from the archive.
        overload_end = time.time()
        last_overload_id = max(ids)
        done_recovering = asyncio.Event()
        rec_task = asyncio.create_task(
            produce_paced(
                store,
                queue,
                int(drain * 0.5 * phase * 6),
                phase * 6,
                ids,
                errors,
                batch=100,
                upfront=0.0,
                stop=done_recovering,
            )
        )
        while not rec_task.done():
            oldest = oldest_job(db, qid)
            if oldest is None or oldest > last_overload_id:
                done_recovering.set()
                break
            await asyncio.sleep(0.5)
        await rec_task
        rec_end = time.time()
        last_done = db.query(
            f"SELECT extract(epoch from max(archived_at)) FROM {db.t('pgqrs_archive')} "
            f"WHERE queue_id={qid} AND id <= {last_overload_id}"
        )[0][0]
        caught_up = float(last_done) - overload_end if done_recovering.is_set() else None
        phases.append(
            {
                "phase": "recovery (0.5x)",
                "t0": overload_end,
                "t1": rec_end,
                "catch_up_s": None if caught_up is None else round(max(caught_up, 0.0), 1),
                "ids": (0, 0),
                "dead_tuples_end": dead_tuples(db),
            }
        )
        await wait_drained(db, queue, 0, timeout=600)
        pool.check_exits()
        await pool.stop()
    finally:
        pool.kill_all()
        await store.close()
    check_jobs(db, queue, ids, row)
    arch = archive_times(db, queue)
    first = first_runs(pool)
    for p in phases[1:]:
        if "t0" not in p:
            continue
        t0, t1 = p.pop("t0"), p.pop("t1")
        p.pop("ids")
        done = sum(1 for _, _, a in arch if t0 <= a < t1)
        lat = [(first[j] - e) * 1000 for j, e, _ in arch if t0 <= e < t1 and j in first]
        p["jobs_per_s"] = round(done / max(t1 - t0, 0.001), 1)
        p["latency_p50_ms"] = round(percentile(lat, 50), 1)
        p["latency_p99_ms"] = round(percentile(lat, 99), 1)
    rows, _ = read_logs(pool.log_files())
    runs: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        if r[0] == "J":
            runs[int(r[1])].append((int(r[3]), int(r[2])))
    dups = sum(len(v) - 1 for v in runs.values())
    row.dup_explained = f"{dups} (terminated backends)"
    row.dup_unexplained = "-"
    rec = phases[-1].get("catch_up_s")
    row.recovery = f"caught up in {rec}s" if rec is not None else "did not catch up"
    if rec is None:
        row.fail("the backlog of the overload phase was not worked off in the recovery phase")
    row.throughput = "; ".join(
        f"{p['phase'].split(' (')[0]} {p.get('jobs_per_s', '-')}/s" for p in phases
    )
    row.notes = f"backends terminated: {terminated}; worker exits: {len(pool.unexpected_exits)}"
    row.details = {
        "phases": phases,
        "terminated": terminated,
        "produce_errors": len(errors),
        "unexpected_exits": [e[:2] for e in pool.unexpected_exits][:5],
    }
    if pool.unexpected_exits:
        row.fail(
            f"{len(pool.unexpected_exits)} workers exited by themselves: "
            f"{pool.unexpected_exits[:2]}"
        )
    return row
