"""Bad input, property-based (hypothesis): every public entry point, fed what it must refuse.

For each bad input the call must raise a *typed* error (a class of ``pgqrs.errors``) whose
message says what was wrong, within a time bound (no hang), without a panic crossing into
Python, and nothing may be written: the queues, the job counts per state and the workflow
runs are compared before and after every example. After every batch a valid produce and
claim round trip shows the store still works. Valid inputs at the edge (NUL bytes, unicode,
64-bit integers, the largest allowed payload, SQL-looking names) must round-trip exactly.

Each input is a fixed corpus of known-nasty values (always run) plus what hypothesis draws
(``PGQRS_BAD_INPUT_EXAMPLES`` examples per property, default small for ``make test``).
With ``PGQRS_BAD_INPUT_REPORT=<path>`` the module writes a JSON summary there at its end
(``make chaos`` reads it): distinct bad inputs, failures, backends, examples, and the Rust
target's case count from ``<path>.rust.json`` when that file exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgqrs
from conftest import FILE_BACKENDS, drop_schema, postgres_base_dsn, with_query_param
from pgqrs import errors
from pgqrs.decorators import step, workflow

EXAMPLES = int(os.environ.get("PGQRS_BAD_INPUT_EXAMPLES", "") or 8)
REPORT = os.environ.get("PGQRS_BAD_INPUT_REPORT", "").strip()
# Record every failure and go on (each test still fails at its end), rather than stopping at
# the first: on when writing a report.
COLLECT = bool(REPORT) or os.environ.get("PGQRS_BAD_INPUT_COLLECT", "") not in ("", "0")
# No call may take longer than this (a 100 MB payload included).
CALL_TIMEOUT = 60.0
VALID_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,48}")
BIG = "x" * (100 * 1024 * 1024)  # the 100 MB string, built once

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- The tally --------------------------------------------------------------------------------


@dataclass
class Tally:
    distinct: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    backends: set[str] = field(default_factory=set)
    valid_roundtrips: int = 0


TALLY = Tally()


def fingerprint(value: Any) -> str:
    """A stable key for a value (its type and a digest of its repr; big strings by content)."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        try:
            raw = repr(value).encode("utf-8", "surrogatepass")
        except RecursionError:
            raw = f"<{type(value).__name__} id={id(value)}>".encode()
    return f"{type(value).__name__}:{hashlib.sha1(raw).hexdigest()[:16]}"


def short(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} chars)"


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if not REPORT:
        return
    rust_cases = None
    rust = Path(REPORT + ".rust.json")
    if rust.exists():
        rust_cases = json.loads(rust.read_text()).get("rust_cases")
    Path(REPORT).write_text(
        json.dumps(
            {
                "distinct_bad_inputs": len(TALLY.distinct),
                "distinct_bad_values": len(TALLY.values),
                "bad_calls": TALLY.checks,
                "valid_roundtrips": TALLY.valid_roundtrips,
                "failures": len(TALLY.failures),
                "failure_samples": TALLY.failures[:20],
                "backends": sorted(TALLY.backends),
                "python_examples": EXAMPLES,
                "rust_cases": rust_cases,
            },
            indent=2,
        )
    )


# --- A store per backend, driven from a plain event loop (hypothesis calls sync functions) ----


@dataclass
class Env:
    backend: str
    dsn: str
    loop: asyncio.AbstractEventLoop
    store: pgqrs.Store
    tmp: Path
    rounds: int = 0

    def run(self, aw: Awaitable[Any] | Callable[[], Awaitable[Any]]) -> Any:
        """Await ``aw`` (or what ``aw()`` returns, made inside the loop: native awaitables
        need a running loop) with a time bound."""
        return self.loop.run_until_complete(asyncio.wait_for(_coro(aw), CALL_TIMEOUT))

    @property
    def admin(self) -> pgqrs.Admin:
        return pgqrs.admin(self.store)


async def _coro(aw: Awaitable[Any] | Callable[[], Awaitable[Any]]) -> Any:
    return await (aw() if callable(aw) else aw)


