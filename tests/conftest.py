"""Fixtures shared by the Python test suite.

Every test that takes the ``dsn`` fixture runs once per backend:

* ``sqlite``: a fresh database file in the test's own ``tmp_path``.
* ``turso``: the same, on the embedded Turso engine (``turso://``).
* ``postgres``: the server named by ``PGQRS_TEST_DSN``, with a fresh schema per
  test (``?schema=t_<random>``, which the core honours), dropped at teardown.

Without ``PGQRS_TEST_DSN`` the PostgreSQL cases are skipped, and so are they
when its server cannot be reached -- except under CI (``CI=true``), where both
are failures: CI must never go green by silently skipping a backend.

``PGQRS_TEST_BACKENDS`` (comma-separated, default ``sqlite,postgres,turso``) limits
the run to some backends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

import pgqrs

DSN_ENV = "PGQRS_TEST_DSN"
BACKENDS_ENV = "PGQRS_TEST_BACKENDS"
ALL_BACKENDS = ("sqlite", "postgres", "turso")
# Backends on one file, opened by the test's own process.
FILE_BACKENDS = ("sqlite", "turso")
# Why tests that open one database from several processes at once skip Turso.
TURSO_ONE_PROCESS = (
    "Turso allows one process at a time to open a database (README, Choose Your Backend); "
    "tests/test_turso.py checks the typed error a second process gets"
)


def in_ci() -> bool:
    """True when running under CI, where a missing backend is an error."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def selected_backends() -> list[str]:
    raw = os.environ.get(BACKENDS_ENV, "")
    wanted = [b.strip() for b in raw.split(",") if b.strip()] or list(ALL_BACKENDS)
    unknown = sorted(set(wanted) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"{BACKENDS_ENV}: unknown backend(s) {unknown}")
    return wanted


def with_query_param(dsn: str, key: str, value: str) -> str:
    """Return ``dsn`` with ``key=value`` set in its query string."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def without_query_param(dsn: str, key: str) -> str:
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    return urlunsplit(parts._replace(query=urlencode(query)))


@cache
def postgres_unreachable_reason(dsn: str) -> str | None:
    """Why the server of ``dsn`` cannot be reached, or None if it can.

    A plain connection attempt (TCP, or the Unix socket named by ``?host=/dir``):
    enough to tell "no server" from "server up", with no driver needed here.
    """
    parts = urlsplit(dsn)
    params = dict(parse_qsl(parts.query))
    host = params.get("host") or parts.hostname or "localhost"
    try:
        port = int(params.get("port") or parts.port or 5432)
    except ValueError:
        return f"bad port in {DSN_ENV}"
    try:
        if host.startswith("/"):
            path = str(Path(host) / f".s.PGSQL.{port}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect(path)
        else:
            with socket.create_connection((host, port), timeout=3):
                pass
    except OSError as exc:
        return f"PostgreSQL at {host}:{port} is unreachable: {exc}"
    return None


def postgres_base_dsn() -> str:
    """The configured PostgreSQL DSN; skips (or fails, under CI) without a server."""
    dsn = os.environ.get(DSN_ENV, "").strip()
    if not dsn:
        message = f"{DSN_ENV} is not set"
        if in_ci():
            pytest.fail(f"{message}: CI must run the PostgreSQL cases", pytrace=False)
        pytest.skip(message)
    reason = postgres_unreachable_reason(dsn)
    if reason is not None:
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return dsn


def drop_schema(base_dsn: str, schema: str) -> None:
    """Best-effort ``DROP SCHEMA ... CASCADE`` through psql (skipped without it)."""
    psql = shutil.which("psql")
    if psql is None:
        return
    libpq_dsn = without_query_param(base_dsn, "schema")
    sql = f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'
    subprocess.run(
        [psql, libpq_dsn, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(params=selected_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend this test case runs on."""
    return str(request.param)


@pytest.fixture
def dsn(backend: str, tmp_path: Path) -> Iterator[str]:
    """A connection string to an empty, private store on each backend."""
    if backend in FILE_BACKENDS:
        yield f"{backend}://{tmp_path}/t.db"
        return

    base = postgres_base_dsn()
    schema = f"t_{secrets.token_hex(6)}"
    yield with_query_param(base, "schema", schema)
    drop_schema(base, schema)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[pgqrs.Store]:
    """A connected store on ``dsn`` with pgqrs installed; closed at teardown."""
    s = await pgqrs.connect(dsn)
    await pgqrs.admin(s).install()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module", params=selected_backends())
def module_dsn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like ``dsn``, but shared by the tests of one module (one store across several tests,
    hence across several of pytest-asyncio's function-scoped event loops)."""
    if request.param in FILE_BACKENDS:
        yield f"{request.param}://{tmp_path_factory.mktemp('module')}/m.db"
        return
    base = postgres_base_dsn()
    schema = f"m_{secrets.token_hex(6)}"
    yield with_query_param(base, "schema", schema)
    drop_schema(base, schema)
