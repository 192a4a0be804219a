"""Stores, administration, producing and low-level consuming."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pgqrs import _json, _pgqrs
from pgqrs._types import (
    ArchivedJob,
    DeadLetter,
    Message,
    QueueInfo,
    QueueMetrics,
    RetryPolicy,
    RunStatus,
    StepRecord,
    WorkerInfo,
    WorkflowRun,
    from_us,
    to_seconds,
)
from pgqrs.errors import PgqrsError, ValidationError

if TYPE_CHECKING:
    from pgqrs._workflow import WorkflowContext


class Store:
    """A connection pool to a pgqrs database. Create one with :func:`connect`.

    Safe to share between tasks of one event loop and across event loops run one after
    another. After ``os.fork()`` connect again in the child (using a store made in the parent
    raises :class:`~pgqrs.errors.ForkError`).
    """

    __slots__ = ("_native",)

    def __init__(self, native: _pgqrs.Store) -> None:
        self._native = native

    @property
    def backend(self) -> str:
        """``"postgres"``, ``"sqlite"`` or ``"turso"``."""
        return self._native.backend

    @property
    def dsn(self) -> str:
        """The connection string, password hidden."""
        return self._native.dsn

    async def close(self) -> None:
        """Close the pool; further operations raise :class:`~pgqrs.errors.StoreClosedError`."""
        await self._native.close()

    async def consumer(self, queue: str) -> Consumer:
        """A low-level consumer of ``queue``: claim messages and settle each yourself."""
        return Consumer(await self._native.consumer(queue))

    def messages(
        self,
        queue: str,
        *,
        batch_size: int = 10,
        visibility_timeout: float | timedelta | None = None,
        poll_interval: float = 0.2,
    ) -> MessageStream:
        """Claimed messages of ``queue``, one at a time, forever (waiting when idle).

        Settle each message (``await msg.archive()``); leave the loop with ``break``::

            async for msg in store.messages("tasks"):
                await handle(msg.payload)
                await msg.archive()

        Up to ``batch_size`` messages are claimed at a time. Those claimed but not yet yielded
        are released by ``await stream.aclose()``; a plain ``break`` cannot do it (they come
        back when their leases expire), so close the stream, e.g. with
        ``async with contextlib.aclosing(store.messages("tasks")) as stream:``.
        """
        return MessageStream(self, queue, batch_size, visibility_timeout, poll_interval)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pgqrs.Store backend={self.backend} dsn={self.dsn!r}>"


async def connect(dsn: str) -> Store:
    """Open a store. The scheme picks the backend:

    * ``postgresql://user@host:5432/db`` (or ``postgres://``): PostgreSQL
    * ``sqlite:///path/to/file.db`` (created if missing) or ``sqlite::memory:``: SQLite
    * ``turso:///path/to/file.db`` (created if missing) or ``turso::memory:``: Turso, the
      embedded SQLite-compatible engine (one process at a time per database)

    Query parameters tune pgqrs (``?schema=jobs&pool_size=20&visibility_timeout=30``); see the
    README for the list.
    """
    if not isinstance(dsn, str):
        raise ValidationError(f"dsn must be a str, got {type(dsn).__name__}", field="dsn")
    return Store(await _pgqrs.connect(dsn))


class Admin:
    """Administrative operations on a store. Get one with :func:`admin`."""

    __slots__ = ("_native", "_store")

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError(f"admin() takes a pgqrs.Store, got {type(store).__name__}")
        self._store = store
        self._native = store._native

    async def install(self) -> None:
        """Create or upgrade pgqrs's tables. Idempotent: safe at every start."""
        await self._native.install()

    async def verify(self) -> None:
        """Check every table and index exists at the current schema version."""
        await self._native.verify()

    async def schema_version(self) -> int | None:
        """The installed schema version, or None before :meth:`install`."""
        return await self._native.schema_version()

    async def create_queue(self, name: str) -> QueueInfo:
        """Create a queue (letters, digits, ``_`` and ``-``; at most 48 characters)."""
        qid, qname, created = await self._native.create_queue(name)
        return QueueInfo(qid, qname, from_us(created))

    async def delete_queue(self, name: str, force: bool = False) -> None:
        """Delete a queue with its jobs, archive and dead letters.

        Refused with :class:`~pgqrs.errors.QueueInUseError` while jobs are leased, unless
        ``force``.
        """
        await self._native.delete_queue(name, force)

    async def purge_queue(self, name: str) -> int:
        """Delete every pending job of a queue; returns how many. Archive and dead letters stay."""
        return await self._native.purge_queue(name)

    async def list_queues(self) -> list[QueueInfo]:
        """All queues, by name."""
        return [QueueInfo(i, n, from_us(c)) for i, n, c in await self._native.list_queues()]

    async def queue_metrics(self, name: str) -> QueueMetrics:
        """Ready, delayed, leased, archived and dead counts, and the oldest ready job's age."""
        return QueueMetrics(*await self._native.queue_metrics(name))

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of a queue, oldest first."""
        rows = await self._native.dead_letters(queue, limit)
        return [
            DeadLetter(i, q, _json.loads(p), a, e, from_us(en), from_us(f))
            for i, q, p, a, e, en, f in rows
        ]

    async def requeue_dead(self, queue: str, ids: Sequence[int] | None = None) -> int:
        """Put dead letters back in their queue, ready now, attempts reset (all when ``ids``
        is None). Returns how many."""
        return await self._native.requeue_dead(queue, None if ids is None else list(ids))

    async def archived_jobs(self, queue: str, limit: int = 100) -> list[ArchivedJob]:
        """Completed jobs kept in the archive, newest first."""
        rows = await self._native.archived_jobs(queue, limit)
        return [
            ArchivedJob(i, q, _json.loads(p), a, from_us(en), from_us(ar))
            for i, q, p, a, en, ar in rows
        ]

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers, newest first. See :meth:`WorkerInfo.is_healthy`."""
        return [
            WorkerInfo(i, h, p, q, from_us(s), from_us(hb), st)
            for i, h, p, q, s, hb, st in await self._native.list_workers()
        ]

    async def create_workflow(self, name: str, input: Any = None) -> WorkflowContext:
        """Create a workflow run and return its context; pass it to the workflow function."""
        from pgqrs._workflow import WorkflowContext

        native = await self._native.create_workflow(name, _json.dumps(input, "workflow input"))
        return WorkflowContext(self._store, native)

    async def get_workflow(self, run_id: int) -> WorkflowContext:
        """The context of an existing run, to resume it after a crash or to query it."""
        from pgqrs._workflow import WorkflowContext

        return WorkflowContext(self._store, await self._native.get_workflow(run_id))

    async def enqueue_workflow(
        self, queue: str, workflow: str | Callable[..., Any], input: Any = None
    ) -> WorkflowRun:
        """Create a run and ask for it on ``queue``; a :func:`pgqrs.workflow_worker` runs it."""
        from pgqrs._workflow import workflow_name

        name = workflow if isinstance(workflow, str) else workflow_name(workflow)
        row = await self._native.enqueue_workflow(queue, name, _json.dumps(input, "workflow input"))
        return WorkflowRun._from(row)

    async def workflow_run(self, run_id: int) -> WorkflowRun:
        """A run as stored now."""
        return WorkflowRun._from(await self._native.workflow_run(run_id))

    async def workflow_steps(self, run_id: int) -> list[StepRecord]:
        """The journaled steps of a run, in order."""
        return [StepRecord._from(r) for r in await self._native.workflow_steps(run_id)]

    async def list_workflows(
        self, status: RunStatus | None = None, limit: int = 1000
    ) -> list[WorkflowRun]:
        """Runs, oldest first, optionally only those with ``status``."""
        return [WorkflowRun._from(r) for r in await self._native.list_workflows(status, limit)]

    async def cancel_workflow(self, run_id: int) -> bool:
        """Cancel a run: it starts no new step and ends ``cancelled``. False if already done."""
        return await self._native.cancel_workflow(run_id)


