"""The benchmark orchestrator: ``make bench`` / ``make bench-quick`` run this.

    python benches/run.py [--quick] [--runs N] [--only S3,S4] [--systems pgqrs,ceiling]
                          [--backends postgres] [--dsn postgresql://…] [--no-report]

Every measurement runs in a subprocess of its own, on a fresh database: a new SQLite file, or a
new PostgreSQL schema (``?schema=`` in pgqrs's DSN), dropped afterwards. The systems' runs are
interleaved (run 1 of every system, then run 2, …) so that a change in the machine's load
spreads over all of them. Results are appended to ``benches/results/<timestamp>.jsonl`` as each
case finishes; ``report.py`` turns them into ``latest.md`` and ``charts.py`` into SVG charts.

Standard library only. What is measured, and by what, is data: ``BACKENDS``, ``SYSTEMS`` and
``CASES`` below.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEFAULT_DSN = os.environ.get(
    "PGQRS_BENCH_DSN", os.environ.get("PGQRS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")
)

# --- What runs --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Backend:
    """``dsn`` is a template: ``{file}`` (a fresh file per run) or ``{schema}`` (a fresh
    PostgreSQL schema per run); ``{pg}`` is the PostgreSQL server's DSN (``--dsn``)."""

    key: str
    title: str
    dsn: str


BACKENDS = [
    Backend("postgres", "PostgreSQL", "{pg}?schema={schema}"),
    Backend("sqlite", "SQLite", "sqlite://{file}"),
    Backend("turso", "Turso", "turso://{file}"),
]


@dataclasses.dataclass(frozen=True)
class System:
    key: str
    title: str
    kind: str  # "python" (a driver script run by a venv's python) or "native" (a Rust binary)
    backends: tuple[str, ...] | None  # None: every backend
    python: str = ""  # python: the interpreter, relative to the repository
    script: str = ""  # python: the driver, in benches/; native: the binary's name


SYSTEMS = [
    System("pgqrs", "pgqrs (Python)", "python", None, ".venv/bin/python", "pgqrs_bench.py"),
    System("pgqrs-rust", "pgqrs (Rust API)", "native", None, script="pgqrs-rust-api"),
    System("ceiling", "ceiling (SQL)", "native", ("postgres", "sqlite"), script="pgqrs-ceiling"),
    System(
        "pgqrs-0.15.3",
        "pgqrs 0.15.3",
        "python",
        ("postgres",),
        "benches/.venv-peers/bin/python",
        "peer_pgqrs015.py",
    ),
    System(
        "pgqueuer",
        "PgQueuer",
        "python",
        ("postgres",),
        "benches/.venv-peers/bin/python",
        "peer_pgqueuer.py",
    ),
]


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool = True


THROUGHPUT = (Metric("throughput", "throughput", "jobs/s"),)
LATENCY = (
    Metric("p50", "p50", "ms", False),
    Metric("p95", "p95", "ms", False),
    Metric("p99", "p99", "ms", False),
)
WORKFLOW = (
    Metric("runs_per_s", "runs/s", "runs/s"),
    Metric("step_ms", "step overhead (mean)", "ms", False),
    Metric("step_p50", "step overhead (p50)", "ms", False),
)
MEMORY = (
    Metric("peak_rss", "peak RSS", "MiB", False),
    Metric("rss_growth", "RSS growth 10%→100% drained", "MiB", False),
)


@dataclasses.dataclass(frozen=True)
class Case:
    key: str
    title: str
    scenario: str  # the driver's scenario
    metrics: tuple[Metric, ...]
    full: dict[str, Any]  # driver arguments, full run
    quick: dict[str, Any]  # driver arguments, quick run
    native: bool = False  # the Rust binaries (ceiling, Rust API) have this scenario
    backends: tuple[str, ...] | None = None
    systems: tuple[str, ...] | None = None
    dsn_params: str = ""  # extra query parameters for PostgreSQL DSNs


