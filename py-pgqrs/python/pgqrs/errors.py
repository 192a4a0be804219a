"""The exceptions of pgqrs: one tree under :class:`PgqrsError`.

Every error raised by pgqrs is an instance of :class:`PgqrsError`. Each class mirrors a kind of
the Rust core's error enum (the mapping lives in one place, ``py-pgqrs/src/errors.rs``) and
carries structured fields (``queue``, ``job_id``, ``run_id``, …) besides its message::

    PgqrsError
    ├── ConfigError
    │   ├── InvalidDsnError            dsn, reason
    │   └── BackendNotEnabledError     scheme, feature
    ├── ValidationError                field
    │   ├── PayloadTooLargeError       size, max
    │   └── SerializationError         path, type_name
    ├── QueueError                     queue
    │   ├── QueueNotFoundError
    │   ├── QueueAlreadyExistsError
    │   └── QueueInUseError            leased
    ├── JobError                       job_id
    │   ├── JobNotFoundError
    │   ├── JobStateError              state, action
    │   ├── LeaseLostError
    │   └── DuplicateJobError          key (job_id: the job holding it)
    ├── SchemaError
    │   ├── SchemaNotInstalledError
    │   ├── SchemaTooNewError          found, supported
    │   └── SchemaInvalidError
    ├── DatabaseError                  code
    │   ├── ConnectionFailedError      target
    │   ├── ConnectionLostError
    │   ├── PoolTimeoutError           during, after
    │   ├── BusyError
    │   └── StoreClosedError
    ├── ScheduleError                  name
    │   ├── ScheduleNotFoundError
    │   └── ScheduleAlreadyExistsError
    ├── WorkflowError                  run_id
    │   ├── WorkflowNotFoundError
    │   ├── NonDeterministicError      position, recorded, called
    │   ├── WorkflowCancelledError
    │   ├── WorkflowLockedError
    │   └── WorkflowFailedError        error
    ├── HandlerError
    └── ForkError
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendNotEnabledError",
    "BusyError",
    "ConfigError",
    "ConnectionFailedError",
    "ConnectionLostError",
    "DatabaseError",
    "DuplicateJobError",
    "ForkError",
    "HandlerError",
    "InvalidDsnError",
    "JobError",
    "JobNotFoundError",
    "JobStateError",
    "LeaseLostError",
    "NonDeterministicError",
    "PayloadTooLargeError",
    "PgqrsError",
    "PoolTimeoutError",
    "QueueAlreadyExistsError",
    "QueueError",
    "QueueInUseError",
    "QueueNotFoundError",
    "ScheduleAlreadyExistsError",
    "ScheduleError",
    "ScheduleNotFoundError",
    "SchemaError",
    "SchemaInvalidError",
    "SchemaNotInstalledError",
    "SchemaTooNewError",
    "SerializationError",
    "StoreClosedError",
    "ValidationError",
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowLockedError",
    "WorkflowNotFoundError",
]


class PgqrsError(Exception):
    """Base class of every pgqrs error. ``str(e)`` says what went wrong and what to do."""

    #: The names of the structured fields this class carries.
    fields: tuple[str, ...] = ()

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for name in type(self).fields:
            setattr(self, name, fields.pop(name, None))
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {name: getattr(self, name, None) for name in type(self).fields}
        return (_rebuild, (type(self), self.message, kwargs))

    @property
    def transient(self) -> bool:
        """True when retrying the same operation later may succeed."""
        return False


def _rebuild(cls: type[PgqrsError], message: str, kwargs: dict[str, Any]) -> PgqrsError:
    return cls(message, **kwargs)


class ConfigError(PgqrsError):
    """The connection string or the settings are wrong."""


class InvalidDsnError(ConfigError):
    """The connection string could not be understood."""

    fields = ("dsn", "reason")
    dsn: str
    reason: str


class BackendNotEnabledError(ConfigError):
    """The connection string names a backend this build does not include."""

    fields = ("scheme", "feature")
    scheme: str
    feature: str


class ValidationError(PgqrsError, ValueError):
    """An argument was rejected before anything was written."""

    fields: tuple[str, ...] = ("field",)
    field: str | None


class PayloadTooLargeError(ValidationError):
    """The payload is larger than ``max_payload_bytes``; nothing was written."""

    fields = ("field", "size", "max")
    size: int
    max: int


class SerializationError(ValidationError, TypeError):
    """A value is not JSON-serializable; ``path`` says where (``$.a[2]``), ``type_name`` what."""

    fields = ("field", "path", "type_name")
    path: str | None
    type_name: str | None


class QueueError(PgqrsError):
    """An operation on a queue failed."""

    fields: tuple[str, ...] = ("queue",)
    queue: str


class QueueNotFoundError(QueueError, LookupError):
    """The queue does not exist."""


class QueueAlreadyExistsError(QueueError):
    """A queue with this name already exists."""


class QueueInUseError(QueueError):
    """The queue has leased jobs; delete it with ``force=True`` or wait."""

    fields = ("queue", "leased")
    leased: int


class JobError(PgqrsError):
    """An operation on a job failed."""

    fields: tuple[str, ...] = ("job_id",)
    job_id: int


class JobNotFoundError(JobError, LookupError):
    """No such job (or not claimed by this consumer)."""


class JobStateError(JobError):
    """The job is not in a state the action applies to; nothing was changed.

    ``state`` is where the job was found (``ready``, ``delayed``, ``leased``, ``archived`` or
    ``dead``); ``action`` what was asked (``cancel``, ``reschedule`` and ``set_priority`` need
    a waiting job, ready or delayed; ``retry`` a dead one).
    """

    fields = ("job_id", "state", "action")
    state: str
    action: str


class LeaseLostError(JobError):
    """The lease on the job expired and another consumer claimed it; nothing was changed."""


class DuplicateJobError(JobError):
    """A job with this unique ``key`` is already waiting or running in the queue (or finished
    within ``unique_for``), and the enqueue asked for ``on_duplicate="error"``. ``job_id``
    (also ``existing_id``) is that job's id; nothing was written."""

    fields = ("job_id", "key")
    key: str

    @property
    def existing_id(self) -> int:
        """The id of the job holding the key (the same as ``job_id``)."""
        return self.job_id