def admin(store: Store) -> Admin:
    """Administrative operations on ``store``."""
    return Admin(store)


def _at_us(at: datetime | None) -> int | None:
    if at is None:
        return None
    if at.tzinfo is None:
        raise ValidationError(
            "at must be a timezone-aware datetime (e.g. datetime.now(timezone.utc))", field="at"
        )
    delta = at.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return delta // timedelta(microseconds=1)


async def produce(
    store: Store,
    queue: str,
    payload: Any,
    delay: float | timedelta | None = None,
    *,
    at: datetime | None = None,
    max_attempts: int | None = None,
) -> int:
    """Enqueue one job; returns its id.

    ``payload`` is any JSON-serializable value. ``delay`` (seconds or timedelta) or ``at`` (an
    aware datetime) postpones it; ``max_attempts`` overrides the store's default.
    """
    ids = await _enqueue(store, queue, [_json.dumps(payload)], delay, at, max_attempts)
    return ids[0]


async def produce_batch(
    store: Store,
    queue: str,
    payloads: Iterable[Any],
    delay: float | timedelta | None = None,
    *,
    at: datetime | None = None,
    max_attempts: int | None = None,
) -> list[int]:
    """Enqueue many jobs in one statement; returns their ids in order. Nothing is written if
    any payload is not serializable or too large."""
    items = payloads if isinstance(payloads, list) else list(payloads)
    return await _enqueue(store, queue, _json.dumps_array(items), delay, at, max_attempts)