CASES = [
    Case("S1", "S1 enqueue one at a time", "s1", THROUGHPUT,
         {"count": 5000}, {"count": 1000}, native=True),
    Case("S2", "S2 batch enqueue (batches of 500)", "s2", THROUGHPUT,
         {"count": 50000, "batch": 500}, {"count": 10000, "batch": 500}, native=True),
    # Not one of the seed's scenarios (issue 13): S1 with a unique key per job, every key new,
    # so each enqueue checks its key and inserts; against S1 of the same run.
    Case("S1 unique", "S1 enqueue one at a time, each with a unique key", "s1u", THROUGHPUT,
         {"count": 5000}, {"count": 1000}, systems=("pgqrs",)),
    Case("S3 c1 b1", "S3 drain: 1 consumer, batch 1", "s3", THROUGHPUT,
         {"count": 20000, "concurrency": 1, "batch": 1},
         {"count": 2000, "concurrency": 1, "batch": 1}, native=True),
    Case("S3 c4 b1", "S3 drain: 4 consumers, batch 1", "s3", THROUGHPUT,
         {"count": 20000, "concurrency": 4, "batch": 1},
         {"count": 3000, "concurrency": 4, "batch": 1}, native=True),
    Case("S3 c4 b50", "S3 drain: 4 consumers, batch 50", "s3", THROUGHPUT,
         {"count": 20000, "concurrency": 4, "batch": 50},
         {"count": 10000, "concurrency": 4, "batch": 50}, native=True),
    # The drains again on a table with planner statistics, as autovacuum leaves a live queue:
    # analyzed with every job ready, or with every job leased (then made ready again). A fresh
    # schema has none, so the rows above never meet a plan chosen from stale statistics.
    # Turso is not listed: its files belong to one process, and the statistics are taken by
    # another (pgqrs-ceiling).
    Case("S3 c4 b1 analyzed", "S3 drain, table analyzed all ready: 4 consumers, batch 1", "s3",
         THROUGHPUT, {"count": 20000, "concurrency": 4, "batch": 1, "analyze": "ready"},
         {"count": 3000, "concurrency": 4, "batch": 1, "analyze": "ready"}, native=True,
         backends=("postgres", "sqlite"), systems=("pgqrs", "pgqrs-rust")),
    Case("S3 c4 b50 analyzed", "S3 drain, table analyzed all ready: 4 consumers, batch 50", "s3",
         THROUGHPUT, {"count": 20000, "concurrency": 4, "batch": 50, "analyze": "ready"},
         {"count": 10000, "concurrency": 4, "batch": 50, "analyze": "ready"}, native=True,
         backends=("postgres", "sqlite"), systems=("pgqrs", "pgqrs-rust")),
    Case("S3 c4 b50 analyzed-leased", "S3 drain, table analyzed all leased: 4 consumers, "
         "batch 50", "s3", THROUGHPUT,
         {"count": 20000, "concurrency": 4, "batch": 50, "analyze": "leased"},
         {"count": 10000, "concurrency": 4, "batch": 50, "analyze": "leased"}, native=True,
         backends=("postgres", "sqlite"), systems=("pgqrs", "pgqrs-rust")),
    # Not the seed's (issue 13): the c4 b50 drain of a queue with a concurrency limit of 100
    # (the worker's own claim-ahead would hold more), and of jobs in 20 groups limited to 5
    # each (the limited claim walks the groups). Against S3 c4 b50 of the same run.
    Case("S3 c4 b50 limit 100", "S3 drain, concurrency limit 100: 4 consumers, batch 50", "s3",
         THROUGHPUT, {"count": 20000, "concurrency": 4, "batch": 50, "limit": 100},
         {"count": 10000, "concurrency": 4, "batch": 50, "limit": 100}, systems=("pgqrs",)),
    Case("S3 c4 b50 groups", "S3 drain, 20 groups limited to 5 each: 4 consumers, batch 50",
         "s3", THROUGHPUT,
         {"count": 20000, "concurrency": 4, "batch": 50, "groups": 20, "group-limit": 5},
         {"count": 10000, "concurrency": 4, "batch": 50, "groups": 20, "group-limit": 5},
         systems=("pgqrs",)),
    Case("S4", "S4 enqueue → handler start, 200 jobs/s, worker concurrency 4", "s4", LATENCY,
         {"rate": 200, "seconds": 10, "concurrency": 4},
         {"rate": 200, "seconds": 3, "concurrency": 4}),
    # Not the seed's (issue 13): a schedule ticking every second, fired by the one worker of
    # its queue; how late after its due time each tick's job starts (target: p99 under 1 s).
    Case("Tick", "scheduled tick → handler start, a cron tick every second", "tick", LATENCY,
         {"seconds": 20}, {"seconds": 6}, systems=("pgqrs",)),
    Case("S5 seq", "S5 workflows (3 no-op steps), one at a time", "s5", WORKFLOW,
         {"count": 500, "concurrency": 1, "steps": 3},
         {"count": 100, "concurrency": 1, "steps": 3}),
    Case("S5 c16", "S5 workflows (3 no-op steps), 16 at a time", "s5", WORKFLOW,
         {"count": 500, "concurrency": 16, "steps": 3},
         {"count": 100, "concurrency": 16, "steps": 3}),
    Case("Memory", "worker draining a backlog (concurrency 4, batch 50), RSS", "mem", MEMORY,
         {"count": 200000, "concurrency": 4, "batch": 50},
         {"count": 30000, "concurrency": 4, "batch": 50}, systems=("pgqrs",)),
    # Not one of the scenarios: S2 again over TLS (sslmode=require), as against a
    # remote server; pgqrs (and the ceiling) skip TLS to a local server by default.
    Case("S2 TLS", "S2 over TLS (sslmode=require)", "s2", THROUGHPUT,
         {"count": 50000, "batch": 500}, {"count": 5000, "batch": 500}, native=True,
         backends=("postgres",), systems=("pgqrs", "pgqrs-rust", "ceiling"),
         dsn_params="sslmode=require"),
]  # fmt: skip