@pytest.fixture
def env(backend: str, tmp_path: Path) -> Iterator[Env]:
    if backend in FILE_BACKENDS:
        dsn = f"{backend}://{tmp_path}/bad.db"
        cleanup = None
    else:
        base = postgres_base_dsn()
        schema = f"bad_{secrets.token_hex(6)}"
        dsn = with_query_param(base, "schema", schema)
        cleanup = (base, schema)
    loop = asyncio.new_event_loop()
    failures_before = len(TALLY.failures)
    try:
        store = loop.run_until_complete(pgqrs.connect(dsn))
        e = Env(backend, dsn, loop, store, tmp_path)
        e.run(e.admin.install())
        for q in ("bad", "rt"):
            e.run(e.admin.create_queue(q))
        TALLY.backends.add(backend)
        yield e
        loop.run_until_complete(store.close())
        new = TALLY.failures[failures_before:]
        assert not new, f"{len(new)} bad input(s) mishandled:\n" + "\n".join(new[:50])
    finally:
        loop.close()
        if cleanup is not None:
            drop_schema(*cleanup)


async def snapshot(store: pgqrs.Store) -> dict[str, Any]:
    """What a bad input must not change: queues, job counts per state, workflow runs."""
    admin = pgqrs.admin(store)
    queues = {}
    for q in await admin.list_queues():
        m = await admin.queue_metrics(q.name)
        queues[q.name] = (m.ready, m.delayed, m.leased, m.archived, m.dead)
    runs = [(r.id, r.name, r.status, r.attempts) for r in await admin.list_workflows()]
    return {"queues": queues, "runs": runs}


def round_trip(env: Env) -> None:
    """A valid produce and claim after a batch: the store keeps working."""
    env.rounds += 1
    payload = {"round": env.rounds, "text": "ok \u00e9\u4e2d\U0001f600"}
    jid = env.run(pgqrs.produce(env.store, "rt", payload))
    consumer = env.run(env.store.consumer("rt"))
    got = env.run(consumer.dequeue(1))
    assert [m.id for m in got] == [jid], "the store stopped working after bad input"
    assert got[0].payload == payload
    env.run(consumer.archive(jid))


# --- The check of one bad input --------------------------------------------------------------

Expect = type[errors.PgqrsError] | tuple[type[errors.PgqrsError], ...]


def fail(env: Env, entry: str, value: Any, why: str) -> None:
    msg = f"[{env.backend}] {entry}({short(value)}): {why}"
    TALLY.failures.append(msg)
    if not COLLECT:
        raise AssertionError(msg)


def refused(
    env: Env,
    entry: str,
    value: Any,
    call: Callable[[], Awaitable[Any]],
    expect: Expect = errors.ValidationError,
) -> None:
    """``call()`` (given ``value`` at ``entry``) must raise ``expect``, change nothing, and
    leave the store working."""
    TALLY.distinct.add(f"{entry}|{fingerprint(value)}")
    TALLY.values.add(fingerprint(value))
    TALLY.checks += 1
    before = env.run(snapshot(env.store))
    try:
        env.run(call)
    except TimeoutError:
        fail(env, entry, value, f"no answer within {CALL_TIMEOUT} s (hang)")
    except errors.PgqrsError as e:
        if not isinstance(e, expect):
            fail(env, entry, value, f"raised {type(e).__name__} ({e}), expected {expect}")
        text = str(e)
        if not 10 <= len(text) <= 2000:
            fail(env, entry, value, f"message of {len(text)} chars: {text[:200]!r}")
        if type(e) is errors.ValidationError and not e.field:
            fail(env, entry, value, f"ValidationError without a field: {text}")
    except BaseException as e:  # PanicException derives from BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        fail(env, entry, value, f"untyped {type(e).__module__}.{type(e).__name__}: {e}"[:500])
    else:
        fail(env, entry, value, "accepted")
    after = env.run(snapshot(env.store))
    if after != before:
        fail(env, entry, value, f"wrote something: {before} -> {after}")


def batch(env: Env, entry: str, values: Iterable[Any], check: Callable[[Any], None]) -> None:
    for v in values:
        check(v)
    round_trip(env)


# --- Strategies and corpora -------------------------------------------------------------------

INJECTION = [
    "'; DROP TABLE pgqrs_jobs; --",
    '"; DROP SCHEMA public CASCADE; --',
    "x' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "q) UNION SELECT * FROM pgqrs_queues --",
    "$$; DELETE FROM pgqrs_jobs; $$",
    "\\'; ATTACH DATABASE '/tmp/x' AS x; --",
]

BAD_QUEUE_NAMES: list[Any] = [
    "",
    " ",
    "a" * 49,
    "a" * 1000,
    BIG,
    "has space",
    "tab\t",
    "new\nline",
    "nul\x00byte",
    "\x00",
    "dot.ted",
    "slash/q",
    "../etc",
    "caf\u00e9",
    "\u4e2d\u6587",
    "\U0001f4a5",
    "lone\ud800",
    "\udfff",
    "percent%",
    "q*",
    *INJECTION,
]
NOT_STRINGS: list[Any] = [None, 0, -1, 1.5, b"bytes", ["q"], {"q": 1}, object(), True]

