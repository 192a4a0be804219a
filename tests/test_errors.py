"""``pgqrs.errors``: one exception tree under PgqrsError, structured fields, pickling, and
the fields the engine really fills in."""

from __future__ import annotations

import inspect
import pickle
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import pgqrs
from conftest import postgres_base_dsn
from pgqrs import errors
from pgqrs.errors import PgqrsError

ALL = [getattr(errors, name) for name in errors.__all__]

# Sample values for every structured field.
SAMPLES: dict[str, Any] = {
    "dsn": "postgresql://u:***@h/db",
    "reason": "bad port",
    "scheme": "turso",
    "feature": "turso",
    "field": "payload",
    "size": 101,
    "max": 100,
    "path": "$.a[1]",
    "type_name": "set",
    "queue": "tasks",
    "leased": 3,
    "job_id": 42,
    "state": "leased",
    "action": "cancel",
    "found": 9,
    "supported": 3,
    "code": "40001",
    "target": "localhost:5432",
    "during": "acquire",
    "after": 5.0,
    "run_id": 7,
    "position": 2,
    "recorded": "fetch",
    "called": "process",
    "error": "ValueError: boom",
    "key": "invoice-42",
    "name": "nightly",
}


def test_every_error_is_a_pgqrs_error() -> None:
    assert PgqrsError in ALL
    public = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_")
    }
    assert public == set(errors.__all__), "__all__ lists every exception class"
    for cls in ALL:
        assert issubclass(cls, PgqrsError), cls
        assert issubclass(cls, Exception)
        assert cls.__doc__, f"{cls.__name__} has a docstring"
    assert errors.PgqrsError.__bases__ == (Exception,)


def test_tree_shape() -> None:
    e = errors
    expected_parents = {
        e.InvalidDsnError: e.ConfigError,
        e.BackendNotEnabledError: e.ConfigError,
        e.PayloadTooLargeError: e.ValidationError,
        e.SerializationError: e.ValidationError,
        e.QueueNotFoundError: e.QueueError,
        e.QueueAlreadyExistsError: e.QueueError,
        e.QueueInUseError: e.QueueError,
        e.JobNotFoundError: e.JobError,
        e.JobStateError: e.JobError,
        e.LeaseLostError: e.JobError,
        e.SchemaNotInstalledError: e.SchemaError,
        e.SchemaTooNewError: e.SchemaError,
        e.SchemaInvalidError: e.SchemaError,
        e.ConnectionFailedError: e.DatabaseError,
        e.ConnectionLostError: e.DatabaseError,
        e.PoolTimeoutError: e.DatabaseError,
        e.BusyError: e.DatabaseError,
        e.StoreClosedError: e.DatabaseError,
        e.ScheduleNotFoundError: e.ScheduleError,
        e.ScheduleAlreadyExistsError: e.ScheduleError,
        e.WorkflowNotFoundError: e.WorkflowError,
        e.NonDeterministicError: e.WorkflowError,
        e.WorkflowCancelledError: e.WorkflowError,
        e.WorkflowLockedError: e.WorkflowError,
        e.WorkflowFailedError: e.WorkflowError,
    }
    for child, parent in expected_parents.items():
        assert issubclass(child, parent), (child, parent)
    # Builtin bases where they help `except`.
    assert issubclass(e.ValidationError, ValueError)
    assert issubclass(e.SerializationError, TypeError)
    assert issubclass(e.QueueNotFoundError, LookupError)
    assert issubclass(e.ConnectionFailedError, ConnectionError)
    assert issubclass(e.PoolTimeoutError, TimeoutError)
    # Transient: retrying later may succeed.
    transient = {c for c in ALL if c("x").transient}
    assert transient == {
        e.ConnectionFailedError,
        e.ConnectionLostError,
        e.PoolTimeoutError,
        e.BusyError,
        e.WorkflowLockedError,
    }


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_fields_and_pickle_roundtrip(cls: type[PgqrsError]) -> None:
    fields = {name: SAMPLES[name] for name in cls.fields}
    err = cls(f"{cls.__name__} happened", **fields)
    assert str(err) == f"{cls.__name__} happened"
    assert err.message == str(err)
    for name, value in fields.items():
        assert getattr(err, name) == value
    for loaded in (pickle.loads(pickle.dumps(err)), pickle.loads(pickle.dumps(err, 0))):
        assert type(loaded) is cls
        assert str(loaded) == str(err) and loaded.args == err.args
        for name, value in fields.items():
            assert getattr(loaded, name) == value, name
    # Fields not given are None.
    bare = cls("bare")
    assert all(getattr(bare, name) is None for name in cls.fields)