# --- Running ------------------------------------------------------------------------------


def native_bin(name: str) -> str:
    """A binary of benches/rust, from cargo's target directory (built by `make build`)."""
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        target = json.loads(meta)["target_directory"]
    path = Path(target) / "release" / name
    if not path.exists():
        sys.exit(f"{path} is missing: build it with `make build` (or run `make bench`)")
    return str(path)


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg = args.dsn
        self.ceiling = native_bin("pgqrs-ceiling")  # also creates and drops the schemas
        self.tmp = RESULTS / ".tmp-db"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.counter = 0

    # fresh databases
    def fresh(self, backend: Backend, case: Case) -> tuple[str, Any]:
        self.counter += 1
        name = f"bench_{os.getpid()}_{self.counter}"
        if "{schema}" in backend.dsn:
            pg = self.pg
            if case.dsn_params:
                pg += ("&" if "?" in pg else "?") + case.dsn_params
            dsn = backend.dsn.format(pg=pg, schema=name)
            if "?" in pg:  # the template's "?schema=" follows the server DSN's own query
                dsn = dsn.replace("?schema=", "&schema=", 1)
            self.ceiling_cmd("reset-schema", dsn)
            return dsn, lambda: self.ceiling_cmd("drop-schema", dsn)
        path = self.tmp / f"{name}.db"
        dsn = backend.dsn.format(file=path)

        def cleanup() -> None:
            for f in glob.glob(f"{path}*"):
                if os.path.isdir(f):
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    os.unlink(f)

        cleanup()
        return dsn, cleanup

    def ceiling_cmd(self, cmd: str, dsn: str) -> None:
        subprocess.run([self.ceiling, cmd, "--dsn", dsn], check=True, capture_output=True)

    def command(self, system: System, case: Case, dsn: str, params: dict[str, float]) -> list[str]:
        if system.kind == "native":
            cmd = [native_bin(system.script), case.scenario, "--dsn", dsn]
            flags = {
                "count": "--count",
                "batch": "--batch",
                "concurrency": "--consumers",
                "analyze": "--analyze",
            }
            for k, v in params.items():
                if k in flags:
                    cmd += [flags[k], arg(v)]
            return cmd
        cmd = [str(ROOT / system.python), str(HERE / system.script), case.scenario, "--dsn", dsn]
        for k, v in params.items():
            cmd += [f"--{k}", arg(v)]
        return cmd

    def run_once(self, system: System, backend: Backend, case: Case) -> dict[str, Any]:
        params = case.quick if self.args.quick else case.full
        dsn, cleanup = self.fresh(backend, case)
        try:
            cmd = self.command(system, case, dsn, params)
            start = time.perf_counter()
            env = dict(os.environ, PGQRS_CEILING=self.ceiling)
            try:
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=self.args.timeout,
                    cwd=ROOT,
                    env=env,
                )
            except subprocess.TimeoutExpired:
                return {"error": f"timed out after {self.args.timeout} s"}
            wall = time.perf_counter() - start
            lines = [x for x in proc.stdout.splitlines() if x.strip()]
            try:
                result = json.loads(lines[-1]) if lines else None
            except json.JSONDecodeError:
                result = None
            if proc.returncode != 0 or not isinstance(result, dict):
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                return {"error": f"exit {proc.returncode}: " + " | ".join(tail)[-400:]}
            if system.kind == "native":
                result = {"values": {"throughput": result["value"]}, "extra": result}
            result["wall_s"] = wall
            return result
        finally:
            cleanup()


