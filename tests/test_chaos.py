"""A short kill storm (issue 12), the part of `make chaos` that `make test` runs.

Python and Rust worker processes (tests/chaos/worker.py and the `pgqrs-chaos-worker` bin)
drain a queue, then execute 5-step workflows, while a killer SIGKILLs a random one every
0.2-1 s and starts a new one. On SQLite and PostgreSQL: 0 jobs lost, every job archived
once, no step re-run after its output was committed, and every duplicate handler run
explained by a killed worker (its earlier run was by a worker killed afterwards, and the
later run started after that kill). The harness and its analysis are tests/chaos/.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from chaos import scenarios
from chaos.infra import Db, rust_worker_bin
from conftest import TURSO_ONE_PROCESS, without_query_param

# A few dozen kills in all, about 15 s of storm per case.
QUEUE_KILLS = 12
QUEUE_JOBS = 1500
WORKFLOW_KILLS = 10
WORKFLOW_RUNS = 120


def chaos_db(dsn: str) -> Db:
    if dsn.startswith("sqlite://"):
        return Db("sqlite", dsn.removeprefix("sqlite://"))
    schema = dict(parse_qsl(urlsplit(dsn).query))["schema"]
    return Db("postgres", without_query_param(dsn, "schema"), schema)


def explain(row: scenarios.Row) -> str:
    return f"{row.problems}\n{row.details}"


@pytest.fixture
def chaos_dsn(dsn: str, backend: str) -> str:
    if backend == "turso":
        pytest.skip(TURSO_ONE_PROCESS)
    rust_worker_bin()  # the Rust worker must be built (make build); fail loudly otherwise
    return dsn


async def test_kill_storm_queue(chaos_dsn: str, tmp_path: Path) -> None:
    row = await scenarios.kill_storm_queue(
        chaos_db(chaos_dsn),
        tmp_path,
        jobs=QUEUE_JOBS,
        kills=QUEUE_KILLS,
        workers=4,
        lo=0.2,
        hi=1.0,
    )
    assert row.kills == QUEUE_KILLS, explain(row)
    assert row.lost == 0, explain(row)
    assert row.details["archived"] == QUEUE_JOBS, explain(row)
    assert row.dup_unexplained == 0, explain(row)
    assert row.ok, explain(row)


async def test_kill_storm_workflows(chaos_dsn: str, tmp_path: Path) -> None:
    row = await scenarios.kill_storm_workflows(
        chaos_db(chaos_dsn),
        tmp_path,
        runs=WORKFLOW_RUNS,
        kills=WORKFLOW_KILLS,
        workers=4,
        lo=0.2,
        hi=1.0,
    )
    assert row.kills == WORKFLOW_KILLS, explain(row)
    assert row.lost == 0, explain(row)
    assert row.rerun_after_commit == 0, explain(row)
    assert row.dup_unexplained == 0, explain(row)
    assert row.ok, explain(row)