async def _enqueue(
    store: Store,
    queue: str,
    texts: list[str] | str,
    delay: float | timedelta | None,
    at: datetime | None,
    max_attempts: int | None,
) -> list[int]:
    if not isinstance(store, Store):
        raise TypeError(f"expected a pgqrs.Store, got {type(store).__name__}")
    if max_attempts is not None and max_attempts < 1:
        raise ValidationError("max_attempts must be at least 1", field="max_attempts")
    return await store._native.enqueue(
        queue, texts, to_seconds(delay, "delay"), _at_us(at), max_attempts
    )


Handler = Callable[[Message], Any]


async def call_handler(handler: Callable[[Any], Any], arg: Any) -> Any:
    """Call an async or plain handler; a plain one runs in a thread."""
    if inspect.iscoroutinefunction(handler):
        return await handler(arg)
    result = await asyncio.to_thread(handler, arg)
    if inspect.isawaitable(result):
        return await result
    return result


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


R = TypeVar("R")


async def claim_safely(
    claim: Awaitable[list[R]], give_back: Callable[[list[R]], Awaitable[None]]
) -> list[R]:
    """Await a claim so that cancelling the caller cannot strand what it claimed.

    Cancelling the awaitable of a native call drops the Rust future, but the claim may
    already be committed in the database: its jobs would stay leased, known to nobody, until
    their leases expire. So the claim is shielded; when the caller is cancelled it still
    finishes, what it claimed is given back (claimable again at once), and the cancellation
    propagates.
    """
    fut = asyncio.ensure_future(claim)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:

        async def settle() -> None:
            try:
                rows = await fut
            except Exception:
                return
            if rows:
                await give_back(rows)

        try:
            await asyncio.shield(settle())
        except Exception:
            pass
        raise