def arg(v: Any) -> str:
    """A driver argument: whole numbers without a decimal point, strings as they are."""
    if isinstance(v, str):
        return v
    return str(int(v)) if float(v).is_integer() else str(v)


def runs_for(system: System, backend: Backend, case: Case) -> bool:
    if system.backends is not None and backend.key not in system.backends:
        return False
    if case.backends is not None and backend.key not in case.backends:
        return False
    if case.systems is not None and system.key not in case.systems:
        return False
    return system.kind != "native" or case.native


def summarize(
    case: Case,
    system: System,
    backend: Backend,
    runs: list[dict[str, Any]],
    params: dict[str, float],
    n_runs: int,
) -> list[dict[str, Any]]:
    """One record per metric: the runs' values, median, min and max."""
    base = {
        "case": case.key,
        "scenario": case.title,
        "system": system.key,
        "system_title": system.title,
        "backend": backend.key,
        "backend_title": backend.title,
        "params": params,
    }
    unsupported = next((r["unsupported"] for r in runs if "unsupported" in r), None)
    errors = [r["error"] for r in runs if "error" in r]
    out = []
    for m in case.metrics:
        values = [r["values"][m.key] for r in runs if "values" in r and m.key in r["values"]]
        rec = dict(base, metric=m.key, metric_title=m.title, unit=m.unit)
        rec["higher_is_better"] = m.higher_is_better
        rec["runs"] = values
        if values:
            rec.update(median=statistics.median(values), min=min(values), max=max(values))
        else:
            rec.update(median=None, min=None, max=None)
        if unsupported:
            rec["unsupported"] = unsupported
        if errors:
            rec["errors"] = errors
        extras = [r.get("extra") for r in runs if r.get("extra")]
        if extras:
            rec["extra"] = extras
        rec["expected_runs"] = n_runs
        out.append(rec)
    return out


