"""Type stubs for the native module ``pgqrs._pgqrs`` (built from ``py-pgqrs/src/``, one file
per class).

Checked against the built module by ``make typecheck`` (``mypy.stubtest``).

Private: the public, documented API is the ``pgqrs`` package, which wraps these classes.
Every async method returns an awaitable bound to the running asyncio event loop, so it must
be called while one runs. Records cross the boundary as frozen rows with named fields:
payloads, inputs and outputs as JSON text, times as microseconds since the Unix epoch (UTC).
Options are keywords; an option not given (``None``) takes the core's default. Objects
created before ``os.fork()`` raise ``pgqrs.errors.ForkError`` when used in the child.
"""

from collections.abc import Awaitable
from typing import Literal, Protocol, TypeAlias, final

__all__ = [
    "ArchivedJobRow",
    "Claimed",
    "Consumer",
    "DeadLetterRow",
    "FiredRow",
    "JobPageRow",
    "JobRow",
    "MessageRow",
    "MetricsRow",
    "PrunedRow",
    "QueueRow",
    "RetryRow",
    "RunRow",
    "ScheduleRow",
    "StatsRow",
    "Step",
    "StepRow",
    "Store",
    "WorkerOptions",
    "WorkerRow",
    "WorkerSession",
    "Workflow",
    "__version__",
    "_shutdown",
    "check_retry_policy",
    "connect",
    "default_retry_policy",
    "run_job_retry_policy",
    "timeout_error",
]

__version__: str

_RunStatus: TypeAlias = Literal["pending", "running", "succeeded", "failed", "cancelled"]
_JobState: TypeAlias = Literal["ready", "delayed", "leased", "archived", "dead"]
_Backoff: TypeAlias = Literal["fixed", "exponential", "exponential_jitter"]

class _RetrySpec(Protocol):
    """A retry policy, read by attribute (``pgqrs.RetryPolicy``, :class:`RetryRow`)."""

    @property
    def max_attempts(self) -> int | None: ...
    @property
    def backoff(self) -> str: ...
    @property
    def base(self) -> float: ...
    @property
    def max(self) -> float: ...

def connect(dsn: str) -> Awaitable[Store]:
    """Open a store; the DSN's scheme picks the backend."""

def default_retry_policy() -> RetryRow:
    """The core's default retry policy."""

def run_job_retry_policy() -> RetryRow:
    """The retry policy of workers that execute workflow runs."""

def check_retry_policy(policy: _RetrySpec) -> None:
    """Raise ``ValidationError`` if the policy's fields are invalid."""

def timeout_error(seconds: float) -> str:
    """The error recorded with an attempt whose handler ran past its timeout."""

def _shutdown() -> None:
    """Stop the native runtime (registered with ``atexit`` by the package)."""

