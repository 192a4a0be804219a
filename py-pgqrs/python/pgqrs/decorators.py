"""``@workflow`` and ``@step``: durable workflows in plain Python.

.. code-block:: python

    from pgqrs.decorators import workflow, step

    @step
    async def fetch(ctx, url): ...

    @step(max_attempts=5, backoff=0.5)
    async def flaky(ctx, data): ...

    @workflow
    async def pipeline(ctx, url):
        return await flaky(ctx, await fetch(ctx, url))

    ctx = await pgqrs.admin(store).create_workflow("pipeline", url)
    result = await pipeline(ctx, url)

Steps and workflows may be ``async def`` or plain functions (run in a thread). A step's
return value must be JSON-serializable: it is journaled, and a replayed step returns the
journaled value (so a tuple comes back as a list).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, overload

from pgqrs._types import DEFAULT_RETRY, RetryPolicy
from pgqrs._workflows import Permanent, make_step, make_workflow
from pgqrs.errors import ValidationError

__all__ = ["Permanent", "step", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def workflow(fn: F, /) -> Callable[..., Coroutine[Any, Any, Any]]: ...
@overload
def workflow(
    fn: None = None, /, *, name: str | None = None
) -> Callable[[F], Callable[..., Coroutine[Any, Any, Any]]]: ...


def workflow(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Make ``fn(ctx, ...)`` a durable workflow.

    Calling it with a run context starts or resumes the run, executes the body and records its
    outcome; a finished run returns its stored output (or raises its stored error) and runs
    nothing. ``name`` (default: the function's name) is the name workers look it up by.
    """
    if fn is None:
        return lambda f: make_workflow(f, name)
    return make_workflow(fn, name)


@overload
def step(fn: F, /) -> Callable[..., Coroutine[Any, Any, Any]]: ...
@overload
def step(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int = 1,
    backoff: float = DEFAULT_RETRY.base,
    max_backoff: float = DEFAULT_RETRY.max,
    retry: RetryPolicy | None = None,
    non_retryable: tuple[type[BaseException], ...] = (),
) -> Callable[[F], Callable[..., Coroutine[Any, Any, Any]]]: ...


def step(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int = 1,
    backoff: float = DEFAULT_RETRY.base,
    max_backoff: float = DEFAULT_RETRY.max,
    retry: RetryPolicy | None = None,
    non_retryable: tuple[type[BaseException], ...] = (),
) -> Any:
    """Make ``fn(ctx, ...)`` a journaled workflow step.

    Its output is journaled when it returns; on replay the body is skipped. A raised exception
    is retried by the engine up to ``max_attempts`` attempts in all, the first included
    (exponential backoff with jitter from ``backoff`` seconds up to ``max_backoff``; or give a
    full ``retry`` policy), unless it
    is a :class:`Permanent` or one of ``non_retryable``. When no attempt is left the error is
    journaled and propagates: the workflow fails unless it catches it.
    """
    policy = retry
    if policy is None and max_attempts > 1:
        policy = RetryPolicy.exponential(max_attempts, base=backoff, max=max_backoff)
    if policy is None and max_attempts < 1:
        raise ValidationError(
            "max_attempts counts every attempt, the first included: at least 1",
            field="max_attempts",
        )
    if fn is None:
        return lambda f: make_step(f, name, policy, non_retryable)
    return make_step(fn, name, policy, non_retryable)