bad_names = st.one_of(
    st.text(min_size=1, max_size=24).filter(lambda s: not VALID_QUEUE.fullmatch(s)),
    st.text(alphabet="abcXYZ019_-", min_size=49, max_size=120),
    st.sampled_from(INJECTION),
)
not_strings = st.one_of(
    st.integers(),
    st.floats(),
    st.none(),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
)


def nested(depth: int, leaf: Any = 1) -> Any:
    v: Any = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


class Opaque:
    pass


def circular() -> list[Any]:
    a: list[Any] = []
    a.append(a)
    return a


BAD_PAYLOADS: list[tuple[Any, Expect]] = [
    (math.nan, errors.SerializationError),
    (math.inf, errors.SerializationError),
    (-math.inf, errors.SerializationError),
    ({"a": [1, math.nan]}, errors.SerializationError),
    (nested(10_000), errors.SerializationError),
    (nested(101), errors.ValidationError),
    (nested(500), errors.ValidationError),
    ("lone \ud800 surrogate", errors.SerializationError),
    ({"k\udc00": 1}, errors.SerializationError),
    (BIG, errors.PayloadTooLargeError),
    ("y" * (1024 * 1024 + 1), errors.PayloadTooLargeError),
    (object(), errors.SerializationError),
    (Opaque(), errors.SerializationError),
    ({1, 2}, errors.SerializationError),
    (b"bytes", errors.SerializationError),
    (1 + 2j, errors.SerializationError),
    (datetime.now(timezone.utc), errors.SerializationError),
    ({(1, 2): "tuple key"}, errors.SerializationError),
    (circular(), errors.SerializationError),
    ({"f": print}, errors.SerializationError),
    (2**64, errors.ValidationError),
    (-(2**63) - 1, errors.ValidationError),
    (2**200, errors.ValidationError),
    ({"deep": [10**30]}, errors.ValidationError),
    (10**400, errors.ValidationError),
]

# Valid at the edge: must come back exactly as sent.
VALID_PAYLOADS: list[Any] = [
    "nul \x00 inside",
    {"\x00key": "\x00"},
    "\u00e9\u00e8 \u4e2d\u6587 \U0001f600 \u202eRTL\u202c e\u0301",
    "\ufeffbom",
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1e308,
    5e-324,
    -0.0,
    0.1,
    nested(100),
    {"sql": INJECTION},
    "",
    [],
    {},
    None,
    "z" * (1024 * 1024 - 2),  # exactly 1 MiB of JSON: the default max_payload_bytes
]

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(exclude_categories=SURROGATES)),
)
valid_json = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
bad_leaves = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda f: (f, errors.SerializationError)),
    st.integers(min_value=2**64).map(lambda i: (i, errors.ValidationError)),
    st.integers(max_value=-(2**63) - 1).map(lambda i: (i, errors.ValidationError)),
    st.text(alphabet=st.characters(categories=SURROGATES), min_size=1, max_size=3).map(
        lambda s: (s, errors.SerializationError)
    ),
    st.sampled_from([object(), {3}, b"b", 2j]).map(lambda o: (o, errors.SerializationError)),
)


@st.composite
def bad_payloads(draw: st.DrawFn) -> tuple[Any, Expect]:
    """A valid JSON document with one bad leaf planted somewhere in it."""
    leaf, expect = draw(bad_leaves)
    wrap = draw(st.integers(min_value=0, max_value=3))
    value: Any = leaf
    for _ in range(wrap):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value, expect


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, number types and -0.0 included (key order aside)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# --- Queue names on every entry point that takes one ------------------------------------------


def queue_entry_points(env: Env) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    s, a = env.store, env.admin

    async def consume(q: Any) -> Any:
        return await pgqrs.consume(s, q, lambda m: None)

    async def stream(q: Any) -> Any:
        return await s.messages(q).__anext__()

    return {
        "create_queue": lambda q: a.create_queue(q),
        "delete_queue": lambda q: a.delete_queue(q),
        "purge_queue": lambda q: a.purge_queue(q),
        "queue_metrics": lambda q: a.queue_metrics(q),
        "dead_letters": lambda q: a.dead_letters(q),
        "requeue_dead": lambda q: a.requeue_dead(q),
        "archived_jobs": lambda q: a.archived_jobs(q),
        "set_queue_retention": lambda q: a.set_queue_retention(q, archive_retention=60),
        "list_jobs": lambda q: a.list_jobs(q, "ready"),
        "produce": lambda q: pgqrs.produce(s, q, {"x": 1}),
        "produce_batch": lambda q: pgqrs.produce_batch(s, q, [1, 2]),
        "consumer": lambda q: s.consumer(q),
        "consume": consume,
        "messages": stream,
        "enqueue_workflow": lambda q: a.enqueue_workflow(q, "wf", {}),
    }


