"""Records returned by pgqrs, and the retry policy.

The native module hands records over as rows with named fields (``pgqrs._pgqrs.*Row``);
the classes here decode them (JSON, times) by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

from pgqrs import _json, _pgqrs
from pgqrs.errors import ValidationError

if TYPE_CHECKING:
    from pgqrs._consuming import Consumer

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_us(us: int) -> datetime:
    """Microseconds since the epoch → timezone-aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def opt_from_us(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _opt_loads(text: str | None) -> Any:
    return None if text is None else _json.loads(text)


@overload
def to_seconds(value: float | timedelta, what: str) -> float: ...
@overload
def to_seconds(value: float | timedelta | None, what: str) -> float | None: ...


def to_seconds(value: float | timedelta | None, what: str) -> float | None:
    """Seconds from a number or a timedelta; None stays None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"{what} must be seconds (int or float) or a timedelta, got {type(value).__name__}",
            field=what,
        )
    # The range (not negative, finite, at most the engine's bound) is checked by the engine.
    try:
        return float(value)
    except OverflowError:
        bits = value.bit_length() if isinstance(value, int) else 0
        raise ValidationError(f"{what} is too large: a {bits}-bit int", field=what) from None


class Message:
    """A claimed job.

    ``payload`` is the decoded JSON value; ``enqueued_at`` and ``visible_at`` (when the lease
    expires) are timezone-aware. A message claimed through a :class:`~pgqrs.Consumer` can be
    settled directly: ``await msg.archive()``.
    """

    __slots__ = ("_consumer", "_payload", "_row")

    def __init__(self, row: _pgqrs.MessageRow, consumer: Consumer | None = None) -> None:
        self._row = row
        self._payload: Any = _UNSET
        self._consumer = consumer

    @property
    def id(self) -> int:
        """Job id, unique across queues."""
        return self._row.id

    @property
    def queue(self) -> str:
        """The queue's name."""
        return self._row.queue

    @property
    def attempts(self) -> int:
        """How many times the job was claimed, this claim included."""
        return self._row.attempts

    @property
    def max_attempts(self) -> int:
        """Attempts allowed before the job becomes a dead letter."""
        return self._row.max_attempts

    @property
    def last_error(self) -> str | None:
        """The error of the previous failed attempt, if any."""
        return self._row.last_error

    @property
    def lease_token(self) -> int:
        """Identifies this claim; changes every time the job is claimed."""
        return self._row.lease_token

    @property
    def priority(self) -> int:
        """Claims take jobs of higher priority first (default 0)."""
        return self._row.priority

    @property
    def timeout(self) -> float | None:
        """The job's own handler timeout in seconds (None: the worker's ``job_timeout``
        applies, if any)."""
        return self._row.timeout

    @property
    def payload(self) -> Any:
        """The JSON payload, decoded (once, on first access)."""
        if self._payload is _UNSET:
            self._payload = _json.loads(self._row.payload_json)
        return self._payload

    @property
    def enqueued_at(self) -> datetime:
        """When the job was enqueued."""
        return from_us(self._row.enqueued_at_us)

    @property
    def visible_at(self) -> datetime:
        """When the current lease expires and the job becomes claimable again."""
        return from_us(self._row.visible_at_us)

    def _need_consumer(self) -> Consumer:
        if self._consumer is None:
            raise TypeError(
                "this message was not claimed through a Consumer; settle it with the API that "
                "claimed it"
            )
        return self._consumer

    async def archive(self) -> None:
        """Archive this message (its consumer must still hold the lease)."""
        await self._need_consumer().archive(self.id)

    async def delete(self) -> None:
        """Delete this message."""
        await self._need_consumer().delete(self.id)

    async def release(self, delay: float | timedelta = 0) -> None:
        """Give this message back, claimable after ``delay``."""
        await self._need_consumer().release(self.id, delay)

    async def extend(self, seconds: float | timedelta) -> None:
        """Keep this message invisible for ``seconds`` from now."""
        await self._need_consumer().extend(self.id, seconds)

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id}, queue={self.queue!r}, attempts={self.attempts}, "
            f"payload={self._row.payload_json[:80]})"
        )


class _Unset:
    pass


_UNSET: Any = _Unset()

BackoffKind = Literal["fixed", "exponential", "exponential_jitter"]

