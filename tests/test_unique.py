"""Unique jobs from Python: ``produce(key=...)``, ``produce_batch(keys=...)``,
``on_duplicate``, ``unique_for``, ``DuplicateJobError``, and many processes racing on one key
(mirrors ``crates/pgqrs/tests/cases/unique.rs``)."""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time
from datetime import timedelta
from typing import Any

import pytest

import pgqrs
from conftest import TURSO_ONE_PROCESS
from pgqrs.errors import DuplicateJobError, JobError, ValidationError
from support import child_env, counts, store_with_queue


async def live(store: pgqrs.Store, queue: str = "q") -> int:
    ready, delayed, leased, _, _ = await counts(store, queue)
    return ready + delayed + leased


async def test_key_returns_the_existing_job_or_raises(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    first = await pgqrs.produce(store, "q", {"invoice": 42}, key="invoice-42")
    assert await pgqrs.produce(store, "q", {"invoice": 42}, key="invoice-42") == first
    assert await pgqrs.produce(store, "q", "x", key="invoice-42", on_duplicate="existing") == first
    with pytest.raises(DuplicateJobError) as info:
        await pgqrs.produce(store, "q", "x", key="invoice-42", on_duplicate="error")
    e = info.value
    assert isinstance(e, JobError)
    assert (e.job_id, e.existing_id, e.key) == (first, first, "invoice-42")
    assert "invoice-42" in str(e) and str(first) in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is DuplicateJobError and (again.job_id, again.key) == (first, "invoice-42")
    assert await live(store) == 1
    # The job finishes: its key is free.
    c = await store.consumer("q")
    (msg,) = await c.dequeue(1)
    assert await pgqrs.produce(store, "q", "x", key="invoice-42") == first, "still running"
    await msg.archive()
    assert await pgqrs.produce(store, "q", "x", key="invoice-42") > first


async def test_batch_keys(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    held = await pgqrs.produce(store, "q", "b", key="b")
    ids = await pgqrs.produce_batch(
        store, "q", ["a1", "b", "a2", "none", "c"], keys=iter(["a", "b", "a", None, "c"])
    )
    assert ids[1] == held and ids[0] == ids[2]
    assert len({ids[0], ids[3], ids[4], held}) == 4
    assert ids[0] < ids[3] < ids[4]
    assert await live(store) == 4
    with pytest.raises(DuplicateJobError) as info:
        await pgqrs.produce_batch(store, "q", [1, 2], keys=["new", "b"], on_duplicate="error")
    assert info.value.job_id == held
    assert await live(store) == 4, "nothing of the batch was written"
    with pytest.raises(ValidationError) as verr:
        await pgqrs.produce_batch(store, "q", [1, 2], keys=["p", "p"], on_duplicate="error")
    assert verr.value.field == "keys"
    assert await live(store) == 4


async def test_unique_for(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    done = await pgqrs.produce(store, "q", "k", key="k")
    await pgqrs.consume(store, "q", lambda m: None)
    assert await pgqrs.produce(store, "q", "k", key="k", unique_for=3600) == done
    assert await pgqrs.produce(store, "q", "k", key="k", unique_for=timedelta(hours=1)) == done
    with pytest.raises(DuplicateJobError):
        await pgqrs.produce(store, "q", "k", key="k", unique_for=3600, on_duplicate="error")
    ids = await pgqrs.produce_batch(store, "q", [1, 2], keys=["k", "k2"], unique_for=3600)
    assert ids[0] == done and ids[1] > done
    await asyncio.sleep(0.06)
    assert await pgqrs.produce(store, "q", "k", key="k", unique_for=0.05) > done


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": ""}, "key"),
        ({"key": "a\0b"}, "key"),
        ({"key": "k" * 513}, "key"),
        ({"key": 42}, "key"),
        ({"key": "k", "on_duplicate": "ignore"}, "on_duplicate"),
        ({"key": "k", "on_duplicate": 1}, "on_duplicate"),
        ({"on_duplicate": "error"}, "on_duplicate"),
        ({"unique_for": 10}, "unique_for"),
        ({"key": "k", "unique_for": 0}, "unique_for"),
        ({"key": "k", "unique_for": -1}, "unique_for"),
        ({"key": "k", "unique_for": "1h"}, "unique_for"),
        ({"key": "k", "unique_for": 101 * 365 * 86400}, "unique_for"),
    ],
)
async def test_bad_unique_options(store: pgqrs.Store, kwargs: dict[str, Any], field: str) -> None:
    await pgqrs.admin(store).create_queue("q")
    with pytest.raises(ValidationError) as info:
        await pgqrs.produce(store, "q", "x", **kwargs)
    assert info.value.field == field, info.value
    assert await live(store) == 0


@pytest.mark.parametrize(
    "keys",
    [["a"], ["a", "b", "c"], "ab", [1, 2], ["a", ""]],
    ids=["too-few", "too-many", "str", "ints", "empty-key"],
)
async def test_bad_batch_keys(store: pgqrs.Store, keys: Any) -> None:
    await pgqrs.admin(store).create_queue("q")
    with pytest.raises(ValidationError) as info:
        await pgqrs.produce_batch(store, "q", [1, 2], keys=keys)
    assert info.value.field == "keys", info.value
    assert await live(store) == 0


RACER = """
import asyncio, json, sys, time
import pgqrs

async def main(dsn, start, keys, mode):
    store = await pgqrs.connect(dsn)
    while time.time() < start:
        await asyncio.sleep(0.001)
    out = {}
    names = [f"k-{k}" for k in range(keys)]
    if mode == "batch":
        ids = await pgqrs.produce_batch(store, "q", names, keys=names)
        out = dict(zip(names, ids))
    elif mode == "strict":
        for n in names:
            try:
                out[n] = await pgqrs.produce(store, "q", n, key=n, on_duplicate="error")
            except pgqrs.errors.DuplicateJobError as e:
                out[n] = -e.job_id
    else:
        for n in names:
            out[n] = await pgqrs.produce(store, "q", n, key=n)
    await store.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


async def test_many_processes_one_key(dsn: str, backend: str) -> None:
    """Processes enqueueing the same keys at the same moment make one job per key; with
    ``on_duplicate="error"`` one process per key wins and the others get its id."""
    if backend == "turso":
        pytest.skip(TURSO_ONE_PROCESS)
    store = await store_with_queue(dsn)
    keys, procs = 20, 6
    start = time.time() + 1.5
    modes = ["one", "batch", "strict"] * (procs // 3)
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RACER,
            dsn,
            str(start),
            str(keys),
            mode,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        for mode in modes
    ]
    results = []
    for p in children:
        out, err = await asyncio.wait_for(p.communicate(), timeout=120)
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out))
    for k in range(keys):
        ids = {abs(r[f"k-{k}"]) for r in results}
        assert len(ids) == 1, (k, ids)
        winners = [
            r[f"k-{k}"]
            for r, m in zip(results, modes, strict=True)
            if m == "strict" and r[f"k-{k}"] > 0
        ]
        assert len(winners) <= 1, (k, winners)
    assert await live(store) == keys
    await store.close()


async def test_keyed_job_keeps_its_timeout_through_the_dead_letters(store: pgqrs.Store) -> None:
    """A job with a key and a timeout keeps both when it dies and is requeued or retried."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    one = await pgqrs.produce(store, "q", "one", key="k", timeout=1.5, max_attempts=1)
    b1, b2 = await pgqrs.produce_batch(
        store, "q", ["b1", "b2"], keys=["b1", "b2"], timeout=timedelta(seconds=2.5), max_attempts=1
    )
    expected = {one: ("k", 1.5), b1: ("b1", 2.5), b2: ("b2", 2.5)}
    c = await store.consumer("q")

    async def claim_and_fail(*ids: int) -> None:
        msgs = await c.dequeue(3)
        assert sorted(m.id for m in msgs) == sorted(ids)
        for m in msgs:
            assert m.timeout == expected[m.id][1], m.id
            await c.fail(m.id, "boom")

    async def keys_held(*ids: int) -> None:
        for i in ids:
            assert await pgqrs.produce(store, "q", "dup", key=expected[i][0]) == i

    await claim_and_fail(one, b1, b2)
    assert (await counts(store, "q"))[4] == 3
    assert await admin.requeue_dead("q", [one]) == 1
    await keys_held(one)
    await claim_and_fail(one)
    assert await admin.requeue_dead("q") == 3
    await keys_held(one, b1, b2)
    await claim_and_fail(one, b1, b2)
    await admin.retry_job(one)
    await keys_held(one)
    (msg,) = await c.dequeue(3)
    assert (msg.id, msg.timeout) == (one, 1.5)
