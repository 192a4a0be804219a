"""Stores and producing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pgqrs import _json, _pgqrs
from pgqrs._consuming import Consumer, MessageStream
from pgqrs._types import to_seconds
from pgqrs.errors import ValidationError


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
        poll_interval: float | None = None,
    ) -> MessageStream:
        """Claimed messages of ``queue``, one at a time, forever (waiting when idle, first
        ``poll_interval`` seconds, by default the store's ``poll_interval_ms``).

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


OnDuplicate = Literal["existing", "error"]
"""What an enqueue gets for a job whose unique key is taken: the holder's id, or an error."""


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
    priority: int | None = None,
    timeout: float | timedelta | None = None,
    key: str | None = None,
    on_duplicate: OnDuplicate | None = None,
    unique_for: float | timedelta | None = None,
    group: str | None = None,
) -> int:
    """Enqueue one job; returns its id.

    ``payload`` is any JSON-serializable value. ``delay`` (seconds or timedelta) or ``at`` (an
    aware datetime) postpones it; ``max_attempts`` overrides the store's default. Claims take
    higher ``priority`` first (default 0, from -32768 to 32767). A handler that runs longer
    than ``timeout`` (seconds or timedelta) on the job is cancelled and the attempt recorded as
    failed, then retried per the worker's retry policy.

    With a unique ``key``, no second job is created while a job of the queue with that key is
    waiting or running (with ``unique_for``, seconds or a timedelta, also while one finished
    within that window): ``on_duplicate="existing"`` (the default) returns that job's id,
    ``"error"`` raises :class:`~pgqrs.errors.DuplicateJobError` carrying it.

    ``group`` (a customer, a tenant…) counts the job against its group in a queue with a
    ``group_concurrency_limit``: at most that many jobs of one group are leased at once.
    """
    ids = await _enqueue(
        store,
        queue,
        [_json.dumps(payload)],
        delay,
        at,
        max_attempts,
        priority,
        timeout=timeout,
        key=key,
        on_duplicate=on_duplicate,
        unique_for=unique_for,
        group=group,
    )
    return ids[0]


async def produce_batch(
    store: Store,
    queue: str,
    payloads: Iterable[Any],
    delay: float | timedelta | None = None,
    *,
    at: datetime | None = None,
    max_attempts: int | None = None,
    priority: int | None = None,
    timeout: float | timedelta | None = None,
    keys: Iterable[str | None] | None = None,
    on_duplicate: OnDuplicate | None = None,
    unique_for: float | timedelta | None = None,
    group: str | None = None,
) -> list[int]:
    """Enqueue many jobs in one statement; returns their ids in order. Nothing is written if
    any payload is not serializable or too large. The options apply to every job.

    ``keys`` gives each job a unique key (or ``None``), in order (see :func:`produce`): a job
    whose key is taken gets the holder's id in its place, and jobs of the batch sharing a key
    are one job. With ``on_duplicate="error"`` a taken key raises
    :class:`~pgqrs.errors.DuplicateJobError` and no job of the batch is written. ``group``
    puts every job of the batch in that group (see :func:`produce`).
    """
    items = payloads if isinstance(payloads, list) else list(payloads)
    return await _enqueue(
        store,
        queue,
        _json.dumps_array(items),
        delay,
        at,
        max_attempts,
        priority,
        timeout=timeout,
        keys=keys if keys is None or isinstance(keys, (list, str)) else list(keys),
        on_duplicate=on_duplicate,
        unique_for=unique_for,
        group=group,
    )


async def _enqueue(
    store: Store,
    queue: str,
    texts: list[str] | str,
    delay: float | timedelta | None,
    at: datetime | None,
    max_attempts: int | None,
    priority: int | None,
    *,
    timeout: float | timedelta | None = None,
    key: str | None = None,
    keys: Any = None,
    on_duplicate: str | None = None,
    unique_for: float | timedelta | None = None,
    group: str | None = None,
) -> list[int]:
    if not isinstance(store, Store):
        raise TypeError(f"expected a pgqrs.Store, got {type(store).__name__}")
    return await store._native.enqueue(
        queue,
        texts,
        delay=to_seconds(delay, "delay"),
        at_us=_at_us(at),
        max_attempts=max_attempts,
        priority=priority,
        timeout=to_seconds(timeout, "timeout"),
        key=key,
        keys=keys,
        on_duplicate=on_duplicate,
        unique_for=to_seconds(unique_for, "unique_for"),
        group=group,
    )
