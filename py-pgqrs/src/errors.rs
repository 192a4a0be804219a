//! The one mapping from [`pgqrs::Error`] to the exceptions of `pgqrs.errors`.
//!
//! Exception classes are defined in Python (`pgqrs/errors.py`), where their docstrings and
//! fields live; this module picks the class and its structured fields for each variant.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use pgqrs::Error;

/// Build the Python exception for a core error.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| match build(py, &e) {
        Ok(err) => err,
        Err(fallback) => fallback,
    })
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let kw = PyDict::new(py);
    let class = match e {
        Error::InvalidDsn { dsn, reason } => {
            kw.set_item("dsn", dsn)?;
            kw.set_item("reason", reason)?;
            "InvalidDsnError"
        }
        Error::BackendNotEnabled { scheme, feature } => {
            kw.set_item("scheme", scheme)?;
            kw.set_item("feature", *feature)?;
            "BackendNotEnabledError"
        }
        Error::Connection { target, .. } => {
            kw.set_item("target", target)?;
            "ConnectionFailedError"
        }
        Error::ConnectionLost { .. } => "ConnectionLostError",
        Error::Timeout { during, after } => {
            kw.set_item("during", during)?;
            kw.set_item("after", after.as_secs_f64())?;
            "PoolTimeoutError"
        }
        Error::Busy { .. } => "BusyError",
        Error::Validation { field, .. } => {
            kw.set_item("field", *field)?;
            "ValidationError"
        }
        Error::PayloadTooLarge { size, max } => {
            kw.set_item("field", "payload")?;
            kw.set_item("size", *size)?;
            kw.set_item("max", *max)?;
            "PayloadTooLargeError"
        }
        Error::Serialization { .. } => "SerializationError",
        Error::QueueNotFound { queue } => {
            kw.set_item("queue", queue)?;
            "QueueNotFoundError"
        }
        Error::QueueAlreadyExists { queue } => {
            kw.set_item("queue", queue)?;
            "QueueAlreadyExistsError"
        }
        Error::QueueInUse { queue, leased } => {
            kw.set_item("queue", queue)?;
            kw.set_item("leased", *leased)?;
            "QueueInUseError"
        }
        Error::JobNotFound { id } => {
            kw.set_item("job_id", *id)?;
            "JobNotFoundError"
        }
        Error::LeaseLost { id } => {
            kw.set_item("job_id", *id)?;
            "LeaseLostError"
        }
        Error::SchemaNotInstalled { .. } => "SchemaNotInstalledError",
        Error::SchemaTooNew { found, supported } => {
            kw.set_item("found", *found)?;
            kw.set_item("supported", *supported)?;
            "SchemaTooNewError"
        }
        Error::SchemaInvalid { .. } => "SchemaInvalidError",
        Error::Closed => "StoreClosedError",
        Error::WorkflowNotFound { id } => {
            kw.set_item("run_id", *id)?;
            "WorkflowNotFoundError"
        }
        Error::NonDeterministic {
            run_id,
            position,
            recorded,
            called,
        } => {
            kw.set_item("run_id", *run_id)?;
            kw.set_item("position", *position)?;
            kw.set_item("recorded", recorded)?;
            kw.set_item("called", called)?;
            "NonDeterministicError"
        }
        Error::WorkflowCancelled { run_id } => {
            kw.set_item("run_id", *run_id)?;
            "WorkflowCancelledError"
        }
        Error::WorkflowLocked { run_id } => {
            kw.set_item("run_id", *run_id)?;
            "WorkflowLockedError"
        }
        Error::WorkflowFailed { run_id, message } => {
            kw.set_item("run_id", *run_id)?;
            kw.set_item("error", message)?;
            "WorkflowFailedError"
        }
        Error::Database { code, .. } => {
            kw.set_item("code", code.as_deref())?;
            "DatabaseError"
        }
        Error::Handler { .. } => "HandlerError",
        _ => "PgqrsError",
    };
    let module = py.import("pgqrs.errors")?;
    let cls = module.getattr(class)?;
    let obj = cls.call((e.to_string(),), Some(&kw))?;
    Ok(PyErr::from_value(obj))
}

/// A `pgqrs.errors` exception of class `class` with a message and no fields.
pub fn named(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let cls = py.import("pgqrs.errors")?.getattr(class)?;
            Ok(PyErr::from_value(cls.call1((message.clone(),))?))
        })();
        made.unwrap_or_else(|e| e)
    })
}
