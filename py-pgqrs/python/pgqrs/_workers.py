"""The long-running worker.

The asyncio side only hands claimed jobs to handlers on the event loop (plain functions in
threads) and reports their outcomes. Everything else is the Rust core's ``WorkerSession``: it
registers the worker, claims ahead of the handlers (how far adapts to how quickly they
finish), waits at the poll interval when the queue is idle, retries transient errors, heartbeats
and extends the leases of the jobs it holds, applies the retry policy, and writes outcomes in
batches (one statement every few milliseconds), so a job costs no database round trip of its
own. Every setting not given here takes the core's default.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pgqrs import _pgqrs
from pgqrs._handler import outcome_within
from pgqrs._types import Message, RetryPolicy, WorkerStats, to_seconds

if TYPE_CHECKING:
    from pgqrs._store import Store

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
        concurrency: int | None = None,
        batch_size: int | None = None,
        batch: bool = False,
        visibility_timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float | None = None,
        shutdown_grace: float | None = None,
        heartbeat_interval: float | None = None,
        delete_on_success: bool | None = None,
        flush_interval: float | None = None,
        claim_ahead_timeout: float | None = None,
        prune_interval: float | timedelta | None = None,
        job_timeout: float | timedelta | None = None,
        fire_schedules: bool | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        # Checked now (ValidationError); what is not given takes the core's default.
        self._options = _pgqrs.WorkerOptions(
            concurrency=concurrency,
            batch_size=batch_size,
            visibility_timeout=to_seconds(visibility_timeout, "visibility_timeout"),
            retry=retry,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
            heartbeat_interval=heartbeat_interval,
            delete_on_success=delete_on_success,
            flush_interval=flush_interval,
            claim_ahead_timeout=claim_ahead_timeout,
            prune_interval=to_seconds(prune_interval, "prune_interval"),
            job_timeout=to_seconds(job_timeout, "job_timeout"),
            fire_schedules=fire_schedules,
        )
        self.store = store
        self.queue = queue
        self.handler = handler
        self.batch = batch
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
        session = await self.store._native.worker_session(self.queue, self._options)
        self.worker_id = session.worker_id
        slots = asyncio.Semaphore(session.concurrency)
        per_call = session.batch_size if self.batch else 1
        buffer: collections.deque[Message] = collections.deque()
        tasks: set[asyncio.Task[None]] = set()
        cancelled = False
        # The claim in flight runs while handlers run and jobs are handed out; it is never
        # cancelled (its jobs would stay leased to nobody), only awaited.
        fetch: asyncio.Future[_pgqrs.Claimed] | None = None
        starved = False  # handlers sat idle waiting for the last claim
        refill_below = session.refill_below()  # the session says again with each claim
        given_back = session.given_back  # jobs claimed ahead that waited too long
        try:
            while not self._stopping:
                if fetch is not None and (not buffer or fetch.done()):
                    waited = not buffer
                    if not fetch.done():
                        await self._wait_done(fetch)
                        if not fetch.done():
                            break  # stopping
                    done, fetch = fetch, None
                    claimed = done.result()
                    starved = waited and not slots.locked()
                    refill_below = claimed.refill_below
                    buffer.extend(Message(r) for r in claimed.jobs)
                if session.given_back != given_back:
                    # The session gave back jobs that waited too long: drop them.
                    given_back = session.given_back
                    buffer = collections.deque(m for m in buffer if session.holds(m._row))
                if fetch is None and len(buffer) < refill_below:
                    fetch = asyncio.ensure_future(session.next_jobs(len(buffer), starved))
                    starved = False
                if not buffer:
                    continue  # the claim in flight is awaited at the top
                if slots.locked():
                    await self._acquire(slots)
                    if self._stopping:
                        break
                else:
                    await slots.acquire()
                taken = [buffer.popleft() for _ in range(min(per_call, len(buffer)))]
                msgs = [m for m in taken if session.begin(m._row)]
                if not msgs:
                    slots.release()  # given back meanwhile
                    continue
                task = asyncio.create_task(self._handle(session, msgs, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except asyncio.CancelledError:
            cancelled = True
        finally:
            stats = await asyncio.shield(self._shutdown(session, buffer, tasks, fetch))
        if cancelled:
            raise asyncio.CancelledError
        return stats

    async def _shutdown(
        self,
        session: _pgqrs.WorkerSession,
        buffer: collections.deque[Message],
        tasks: set[asyncio.Task[None]],
        fetch: asyncio.Future[_pgqrs.Claimed] | None,
    ) -> WorkerStats:
        session.stop_claiming()
        if fetch is not None:
            # What the claim in flight got was never started either.
            try:
                buffer.extend(Message(r) for r in (await fetch).jobs)
            except Exception:
                pass
        never_started = [m._row for m in buffer]
        buffer.clear()
        if never_started:
            await session.release(never_started)
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=session.shutdown_grace)
            if pending:
                log.warning(
                    "shutdown grace period over: cancelling %d handler(s); their jobs are released",
                    len(pending),
                )
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        return WorkerStats._from(await session.stop())

    async def _handle(
        self, session: _pgqrs.WorkerSession, msgs: list[Message], slots: asyncio.Semaphore
    ) -> None:
        try:
            timeout = session.handler_timeout([m._row for m in msgs])
            error = await outcome_within(self.handler, msgs if self.batch else msgs[0], timeout)
            if error is not None:
                log.debug("handler failed on job(s) %s: %s", [m.id for m in msgs], error)
            for m in msgs:
                session.complete(m._row, error)
        finally:
            slots.release()

    async def _wait_done(self, fut: asyncio.Future[Any]) -> None:
        """Wait until ``fut`` is done or the worker is asked to stop (``fut`` runs on)."""
        assert self._wake is not None
        stopper = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fut, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
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
    concurrency: int | None = None,
    batch_size: int | None = None,
    batch: bool = False,
    visibility_timeout: float | timedelta | None = None,
    retry: RetryPolicy | None = None,
    poll_interval: float | None = None,
    shutdown_grace: float | None = None,
    heartbeat_interval: float | None = None,
    delete_on_success: bool | None = None,
    claim_ahead_timeout: float | None = None,
    prune_interval: float | timedelta | None = None,
    job_timeout: float | timedelta | None = None,
    fire_schedules: bool | None = None,
) -> Worker:
    """A long-running worker for ``queue``; start it with ``await w.run()``.

    * ``concurrency``: handler calls running at once (default 1).
    * ``batch_size``: jobs claimed per slot (default 1); with ``batch=True`` the handler
      receives a list of up to ``batch_size`` messages and its outcome applies to all of them.
    * ``handler`` may be ``async def`` or a plain function (run in a thread). Returning
      archives the job (deletes it with ``delete_on_success``); raising or returning ``False``
      records a failed attempt, retried per ``retry`` until the job becomes a dead letter.
    * Settings not given take the core's defaults; ``visibility_timeout`` and
      ``poll_interval`` the store's (the connection string's ``visibility_timeout`` and
      ``poll_interval_ms``).
    * ``heartbeat_interval`` (default: a third of the lease, at most 5 s) extends the leases
      the worker holds; it must be at most half the lease.
    * ``claim_ahead_timeout`` (default 2 s): jobs claimed ahead of the handlers that wait
      longer for one are given back for any worker to take.
    * ``prune_interval`` (default 60 s): how often the worker deletes what is past its
      retention (the queue's archive and dead letters, finished workflow runs), 1,000 rows
      per statement; see :meth:`Admin.create_queue <pgqrs.Admin.create_queue>`.
    * ``job_timeout`` (default: no limit): the handler timeout of jobs produced without their
      own ``timeout``; a handler past it is cancelled and the attempt recorded as failed, then
      retried per ``retry``.
    * ``fire_schedules`` (default True): whether the worker fires the due ticks of the
      store's schedules, of every queue (see :meth:`Admin.create_schedule
      <pgqrs.Admin.create_schedule>`).
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
        claim_ahead_timeout=claim_ahead_timeout,
        prune_interval=prune_interval,
        job_timeout=job_timeout,
        fire_schedules=fire_schedules,
    )
