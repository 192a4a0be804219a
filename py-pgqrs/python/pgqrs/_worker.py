"""The long-running worker.

The asyncio side hands claimed jobs to handlers on the event loop (plain functions in threads)
while the next claim is in flight; how far it claims ahead adapts to how quickly handlers finish
(`WorkerSession::claim_ahead` in the Rust core). The Rust side registers the worker, heartbeats
and extends the leases of the jobs it holds while the worker lives, and writes outcomes in
batches (one statement every few milliseconds), so a job costs no database round trip of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pgqrs._store import Store, call_handler, error_text
from pgqrs._types import Message, RetryPolicy, WorkerStats, to_seconds
from pgqrs.errors import PgqrsError, ValidationError

log = logging.getLogger("pgqrs.worker")


class Worker:
    """Consumes a queue until :meth:`stop`, task cancellation or Ctrl-C.

    Build one with :func:`worker`. ``await w.run()`` returns :class:`WorkerStats` after a
    graceful shutdown: nothing new is claimed, running handlers get ``shutdown_grace`` seconds
    to finish, and every job not completed is released at once. No job is lost: a job whose
    worker dies comes back when its lease expires.
    """

    def __init__(
        self,
        store: Store,
        queue: str,
        handler: Callable[..., Any],
        *,
        concurrency: int = 1,
        batch_size: int = 1,
        batch: bool = False,
        visibility_timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.2,
        shutdown_grace: float = 30.0,
        heartbeat_interval: float = 5.0,
        delete_on_success: bool = False,
        flush_interval: float = 0.002,
    ) -> None:
        if concurrency < 1:
            raise ValidationError("concurrency must be at least 1", field="concurrency")
        if batch_size < 1:
            raise ValidationError("batch_size must be at least 1", field="batch_size")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self.store = store
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.batch = batch
        self.visibility_timeout = to_seconds(visibility_timeout, "visibility_timeout")
        self.retry = retry
        self.poll_interval = max(poll_interval, 0.001)
        self.shutdown_grace = shutdown_grace
        self.heartbeat_interval = heartbeat_interval
        self.delete_on_success = delete_on_success
        self.flush_interval = flush_interval
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self.worker_id: int | None = None

    def stop(self) -> None:
        """Ask the worker to stop gracefully; ``run()`` returns when it has."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> WorkerStats:
        """Run until stopped; returns what the worker did."""
        self._wake = asyncio.Event()
        if self._stopping:
            self._wake.set()
        session = await self.store._native.worker_session(
            self.queue,
            self.visibility_timeout,
            None if self.retry is None else self.retry._spec(),
            self.delete_on_success,
            self.flush_interval,
            500,
            self.heartbeat_interval,
            self.concurrency * self.batch_size,
        )
        self.worker_id = session.worker_id
        slots = asyncio.Semaphore(self.concurrency)
        per_call = self.batch_size if self.batch else 1
        buffer: collections.deque[Message] = collections.deque()
        tasks: set[asyncio.Task[None]] = set()
        idle = self.poll_interval
        error_backoff = 0.05
        cancelled = False
        # The claim in flight runs while handlers run and jobs are handed out; it is never
        # cancelled (its jobs would stay leased to nobody), only awaited.
        claim: asyncio.Future[list[Any]] | None = None
        starved = False  # handlers sat idle waiting for the last claim
        dry = False  # the last claim found nothing: claim again once the buffer is empty
        refill_below = session.refill_below()  # changes only with a claim
        try:
            while not self._stopping:
                if claim is not None and (not buffer or claim.done()):
                    waited = not buffer
                    if not claim.done():
                        await self._wait_done(claim)
                        if not claim.done():
                            break  # stopping
                    done, claim = claim, None
                    refill_below = session.refill_below()
                    try:
                        rows = done.result()
                    except PgqrsError as e:
                        if not e.transient:
                            raise
                        log.warning("claim failed (%s); retrying in %.2fs", e, error_backoff)
                        await self._sleep(error_backoff)
                        error_backoff = min(error_backoff * 2, 5.0)
                        continue
                    error_backoff = 0.05
                    starved = waited and not slots.locked()
                    dry = not rows
                    if not rows and not buffer:
                        await self._idle(session, idle)
                        idle = min(idle * 2, self.poll_interval * 10)
                        continue
                    idle = self.poll_interval
                    buffer.extend(Message(r) for r in rows)
                refill = len(buffer) < refill_below and (not dry or not buffer)
                if claim is None and refill:
                    claim = asyncio.ensure_future(session.claim_ahead(len(buffer), starved))
                    starved = False
                if not buffer:
                    continue  # the claim in flight is awaited at the top
                if slots.locked():
                    await self._acquire(slots)
                    if self._stopping:
                        break
                else:
                    await slots.acquire()
                msgs = [buffer.popleft() for _ in range(min(per_call, len(buffer)))]
                task = asyncio.create_task(self._handle(session, msgs, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except asyncio.CancelledError:
            cancelled = True
        finally:
            stats = await asyncio.shield(self._shutdown(session, buffer, tasks, claim))
        if cancelled:
            raise asyncio.CancelledError
        return stats

    async def _shutdown(
        self,
        session: Any,
        buffer: collections.deque[Message],
        tasks: set[asyncio.Task[None]],
        claim: asyncio.Future[list[Any]] | None,
    ) -> WorkerStats:
        if claim is not None:
            # What the claim in flight got was never started either.
            try:
                buffer.extend(Message(r) for r in await claim)
            except Exception:
                pass
        never_started = [(m.id, m.lease_token) for m in buffer]
        buffer.clear()
        if never_started:
            await session.release(never_started)
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=self.shutdown_grace)
            if pending:
                log.warning(
                    "shutdown grace period over: cancelling %d handler(s); their jobs are released",
                    len(pending),
                )
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        return WorkerStats(*(await session.stop()))

    async def _handle(self, session: Any, msgs: list[Message], slots: asyncio.Semaphore) -> None:
        try:
            try:
                result = await call_handler(self.handler, msgs if self.batch else msgs[0])
                error = "handler returned False" if result is False else None
            except Exception as e:
                error = error_text(e)
                log.debug("handler failed on job(s) %s: %s", [m.id for m in msgs], error)
            for m in msgs:
                session.complete(m.id, m.lease_token, m.attempts, m.max_attempts, error)
        finally:
            slots.release()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _wait_done(self, fut: asyncio.Future[Any]) -> None:
        """Wait until ``fut`` is done or the worker is asked to stop (``fut`` runs on)."""
        assert self._wake is not None
        stopper = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fut, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()

    async def _idle(self, session: Any, seconds: float) -> None:
        assert self._wake is not None
        waiter = asyncio.ensure_future(session.wait_for_jobs(seconds))
        stopper = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _acquire(self, slots: asyncio.Semaphore) -> None:
        assert self._wake is not None
        getter = asyncio.ensure_future(slots.acquire())
        stopper = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
            elif self._stopping and not getter.cancelled():
                slots.release()


def worker(
    store: Store,
    queue: str,
    handler: Callable[..., Any],
    *,
    concurrency: int = 1,
    batch_size: int = 1,
    batch: bool = False,
    visibility_timeout: float | timedelta | None = None,
    retry: RetryPolicy | None = None,
    poll_interval: float = 0.2,
    shutdown_grace: float = 30.0,
    heartbeat_interval: float = 5.0,
    delete_on_success: bool = False,
) -> Worker:
    """A long-running worker for ``queue``; start it with ``await w.run()``.

    * ``concurrency``: handler calls running at once.
    * ``batch_size``: jobs claimed per slot; with ``batch=True`` the handler receives a list
      of up to ``batch_size`` messages and its outcome applies to all of them.
    * ``handler`` may be ``async def`` or a plain function (run in a thread). Returning
      archives the job (deletes it with ``delete_on_success``); raising or returning ``False``
      records a failed attempt, retried per ``retry`` until the job becomes a dead letter.
    """
    return Worker(
        store,
        queue,
        handler,
        concurrency=concurrency,
        batch_size=batch_size,
        batch=batch,
        visibility_timeout=visibility_timeout,
        retry=retry,
        poll_interval=poll_interval,
        shutdown_grace=shutdown_grace,
        heartbeat_interval=heartbeat_interval,
        delete_on_success=delete_on_success,
    )