def test_queue_names(env: Env) -> None:
    points = queue_entry_points(env)

    def check(name: Any) -> None:
        for entry, call in points.items():
            refused(env, f"{entry}.queue", name, partial(call, name))

    batch(env, "queue names", BAD_QUEUE_NAMES + NOT_STRINGS, check)

    @PROPERTY
    @given(st.one_of(bad_names, not_strings))
    def prop(name: Any) -> None:
        check(name)

    prop()
    round_trip(env)


def test_queues_that_do_not_exist(env: Env) -> None:
    points = queue_entry_points(env)
    del points["create_queue"]

    def check(name: str) -> None:
        for entry, call in points.items():
            refused(
                env,
                f"{entry}.missing",
                name,
                partial(call, name),
                errors.QueueNotFoundError,
            )

    batch(env, "missing queues", ["nope", "a" * 48, "Bad", "rt-", "_"], check)

    @PROPERTY
    @given(st.from_regex(r"zz[A-Za-z0-9_-]{1,40}", fullmatch=True))
    def prop(name: str) -> None:
        check(name)

    prop()
    round_trip(env)


# --- Payloads and workflow inputs -------------------------------------------------------------


def test_bad_payloads(env: Env) -> None:
    s, a = env.store, env.admin

    def check(case: tuple[Any, Expect]) -> None:
        value, expect = case
        refused(env, "produce.payload", value, lambda: pgqrs.produce(s, "bad", value), expect)
        refused(
            env,
            "produce_batch.payload",
            value,
            lambda: pgqrs.produce_batch(s, "bad", [1, value]),
            expect,
        )
        refused(env, "create_workflow.input", value, lambda: a.create_workflow("wf", value), expect)
        refused(
            env,
            "enqueue_workflow.input",
            value,
            lambda: a.enqueue_workflow("bad", "wf", value),
            expect,
        )

    batch(env, "payloads", BAD_PAYLOADS, check)

    @PROPERTY
    @given(bad_payloads())
    def prop(case: tuple[Any, Expect]) -> None:
        check(case)

    prop()
    round_trip(env)


def test_valid_payloads_round_trip(env: Env) -> None:
    """The other side of the boundary: what is allowed is stored and read back exactly."""
    s, a = env.store, env.admin

    def check(value: Any) -> None:
        jid = env.run(pgqrs.produce(s, "rt", value))
        c = env.run(s.consumer("rt"))
        got = env.run(c.dequeue(1))
        assert [m.id for m in got] == [jid]
        assert same_json(got[0].payload, value), f"{short(value)} came back as {short(got[0])}"
        env.run(c.archive(jid))
        ctx = env.run(a.create_workflow("edge", value))
        assert same_json(ctx.input, value)
        assert same_json(env.run(a.workflow_run(ctx.id)).input, value)
        TALLY.valid_roundtrips += 1

    for v in VALID_PAYLOADS:
        check(v)

    @PROPERTY
    @given(valid_json)
    def prop(value: Any) -> None:
        check(value)

    prop()


# --- Connection strings -----------------------------------------------------------------------

DSN_PARAMS_BAD = {
    "pool_size": ["x", "-1", "0", "1.5", "", "99999999999999999999999", "100000"],
    "visibility_timeout": ["-1", "0", "abc", "1e3", "", "18446744073709551615", "NaN", "inf"],
    "max_attempts": ["0", "-1", "abc", "4294967296", "2147483648"],
    "poll_interval_ms": ["-5", "x", "1.5", "18446744073709551615"],
    "max_payload_bytes": ["0", "-1", "x", "99999999999999999999999"],
    "connect_timeout": ["-1", "x", "18446744073709551615"],
    "busy_timeout_ms": ["-1", "x", "18446744073709551615"],
    "synchronous": ["maybe", "", "off; drop table x"],
    "statement_cache": ["2", "maybe", ""],
    "notify": ["x", ""],
    "visiblity_timeout": ["2"],  # a typo: an unknown parameter must not pass silently
    "poll_interval": ["100"],  # the real one is poll_interval_ms
    "foo": ["bar"],
}
SCHEMAS_BAD = ["", "a;drop", "1abc", "a" * 64, "a b", "x'--", "\u00e9", "pg-catalog"]
GARBAGE_DSNS: list[Any] = [
    "",
    "   ",
    "\x00",
    "nonsense",
    "mysql://h/db",
    "http://x",
    "redis://localhost",
    "\U0001f4a5://x",
    "::::",
    "sqlite",
    "postgresql",
    "turso",
    "file:///tmp/x.db",
    "sqlite:///tmp/x.db?pool_size",
    "ftp://" + "a" * 10_000,
    BIG,
    *INJECTION,
    None,
    42,
    b"sqlite::memory:",
]