def environment(runner: Runner) -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""

    def version(dsn: str) -> str:
        text = out([runner.ceiling, "version", "--dsn", dsn])
        try:
            return str(json.loads(text)["version"])
        except (ValueError, KeyError):
            return "?"

    peers = out(
        [
            str(ROOT / "benches/.venv-peers/bin/python"),
            "-c",
            "import importlib.metadata as m; "
            "print(', '.join(f'{p} {m.version(p)}' for p in ('pgqrs','pgqueuer','asyncpg')))",
        ]
    )

    # What was measured must be what the sources say: warn about builds older than them.
    def newest(*dirs: str) -> float:
        return max(
            (f.stat().st_mtime for d in dirs for f in (ROOT / d).rglob("*") if f.is_file()),
            default=0.0,
        )

    core = newest("crates/pgqrs/src")
    builds = {
        "python extension": (
            min(
                (f.stat().st_mtime for f in (ROOT / "py-pgqrs/python/pgqrs").glob("_pgqrs*.so")),
                default=0.0,
            ),
            max(core, newest("py-pgqrs/src")),
        ),
        "pgqrs-rust-api": (Path(native_bin("pgqrs-rust-api")).stat().st_mtime, core),
        "pgqrs-ceiling": (Path(runner.ceiling).stat().st_mtime, newest("benches/rust/src")),
    }
    stale = [name for name, (built, source) in builds.items() if built < source]
    for name in stale:
        log(f"WARNING: the {name} is older than its sources: run `make build` (or `make bench`)")
    commit = out(["git", "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "kind": "environment",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": runner.args.quick,
        "runs": runner.args.runs,
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": version(runner.pg),
        "sqlite": version("sqlite::memory:"),
        "peers": peers,
        "load_at_start": os.getloadavg(),
        "stale_builds": stale,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts, 1 run each")
    p.add_argument("--runs", type=int, help="runs per case (default 3, quick 1)")
    p.add_argument("--only", help="comma-separated case keys or prefixes (e.g. S3,S4)")
    p.add_argument("--systems", help="comma-separated system keys")
    p.add_argument("--backends", help="comma-separated backend keys")
    p.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL server DSN")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--out", help="results file (default benches/results/<timestamp>.jsonl)")
    p.add_argument("--no-report", action="store_true", help="skip latest.md and the charts")
    args = p.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    cases = [c for c in CASES if only is None or any(c.key.startswith(o) for o in only)]
    systems = [s for s in SYSTEMS if not args.systems or s.key in args.systems.split(",")]
    backends = [b for b in BACKENDS if not args.backends or b.key in args.backends.split(",")]
    runner = Runner(args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / "quick" if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else out_dir / f"{stamp}.jsonl"
    env = environment(runner)
    log(f"load average {env['load_at_start']}; {env['postgres']}; {env['sqlite']}")
    log(f"writing {show(out)}")
    with open(out, "w") as f:
        f.write(json.dumps(env) + "\n")
    started = time.perf_counter()
    for case in cases:
        for backend in backends:
            todo = [s for s in systems if runs_for(s, backend, case)]
            results: dict[str, list[dict[str, Any]]] = {s.key: [] for s in todo}
            for i in range(args.runs):
                for system in todo:
                    if any("unsupported" in r for r in results[system.key]):
                        continue
                    r = runner.run_once(system, backend, case)
                    results[system.key].append(r)
                    log(f"[{case.key} | {backend.key} | {system.key}] run {i + 1}/{args.runs}: "
                        + describe(r, case))  # fmt: skip
            with open(out, "a") as f:
                for system in todo:
                    params = case.quick if args.quick else case.full
                    runs = results[system.key]
                    for rec in summarize(case, system, backend, runs, params, args.runs):
                        f.write(json.dumps(rec) + "\n")
    with open(out, "a") as f:
        f.write(json.dumps({"kind": "end", "load_at_end": os.getloadavg(),
                            "elapsed_s": time.perf_counter() - started}) + "\n")  # fmt: skip
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min; load {os.getloadavg()}")
    if not args.no_report:
        import charts
        import report

        if args.out:  # a results file of one's own: its report and charts go next to it
            md, svg_dir = out.with_suffix(".md"), out.parent / f"{out.stem}-svg"
        else:
            md = out_dir / "latest.md"
            svg_dir = out_dir / "svg" if args.quick else ROOT / "docs" / "bench"
        report.write(out, md)
        log(f"wrote {show(md)}")
        for path in charts.write(out, svg_dir):
            log(f"wrote {show(path)}")


def describe(r: dict[str, Any], case: Case) -> str:
    if "unsupported" in r:
        return f"not supported: {r['unsupported']}"
    if "error" in r:
        return f"ERROR {r['error']}"
    vals = ", ".join(
        f"{m.title} {r['values'][m.key]:,.2f} {m.unit}"
        for m in case.metrics
        if m.key in r["values"]
    )
    return f"{vals} ({r.get('wall_s', 0):.1f} s)"


def show(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
