"""Type stubs for the native module ``pgqrs._pgqrs`` (built from ``py-pgqrs/src/lib.rs``).

Checked against the built module by ``make typecheck`` (``mypy.stubtest``).

Private: the public, documented API is the ``pgqrs`` package, which wraps these classes.
Every async method returns an awaitable bound to the running asyncio event loop, so it must
be called while one runs. Records cross the boundary as tuples of plain values: payloads,
inputs and outputs as JSON text, times as microseconds since the Unix epoch (UTC). Objects
created before ``os.fork()`` raise ``pgqrs.errors.ForkError`` when used in the child.
"""

from collections.abc import Awaitable
from typing import Literal, TypeAlias, final

__all__ = ["Consumer", "Store", "WorkerSession", "Workflow", "__version__", "_shutdown", "connect"]

__version__: str

# (id, queue, payload JSON, attempts, max_attempts, enqueued_at µs, visible_at µs,
#  last_error, lease_token)
_MessageRow: TypeAlias = tuple[int, str, str, int, int, int, int, str | None, int]
_RunStatus: TypeAlias = Literal["pending", "running", "succeeded", "failed", "cancelled"]
# (id, name, input JSON, status, output JSON, error, owner, lease_until µs, attempts,
#  created_at µs, updated_at µs, finished_at µs)
_RunRow: TypeAlias = tuple[
    int,
    str,
    str,
    _RunStatus,
    str | None,
    str | None,
    str | None,
    int | None,
    int,
    int,
    int,
    int | None,
]
# (run_id, position, name, status, output JSON, error, attempts, next_retry_at µs)
_StepRow: TypeAlias = tuple[
    int,
    int,
    str,
    Literal["succeeded", "failed", "retrying"],
    str | None,
    str | None,
    int,
    int | None,
]
# (worker_id, succeeded, failed, dead, lease_lost, released)
_StatsRow: TypeAlias = tuple[int, int, int, int, int, int]
# (max_attempts or None, "fixed" | "exponential" | "exponential_jitter", base s, max s)
_RetrySpec: TypeAlias = tuple[int | None, str, float, float]
# (id, name, created_at µs)
_QueueRow: TypeAlias = tuple[int, str, int]
# (queue, ready, delayed, leased, archived, dead, oldest_ready_age seconds)
_MetricsRow: TypeAlias = tuple[str, int, int, int, int, int, float]
# (id, queue, payload JSON, attempts, last_error, enqueued_at µs, failed_at µs)
_DeadRow: TypeAlias = tuple[int, str, str, int, str | None, int, int]
# (id, queue, payload JSON, attempts, enqueued_at µs, archived_at µs)
_ArchivedRow: TypeAlias = tuple[int, str, str, int, int, int]
# (id, hostname, pid, queue, started_at µs, heartbeat_at µs, status)
_WorkerRow: TypeAlias = tuple[
    int, str, int, str, int, int, Literal["running", "stopping", "stopped"]
]

def connect(dsn: str) -> Awaitable[Store]:
    """Open a store; the DSN's scheme picks the backend."""

def _shutdown() -> None:
    """Stop the native runtime (registered with ``atexit`` by the package)."""

@final
class Store:
    """A connection to a pgqrs database."""

    @property
    def backend(self) -> Literal["postgres", "sqlite", "turso"]: ...
    @property
    def dsn(self) -> str: ...
    def close(self) -> Awaitable[None]: ...
    def install(self) -> Awaitable[None]: ...
    def install_up_to(self, version: int) -> Awaitable[None]: ...
    def verify(self) -> Awaitable[None]: ...
    def schema_version(self) -> Awaitable[int | None]: ...
    def create_queue(self, name: str) -> Awaitable[_QueueRow]: ...
    def delete_queue(self, name: str, force: bool) -> Awaitable[None]: ...
    def purge_queue(self, name: str) -> Awaitable[int]: ...
    def list_queues(self) -> Awaitable[list[_QueueRow]]: ...
    def queue_metrics(self, name: str) -> Awaitable[_MetricsRow]: ...
    def dead_letters(self, queue: str, limit: int) -> Awaitable[list[_DeadRow]]: ...
    def requeue_dead(self, queue: str, ids: list[int] | None = None) -> Awaitable[int]: ...
    def archived_jobs(self, queue: str, limit: int) -> Awaitable[list[_ArchivedRow]]: ...
    def list_workers(self) -> Awaitable[list[_WorkerRow]]: ...
    def enqueue(
        self,
        queue: str,
        payloads: list[str] | str,
        delay: float | None = None,
        at_us: int | None = None,
        max_attempts: int | None = None,
    ) -> Awaitable[list[int]]:
        """Enqueue JSON (already serialized) in one statement: one text per job, or one
        JSON array text whose elements are the jobs. Returns the ids in order."""

    def consumer(self, queue: str) -> Awaitable[Consumer]: ...
    def worker_session(
        self,
        queue: str,
        visibility_timeout: float | None = None,
        retry: _RetrySpec | None = None,
        delete_on_success: bool = False,
        flush_interval: float = 0.002,
        flush_max: int = 500,
        heartbeat_interval: float = 5.0,
        claim_ahead: int = 2,
    ) -> Awaitable[WorkerSession]: ...
    def create_workflow(self, name: str, input_json: str) -> Awaitable[Workflow]: ...
    def get_workflow(self, id: int) -> Awaitable[Workflow]: ...
    def enqueue_workflow(self, queue: str, name: str, input_json: str) -> Awaitable[_RunRow]: ...
    def workflow_run(self, id: int) -> Awaitable[_RunRow]: ...
    def workflow_steps(self, id: int) -> Awaitable[list[_StepRow]]: ...
    def list_workflows(
        self, status: str | None = None, limit: int = 1000
    ) -> Awaitable[list[_RunRow]]: ...
    def cancel_workflow(self, id: int) -> Awaitable[bool]: ...