def _dsn_cases(env: Env) -> list[str]:
    base = env.dsn
    cases = []
    for key, values in DSN_PARAMS_BAD.items():
        for v in values:
            cases.append(with_query_param(base, key, v))
    if env.backend == "postgres":
        cases += [with_query_param(base, "schema", s) for s in SCHEMAS_BAD]
    return cases


def test_bad_connection_strings(env: Env) -> None:
    files_before = sorted(p.name for p in env.tmp.iterdir())

    def check(dsn: Any) -> None:
        refused(
            env,
            "connect",
            dsn,
            lambda: pgqrs.connect(dsn),
            (errors.ConfigError, errors.ValidationError),
        )

    batch(env, "dsns", _dsn_cases(env) + GARBAGE_DSNS, check)

    @PROPERTY
    @given(
        st.sampled_from(sorted(k for k in DSN_PARAMS_BAD if k not in ("foo",))),
        st.text(min_size=1, max_size=12).filter(lambda v: not v.isdigit() and "&" not in v),
    )
    def prop(key: str, value: str) -> None:
        if key in ("synchronous",) and value.lower() in ("full", "normal"):
            return
        if key in ("statement_cache", "notify") and value.lower() in (
            "true",
            "false",
            "1",
            "0",
            "yes",
            "no",
            "on",
            "off",
        ):
            return
        check(with_query_param(env.dsn, key, value))

    prop()

    @PROPERTY
    @given(st.text(max_size=40).filter(lambda s: ":" not in s or s.split(":")[0] == ""))
    def garbage(dsn: str) -> None:
        check(dsn)

    garbage()
    # Nothing was created beside the test's own database (a bad DSN writes no file).
    assert sorted(p.name for p in env.tmp.iterdir()) == files_before
    round_trip(env)


# --- Timeouts, limits, counts and options -----------------------------------------------------

BAD_SECONDS: list[Any] = [-1, -0.001, math.nan, math.inf, -math.inf, 1e30, 2**70, "5", None]
BAD_COUNTS: list[Any] = [0, -1, -(2**63), 2**63, 2**70, 1.5, "3", None, math.nan]
bad_seconds = st.one_of(
    st.floats(max_value=-1e-9),
    st.floats(min_value=1e12),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(max_value=-1),
    st.text(max_size=4),
)
bad_counts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**63).map(lambda i: -i),
    st.floats(),
    st.text(max_size=3),
)


