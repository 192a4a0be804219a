"""`make chaos`: pgqrs under faults that come at random, with real processes (issue 12).

    python tests/chaos/run.py [--quick] [--only 1,2,...] [--kills N] [--pg-dsn DSN]

1. Kill storm, queue: Python and Rust worker processes drain a queue while a killer
   SIGKILLs a random one every 0.2-2 s and starts a new one; 0 jobs lost, every duplicate
   handler run explained by a killed worker's lease.
2. Kill storm, workflows: the same with 5-step workflows; no step re-runs after its output
   was committed.
3. PostgreSQL restarts (immediate and fast), then PgBouncer and PostgreSQL behind it.
4. A REPEATABLE READ transaction pins xmin while jobs flow: figures per window.
5. Hostile neighbours: backend kills, 300 idle connections, REPEATABLE READ readers,
   producers at 1.5x the drain rate, then recovery.
6. Bad input (tests/test_bad_input.py, property-based), when that file exists.

1 and 2 run on PostgreSQL and on a SQLite file; 3-5 on a private PostgreSQL instance this
script starts on a free port (and removes). Everything stops by itself. Results:
tests/chaos/results/latest.md (the table and the figures) and results.jsonl (raw, appended).
Exit status 1 if an invariant was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos import scenarios
from chaos.infra import (
    REPO,
    ChaosSetupError,
    Db,
    PrivatePgBouncer,
    PrivatePostgres,
    pgbouncer_bin,
)
from chaos.scenarios import Row

RESULTS = Path(__file__).resolve().parent / "results"
TURSO_NA = "n/a: one process per database file"

# Sizes: (full, quick). The full run aims at 45 minutes on 2 cores, 18 of them for the 1,000
# kills of the PostgreSQL queue storm (one every 0.2-2 s).
SIZES: dict[str, tuple[Any, Any]] = {
    "q_pg_jobs": (100_000, 10_000),
    "q_pg_kills": (1_000, 40),
    "q_sqlite_jobs": (30_000, 5_000),
    "q_sqlite_kills": (150, 25),
    "wf_pg_runs": (8_000, 1_000),
    "wf_pg_kills": (150, 25),
    "wf_sqlite_runs": (3_000, 500),
    "wf_sqlite_kills": (100, 15),
    "restart_every": (8.0, 3.0),
    "restart_rate": (500.0, 300.0),
    "pin_jobs": (200_000, 12_000),
    "pin_seconds": (300.0, 40.0),
    "pin_base_seconds": (120.0, 20.0),
    "pin_window": (10.0, 5.0),
    "hostile_phase": (60.0, 10.0),
    "hostile_capacity_jobs": (100_000, 20_000),
    # Examples per bad-input test (hypothesis; the proptest half runs 256 cases per property):
    # 200 take about 3 minutes on 2 cores and give tens of thousands of distinct inputs.
    "bad_input_examples": (200, 50),
}

COLUMNS = [
    ("scenario", "scenario"),
    ("backend", "backend"),
    ("kills", "kills"),
    ("jobs", "jobs"),
    ("lost", "lost"),
    ("dup", "duplicate handler runs (explained / unexplained)"),
    ("rerun_after_commit", "steps re-run after commit"),
    ("recovery", "recovery"),
    ("throughput", "throughput"),
    ("ok", "invariants"),
]


def cell(row: Row, key: str) -> str:
    if key == "dup":
        return f"{row.dup_explained} / {row.dup_unexplained}"
    if key == "ok":
        return "ok" if row.ok else "BROKEN"
    return str(getattr(row, key))


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r, k).replace("|", "/") for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def bad_input_row(workdir: Path, examples: int) -> Row:
    row = Row("6. bad input", "all")
    test = REPO / "tests" / "test_bad_input.py"
    if not test.exists():
        row.notes = "not run: tests/test_bad_input.py does not exist"
        row.jobs = "not run"
        return row
    # `make chaos` runs the Rust half first; its case count sits next to this report.
    report = Path(os.environ.get("PGQRS_CHAOS_BAD_INPUT_REPORT") or workdir / "bad_input.json")
    report.unlink(missing_ok=True)
    env = dict(
        os.environ, PGQRS_BAD_INPUT_EXAMPLES=str(examples), PGQRS_BAD_INPUT_REPORT=str(report)
    )
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pytest", str(test), "-q"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
    except subprocess.TimeoutExpired as e:
        row.jobs = "not finished"
        row.fail(f"bad-input tests did not finish within {e.timeout:.0f} s")
        return row
    row.details["seconds"] = round(time.monotonic() - t0, 1)
    data: dict[str, Any] = {}
    if report.exists():
        data = json.loads(report.read_text())
    row.details["report"] = data
    n = data.get("distinct_bad_inputs", "?")
    fails = data.get("failures", "?")
    row.jobs = f"{n} bad inputs"
    row.lost = "-"
    row.notes = (
        f"pytest exit {p.returncode}; failures: {fails}; "
        f"proptest cases: {data.get('rust_cases') or 'not run'}"
    )
    if p.returncode != 0 or fails not in (0, "0"):
        row.fail(f"bad-input tests failed (exit {p.returncode}): {p.stdout[-1500:]}")
    return row


async def main(a: argparse.Namespace) -> int:
    k = 1 if a.quick else 0
    size = {name: v[k] for name, v in SIZES.items()}
    only = {int(x) for x in a.only.split(",")} if a.only else {1, 2, 3, 4, 5, 6}
    tmp = Path(tempfile.mkdtemp(prefix="pgqrs-chaos-"))
    rows: list[Row] = []
    started = time.time()
    pg: PrivatePostgres | None = None

    def done(row: Row) -> None:
        rows.append(row)
        state = "ok" if row.ok else "BROKEN: " + "; ".join(row.problems)
        print(f"--- {row.scenario} [{row.backend}] {state}", flush=True)
        print("    " + json.dumps({k: cell(row, k) for k, _ in COLUMNS}), flush=True)

    try:
        pg_db: Db | None = None
        if a.pg_dsn:
            pg_db = Db("postgres", a.pg_dsn, "chaos_" + os.urandom(4).hex())
        if not a.pg_dsn or only & {3, 4, 5}:
            pg = PrivatePostgres()
            pg.start()
            print(f"private PostgreSQL on 127.0.0.1:{pg.port} ({pg.dir})", flush=True)
            if pg_db is None:
                pg_db = pg.db("chaos_storm")
        assert pg_db is not None

        def sqlite_db(name: str) -> Db:
            return Db("sqlite", str(tmp / f"{name}.db"))

        if 1 in only:
            print("=== 1. kill storm, queue", flush=True)
            kills = a.kills or size["q_pg_kills"]
            done(
                await scenarios.kill_storm_queue(
                    pg_db, tmp / "s1-pg", jobs=a.jobs or size["q_pg_jobs"], kills=kills
                )
            )
            done(
                await scenarios.kill_storm_queue(
                    sqlite_db("s1"),
                    tmp / "s1-sqlite",
                    jobs=size["q_sqlite_jobs"],
                    kills=a.kills or size["q_sqlite_kills"],
                )
            )
            rows.append(Row("1. kill storm, queue", "turso", kills=TURSO_NA, notes=TURSO_NA))
        if 2 in only:
            print("=== 2. kill storm, workflows", flush=True)
            done(
                await scenarios.kill_storm_workflows(
                    pg_db,
                    tmp / "s2-pg",
                    runs=size["wf_pg_runs"],
                    kills=a.kills or size["wf_pg_kills"],
                )
            )
            done(
                await scenarios.kill_storm_workflows(
                    sqlite_db("s2"),
                    tmp / "s2-sqlite",
                    runs=size["wf_sqlite_runs"],
                    kills=a.kills or size["wf_sqlite_kills"],
                )
            )
            rows.append(Row("2. kill storm, workflows", "turso", kills=TURSO_NA, notes=TURSO_NA))
        if 3 in only and pg is not None:
            print("=== 3. restarts", flush=True)
            done(
                await scenarios.restarts(
                    pg, tmp / "s3", count=10, every=size["restart_every"], rate=size["restart_rate"]
                )
            )
            if pgbouncer_bin() is None:
                r = Row(
                    "3. PgBouncer restarts",
                    "postgres + pgbouncer",
                    notes="not run: pgbouncer is not installed",
                )
                r.fail("pgbouncer is not installed (`make chaos` installs it)")
                rows.append(r)
            else:
                bouncer = PrivatePgBouncer(pg)
                bouncer.start()
                try:
                    done(
                        await scenarios.restarts(
                            pg,
                            tmp / "s3b",
                            count=6,
                            every=size["restart_every"],
                            rate=size["restart_rate"],
                            bouncer=bouncer,
                            label="3. PgBouncer + PostgreSQL restarts",
                        )
                    )
                finally:
                    bouncer.stop()
        if 4 in only and pg is not None:
            print("=== 4. pinned xmin", flush=True)
            done(
                await scenarios.pinned_snapshot(
                    pg,
                    tmp / "s4",
                    jobs=size["pin_jobs"],
                    seconds=size["pin_seconds"],
                    base_seconds=size["pin_base_seconds"],
                    window=size["pin_window"],
                )
            )
        if 5 in only and pg is not None:
            print("=== 5. hostile neighbours", flush=True)
            done(
                await scenarios.hostile_neighbours(
                    pg,
                    tmp / "s5",
                    phase=size["hostile_phase"],
                    capacity_jobs=size["hostile_capacity_jobs"],
                )
            )
        if 6 in only:
            print("=== 6. bad input", flush=True)
            done(bad_input_row(tmp, size["bad_input_examples"]))
    except ChaosSetupError as e:
        r = Row("setup", "-", notes=str(e))
        r.fail(str(e))
        rows.append(r)
    finally:
        if pg is not None:
            pg.stop()
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started
    write_results(rows, a, elapsed)
    print()
    print(table(rows))
    broken = [r for r in rows if not r.ok]
    for r in broken:
        print(f"BROKEN: {r.scenario} [{r.backend}]: {'; '.join(r.problems)}")
    print(f"\n{len(rows)} rows in {elapsed / 60:.1f} min; results in {RESULTS}/latest.md")
    return 1 if broken else 0


def write_results(rows: list[Row], a: argparse.Namespace, elapsed: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "python tests/chaos/run.py " + " ".join(sys.argv[1:])
    md = [
        f"# Chaos run, {when}",
        "",
        f"`{command.strip()}`, {elapsed / 60:.1f} min",
        "",
        table(rows),
        "",
    ]
    for r in rows:
        md += [f"## {r.scenario} [{r.backend}]", ""]
        if r.notes:
            md += [r.notes, ""]
        if r.problems:
            md += ["Problems:", *[f"- {p}" for p in r.problems], ""]
        if r.details:
            md += ["```json", json.dumps(r.details, indent=1, default=str)[:20000], "```", ""]
    (RESULTS / "latest.md").write_text("\n".join(md))
    with open(RESULTS / "results.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "when": when,
                    "command": command,
                    "quick": a.quick,
                    "elapsed_s": round(elapsed, 1),
                    "rows": [dataclasses.asdict(r) for r in rows],
                },
                default=str,
            )
            + "\n"
        )


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pgqrs chaos harness (make chaos)")
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    p.add_argument("--only", help="comma-separated scenario numbers (1-6)")
    p.add_argument("--kills", type=int, help="kills per kill storm (overrides the sizes)")
    p.add_argument("--jobs", type=int, help="jobs of the PostgreSQL queue kill storm")
    p.add_argument(
        "--pg-dsn",
        help="run 1 and 2 on this server (a fresh schema) instead of the private instance",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (side logs)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