@final
class MessageRow:
    """A claimed job, with its lease."""

    @property
    def id(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def payload_json(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def enqueued_at_us(self) -> int: ...
    @property
    def visible_at_us(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def lease_token(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def timeout(self) -> float | None:
        """The job's own handler timeout in seconds; None when it has none."""

@final
class Claimed:
    """What ``WorkerSession.next_jobs`` claimed, and when to ask again."""

    @property
    def jobs(self) -> list[MessageRow]: ...
    @property
    def refill_below(self) -> int:
        """Ask again once fewer jobs than this wait for a handler (0: never)."""

@final
class QueueRow:
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def created_at_us(self) -> int: ...
    @property
    def archive_retention(self) -> float | None:
        """Seconds; None: kept forever."""

    @property
    def dead_retention(self) -> float | None:
        """Seconds; None: kept forever."""

    @property
    def concurrency_limit(self) -> int | None:
        """None: no limit."""

    @property
    def group_concurrency_limit(self) -> int | None:
        """None: no limit."""

    @property
    def rate_limit(self) -> int | None:
        """Jobs per period; None: no limit."""

    @property
    def rate_period(self) -> float | None:
        """The rate limit's period in seconds."""

@final
class ScheduleRow:
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def cron(self) -> str | None: ...
    @property
    def every(self) -> float | None:
        """Seconds."""

    @property
    def timezone(self) -> str | None: ...
    @property
    def payload_json(self) -> str: ...
    @property
    def workflow(self) -> str | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def max_attempts(self) -> int | None: ...
    @property
    def catch_up(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    @property
    def next_at_us(self) -> int: ...
    @property
    def last_tick_at_us(self) -> int | None: ...
    @property
    def created_at_us(self) -> int: ...

@final
class FiredRow:
    @property
    def job_ids(self) -> list[int]: ...
    @property
    def run_ids(self) -> list[int]: ...

@final
class PrunedRow:
    @property
    def archived(self) -> int: ...
    @property
    def dead(self) -> int: ...
    @property
    def workflow_runs(self) -> int: ...

@final
class MetricsRow:
    @property
    def queue(self) -> str: ...
    @property
    def ready(self) -> int: ...
    @property
    def delayed(self) -> int: ...
    @property
    def leased(self) -> int: ...
    @property
    def archived(self) -> int: ...
    @property
    def dead(self) -> int: ...
    @property
    def oldest_ready_age(self) -> float: ...

@final
class DeadLetterRow:
    @property
    def id(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def payload_json(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def enqueued_at_us(self) -> int: ...
    @property
    def failed_at_us(self) -> int: ...

@final
class ArchivedJobRow:
    @property
    def id(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def payload_json(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def enqueued_at_us(self) -> int: ...
    @property
    def archived_at_us(self) -> int: ...

@final
class JobRow:
    """A job in any state."""

    @property
    def id(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def payload_json(self) -> str: ...
    @property
    def state(self) -> _JobState: ...
    @property
    def priority(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int | None: ...
    @property
    def enqueued_at_us(self) -> int: ...
    @property
    def visible_at_us(self) -> int | None: ...
    @property
    def leased_at_us(self) -> int | None: ...
    @property
    def worker_id(self) -> int | None: ...
    @property
    def finished_at_us(self) -> int | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def group(self) -> str | None: ...

@final
class JobPageRow:
    """One page of ``Store.list_jobs``."""

    @property
    def jobs(self) -> list[JobRow]: ...
    @property
    def next_cursor(self) -> str | None: ...

@final
class WorkerRow:
    @property
    def id(self) -> int: ...
    @property
    def hostname(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def started_at_us(self) -> int: ...
    @property
    def heartbeat_at_us(self) -> int: ...
    @property
    def status(self) -> Literal["running", "stopping", "stopped"]: ...

@final
class StatsRow:
    @property
    def worker_id(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def dead(self) -> int: ...
    @property
    def lease_lost(self) -> int: ...
    @property
    def released(self) -> int: ...

@final
class RunRow:
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def input_json(self) -> str: ...
    @property
    def status(self) -> _RunStatus: ...
    @property
    def output_json(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def lease_until_us(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def created_at_us(self) -> int: ...
    @property
    def updated_at_us(self) -> int: ...
    @property
    def finished_at_us(self) -> int | None: ...

@final
class StepRow:
    @property
    def run_id(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> Literal["succeeded", "failed", "retrying"]: ...
    @property
    def output_json(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def next_retry_at_us(self) -> int | None: ...

@final
class RetryRow:
    """A retry policy of the core, spelled as ``pgqrs.RetryPolicy`` spells it."""

    @property
    def max_attempts(self) -> int | None: ...
    @property
    def backoff(self) -> _Backoff: ...
    @property
    def base(self) -> float: ...
    @property
    def max(self) -> float: ...

@final
class Store:
    """A connection to a pgqrs database."""

    @property
    def backend(self) -> Literal["postgres", "sqlite", "turso"]: ...
    @property
    def dsn(self) -> str: ...
    @property
    def poll_interval(self) -> float:
        """The idle polling interval in seconds (``poll_interval_ms``)."""

    def close(self) -> Awaitable[None]: ...
    def install(self) -> Awaitable[None]: ...
    def install_up_to(self, version: int) -> Awaitable[None]: ...
    def verify(self) -> Awaitable[None]: ...
    def schema_version(self) -> Awaitable[int | None]: ...
    def create_queue(
        self,
        name: str,
        *,
        archive_retention: float | Literal["forever"] | None = None,
        dead_retention: float | Literal["forever"] | None = None,
        concurrency_limit: int | None = None,
        group_concurrency_limit: int | None = None,
        rate_limit: int | None = None,
        rate_period: float | None = None,
    ) -> Awaitable[QueueRow]: ...
    def set_queue_limits(
        self,
        name: str,
        *,
        concurrency_limit: int | None = None,
        group_concurrency_limit: int | None = None,
        rate_limit: int | None = None,
        rate_period: float | None = None,
    ) -> Awaitable[QueueRow]:
        """Replace every limit of the queue (those not given: no limit)."""

    def set_queue_retention(
        self,
        name: str,
        *,
        archive_retention: float | Literal["forever"] | None = None,
        dead_retention: float | Literal["forever"] | None = None,
    ) -> Awaitable[QueueRow]: ...
    def workflow_retention(self) -> Awaitable[float | None]: ...
    def set_workflow_retention(self, retention: float | Literal["forever"]) -> Awaitable[None]: ...
    def prune(
        self, queue: str | None = None, older_than: float | None = None
    ) -> Awaitable[PrunedRow]: ...
    def delete_queue(self, name: str, *, force: bool = False) -> Awaitable[None]: ...
    def create_schedule(
        self,
        name: str,
        queue: str,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        payload_json: str | None = None,
        catch_up: int | None = None,
        workflow: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> Awaitable[ScheduleRow]: ...
    def get_schedule(self, name: str) -> Awaitable[ScheduleRow]: ...
    def list_schedules(self) -> Awaitable[list[ScheduleRow]]: ...
    def pause_schedule(self, name: str) -> Awaitable[ScheduleRow]: ...
    def resume_schedule(self, name: str) -> Awaitable[ScheduleRow]: ...
    def delete_schedule(self, name: str) -> Awaitable[None]: ...
    def trigger_schedule(self, name: str) -> Awaitable[FiredRow]: ...
    def fire_due_schedules(self) -> Awaitable[int]: ...
    def purge_queue(self, name: str) -> Awaitable[int]: ...
    def list_queues(self) -> Awaitable[list[QueueRow]]: ...
    def queue_metrics(self, name: str) -> Awaitable[MetricsRow]: ...
    def dead_letters(self, queue: str, limit: int) -> Awaitable[list[DeadLetterRow]]: ...
    def requeue_dead(self, queue: str, ids: list[int] | None = None) -> Awaitable[int]: ...
    def archived_jobs(self, queue: str, limit: int) -> Awaitable[list[ArchivedJobRow]]: ...
    def get_job(self, id: int) -> Awaitable[JobRow]: ...
    def list_jobs(
        self, queue: str, state: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Awaitable[JobPageRow]: ...
    def cancel_job(self, id: int) -> Awaitable[JobRow]: ...
    def retry_job(self, id: int) -> Awaitable[JobRow]: ...
    def reschedule_job(
        self, id: int, *, delay: float | None = None, at_us: int | None = None
    ) -> Awaitable[JobRow]:
        """Move a waiting job's run time: exactly one of ``delay`` (seconds) and ``at_us``."""

    def set_job_priority(self, id: int, priority: int) -> Awaitable[JobRow]: ...
    def list_workers(self) -> Awaitable[list[WorkerRow]]: ...
    def enqueue(
        self,
        queue: str,
        payloads: list[str] | str,
        *,
        delay: float | None = None,
        at_us: int | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        key: str | None = None,
        keys: list[str | None] | None = None,
        on_duplicate: str | None = None,
        unique_for: float | None = None,
        group: str | None = None,
    ) -> Awaitable[list[int]]:
        """Enqueue JSON (already serialized) in one statement: one text per job, or one
        JSON array text whose elements are the jobs. Returns the ids in order."""

    def consumer(self, queue: str) -> Awaitable[Consumer]: ...
    def worker_session(
        self, queue: str, options: WorkerOptions | None = None
    ) -> Awaitable[WorkerSession]:
        """Register a worker and start its session (default options when none)."""

    def create_workflow(self, name: str, input_json: str) -> Awaitable[Workflow]: ...
    def get_workflow(self, id: int) -> Awaitable[Workflow]: ...
    def workflow_for_job(self, job: MessageRow) -> Awaitable[Workflow | None]:
        """The run a workflow-run job asks for; ``None`` once that run has finished."""

    def enqueue_workflow(self, queue: str, name: str, input_json: str) -> Awaitable[RunRow]: ...
    def workflow_run(self, id: int) -> Awaitable[RunRow]: ...
    def workflow_steps(self, id: int) -> Awaitable[list[StepRow]]: ...
    def list_workflows(self, status: str | None, limit: int) -> Awaitable[list[RunRow]]: ...
    def cancel_workflow(self, id: int) -> Awaitable[bool]: ...

@final
class Consumer:
    """Low-level access to one queue."""

    @property
    def queue(self) -> str: ...
    def dequeue(
        self, batch_size: int, visibility_timeout: float | None
    ) -> Awaitable[list[MessageRow]]: ...
    def archive(self, id: int) -> Awaitable[None]: ...
    def archive_many(self, ids: list[int]) -> Awaitable[list[bool]]: ...
    def delete(self, id: int) -> Awaitable[None]: ...
    def delete_many(self, ids: list[int]) -> Awaitable[list[bool]]: ...
    def extend(self, id: int, seconds: float) -> Awaitable[None]: ...
    def release(self, id: int, delay: float) -> Awaitable[None]: ...
    def fail(self, id: int, error: str, retry: _RetrySpec | None = None) -> Awaitable[None]: ...
    def wait_idle(self, rounds: int, poll_interval: float | None = None) -> Awaitable[None]:
        """Wait as an idle consumer does after ``rounds`` empty waits (the core's idle wait of
        ``poll_interval``, the store's when ``None``), cut short when jobs may have arrived."""

    def settle(
        self, outcomes: dict[int, str | None], retry: _RetrySpec | None = None
    ) -> Awaitable[list[bool]]:
        """Record outcomes (``None``: success, else the error text) in two statements; per
        job, whether it was settled (``False``: lease lost)."""

@final
class WorkerOptions:
    """A worker's settings; those not given take the core's defaults. Checked when made."""

    def __new__(
        cls,
        *,
        concurrency: int | None = None,
        batch_size: int | None = None,
        visibility_timeout: float | None = None,
        retry: _RetrySpec | None = None,
        poll_interval: float | None = None,
        shutdown_grace: float | None = None,
        heartbeat_interval: float | None = None,
        delete_on_success: bool | None = None,
        flush_interval: float | None = None,
        claim_ahead_timeout: float | None = None,
        prune_interval: float | None = None,
        job_timeout: float | None = None,
        fire_schedules: bool | None = None,
    ) -> WorkerOptions: ...

@final
class WorkerSession:
    """The database side of a Python worker."""

    @property
    def worker_id(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def shutdown_grace(self) -> float: ...
    @property
    def poll_interval(self) -> float:
        """The idle polling interval in force, in seconds."""

    def next_jobs(self, buffered: int, starved: bool) -> Awaitable[Claimed]:
        """The next jobs for the handlers: claimed ahead (``buffered`` jobs still wait for a
        handler; ``starved``: handlers sat idle waiting for the previous claim), waiting at
        the poll interval while the queue is idle, transient errors retried. Await it to the
        end; ``stop_claiming()`` ends it early."""

    def stop_claiming(self) -> None: ...
    def claim_ahead(self, buffered: int, starved: bool) -> Awaitable[list[MessageRow]]:
        """Claim as many as the adaptive claim-ahead depth allows with ``buffered`` jobs
        waiting; ``starved``: handlers sat idle waiting for the previous claim."""

    def refill_below(self) -> int:
        """Claim again once fewer than this many claimed jobs wait for a handler."""

    def begin(self, job: MessageRow) -> bool:
        """A handler is about to run ``job``; ``False``: the worker no longer holds it (it
        waited too long and was given back) and it must not run."""

    def handler_timeout(self, jobs: list[MessageRow]) -> float | None:
        """Seconds one handler call on these jobs may run (the shortest of their timeouts,
        the worker's ``job_timeout`` for jobs without one); None: no limit."""

    def holds(self, job: MessageRow) -> bool:
        """Whether the worker still holds this claimed job."""

    @property
    def given_back(self) -> int:
        """How many jobs claimed ahead were given back so far for waiting too long."""

    def complete(self, job: MessageRow, error: str | None = None) -> None:
        """Report an outcome; returns at once (written in the next batch). ``None`` is success."""

    def release(self, jobs: list[MessageRow]) -> Awaitable[None]: ...
    def wait_for_jobs(self, timeout: float) -> Awaitable[None]: ...
    def stats(self) -> StatsRow: ...
    def stop(self) -> Awaitable[StatsRow]: ...

@final
class Workflow:
    """The context of one workflow run."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def input_json(self) -> str: ...
    def start(self) -> Awaitable[str | None]:
        """``None``: execute the run. A finished run: its stored output (JSON text), or its
        stored error raised."""

    def begin_step(self, name: str, retry: _RetrySpec | None = None) -> Awaitable[Step]: ...
    def suspend(self) -> None: ...
    def finish_ok(self, output_json: str) -> Awaitable[None]:
        """Record success; raises what the run stored if it is no longer this executor's."""

    def finish_err(self, error: str) -> Awaitable[bool]: ...
    def status(self) -> Awaitable[RunRow]: ...
    def steps(self) -> Awaitable[list[StepRow]]: ...

@final
class Step:
    """One step of a run: replayed (``output_json`` set) or to be run."""

    @property
    def output_json(self) -> str | None: ...
    @property
    def position(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    def complete(self, output_json: str) -> Awaitable[None]: ...
    def retry(self, error: str, permanent: bool = False) -> Awaitable[bool]:
        """Journal a failed attempt; True once the next one may run, False when the step
        failed for good."""
