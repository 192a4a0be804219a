"""Durable workflows: run contexts, the ``@workflow`` / ``@step`` machinery, and a worker that
executes runs taken from a queue.

What is guaranteed (the engine is the Rust core's; see its docs):

* a step's body runs at least once until its output is journaled, and never after;
* a finished run called again runs nothing and returns its stored output (or raises its
  stored error);
* a run's outcome is recorded exactly once, by the executor holding the run's lease;
* on replay, calling a different step at a journaled position raises
  :class:`~pgqrs.errors.NonDeterministicError`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from pgqrs import _json, _pgqrs
from pgqrs._store import Store, error_text
from pgqrs._types import Message, RetryPolicy, StepRecord, WorkflowRun
from pgqrs._worker import Worker
from pgqrs.errors import (
    NonDeterministicError,
    SerializationError,
    ValidationError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowLockedError,
)

T = TypeVar("T")


class Permanent(Exception):
    """Raise this (or ``raise Permanent(...) from e``) in a step to fail it without retries."""


class WorkflowContext:
    """The context of one workflow run; the first argument of workflows and steps."""

    __slots__ = ("_input", "_native", "_store")

    def __init__(self, store: Store, native: _pgqrs.Workflow) -> None:
        self._store = store
        self._native = native
        self._input: Any = _UNSET

    @property
    def id(self) -> int:
        """The run id."""
        return self._native.id

    @property
    def name(self) -> str:
        """The workflow name given to ``create_workflow``."""
        return self._native.name

    @property
    def input(self) -> Any:
        """The input the run was created with (decoded JSON)."""
        if self._input is _UNSET:
            self._input = _json.loads(self._native.input_json)
        return self._input

    @property
    def store(self) -> Store:
        return self._store

    async def status(self) -> WorkflowRun:
        """The run as stored now."""
        return WorkflowRun._from(await self._native.status())

    async def steps(self) -> list[StepRecord]:
        """The journaled steps, in order."""
        return [StepRecord._from(r) for r in await self._native.steps()]

    async def cancel(self) -> bool:
        """Cancel the run (see :meth:`pgqrs.Admin.cancel_workflow`)."""
        return await self._store._native.cancel_workflow(self.id)

    def __repr__(self) -> str:
        return f"<pgqrs.WorkflowContext run={self.id} name={self.name!r}>"


class _Unset:
    pass


_UNSET: Any = _Unset()


def _need_ctx(ctx: Any, what: str) -> WorkflowContext:
    if not isinstance(ctx, WorkflowContext):
        raise TypeError(
            f"the first argument of {what} must be the run context "
            f"(from admin.create_workflow), got {type(ctx).__name__}"
        )
    return ctx


def stored_outcome(row: tuple[Any, ...], locked_if_running: bool = False) -> Any:
    """The result of a finished run: its output, or its error raised."""
    run = WorkflowRun._from(row)
    if locked_if_running and not run.finished:
        raise WorkflowLockedError(
            f"workflow run {run.id} is being executed by another executor", run_id=run.id
        )
    if run.status == "succeeded":
        return run.output
    if run.status == "cancelled":
        raise WorkflowCancelledError(f"workflow run {run.id} was cancelled", run_id=run.id)
    raise WorkflowFailedError(
        f"workflow run {run.id} failed: {run.error}", run_id=run.id, error=run.error
    )


async def _run_callable(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


def make_workflow(
    fn: Callable[..., Any], name: str | None
) -> Callable[..., Coroutine[Any, Any, Any]]:
    wf_name = name or fn.__name__

    @functools.wraps(fn)
    async def run(ctx: WorkflowContext, *args: Any, **kwargs: Any) -> Any:
        ctx = _need_ctx(ctx, f"workflow {wf_name!r}")
        started = await ctx._native.start()
        if started[0] == "finished":
            return stored_outcome(started[1])
        native = ctx._native
        try:
            result = await _run_callable(fn, ctx, *args, **kwargs)
        except Exception as e:
            # Recorded as the run's failure; a no-op if the run was cancelled or taken over.
            await native.finish_err(error_text(e))
            raise
        except BaseException:
            # The task was cancelled (or the process is exiting), not the run: leave the run
            # to be resumed, here or by another executor.
            native.suspend()
            raise
        try:
            text = _json.dumps(result, f"output of workflow {wf_name!r}")
        except SerializationError as e:
            await native.finish_err(error_text(e))
            raise
        if not await native.finish_ok(text):
            # Cancelled (or taken over) after its last step: not a success.
            stored_outcome(await native.status(), locked_if_running=True)
        return result

    run.__pgqrs_workflow__ = wf_name  # type: ignore[attr-defined]
    return run


def make_step(
    fn: Callable[..., Any],
    name: str | None,
    retry: RetryPolicy | None,
    non_retryable: tuple[type[BaseException], ...],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    step_name = name or fn.__name__
    spec = None if retry is None else retry._spec()

    @functools.wraps(fn)
    async def run_step(ctx: WorkflowContext, *args: Any, **kwargs: Any) -> Any:
        ctx = _need_ctx(ctx, f"step {step_name!r}")
        native = ctx._native
        began = await native.begin_step(step_name)
        if began[0] == "replay":
            return _json.loads(began[1])
        _, _, position, attempt = began
        while True:
            try:
                result = await _run_callable(fn, ctx, *args, **kwargs)
            except (NonDeterministicError, WorkflowCancelledError, WorkflowLockedError):
                raise
            except Exception as e:
                permanent = isinstance(e, (Permanent, *non_retryable))
                delay = await native.fail_step(
                    position, step_name, attempt, error_text(e), spec, permanent
                )
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                await native.ensure_owned()
                attempt += 1
                continue
            text = _json.dumps(result, f"output of step {step_name!r}")
            await native.complete_step(position, step_name, attempt, text)
            return result

    run_step.__pgqrs_step__ = step_name  # type: ignore[attr-defined]
    return run_step


def workflow_name(fn: Callable[..., Any]) -> str:
    """The registered name of a ``@workflow`` function."""
    name = getattr(fn, "__pgqrs_workflow__", None)
    if name is None:
        raise ValidationError(
            f"{getattr(fn, '__name__', fn)!r} is not decorated with @workflow", field="workflow"
        )
    return str(name)


def workflow_worker(
    store: Store,
    queue: str,
    workflows: Iterable[Callable[..., Any]],
    *,
    concurrency: int = 1,
    visibility_timeout: float | timedelta | None = None,
    poll_interval: float = 0.2,
    shutdown_grace: float = 30.0,
) -> Worker:
    """A worker that executes the runs requested on ``queue`` (by
    :meth:`pgqrs.Admin.enqueue_workflow`) with the given ``@workflow`` functions, each called
    as ``fn(ctx, ctx.input)``.

    A run held by another live executor is retried later; a finished run is skipped; a run of a
    workflow not in ``workflows`` fails its job (it ends as a dead letter).
    """
    registry = {workflow_name(fn): fn for fn in workflows}

    async def execute(msg: Message) -> None:
        payload = msg.payload
        run_id = payload.get("workflow_run") if isinstance(payload, dict) else None
        if not isinstance(run_id, int):
            raise ValidationError(f"job {msg.id} is not a workflow run request: {payload!r}")
        native = await store._native.get_workflow(run_id)
        fn = registry.get(native.name)
        if fn is None:
            raise ValidationError(
                f"no workflow named {native.name!r} is registered with this worker "
                f"(known: {sorted(registry)})",
                field="workflow",
            )
        ctx = WorkflowContext(store, native)
        try:
            await fn(ctx, ctx.input)
        except (WorkflowFailedError, WorkflowCancelledError):
            return  # the run's outcome is recorded; the job is done
        except WorkflowLockedError:
            raise
        except Exception:
            run = await ctx.status()
            if run.finished:
                return  # the workflow failed and its failure is journaled
            raise

    return Worker(
        store,
        queue,
        execute,
        concurrency=concurrency,
        visibility_timeout=visibility_timeout,
        retry=RetryPolicy.exponential(100, base=0.5, max=30.0),
        poll_interval=poll_interval,
        shutdown_grace=shutdown_grace,
    )
