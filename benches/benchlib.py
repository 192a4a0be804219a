"""Helpers shared by the scenario drivers (standard library only: they run in two venvs).

A driver is a script run as ``python benches/<driver>.py <scenario> --dsn DSN [options]``;
it prints exactly one JSON object on its last stdout line:

* ``{"values": {"throughput": 1234.5}, "extra": {...}}`` — what was measured; or
* ``{"unsupported": "why"}`` — the system cannot run this scenario (the table says so).

The DSN is pgqrs's own: ``postgresql://…?schema=NAME`` (a fresh schema) or
``sqlite:///path.db`` (a fresh file); :func:`split_schema` gives the peers the parts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def parser(description: str, scenarios: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("scenario", choices=list(scenarios))
    p.add_argument("--dsn", required=True)
    p.add_argument("--count", type=int, default=1000, help="jobs (or workflow runs)")
    p.add_argument("--batch", type=int, default=1, help="jobs per batch / per handler call")
    p.add_argument("--concurrency", type=int, default=1, help="concurrent handlers / runs")
    p.add_argument("--rate", type=float, default=200.0, help="S4: jobs per second")
    p.add_argument("--seconds", type=float, default=10.0, help="S4: how long to produce")
    p.add_argument("--steps", type=int, default=3, help="S5: steps per workflow")
    p.add_argument("--limit", type=int, help="S3: the queue's concurrency limit (default: none)")
    p.add_argument(
        "--groups",
        type=int,
        help="S3: spread the jobs over this many groups, each limited to --group-limit",
    )
    p.add_argument("--group-limit", type=int, default=1, help="S3: a group's concurrency limit")
    p.add_argument(
        "--analyze",
        choices=["ready", "leased"],
        help="S3: take planner statistics of the filled table first (see analyze())",
    )
    return p


def analyze(dsn: str, state: str) -> None:
    """Planner statistics for pgqrs's tables, as autovacuum takes them on a live queue: with
    every job ready (``ready``), or with every job leased for the moment of ``ANALYZE``
    (``leased``). Run by ``pgqrs-ceiling`` (it speaks raw SQL); ``run.py`` passes its path in
    ``PGQRS_CEILING``."""
    import subprocess

    ceiling = os.environ.get("PGQRS_CEILING")
    if not ceiling:
        raise SystemExit("--analyze needs PGQRS_CEILING (the pgqrs-ceiling binary); run.py sets it")
    subprocess.run([ceiling, f"analyze-{state}", "--dsn", dsn], check=True, capture_output=True)


def emit(result: dict[str, Any]) -> None:
    """Print the driver's result (the orchestrator reads the last stdout line)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def json_last_line(stdout: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of a driver's output."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the driver printed nothing")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise ValueError(f"expected a JSON object, got {lines[-1]!r}")
    return result


def unsupported(reason: str) -> None:
    emit({"unsupported": reason})


def payload(i: int) -> dict[str, Any]:
    """The issue's payload: ``{"i": n, "t": <enqueue time>}`` (Unix seconds)."""
    return {"i": i, "t": time.time()}


def split_schema(dsn: str) -> tuple[str, str | None]:
    """``postgresql://h/db?schema=s&x=1`` → (``postgresql://h/db?x=1``, ``"s"``)."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(
    latencies_s: Sequence[float],
    expected: int,
    seconds: float,
    enqueue_s: Sequence[float] = (),
) -> dict[str, Any]:
    """Percentiles of enqueue → handler start; ``enqueue_s``, the durations of the enqueue
    calls themselves (a commit each), bound them from below."""
    ms = [x * 1000.0 for x in latencies_s]
    calls = [x * 1000.0 for x in enqueue_s]
    enqueue = (
        {"enqueue_call_p50_ms": percentile(calls, 50), "enqueue_call_p99_ms": percentile(calls, 99)}
        if calls
        else {}
    )
    return {
        "values": {
            "p50": percentile(ms, 50),
            "p95": percentile(ms, 95),
            "p99": percentile(ms, 99),
        },
        "extra": {
            "received": len(ms),
            "expected": expected,
            "max_ms": max(ms),
            "rate": len(ms) / seconds,
            **enqueue,
        },
    }


async def steady_producer(
    enqueue: Callable[[dict[str, Any]], Awaitable[Any]], rate: float, seconds: float
) -> list[float]:
    """Enqueue ``rate`` jobs per second for ``seconds`` on an absolute schedule (a late
    enqueue does not push the later ones back). Returns each enqueue call's duration."""
    total = round(rate * seconds)
    calls = []
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = time.perf_counter()
        await enqueue(payload(i))
        calls.append(time.perf_counter() - t)
    return calls


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB from /proc/<pid>/status (VmRSS, VmHWM)."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024.0
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


class Sampler:
    """Samples this process's RSS every ``every`` seconds with a caller-supplied progress
    counter: ``[(elapsed_s, drained, rss_mb), ...]``."""

    def __init__(self, progress: Callable[[], int], every: float = 0.1) -> None:
        self.progress = progress
        self.every = every
        self.samples: list[tuple[float, int, float]] = []
        self._task: asyncio.Task[None] | None = None
        self._start = time.perf_counter()

    def start(self) -> None:
        self._start = time.perf_counter()
        self._task = asyncio.ensure_future(self._run())

    def sample(self) -> None:
        rss, _ = rss_mb()
        self.samples.append((round(time.perf_counter() - self._start, 3), self.progress(), rss))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.sample()


def memory_summary(samples: list[tuple[float, int, float]], total: int) -> dict[str, Any]:
    """Peak RSS, and RSS growth between 10% and 100% drained (flat = not growing)."""
    _, peak = rss_mb()

    def rss_at(fraction: float) -> float:
        for _, drained, rss in samples:
            if drained >= fraction * total:
                return rss
        return samples[-1][2]

    early, late = rss_at(0.10), rss_at(1.0)
    step = max(1, len(samples) // 60)
    return {
        "values": {"peak_rss": peak, "rss_growth": late - early},
        "extra": {
            "rss_at_10pct": early,
            "rss_at_50pct": rss_at(0.5),
            "rss_at_100pct": late,
            "samples": samples[::step] + ([samples[-1]] if len(samples) % step else []),
        },
    }


def run_async(main: Callable[[], Awaitable[dict[str, Any] | None]]) -> None:
    """Run a driver's coroutine and emit its result."""
    result = asyncio.run(main())  # type: ignore[arg-type]
    if result is not None:
        emit(result)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
