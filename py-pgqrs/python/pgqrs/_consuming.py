"""Consuming: the low-level :class:`Consumer`, the :class:`MessageStream` of
:meth:`Store.messages`, and one-shot :func:`consume`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pgqrs import _pgqrs
from pgqrs._handler import claim_safely, outcome_within
from pgqrs._types import Message, RetryPolicy, to_seconds
from pgqrs.errors import PgqrsError

if TYPE_CHECKING:
    from pgqrs._store import Store


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

    async def _give_back(self, rows: list[_pgqrs.MessageRow]) -> None:
        for r in rows:
            try:
                await self._native.release(r.id, 0.0)
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
        await self._native.fail(id, error, retry)


class MessageStream(AsyncIterator[Message]):
    """The iterator returned by :meth:`Store.messages`."""

    def __init__(
        self,
        store: Store,
        queue: str,
        batch_size: int,
        visibility_timeout: float | timedelta | None,
        poll_interval: float | None,
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
        idle_rounds = 0
        while not self._buffer:
            self._buffer = await self._consumer.dequeue(self._batch, self._vt)
            if not self._buffer:
                # The core's idle wait (the poll interval, doubling up to 10x), cut short when
                # jobs may have arrived.
                await self._consumer._native.wait_idle(idle_rounds, self._poll)
                idle_rounds += 1
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
    outcomes: dict[int, str | None] = {}

    async def one(m: Message) -> None:
        outcomes[m.id] = await outcome_within(handler, m, m.timeout)

    try:
        await asyncio.gather(*(one(m) for m in msgs))
        # Successes archived and failures recorded under `retry`, in two statements.
        await consumer._native.settle(outcomes, retry)
    except BaseException:
        for m in msgs:
            try:
                await asyncio.shield(consumer.release(m.id))
            except Exception:
                pass
        raise
    return len(msgs)
