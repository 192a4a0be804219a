"""Durable workflows: run contexts, the ``@workflow`` / ``@step`` machinery, and a worker that
executes runs taken from a queue.

What is guaranteed (the engine is the Rust core's; see its docs):

* a step's body runs at least once until its output is journaled, and never after;
* a finished run called again runs nothing and returns its stored output (or raises its
  stored error);
* a run's outcome is recorded exactly once, by the executor holding the run's lease;
* on replay, calling a different step at a journaled position raises
  :class:`~pgqrs.errors.NonDeterministicError`.

The Python side awaits the bodies and reports their outcomes; what an outcome means (a
finished run's stored result, whether and when a failed step runs again) is the core's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pgqrs import _json, _pgqrs
from pgqrs._handler import call, error_text
from pgqrs._types import Message, RetryPolicy, StepRecord, WorkflowRun
from pgqrs._workers import Worker
from pgqrs.errors import (
    NonDeterministicError,
    SerializationError,
    ValidationError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowLockedError,
)

if TYPE_CHECKING:
    from pgqrs._store import Store

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


def make_workflow(
    fn: Callable[..., Any], name: str | None
) -> Callable[..., Coroutine[Any, Any, Any]]:
    wf_name = name or fn.__name__

    @functools.wraps(fn)
    async def run(ctx: WorkflowContext, *args: Any, **kwargs: Any) -> Any:
        ctx = _need_ctx(ctx, f"workflow {wf_name!r}")
        native = ctx._native
        stored = await native.start()
        if stored is not None:
            # Finished before: its stored output (a stored error was raised by start()).
            return _json.loads(stored)
        try:
            result = await call(fn, ctx, *args, **kwargs)
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
        # Raises what the run stored instead if it was cancelled (or taken over) meanwhile.
        await native.finish_ok(text)
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

    @functools.wraps(fn)
    async def run_step(ctx: WorkflowContext, *args: Any, **kwargs: Any) -> Any:
        ctx = _need_ctx(ctx, f"step {step_name!r}")
        step = await ctx._native.begin_step(step_name, retry)
        if step.output_json is not None:
            return _json.loads(step.output_json)  # replayed from the journal
        while True:
            try:
                result = await call(fn, ctx, *args, **kwargs)
            except (NonDeterministicError, WorkflowCancelledError, WorkflowLockedError):
                raise
            except Exception as e:
                permanent = isinstance(e, (Permanent, *non_retryable))
                # The engine journals the attempt, waits the backoff, checks the run is ours.
                if await step.retry(error_text(e), permanent):
                    continue
                raise
            await step.complete(_json.dumps(result, f"output of step {step_name!r}"))
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
    concurrency: int | None = None,
    visibility_timeout: float | timedelta | None = None,
    poll_interval: float | None = None,
    shutdown_grace: float | None = None,
) -> Worker:
    """A worker that executes the runs requested on ``queue`` (by
    :meth:`pgqrs.Admin.enqueue_workflow`) with the given ``@workflow`` functions, each called
    as ``fn(ctx, ctx.input)``.

    A run held by another live executor is retried later; a finished run is skipped; a run of a
    workflow not in ``workflows`` fails its job (it ends as a dead letter).
    """
    registry = {workflow_name(fn): fn for fn in workflows}

    async def execute(msg: Message) -> None:
        native = await store._native.workflow_for_job(msg._row)
        if native is None:
            return  # the run has finished: the job is done
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
        retry=RetryPolicy._from(_pgqrs.run_job_retry_policy()),
        poll_interval=poll_interval,
        shutdown_grace=shutdown_grace,
    )
