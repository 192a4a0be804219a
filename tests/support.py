"""Helpers shared by the test modules (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pgqrs

TESTS_DIR = Path(__file__).resolve().parent


async def counts(store: pgqrs.Store, queue: str) -> tuple[int, int, int, int, int]:
    """(ready, delayed, leased, archived, dead) of ``queue``."""
    m = await pgqrs.admin(store).queue_metrics(queue)
    return (m.ready, m.delayed, m.leased, m.archived, m.dead)


async def store_with_queue(dsn: str, queue: str = "q") -> pgqrs.Store:
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    await admin.create_queue(queue)
    return store


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python process that imports pgqrs and tests/ helpers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_python(
    code: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else child_env(),
        check=False,
    )


def explain(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
