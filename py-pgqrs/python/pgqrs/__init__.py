"""pgqrs: a durable workflow engine and job queue for PostgreSQL and SQLite.

.. code-block:: python

    import pgqrs

    store = await pgqrs.connect("sqlite:///jobs.db")
    await pgqrs.admin(store).install()
    await pgqrs.admin(store).create_queue("tasks")
    await pgqrs.produce(store, "tasks", {"task": "send_email"})
    await pgqrs.consume(store, "tasks", handler)

The compiled core is the private native module :mod:`pgqrs._pgqrs`; everything public is
here. Errors are in :mod:`pgqrs.errors`; workflow decorators in :mod:`pgqrs.decorators`.
"""

from __future__ import annotations

import atexit as _atexit

from pgqrs import _pgqrs, errors
from pgqrs._admin import Admin, admin
from pgqrs._consuming import Consumer, MessageStream, consume
from pgqrs._pgqrs import __version__
from pgqrs._store import Store, connect, produce, produce_batch
from pgqrs._types import (
    ArchivedJob,
    DeadLetter,
    Fired,
    Job,
    JobPage,
    JobState,
    Message,
    Pruned,
    QueueInfo,
    QueueMetrics,
    RetryPolicy,
    ScheduleInfo,
    StepRecord,
    WorkerInfo,
    WorkerStats,
    WorkflowRun,
)
from pgqrs._workers import Worker, worker
from pgqrs._workflows import Permanent, WorkflowContext, workflow_worker

# Stop the native runtime before the interpreter finalizes (see py-pgqrs/src/runtime.rs).
_atexit.register(_pgqrs._shutdown)

__all__ = [
    "Admin",
    "ArchivedJob",
    "Consumer",
    "DeadLetter",
    "Fired",
    "Job",
    "JobPage",
    "JobState",
    "Message",
    "MessageStream",
    "Permanent",
    "Pruned",
    "QueueInfo",
    "QueueMetrics",
    "RetryPolicy",
    "ScheduleInfo",
    "StepRecord",
    "Store",
    "Worker",
    "WorkerInfo",
    "WorkerStats",
    "WorkflowContext",
    "WorkflowRun",
    "__version__",
    "admin",
    "connect",
    "consume",
    "errors",
    "produce",
    "produce_batch",
    "worker",
    "workflow_worker",
]