class Consumer:
    """Low-level access to one queue: claim messages and settle each one yourself.

    Settling takes the message id; it fails with :class:`~pgqrs.errors.LeaseLostError` if the
    lease expired and another consumer claimed the message.
    """

    __slots__ = ("_native",)

    def __init__(self, native: _pgqrs.Consumer) -> None:
        self._native = native

    @property
    def queue(self) -> str:
        return self._native.queue

    async def dequeue(
        self, batch_size: int = 1, visibility_timeout: float | timedelta | None = None
    ) -> list[Message]:
        """Claim up to ``batch_size`` ready messages, leased for ``visibility_timeout`` seconds
        (the store's default when None). An empty list when nothing is ready."""
        rows = await claim_safely(
            self._native.dequeue(batch_size, to_seconds(visibility_timeout, "visibility_timeout")),
            self._give_back,
        )
        return [Message(r, self) for r in rows]

    async def _give_back(self, rows: list[Any]) -> None:
        for r in rows:
            try:
                await self._native.release(r[0], 0.0)
            except PgqrsError:
                pass

    async def archive(self, id: int) -> None:
        """Archive a message this consumer claimed."""
        await self._native.archive(id)

    async def archive_many(self, ids: Sequence[int]) -> list[bool]:
        """Archive many; per id, whether it was archived (False: lease lost)."""
        return await self._native.archive_many(list(ids))

    async def delete(self, id: int) -> None:
        """Delete a message this consumer claimed."""
        await self._native.delete(id)

    async def delete_many(self, ids: Sequence[int]) -> list[bool]:
        """Delete many; per id, whether it was deleted (False: lease lost)."""
        return await self._native.delete_many(list(ids))

    async def extend(self, id: int, seconds: float | timedelta) -> None:
        """Keep the message invisible for ``seconds`` from now."""
        await self._native.extend(id, to_seconds(seconds, "seconds"))

    async def release(self, id: int, delay: float | timedelta = 0) -> None:
        """Give the message back unhandled, claimable after ``delay``; the attempt is returned."""
        await self._native.release(id, to_seconds(delay, "delay") or 0.0)

    async def fail(self, id: int, error: str, retry: RetryPolicy | None = None) -> None:
        """Record a failed attempt: retried later per ``retry``, or a dead letter if no
        attempt is left."""
        await self._native.fail(id, error, None if retry is None else retry._spec())


class MessageStream(AsyncIterator[Message]):
    """The iterator returned by :meth:`Store.messages`."""

    def __init__(
        self,
        store: Store,
        queue: str,
        batch_size: int,
        visibility_timeout: float | timedelta | None,
        poll_interval: float,
    ) -> None:
        self._store = store
        self._queue = queue
        self._batch = batch_size
        self._vt = visibility_timeout
        self._poll = poll_interval
        self._consumer: Consumer | None = None
        self._buffer: list[Message] = []

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        if self._consumer is None:
            self._consumer = await self._store.consumer(self._queue)
        idle = self._poll
        while not self._buffer:
            self._buffer = await self._consumer.dequeue(self._batch, self._vt)
            if not self._buffer:
                await asyncio.sleep(idle)
                idle = min(idle * 2, self._poll * 10)
        return self._buffer.pop(0)

    async def aclose(self) -> None:
        """Release the messages claimed but not yielded."""
        rest, self._buffer = self._buffer, []
        if self._consumer is not None:
            for m in rest:
                await self._consumer.release(m.id)


async def consume(
    store: Store,
    queue: str,
    handler: Callable[[Message], Awaitable[Any]] | Callable[[Message], Any],
    batch_size: int = 1,
    *,
    visibility_timeout: float | timedelta | None = None,
    retry: RetryPolicy | None = None,
) -> int:
    """Handle the jobs of ``queue`` that are ready now (up to ``batch_size``), then return how
    many were handled (0 when none was ready).

    ``handler(msg)`` may be ``async def`` or a plain function (run in a thread). Returning
    normally archives the job; raising (or returning ``False``) records a failed attempt: the
    job is retried per ``retry`` and becomes a dead letter, keeping the error text, after its
    last attempt. If the call is cancelled, unfinished jobs are released at once.
    """
    consumer = await store.consumer(queue)
    msgs = await consumer.dequeue(batch_size, visibility_timeout)
    if not msgs:
        return 0
    errors: dict[int, str | None] = {}

    async def one(m: Message) -> None:
        try:
            result = await call_handler(handler, m)
            errors[m.id] = "handler returned False" if result is False else None
        except asyncio.CancelledError:
            raise
        except Exception as e:
            errors[m.id] = error_text(e)

    settled: set[int] = set()
    try:
        await asyncio.gather(*(one(m) for m in msgs))
        ok = [m.id for m in msgs if errors.get(m.id, "") is None]
        if ok:
            await consumer.archive_many(ok)
            settled.update(ok)
        for m in msgs:
            error = errors.get(m.id)
            if error is not None:
                await consumer.fail(m.id, error, retry)
                settled.add(m.id)
    except BaseException:
        for m in msgs:
            if m.id not in settled:
                try:
                    await asyncio.shield(consumer.release(m.id))
                except Exception:
                    pass
        raise
    return len(msgs)