#: The core's default retry policy: every default below comes from it.
DEFAULT_RETRY = _pgqrs.default_retry_policy()


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed job or workflow step is tried again.

    ``max_attempts`` counts every attempt, the first included (``None`` for jobs: the job's own
    limit, set at enqueue time). The wait after failed attempt *n* is ``base`` (fixed), or
    ``base * 2**(n-1)`` capped at ``max`` (exponential), or that with equal jitter (a random
    delay between half of it and all of it).
    """

    max_attempts: int | None = DEFAULT_RETRY.max_attempts
    backoff: BackoffKind = DEFAULT_RETRY.backoff
    base: float = DEFAULT_RETRY.base
    max: float = DEFAULT_RETRY.max

    def __post_init__(self) -> None:
        _pgqrs.check_retry_policy(self)

    @classmethod
    def none(cls) -> RetryPolicy:
        """No retry: the first failure is final."""
        return cls(max_attempts=1, backoff="fixed", base=0.0, max=0.0)

    @classmethod
    def fixed(cls, max_attempts: int, delay: float) -> RetryPolicy:
        """Retry after a fixed delay (seconds)."""
        return cls(max_attempts=max_attempts, backoff="fixed", base=delay, max=delay)

    @classmethod
    def exponential(
        cls,
        max_attempts: int,
        base: float = DEFAULT_RETRY.base,
        max: float = DEFAULT_RETRY.max,
        jitter: bool = True,
    ) -> RetryPolicy:
        """Retry with exponential backoff (with jitter by default)."""
        kind: BackoffKind = "exponential_jitter" if jitter else "exponential"
        return cls(max_attempts=max_attempts, backoff=kind, base=base, max=max)

    @classmethod
    def _from(cls, row: _pgqrs.RetryRow) -> RetryPolicy:
        return cls(max_attempts=row.max_attempts, backoff=row.backoff, base=row.base, max=row.max)


Retention: TypeAlias = float | timedelta | Literal["forever"]
"""How long something is kept: seconds, a timedelta, or ``"forever"``."""


def to_retention(value: Retention | None, what: str) -> float | Literal["forever"] | None:
    """Seconds from a retention, ``"forever"`` kept as is; None stays None."""
    if value == "forever":
        return "forever"
    if isinstance(value, str):
        raise ValidationError(
            f'{what} must be seconds (int or float), a timedelta or "forever", got {value[:40]!r}',
            field=what,
        )
    return to_seconds(value, what)


@dataclass(frozen=True)
class QueueInfo:
    """A queue, with how long it keeps its archive and its dead letters, and its
    concurrency and rate limits."""

    id: int
    name: str
    created_at: datetime
    archive_retention: float | None
    """Seconds completed jobs stay in the archive; None: kept forever."""
    dead_retention: float | None
    """Seconds dead letters are kept; None: kept forever."""
    concurrency_limit: int | None = None
    """At most this many jobs of the queue leased at once; None: no limit."""
    group_concurrency_limit: int | None = None
    """At most this many jobs of one group leased at once; None: no limit."""
    rate_limit: tuple[int, float] | None = None
    """At most ``jobs`` started per ``seconds``, as ``(jobs, seconds)``; None: no limit."""

    @classmethod
    def _from(cls, row: _pgqrs.QueueRow) -> QueueInfo:
        rate = (
            (row.rate_limit, row.rate_period)
            if row.rate_limit is not None and row.rate_period is not None
            else None
        )
        return cls(
            id=row.id,
            name=row.name,
            created_at=from_us(row.created_at_us),
            archive_retention=row.archive_retention,
            dead_retention=row.dead_retention,
            concurrency_limit=row.concurrency_limit,
            group_concurrency_limit=row.group_concurrency_limit,
            rate_limit=rate,
        )


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule (see :meth:`pgqrs.Admin.create_schedule`)."""

    id: int
    name: str
    queue: str
    cron: str | None
    """The cron expression, for a cron schedule."""
    every: float | None
    """The interval in seconds, for an interval schedule."""
    timezone: str | None
    """The IANA time zone of a cron schedule."""
    payload: Any
    """Each job's payload (each run's input, for a workflow schedule)."""
    workflow: str | None
    """The workflow each tick starts a run of; None: plain jobs."""
    priority: int
    max_attempts: int | None
    """Each job's attempts; None: the store's default when the job is made."""
    catch_up: int
    """Missed ticks fired when workers run again (0: only a tick at most 60 s late)."""
    paused: bool
    next_at: datetime
    """Its next tick (while paused: the one it had when paused)."""
    last_tick_at: datetime | None
    """The latest tick that made a job (``trigger_schedule`` does not count)."""
    created_at: datetime

    @classmethod
    def _from(cls, row: _pgqrs.ScheduleRow) -> ScheduleInfo:
        return cls(
            id=row.id,
            name=row.name,
            queue=row.queue,
            cron=row.cron,
            every=row.every,
            timezone=row.timezone,
            payload=_json.loads(row.payload_json),
            workflow=row.workflow,
            priority=row.priority,
            max_attempts=row.max_attempts,
            catch_up=row.catch_up,
            paused=row.paused,
            next_at=from_us(row.next_at_us),
            last_tick_at=opt_from_us(row.last_tick_at_us),
            created_at=from_us(row.created_at_us),
        )