def test_bad_timeouts_and_limits(env: Env) -> None:
    s, a = env.store, env.admin
    c = env.run(s.consumer("bad"))
    points_secs: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "produce.delay": lambda v: pgqrs.produce(s, "bad", 1, delay=v),
        "produce_batch.delay": lambda v: pgqrs.produce_batch(s, "bad", [1], delay=v),
        "dequeue.visibility_timeout": lambda v: c.dequeue(1, visibility_timeout=v),
        "consume.visibility_timeout": lambda v: pgqrs.consume(
            s, "bad", lambda m: None, visibility_timeout=v
        ),
        "reschedule_job.delay": lambda v: a.reschedule_job(1, delay=v),
    }
    points_counts: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "produce.max_attempts": lambda v: pgqrs.produce(s, "bad", 1, max_attempts=v),
        "dequeue.batch_size": lambda v: c.dequeue(v),
        "consume.batch_size": lambda v: pgqrs.consume(s, "bad", lambda m: None, v),
        "dead_letters.limit": lambda v: a.dead_letters("bad", v),
        "archived_jobs.limit": lambda v: a.archived_jobs("bad", v),
        "list_workflows.limit": lambda v: a.list_workflows(limit=v),
        "list_jobs.limit": lambda v: a.list_jobs("bad", "ready", limit=v),
    }
    # Too large only for some: a claim takes at most 10,000 jobs, a job at most 2^31-1
    # attempts; a listing's limit may be anything positive.
    too_large = {
        "dequeue.batch_size": [10_001, 2**31],
        "consume.batch_size": [10_001, 2**31],
        "produce.max_attempts": [2**31, 2**32],
        "list_jobs.limit": [10_001, 2**31],
    }

    def check_secs(v: Any) -> None:
        for entry, call in points_secs.items():
            if v is None:
                continue  # None means "not given" for these
            refused(env, entry, v, partial(call, v))

    def check_counts(v: Any) -> None:
        for entry, call in points_counts.items():
            if v is None and entry in ("produce.max_attempts", "list_jobs.limit"):
                continue  # not given: the default
            refused(env, entry, v, partial(call, v))

    batch(env, "seconds", BAD_SECONDS, check_secs)
    batch(env, "counts", BAD_COUNTS, check_counts)
    for entry, values in too_large.items():
        for v in values:
            refused(env, entry, v, partial(points_counts[entry], v))

    # One-off bad options.
    far = datetime(9999, 12, 31, tzinfo=timezone.utc)
    cases: list[tuple[str, Any, Callable[[], Awaitable[Any]]]] = [
        ("produce.at", "naive", lambda: pgqrs.produce(s, "bad", 1, at=datetime(2030, 1, 1))),
        ("produce.at", "year 9999", lambda: pgqrs.produce(s, "bad", 1, at=far)),
        (
            "produce.at+delay",
            "both",
            lambda: pgqrs.produce(s, "bad", 1, 5, at=datetime.now(timezone.utc)),
        ),
        ("produce.delay", "100 years", lambda: pgqrs.produce(s, "bad", 1, timedelta(days=36600))),
        ("list_workflows.status", "bogus", lambda: a.list_workflows(status="bogus")),  # type: ignore[arg-type]
        ("list_workflows.status", "inj", lambda: a.list_workflows(status=INJECTION[0])),  # type: ignore[arg-type]
        ("list_jobs.state", "bogus", lambda: a.list_jobs("bad", "bogus")),  # type: ignore[arg-type]
        ("list_jobs.cursor", "garbage", lambda: a.list_jobs("bad", "ready", cursor="x:1")),
        ("list_jobs.cursor", "big", lambda: a.list_jobs("bad", "dead", cursor=BIG)),
        ("set_job_priority.priority", 2**15, lambda: a.set_job_priority(1, 2**15)),
        ("set_job_priority.priority", "1", lambda: a.set_job_priority(1, "1")),  # type: ignore[arg-type]
        ("reschedule_job.at", "naive", lambda: a.reschedule_job(1, at=datetime(2030, 1, 1))),
        ("reschedule_job.at", "year 9999", lambda: a.reschedule_job(1, at=far)),
        ("reschedule_job", "neither", lambda: a.reschedule_job(1)),
        (
            "reschedule_job",
            "both",
            lambda: a.reschedule_job(1, delay=5, at=datetime.now(timezone.utc)),
        ),
        ("extend.seconds", -1, lambda: c.extend(1, -1)),
        ("extend.seconds", "nan", lambda: c.extend(1, math.nan)),
        ("release.delay", -5, lambda: c.release(1, -5)),
        ("release.delay", "inf", lambda: c.release(1, math.inf)),
        ("retry.max_attempts", 0, lambda: _policy(max_attempts=0)),
        ("retry.max_attempts", -1, lambda: _policy(max_attempts=-1)),
        ("retry.max_attempts", 2**40, lambda: _policy(max_attempts=2**40)),
        ("retry.backoff", "linear", lambda: _policy(backoff="linear")),
        ("retry.base", -1, lambda: _policy(base=-1.0)),
        ("retry.base", "nan", lambda: _policy(base=math.nan)),
        ("retry.max", "inf", lambda: _policy(max=math.inf)),
        ("retry.base", "1e30", lambda: _policy(base=1e30)),
    ]
    for entry, value, call in cases:
        refused(env, entry, value, call)
    round_trip(env)

    @PROPERTY
    @given(bad_seconds)
    def prop_secs(v: Any) -> None:
        check_secs(v)

    @PROPERTY
    @given(bad_counts)
    def prop_counts(v: Any) -> None:
        if isinstance(v, int) and v > 0:
            return  # only too large for some entry points (above)
        check_counts(v)

    prop_secs()
    prop_counts()
    round_trip(env)


async def _policy(**kw: Any) -> pgqrs.RetryPolicy:
    return pgqrs.RetryPolicy(**kw)


