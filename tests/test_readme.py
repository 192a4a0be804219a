"""Every Python example in README.md runs as written, only the connection string changed, on
each backend.

A block right after the line ``<!-- postgres-only: psycopg -->`` uses psycopg and PostgreSQL's
SQL function, and runs on PostgreSQL only: psycopg gets the server's DSN with the test's schema
as its ``search_path`` (libpq does not take pgqrs's ``schema`` parameter), so that the
unqualified ``pgqrs_enqueue`` of the example is the test schema's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from conftest import with_query_param, without_query_param
from support import child_env

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "postgresql://localhost/mydb"


POSTGRES_ONLY = "<!-- postgres-only: psycopg -->"
PSYCOPG_CONNECT = f'psycopg.AsyncConnection.connect("{PLACEHOLDER}")'


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, PostgreSQL only) of every ```python fenced block."""
    blocks = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append((line, m.group(1), before.strip() == POSTGRES_ONLY))
    return blocks


README = ROOT / "README.md"
BLOCKS = python_blocks(README.read_text()) if README.exists() else []


def psycopg_dsn(dsn: str) -> str:
    """The test's DSN for libpq: no ``schema``, the schema as the ``search_path``."""
    schema = dict(parse_qsl(urlsplit(dsn).query))["schema"]
    return with_query_param(
        without_query_param(dsn, "schema"), "options", f"-csearch_path={schema}"
    )


def test_readme_has_python_examples() -> None:
    assert README.exists(), f"{README} is missing"
    assert BLOCKS, f"no ```python block in {README}"
    assert any(PLACEHOLDER in code for _, code, _ in BLOCKS), (
        f"no example connects to {PLACEHOLDER}: the tests could not point them at a test DSN"
    )


def test_postgres_only_blocks_are_marked() -> None:
    for line, code, pg_only in BLOCKS:
        if "psycopg" in code:
            assert pg_only and PSYCOPG_CONNECT in code, (
                f"{README.name}:{line} uses psycopg: put {POSTGRES_ONLY} on the line before it "
                f"and connect with {PSYCOPG_CONNECT}"
            )
    assert any(pg_only for _, _, pg_only in BLOCKS), "the psycopg example is gone"


@pytest.mark.parametrize(
    ("code", "pg_only"),
    [(code, pg_only) for _, code, pg_only in BLOCKS],
    ids=[f"{README.name}:{line}" for line, _, _ in BLOCKS],
)
def test_readme_example_runs(
    code: str, pg_only: bool, backend: str, dsn: str, tmp_path: Path
) -> None:
    if pg_only:
        if backend != "postgres":
            pytest.skip("a psycopg example: PostgreSQL only")
        code = code.replace(
            PSYCOPG_CONNECT, f"psycopg.AsyncConnection.connect({psycopg_dsn(dsn)!r})"
        )
    script = tmp_path / "example.py"
    script.write_text(code.replace(PLACEHOLDER, dsn))
    p = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )
    assert p.returncode == 0, (
        f"example exited {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    )