@dataclass(frozen=True)
class Fired:
    """What :meth:`Admin.trigger_schedule <pgqrs.Admin.trigger_schedule>` made."""

    job_ids: list[int]
    """The jobs made."""
    run_ids: list[int]
    """The workflow runs started (a workflow schedule), in the same order."""

    @classmethod
    def _from(cls, row: _pgqrs.FiredRow) -> Fired:
        return cls(job_ids=list(row.job_ids), run_ids=list(row.run_ids))


@dataclass(frozen=True)
class Pruned:
    """What :meth:`Admin.prune <pgqrs.Admin.prune>` deleted, per table."""

    archived: int
    """Completed jobs deleted from the archive."""
    dead: int
    """Dead letters deleted."""
    workflow_runs: int
    """Finished workflow runs deleted, with their steps."""

    @property
    def total(self) -> int:
        """Rows deleted in all."""
        return self.archived + self.dead + self.workflow_runs

    @classmethod
    def _from(cls, row: _pgqrs.PrunedRow) -> Pruned:
        return cls(archived=row.archived, dead=row.dead, workflow_runs=row.workflow_runs)


@dataclass(frozen=True)
class QueueMetrics:
    """Counts for one queue at one moment."""

    queue: str
    ready: int
    delayed: int
    leased: int
    archived: int
    dead: int
    oldest_ready_age: float
    """Age in seconds of the oldest claimable job (0 when none)."""

    @property
    def pending(self) -> int:
        """Jobs still to be done: ready + delayed + leased."""
        return self.ready + self.delayed + self.leased

    @classmethod
    def _from(cls, row: _pgqrs.MetricsRow) -> QueueMetrics:
        return cls(
            queue=row.queue,
            ready=row.ready,
            delayed=row.delayed,
            leased=row.leased,
            archived=row.archived,
            dead=row.dead,
            oldest_ready_age=row.oldest_ready_age,
        )


@dataclass(frozen=True)
class DeadLetter:
    """A job that failed on its last allowed attempt."""

    id: int
    queue: str
    payload: Any
    attempts: int
    last_error: str | None
    enqueued_at: datetime
    failed_at: datetime

    @classmethod
    def _from(cls, row: _pgqrs.DeadLetterRow) -> DeadLetter:
        return cls(
            id=row.id,
            queue=row.queue,
            payload=_json.loads(row.payload_json),
            attempts=row.attempts,
            last_error=row.last_error,
            enqueued_at=from_us(row.enqueued_at_us),
            failed_at=from_us(row.failed_at_us),
        )


@dataclass(frozen=True)
class ArchivedJob:
    """A completed job kept in the archive."""

    id: int
    queue: str
    payload: Any
    attempts: int
    enqueued_at: datetime
    archived_at: datetime

    @classmethod
    def _from(cls, row: _pgqrs.ArchivedJobRow) -> ArchivedJob:
        return cls(
            id=row.id,
            queue=row.queue,
            payload=_json.loads(row.payload_json),
            attempts=row.attempts,
            enqueued_at=from_us(row.enqueued_at_us),
            archived_at=from_us(row.archived_at_us),
        )


JobState = Literal["ready", "delayed", "leased", "archived", "dead"]


