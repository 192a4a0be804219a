"""Records returned by pgqrs, and the retry policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, overload

from pgqrs import _json

if TYPE_CHECKING:
    from pgqrs._store import Consumer

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_us(us: int) -> datetime:
    """Microseconds since the epoch → timezone-aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def opt_from_us(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


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
        from pgqrs.errors import ValidationError

        raise ValidationError(
            f"{what} must be seconds (int or float) or a timedelta, got {type(value).__name__}",
            field=what,
        )
    if value < 0:
        from pgqrs.errors import ValidationError

        raise ValidationError(f"{what} must not be negative, got {value}", field=what)
    return float(value)


class Message:
    """A claimed job.

    ``payload`` is the decoded JSON value; ``enqueued_at`` and ``visible_at`` (when the lease
    expires) are timezone-aware. A message claimed through a :class:`~pgqrs.Consumer` can be
    settled directly: ``await msg.archive()``.
    """

    __slots__ = (
        "_consumer",
        "_enqueued_us",
        "_payload",
        "_payload_json",
        "_visible_us",
        "attempts",
        "id",
        "last_error",
        "lease_token",
        "max_attempts",
        "queue",
    )

    id: int
    queue: str
    attempts: int
    max_attempts: int
    last_error: str | None
    lease_token: int

    def __init__(self, row: tuple[Any, ...], consumer: Consumer | None = None) -> None:
        (
            self.id,
            self.queue,
            self._payload_json,
            self.attempts,
            self.max_attempts,
            self._enqueued_us,
            self._visible_us,
            self.last_error,
            self.lease_token,
        ) = row
        self._payload: Any = _UNSET
        self._consumer = consumer

    @property
    def payload(self) -> Any:
        """The JSON payload, decoded (once, on first access)."""
        if self._payload is _UNSET:
            self._payload = _json.loads(self._payload_json)
        return self._payload

    @property
    def enqueued_at(self) -> datetime:
        """When the job was enqueued."""
        return from_us(self._enqueued_us)

    @property
    def visible_at(self) -> datetime:
        """When the current lease expires and the job becomes claimable again."""
        return from_us(self._visible_us)

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
            f"payload={self._payload_json[:80]})"
        )


class _Unset:
    pass


_UNSET: Any = _Unset()

BackoffKind = Literal["fixed", "exponential", "exponential_jitter"]


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed job or workflow step is tried again.

    ``max_attempts`` counts every attempt, the first included (``None`` for jobs: the job's own
    limit, set at enqueue time). The wait after failed attempt *n* is ``base`` (fixed), or
    ``base * 2**(n-1)`` capped at ``max`` (exponential), or that with equal jitter (a random
    delay between half of it and all of it).
    """

    max_attempts: int | None = None
    backoff: BackoffKind = "exponential_jitter"
    base: float = 1.0
    max: float = 300.0

    def __post_init__(self) -> None:
        from pgqrs.errors import ValidationError

        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValidationError("max_attempts must be at least 1", field="max_attempts")
        if self.backoff not in ("fixed", "exponential", "exponential_jitter"):
            raise ValidationError(
                f"backoff must be fixed, exponential or exponential_jitter, got {self.backoff!r}",
                field="backoff",
            )
        if self.base < 0 or self.max < 0:
            raise ValidationError("backoff delays must not be negative", field="backoff")

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
        cls, max_attempts: int, base: float = 1.0, max: float = 300.0, jitter: bool = True
    ) -> RetryPolicy:
        """Retry with exponential backoff (with jitter by default)."""
        kind: BackoffKind = "exponential_jitter" if jitter else "exponential"
        return cls(max_attempts=max_attempts, backoff=kind, base=base, max=max)

    def _spec(self) -> tuple[int | None, str, float, float]:
        return (self.max_attempts, self.backoff, float(self.base), float(self.max))


@dataclass(frozen=True)
class QueueInfo:
    """A queue."""

    id: int
    name: str
    created_at: datetime


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


@dataclass(frozen=True)
class ArchivedJob:
    """A completed job kept in the archive."""

    id: int
    queue: str
    payload: Any
    attempts: int
    enqueued_at: datetime
    archived_at: datetime


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


@dataclass(frozen=True)
class WorkerStats:
    """What a worker did."""

    worker_id: int
    succeeded: int
    failed: int
    dead: int
    lease_lost: int
    released: int


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
    def _from(cls, row: tuple[Any, ...]) -> WorkflowRun:
        (rid, name, inp, status, out, err, owner, lease, attempts, created, updated, fin) = row
        return cls(
            id=rid,
            name=name,
            input=_json.loads(inp),
            status=status,
            output=None if out is None else _json.loads(out),
            error=err,
            owner=owner,
            lease_until=opt_from_us(lease),
            attempts=attempts,
            created_at=from_us(created),
            updated_at=from_us(updated),
            finished_at=opt_from_us(fin),
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
    def _from(cls, row: tuple[Any, ...]) -> StepRecord:
        run_id, pos, name, status, out, err, attempts, retry = row
        return cls(
            run_id=run_id,
            position=pos,
            name=name,
            status=status,
            output=None if out is None else _json.loads(out),
            error=err,
            attempts=attempts,
            next_retry_at=opt_from_us(retry),
        )