WORKER_SECONDS = ["visibility_timeout", "poll_interval", "shutdown_grace", "heartbeat_interval"]


async def _worker(s: pgqrs.Store, **kw: Any) -> pgqrs.Worker:
    return pgqrs.worker(s, "bad", lambda m: None, **kw)


def test_bad_worker_options(env: Env) -> None:
    s = env.store

    def check(option: str, v: Any) -> None:
        refused(env, f"worker.{option}", v, lambda: _worker(s, **{option: v}))

    bad = [-1, -0.001, math.nan, math.inf, -math.inf, 1e30, 2**70]
    for opt in WORKER_SECONDS:
        batch(env, opt, bad, partial(check, opt))
    for opt in ["concurrency", "batch_size"]:
        batch(env, opt, [0, 10_001, 2**31], partial(check, opt))

    @PROPERTY
    @given(
        st.sampled_from(WORKER_SECONDS),
        st.one_of(
            st.floats(max_value=-1e-9),
            st.floats(min_value=1e20),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ),
    )
    def prop(option: str, v: Any) -> None:
        check(option, v)

    prop()
    round_trip(env)


# Worker options of the wrong type, negative counts, and intervals beyond a day: each a
# ValidationError naming the option, before any worker registers.
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("poll_interval", "5"),
        ("shutdown_grace", "5"),
        ("heartbeat_interval", "5"),
        ("claim_ahead_timeout", True),
        ("visibility_timeout", 1e12),
        ("poll_interval", 1e12),
        ("concurrency", -1),
        ("concurrency", "2"),
        ("batch_size", 2**70),
    ],
)
def test_worker_options(env: Env, option: str, value: Any) -> None:
    refused(env, f"worker.{option}", value, lambda: _worker(env.store, **{option: value}))


# --- Ids that do not exist --------------------------------------------------------------------

BAD_IDS: list[Any] = [0, -1, -(2**63), 2**63 - 1, 123456789]


def test_ids_that_do_not_exist(env: Env) -> None:
    s, a = env.store, env.admin
    c = env.run(s.consumer("bad"))
    job_points: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "archive": lambda i: c.archive(i),
        "delete": lambda i: c.delete(i),
        "extend": lambda i: c.extend(i, 5),
        "release": lambda i: c.release(i),
        "fail": lambda i: c.fail(i, "boom"),
        "get_job": lambda i: a.get_job(i),
        "cancel_job": lambda i: a.cancel_job(i),
        "retry_job": lambda i: a.retry_job(i),
        "reschedule_job": lambda i: a.reschedule_job(i, delay=0),
        "set_job_priority": lambda i: a.set_job_priority(i, 1),
    }
    run_points: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "get_workflow": lambda i: a.get_workflow(i),
        "workflow_run": lambda i: a.workflow_run(i),
        "workflow_steps": lambda i: a.workflow_steps(i),
        "cancel_workflow": lambda i: a.cancel_workflow(i),
    }

    def check(i: Any) -> None:
        for entry, call in job_points.items():
            refused(env, f"{entry}.id", i, partial(call, i), errors.JobNotFoundError)
        for entry, call in run_points.items():
            refused(env, f"{entry}.id", i, partial(call, i), errors.WorkflowNotFoundError)

    batch(env, "ids", BAD_IDS, check)

    def check_type(i: Any) -> None:
        for entry, call in {**job_points, **run_points}.items():
            refused(env, f"{entry}.id", i, partial(call, i))
        refused(env, "requeue_dead.ids", i, lambda: a.requeue_dead("bad", [i]))
        refused(env, "archive_many.ids", i, lambda: c.archive_many([i]))

    batch(env, "id types", [2**63, -(2**63) - 1, 2**70, 1.5, "1", None, math.nan], check_type)

    @PROPERTY
    @given(
        st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(lambda i: i < 0 or i > 10**9)
    )
    def prop(i: int) -> None:
        check(i)

    prop()
    # Dead-letter ids that are not dead letters are skipped, not an error: nothing changes.
    before = env.run(snapshot(s))
    assert env.run(a.requeue_dead("bad", [-1, 0, 2**63 - 1])) == 0
    assert env.run(snapshot(s)) == before
    round_trip(env)


# --- Workflow and step names ------------------------------------------------------------------

BAD_WORKFLOW_NAMES: list[Any] = [
    "",
    "   ",
    "\t\n",
    "w" * 201,
    BIG,
    "nul\x00name",
    "\x00",
    "bell\x07",
    "lone\ud800",
    *NOT_STRINGS,
]
VALID_WORKFLOW_NAMES = [
    *INJECTION,
    "caf\u00e9 \u4e2d\u6587 \U0001f600",
    "w" * 200,
    "with space",
    "dotted.name/and-slash",
]


