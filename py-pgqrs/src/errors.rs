//! The one mapping from [`pgqrs::Error`] to the exceptions of `pgqrs.errors`.
//!
//! Exception classes are defined in Python (`pgqrs/errors.py`), where their docstrings and
//! fields live. Each is imported here once, as a Rust type ([`exc`]), so the mapping picks a
//! type, not a name: a class missing from `pgqrs.errors` fails the import of the native
//! module ([`check`]) rather than a call that raises it.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use pyo3::PyTypeInfo;

use pgqrs::Error;

macro_rules! exceptions {
    ($($name:ident),* $(,)?) => {
        /// The classes of `pgqrs.errors`, as Rust types.
        pub mod exc {
            $( pyo3::import_exception!(pgqrs.errors, $name); )*
        }

        /// Import every class of [`exc`], so that a missing one is reported when the native
        /// module loads.
        pub fn check(py: Python<'_>) -> PyResult<()> {
            let module = py.import("pgqrs.errors")?;
            $( module.getattr(stringify!($name))?.cast_into::<PyType>()?; )*
            Ok(())
        }
    };
}

exceptions!(
    PgqrsError,
    InvalidDsnError,
    BackendNotEnabledError,
    ConnectionFailedError,
    ConnectionLostError,
    PoolTimeoutError,
    BusyError,
    ValidationError,
    PayloadTooLargeError,
    SerializationError,
    QueueNotFoundError,
    QueueAlreadyExistsError,
    QueueInUseError,
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
    DuplicateJobError,
    SchemaNotInstalledError,
    SchemaTooNewError,
    SchemaInvalidError,
    StoreClosedError,
    ScheduleNotFoundError,
    ScheduleAlreadyExistsError,
    WorkflowNotFoundError,
    NonDeterministicError,
    WorkflowCancelledError,
    WorkflowLockedError,
    WorkflowFailedError,
    DatabaseError,
    HandlerError,
    ForkError,
);

/// Build the Python exception for a core error.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| build(py, &e).unwrap_or_else(|fallback| fallback))
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let kw = PyDict::new(py);
    let class = match e {
        Error::InvalidDsn { dsn, reason } => {
            kw.set_item("dsn", dsn)?;
            kw.set_item("reason", reason)?;
            exc::InvalidDsnError::type_object(py)
        }
        Error::BackendNotEnabled { scheme, feature } => {
            kw.set_item("scheme", scheme)?;
            kw.set_item("feature", *feature)?;
            exc::BackendNotEnabledError::type_object(py)
        }
        Error::Connection { target, .. } => {
            kw.set_item("target", target)?;
            exc::ConnectionFailedError::type_object(py)
        }
        Error::ConnectionLost { .. } => exc::ConnectionLostError::type_object(py),
        Error::Timeout { during, after } => {
            kw.set_item("during", during)?;
            kw.set_item("after", after.as_secs_f64())?;
            exc::PoolTimeoutError::type_object(py)
        }
        Error::Busy { .. } => exc::BusyError::type_object(py),
        Error::Validation { field, .. } => {
            kw.set_item("field", *field)?;
            exc::ValidationError::type_object(py)
        }
        Error::PayloadTooLarge { size, max } => {
            kw.set_item("field", "payload")?;
            kw.set_item("size", *size)?;
            kw.set_item("max", *max)?;
            exc::PayloadTooLargeError::type_object(py)
        }
        Error::Serialization { .. } => exc::SerializationError::type_object(py),
        Error::QueueNotFound { queue } => {
            kw.set_item("queue", queue)?;
            exc::QueueNotFoundError::type_object(py)
        }
        Error::QueueAlreadyExists { queue } => {
            kw.set_item("queue", queue)?;
            exc::QueueAlreadyExistsError::type_object(py)
        }
        Error::QueueInUse { queue, leased } => {
            kw.set_item("queue", queue)?;
            kw.set_item("leased", *leased)?;
            exc::QueueInUseError::type_object(py)
        }
        Error::JobNotFound { id } => {
            kw.set_item("job_id", *id)?;
            exc::JobNotFoundError::type_object(py)
        }
        Error::JobStateConflict { id, state, action } => {
            kw.set_item("job_id", *id)?;
            kw.set_item("state", state.as_str())?;
            kw.set_item("action", *action)?;
            exc::JobStateError::type_object(py)
        }
        Error::LeaseLost { id } => {
            kw.set_item("job_id", *id)?;
            exc::LeaseLostError::type_object(py)
        }
        Error::DuplicateJob { existing_id, key } => {
            kw.set_item("job_id", *existing_id)?;
            kw.set_item("key", key)?;
            exc::DuplicateJobError::type_object(py)
        }
        Error::SchemaNotInstalled { .. } => exc::SchemaNotInstalledError::type_object(py),
        Error::SchemaTooNew { found, supported } => {
            kw.set_item("found", *found)?;
            kw.set_item("supported", *supported)?;
            exc::SchemaTooNewError::type_object(py)
        }
        Error::SchemaInvalid { .. } => exc::SchemaInvalidError::type_object(py),
        Error::Closed => exc::StoreClosedError::type_object(py),
        Error::WorkflowNotFound { id } => {
            kw.set_item("run_id", *id)?;
            exc::WorkflowNotFoundError::type_object(py)
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
            exc::NonDeterministicError::type_object(py)
        }
        Error::ScheduleNotFound { name } => {
            kw.set_item("name", name)?;
            exc::ScheduleNotFoundError::type_object(py)
        }
        Error::ScheduleAlreadyExists { name } => {
            kw.set_item("name", name)?;
            exc::ScheduleAlreadyExistsError::type_object(py)
        }
        Error::WorkflowCancelled { run_id } => {
            kw.set_item("run_id", *run_id)?;
            exc::WorkflowCancelledError::type_object(py)
        }
        Error::WorkflowLocked { run_id } => {
            kw.set_item("run_id", *run_id)?;
            exc::WorkflowLockedError::type_object(py)
        }
        Error::WorkflowFailed { run_id, message } => {
            kw.set_item("run_id", *run_id)?;
            kw.set_item("error", message)?;
            exc::WorkflowFailedError::type_object(py)
        }
        Error::Database { code, .. } => {
            kw.set_item("code", code.as_deref())?;
            exc::DatabaseError::type_object(py)
        }
        Error::Handler { .. } => exc::HandlerError::type_object(py),
        _ => exc::PgqrsError::type_object(py),
    };
    let obj = class.call((e.to_string(),), Some(&kw))?;
    Ok(PyErr::from_value(obj))
}

/// A `ValidationError` about argument `field`, raised by the binding itself.
pub fn validation(field: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let kw = PyDict::new(py);
            kw.set_item("field", field)?;
            let obj = exc::ValidationError::type_object(py).call((message,), Some(&kw))?;
            Ok(PyErr::from_value(obj))
        })();
        made.unwrap_or_else(|e| e)
    })
}