async def test_engine_errors_carry_their_fields(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    with pytest.raises(errors.QueueAlreadyExistsError) as exists:
        await admin.create_queue("q")
    assert exists.value.queue == "q"
    with pytest.raises(errors.QueueNotFoundError) as missing:
        await pgqrs.produce(store, "missing", 1)
    assert missing.value.queue == "missing"
    c = await store.consumer("q")
    with pytest.raises(errors.JobNotFoundError) as nf:
        await c.archive(12345)
    assert nf.value.job_id == 12345
    with pytest.raises(errors.WorkflowNotFoundError) as wnf:
        await admin.get_workflow(999)
    assert wnf.value.run_id == 999
    with pytest.raises(errors.ValidationError) as v:
        await admin.create_queue("bad name")
    assert v.value.field == "queue name"
    # Raised errors pickle too (e.g. across multiprocessing).
    for raised in (exists.value, missing.value, nf.value, wnf.value, v.value):
        again = pickle.loads(pickle.dumps(raised))
        assert type(again) is type(raised) and str(again) == str(raised)
        for name in type(raised).fields:
            assert getattr(again, name) == getattr(raised, name)


async def test_config_errors(tmp_path: Any) -> None:
    with pytest.raises(errors.InvalidDsnError) as bad:
        await pgqrs.connect("nosuchscheme://x")
    assert bad.value.dsn is not None and bad.value.reason
    with pytest.raises(errors.ConfigError):
        await pgqrs.connect(f"sqlite://{tmp_path}/x.db?visibility_timeout=abc")
    with pytest.raises(errors.ConnectionFailedError) as cf:
        await pgqrs.connect("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert cf.value.transient and cf.value.target
    # Nothing listens on port 1: the message asks whether the server runs there.
    assert "127.0.0.1:1" in str(cf.value) and "refused" in str(cf.value), str(cf.value)


def _says(err: BaseException, *wanted: str) -> str:
    """The message of a connection failure: says each of ``wanted``, and neither asks whether
    a server runs (for causes that are not an unreachable server) nor leaks the driver's
    rendering of a server error (its source file and line)."""
    text = str(err)
    for w in wanted:
        assert w in text, f"{w!r} not in: {text}"
    assert "reachable?" not in text and " at line " not in text, text
    return text


@pytest.mark.parametrize("scheme", ["sqlite", "turso"])
async def test_connect_missing_folder_names_it(scheme: str, tmp_path: Any) -> None:
    folder = tmp_path / "no" / "such"
    with pytest.raises(errors.ConnectionFailedError) as cf:
        s = await pgqrs.connect(f"{scheme}://{folder}/t.db")
        await pgqrs.admin(s).install()
    text = _says(cf.value, f"folder {folder} does not exist", f"mkdir -p {folder}", "fix the path")
    assert "running" not in text, text
    assert str(folder) in cf.value.target or "t.db" in cf.value.target


async def test_connect_missing_postgres_database_names_it() -> None:
    base = postgres_base_dsn()
    parts = urlsplit(base)
    dsn = urlunsplit(parts._replace(path="/pgqrs_no_such_database"))
    with pytest.raises(errors.ConnectionFailedError) as cf:
        await pgqrs.connect(dsn)
    text = _says(
        cf.value,
        '"pgqrs_no_such_database" does not exist',
        'CREATE DATABASE "pgqrs_no_such_database"',
    )
    assert "running" not in text, text
