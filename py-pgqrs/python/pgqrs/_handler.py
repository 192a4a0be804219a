"""Calling user code (handlers, workflow and step bodies) and turning its result into an
outcome to report."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pgqrs import _pgqrs

R = TypeVar("R")

#: The error text recorded when a handler returns ``False``.
RETURNED_FALSE = "handler returned False"


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an async or plain function; a plain one runs in a thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


def error_text(e: BaseException) -> str:
    """The error text recorded for a failed attempt: ``"ValueError: message"``."""
    return f"{type(e).__name__}: {e}"


async def outcome(handler: Callable[..., Any], arg: Any) -> str | None:
    """Run a job handler: ``None`` when it succeeded, else the error text to record (it
    raised, or returned ``False``). Cancellation propagates."""
    try:
        result = await call(handler, arg)
    except Exception as e:
        return error_text(e)
    return RETURNED_FALSE if result is False else None


async def outcome_within(
    handler: Callable[..., Any], arg: Any, timeout: float | None
) -> str | None:
    """:func:`outcome`, cancelled after ``timeout`` seconds (None: no limit); a handler that
    runs out of time gets the core's timeout error. A plain function running in a thread
    cannot be stopped: its attempt is recorded as failed and the thread runs on."""
    if timeout is None:
        return await outcome(handler, arg)
    try:
        return await asyncio.wait_for(outcome(handler, arg), timeout)
    except asyncio.TimeoutError:
        # `outcome` turns the handler's own exceptions into text: this one is the deadline.
        return _pgqrs.timeout_error(timeout)


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