@dataclass(frozen=True)
class Job:
    """A job as stored, in whichever state it is (see :meth:`pgqrs.Admin.get_job`).

    ``state`` means what the counts of :class:`QueueMetrics` mean: ``ready`` (claimable now),
    ``delayed`` (waiting for its run time), ``leased`` (claimed, lease not expired; or its
    final attempt's lease expired and a worker moves it to the dead letters), ``archived``
    (completed) or ``dead`` (failed on its last attempt). Ready and delayed jobs are
    *waiting*.
    """

    id: int
    queue: str
    payload: Any
    state: JobState
    priority: int
    attempts: int
    max_attempts: int | None
    """Attempts allowed; None for an archived job (the archive does not keep it)."""
    enqueued_at: datetime
    visible_at: datetime | None
    """Waiting: when it becomes claimable. Leased: when the lease expires. None once done."""
    leased_at: datetime | None
    """When its current (or last) claim was taken; None if not claimed since enqueued."""
    worker_id: int | None
    finished_at: datetime | None
    """When it was archived or died; None before."""
    last_error: str | None
    group: str | None = None
    """Its group (``produce(..., group=...)``); None: none."""

    @property
    def waiting(self) -> bool:
        """Ready or delayed: not claimed, not finished."""
        return self.state in ("ready", "delayed")

    @classmethod
    def _from(cls, row: _pgqrs.JobRow) -> Job:
        return cls(
            id=row.id,
            queue=row.queue,
            payload=_json.loads(row.payload_json),
            state=row.state,
            priority=row.priority,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            enqueued_at=from_us(row.enqueued_at_us),
            visible_at=opt_from_us(row.visible_at_us),
            leased_at=opt_from_us(row.leased_at_us),
            worker_id=row.worker_id,
            finished_at=opt_from_us(row.finished_at_us),
            last_error=row.last_error,
            group=row.group,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of :meth:`pgqrs.Admin.list_jobs`: pass ``next_cursor`` as ``cursor`` to get
    the next one; it is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None

    @classmethod
    def _from(cls, row: _pgqrs.JobPageRow) -> JobPage:
        return cls(jobs=[Job._from(r) for r in row.jobs], next_cursor=row.next_cursor)


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker."""

    id: int
    hostname: str
    pid: int
    queue: str
    started_at: datetime
    heartbeat_at: datetime
    status: Literal["running", "stopping", "stopped"]

    def is_healthy(self, stale_after: float = 30.0) -> bool:
        """Not stopped, and heartbeating within ``stale_after`` seconds."""
        age = (datetime.now(timezone.utc) - self.heartbeat_at).total_seconds()
        return self.status != "stopped" and age <= stale_after

    @classmethod
    def _from(cls, row: _pgqrs.WorkerRow) -> WorkerInfo:
        return cls(
            id=row.id,
            hostname=row.hostname,
            pid=row.pid,
            queue=row.queue,
            started_at=from_us(row.started_at_us),
            heartbeat_at=from_us(row.heartbeat_at_us),
            status=row.status,
        )


@dataclass(frozen=True)
class WorkerStats:
    """What a worker did."""

    worker_id: int
    succeeded: int
    failed: int
    dead: int
    lease_lost: int
    released: int

    @classmethod
    def _from(cls, row: _pgqrs.StatsRow) -> WorkerStats:
        return cls(
            worker_id=row.worker_id,
            succeeded=row.succeeded,
            failed=row.failed,
            dead=row.dead,
            lease_lost=row.lease_lost,
            released=row.released,
        )


RunStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class WorkflowRun:
    """A workflow run as stored."""

    id: int
    name: str
    input: Any
    status: RunStatus
    output: Any
    error: str | None
    owner: str | None
    lease_until: datetime | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled."""
        return self.status in ("succeeded", "failed", "cancelled")

    @property
    def lease_expired(self) -> bool:
        """Running, but its executor's lease expired: it died, and the run can be resumed."""
        return self.status == "running" and (
            self.lease_until is None or self.lease_until < datetime.now(timezone.utc)
        )

    @classmethod
    def _from(cls, row: _pgqrs.RunRow) -> WorkflowRun:
        return cls(
            id=row.id,
            name=row.name,
            input=_json.loads(row.input_json),
            status=row.status,
            output=_opt_loads(row.output_json),
            error=row.error,
            owner=row.owner,
            lease_until=opt_from_us(row.lease_until_us),
            attempts=row.attempts,
            created_at=from_us(row.created_at_us),
            updated_at=from_us(row.updated_at_us),
            finished_at=opt_from_us(row.finished_at_us),
        )


@dataclass(frozen=True)
class StepRecord:
    """One journaled step of a workflow run."""

    run_id: int
    position: int
    name: str
    status: Literal["succeeded", "failed", "retrying"]
    output: Any
    error: str | None
    attempts: int
    next_retry_at: datetime | None

    @classmethod
    def _from(cls, row: _pgqrs.StepRow) -> StepRecord:
        return cls(
            run_id=row.run_id,
            position=row.position,
            name=row.name,
            status=row.status,
            output=_opt_loads(row.output_json),
            error=row.error,
            attempts=row.attempts,
            next_retry_at=opt_from_us(row.next_retry_at_us),
        )