def test_workflow_names(env: Env) -> None:
    a = env.admin
    # A run that executes, for step names: a refused step name journals nothing.
    ctx = env.run(a.create_workflow("steps", {}))
    assert env.run(lambda: ctx._native.start()) is None

    def check(name: Any) -> None:
        refused(env, "create_workflow.name", name, lambda: a.create_workflow(name, {}))
        refused(env, "enqueue_workflow.name", name, lambda: a.enqueue_workflow("bad", name, {}))
        refused(env, "step.name", name, lambda: ctx._native.begin_step(name))

    batch(env, "workflow names", BAD_WORKFLOW_NAMES, check)

    @PROPERTY
    @given(
        st.one_of(
            st.text(alphabet=" \t\r\n", max_size=5),
            st.text(min_size=201, max_size=260),
            st.text(max_size=10).map(lambda s: s + "\x00"),
            not_strings.filter(lambda v: v is not None),
        )
    )
    def prop(name: Any) -> None:
        check(name)

    prop()
    assert env.run(a.workflow_steps(ctx.id)) == []
    round_trip(env)
    # SQL-looking and unicode names are plain text: stored and read back exactly, as runs
    # and as steps (through the decorators).
    for name in VALID_WORKFLOW_NAMES:
        run = env.run(a.create_workflow(name, {"n": name}))
        assert env.run(a.workflow_run(run.id)).name == name
        assert env.run(_run_step_named(a, name)) == 1
        TALLY.valid_roundtrips += 1


async def _run_step_named(a: pgqrs.Admin, name: str) -> int:
    """Run a one-step workflow whose step is called ``name``; check the journal has it."""

    @step(name=name)
    async def s(ctx: pgqrs.WorkflowContext) -> int:
        return 1

    @workflow(name="named-step")
    async def wf(ctx: pgqrs.WorkflowContext) -> int:
        return int(await s(ctx))

    ctx = await a.create_workflow("named-step", {})
    out = int(await wf(ctx))
    assert [r.name for r in await a.workflow_steps(ctx.id)] == [name]
    return out


# --- Error texts: whatever a handler raises is recorded -----------------------------------------


def test_error_texts_are_recorded(env: Env) -> None:
    """A failure whose text holds NUL bytes, lone surrogates or 100 KB is still recorded (a
    NUL once failed the whole write on PostgreSQL, and with it every outcome of the batch)."""
    s, a = env.store, env.admin
    texts = ["nul \x00 byte", "lone \ud800 surrogate", "e" * 100_000, "\x00" * 3]
    for text in texts:
        jid = env.run(pgqrs.produce(s, "bad", {"t": "fail"}, max_attempts=1))
        c = env.run(s.consumer("bad"))
        [m] = env.run(c.dequeue(1))
        env.run(partial(c.fail, m.id, text))
        dead = {d.id: d for d in env.run(a.dead_letters("bad", 1000))}
        stored = dead[jid].last_error or ""
        assert "\x00" not in stored
        assert len(stored.encode()) <= 64 * 1024 + 100, len(stored)
        if text == "nul \x00 byte":
            assert stored == "nul \ufffd byte"
        elif text.startswith("lone"):
            assert stored.startswith("lone \ufffd") and stored.endswith(" surrogate"), stored
        elif len(text) > 64 * 1024:
            assert stored.endswith(f"[cut: {len(text)} bytes in all]")
        TALLY.valid_roundtrips += 1

    def boom(m: pgqrs.Message) -> None:
        raise ValueError("handler \x00 error")

    jid = env.run(pgqrs.produce(s, "bad", 1, max_attempts=1))
    assert env.run(pgqrs.consume(s, "bad", boom)) == 1
    dead = {d.id: d for d in env.run(a.dead_letters("bad", 1000))}
    assert dead[jid].last_error == "ValueError: handler \ufffd error"

    @workflow(name="fails-with-nul")
    async def wf(ctx: pgqrs.WorkflowContext) -> None:
        raise RuntimeError("workflow \x00 error")

    ctx = env.run(a.create_workflow("fails-with-nul", {}))
    with pytest.raises(RuntimeError):
        env.run(wf(ctx))
    run = env.run(a.workflow_run(ctx.id))
    assert run.status == "failed" and run.error == "RuntimeError: workflow \ufffd error"
    round_trip(env)