@final
class Consumer:
    """Low-level access to one queue."""

    @property
    def queue(self) -> str: ...
    def dequeue(
        self, batch_size: int = 1, visibility_timeout: float | None = None
    ) -> Awaitable[list[_MessageRow]]: ...
    def archive(self, id: int) -> Awaitable[None]: ...
    def archive_many(self, ids: list[int]) -> Awaitable[list[bool]]: ...
    def delete(self, id: int) -> Awaitable[None]: ...
    def delete_many(self, ids: list[int]) -> Awaitable[list[bool]]: ...
    def extend(self, id: int, seconds: float) -> Awaitable[None]: ...
    def release(self, id: int, delay: float = 0.0) -> Awaitable[None]: ...
    def fail(self, id: int, error: str, retry: _RetrySpec | None = None) -> Awaitable[None]: ...

@final
class WorkerSession:
    """The database side of a Python worker."""

    @property
    def worker_id(self) -> int: ...
    def claim_ahead(self, buffered: int, starved: bool) -> Awaitable[list[_MessageRow]]:
        """Claim as many as the adaptive claim-ahead depth allows with ``buffered`` jobs
        waiting; ``starved``: handlers sat idle waiting for the previous claim."""

    def refill_below(self) -> int:
        """Claim again once fewer than this many claimed jobs wait for a handler."""

    def complete(
        self, id: int, token: int, attempts: int, max_attempts: int, error: str | None = None
    ) -> None:
        """Report an outcome; returns at once (written in the next batch). ``None`` is success."""

    def release(self, leases: list[tuple[int, int]]) -> Awaitable[None]: ...
    def wait_for_jobs(self, timeout: float) -> Awaitable[None]: ...
    def stats(self) -> _StatsRow: ...
    def stop(self) -> Awaitable[_StatsRow]: ...

@final
class Workflow:
    """The context of one workflow run."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def input_json(self) -> str: ...
    def start(
        self,
    ) -> Awaitable[tuple[Literal["execute"], None] | tuple[Literal["finished"], _RunRow]]:
        """``("execute", None)`` or ``("finished", run row)``."""

    def begin_step(
        self, name: str
    ) -> Awaitable[
        tuple[Literal["replay"], str, Literal[0], Literal[0]]
        | tuple[Literal["run"], None, int, int]
    ]:
        """``("replay", output JSON, 0, 0)`` or ``("run", None, position, attempt)``."""

    def complete_step(
        self, position: int, name: str, attempt: int, output_json: str
    ) -> Awaitable[None]: ...
    def fail_step(
        self,
        position: int,
        name: str,
        attempt: int,
        error: str,
        retry: _RetrySpec | None = None,
        permanent: bool = False,
    ) -> Awaitable[float | None]:
        """Seconds to wait before the next attempt, or ``None`` when the step failed for good."""

    def suspend(self) -> None: ...
    def ensure_owned(self) -> Awaitable[None]: ...
    def finish_ok(self, output_json: str) -> Awaitable[bool]: ...
    def finish_err(self, error: str) -> Awaitable[bool]: ...
    def status(self) -> Awaitable[_RunRow]: ...
    def steps(self) -> Awaitable[list[_StepRow]]: ...