class SchemaError(PgqrsError):
    """pgqrs's tables are missing, outdated, or newer than this version."""


class SchemaNotInstalledError(SchemaError):
    """Run ``await pgqrs.admin(store).install()`` first."""


class SchemaTooNewError(SchemaError):
    """The database was set up by a newer pgqrs; upgrade pgqrs."""

    fields = ("found", "supported")
    found: int
    supported: int


class SchemaInvalidError(SchemaError):
    """The schema is incomplete; ``install()`` repairs it."""


class DatabaseError(PgqrsError):
    """The database reported an error; ``code`` is its SQLSTATE or result code."""

    fields: tuple[str, ...] = ("code",)
    code: str | None


class ConnectionFailedError(DatabaseError, ConnectionError):
    """The database could not be reached (``target`` is ``host:port`` or the file)."""

    fields = ("code", "target")
    target: str

    @property
    def transient(self) -> bool:
        return True


class ConnectionLostError(DatabaseError, ConnectionError):
    """A connection broke during an operation; it may or may not have been applied."""

    @property
    def transient(self) -> bool:
        return True


class PoolTimeoutError(DatabaseError, TimeoutError):
    """No connection became free in time."""

    fields = ("code", "during", "after")
    during: str
    after: float

    @property
    def transient(self) -> bool:
        return True


class BusyError(DatabaseError):
    """SQLite/Turso: another writer held the lock past the busy timeout."""

    @property
    def transient(self) -> bool:
        return True


class StoreClosedError(DatabaseError):
    """The store was closed."""


class ScheduleError(PgqrsError):
    """An operation on a schedule failed."""

    fields: tuple[str, ...] = ("name",)
    name: str


class ScheduleNotFoundError(ScheduleError, LookupError):
    """No schedule has this name."""


class ScheduleAlreadyExistsError(ScheduleError):
    """A schedule with this name already exists; pick another name or delete it first."""


class WorkflowError(PgqrsError):
    """A workflow run could not go on."""

    fields: tuple[str, ...] = ("run_id",)
    run_id: int


class WorkflowNotFoundError(WorkflowError, LookupError):
    """No such workflow run."""


class NonDeterministicError(WorkflowError):
    """On replay the code called a different step than the journal recorded."""

    fields = ("run_id", "position", "recorded", "called")
    position: int
    recorded: str
    called: str


class WorkflowCancelledError(WorkflowError):
    """The run was cancelled; no new step starts."""


class WorkflowLockedError(WorkflowError):
    """Another live executor owns the run; try again after its lease expires."""

    @property
    def transient(self) -> bool:
        return True


class WorkflowFailedError(WorkflowError):
    """The run failed; ``error`` is the journaled error text."""

    fields = ("run_id", "error")
    error: str


class HandlerError(PgqrsError):
    """A message handler failed."""


class ForkError(PgqrsError):
    """An object created before ``os.fork()`` was used in the child: connect again there."""
