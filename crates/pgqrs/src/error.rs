//! The one error type of pgqrs.
//!
//! Every fallible operation returns [`Result<T>`](crate::Result). Database driver errors are
//! normalised into kinds a caller can match on ([`Error::Busy`], [`Error::ConnectionLost`],
//! [`Error::LeaseLost`], …) and never leak a driver's string as the only information.

use std::time::Duration;

/// The error type of every pgqrs operation.
///
/// Each variant's message says what went wrong and what to do about it. The enum is
/// `#[non_exhaustive]`: new kinds may be added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string could not be understood.
    #[error("invalid connection string {dsn:?}: {reason}")]
    InvalidDsn {
        /// The connection string, with any password replaced by `***`.
        dsn: String,
        /// What was wrong with it.
        reason: String,
    },

    /// The connection string names a backend this build of pgqrs does not include.
    #[error("the {scheme:?} backend is not compiled into this build of pgqrs: enable the Cargo feature `{feature}` (or `full`)")]
    BackendNotEnabled {
        /// The URL scheme, e.g. `sqlite`.
        scheme: String,
        /// The Cargo feature that provides it.
        feature: &'static str,
    },

    /// The database could not be reached or opened.
    #[error("cannot connect to {target}: {message}")]
    Connection {
        /// `host:port` or the database file.
        target: String,
        /// What is wrong (no such database, no such folder, refused, authentication failed,
        /// ...) and how to fix it.
        message: String,
    },

    /// An established connection broke while an operation was running; the operation may or
    /// may not have been applied.
    #[error("connection lost: {message}")]
    ConnectionLost {
        /// What the driver said.
        message: String,
    },

    /// The operation did not finish in time (pool exhausted, server too slow).
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// What pgqrs was doing.
        during: String,
        /// How long it waited.
        after: Duration,
    },

    /// The database is locked by another writer (SQLite/Turso) and the busy timeout ran out.
    #[error("database is busy (locked by another writer): {message}; retry, raise busy_timeout, or use PostgreSQL for many concurrent writers")]
    Busy {
        /// What the driver said.
        message: String,
    },

    /// An argument was rejected before anything was written.
    #[error("invalid {field}: {message}")]
    Validation {
        /// Which argument.
        field: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },

    /// The payload is larger than the configured maximum.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes (raise max_payload_bytes, or store large data elsewhere and enqueue a reference)")]
    PayloadTooLarge {
        /// Serialized size in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A value could not be converted to or from JSON.
    #[error("JSON serialization failed: {message}")]
    Serialization {
        /// What serde said.
        message: String,
    },

    /// The queue does not exist.
    #[error("queue {queue:?} does not exist (create it with admin.create_queue)")]
    QueueNotFound {
        /// The queue name.
        queue: String,
    },

    /// A queue with this name already exists.
    #[error("queue {queue:?} already exists")]
    QueueAlreadyExists {
        /// The queue name.
        queue: String,
    },

    /// The queue still has leased jobs and the deletion was not forced.
    #[error("queue {queue:?} has {leased} leased job(s) in progress; wait for them, or delete with force")]
    QueueInUse {
        /// The queue name.
        queue: String,
        /// How many jobs are currently leased.
        leased: u64,
    },

    /// No job with this id exists (it may have been archived or deleted already).
    #[error("job {id} not found (already completed, deleted, or never existed)")]
    JobNotFound {
        /// The job id.
        id: i64,
    },

    /// The job is not in a state the action applies to: cancelling, rescheduling or
    /// re-prioritizing a job that is not waiting (ready or delayed), retrying one that is
    /// not dead. Nothing was changed.
    #[error("job {id} is {state}: {}", conflict_hint(action, *state))]
    JobStateConflict {
        /// The job id.
        id: i64,
        /// The state the job was found in.
        state: crate::job_state::JobState,
        /// What was asked: `cancel`, `retry`, `reschedule` or `set_priority`.
        action: &'static str,
    },

    /// A job with this unique key is already waiting or running in the queue (or finished
    /// within the enqueue's `unique_for` window), and the enqueue asked for an error rather
    /// than that job's id (`OnDuplicate::Error`). Nothing was written.
    #[error("job {existing_id} already holds the unique key {key:?} (waiting, running, or finished within unique_for); nothing was written (use on_duplicate \"existing\" to get its id instead)")]
    DuplicateJob {
        /// The job holding the key.
        existing_id: i64,
        /// The key.
        key: String,
    },

    /// The caller's lease on the job is gone: it expired and another consumer claimed the job,
    /// or the job was completed by someone else. Nothing was changed.
    #[error("lease on job {id} was lost (it expired and the job was claimed again or completed elsewhere); nothing was changed")]
    LeaseLost {
        /// The job id.
        id: i64,
    },

    /// pgqrs tables are missing: run `admin.install()`.
    #[error("pgqrs schema is not installed{where_}: run admin(&store).install() first")]
    SchemaNotInstalled {
        /// Where it looked (schema name), prefixed with " in ".
        where_: String,
    },

    /// The database holds a schema newer than this version of pgqrs understands.
    #[error("the database schema is at version {found}, newer than the {supported} this pgqrs supports; upgrade pgqrs")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },

    /// The schema is incomplete or damaged.
    #[error("pgqrs schema check failed: {message}")]
    SchemaInvalid {
        /// What is missing or wrong.
        message: String,
    },

    /// The store was closed; no further operations are possible.
    #[error("the store is closed")]
    Closed,

    /// No schedule has this name.
    #[error("schedule {name:?} does not exist (list them with admin.list_schedules)")]
    ScheduleNotFound {
        /// The schedule name.
        name: String,
    },

    /// A schedule with this name already exists.
    #[error("schedule {name:?} already exists: pick another name, or delete it first")]
    ScheduleAlreadyExists {
        /// The schedule name.
        name: String,
    },

    /// A workflow run does not exist.
    #[error("workflow run {id} not found")]
    WorkflowNotFound {
        /// The run id.
        id: i64,
    },

    /// On replay, the workflow called a different step at a recorded position.
    #[error("non-deterministic workflow run {run_id}: step #{position} was recorded as {recorded:?} but the code now calls {called:?}; workflows must call the same steps in the same order on every execution")]
    NonDeterministic {
        /// The run id.
        run_id: i64,
        /// The step position.
        position: i32,
        /// The step name in the journal.
        recorded: String,
        /// The step name the code called.
        called: String,
    },

    /// The workflow run was cancelled; no new step starts.
    #[error("workflow run {run_id} was cancelled")]
    WorkflowCancelled {
        /// The run id.
        run_id: i64,
    },

    /// The workflow run is owned by another executor whose lease has not expired.
    #[error(
        "workflow run {run_id} is being executed by another executor (lease held until it expires)"
    )]
    WorkflowLocked {
        /// The run id.
        run_id: i64,
    },

    /// A workflow step failed permanently (or exhausted its retries) and the run failed.
    #[error("workflow run {run_id} failed: {message}")]
    WorkflowFailed {
        /// The run id.
        run_id: i64,
        /// The journaled error text.
        message: String,
    },

    /// Any other database error, normalised with its SQLSTATE / result code when there is one.
    #[error("database error{}: {message}", code.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default())]
    Database {
        /// SQLSTATE (PostgreSQL) or result code (SQLite), when known.
        code: Option<String>,
        /// What the database said.
        message: String,
    },

    /// A message handler failed; used in dead-letter records and results.
    #[error("handler failed: {message}")]
    Handler {
        /// The handler's error text.
        message: String,
    },
}

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error type handlers and steps return: anything that converts into a boxed error
/// (including `anyhow::Error`, `std::io::Error`, strings via `.into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    pub(crate) fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Error::Validation {
            field,
            message: message.into(),
        }
    }

    /// True for errors that may go away if the operation is retried (busy, connection lost,
    /// timeout).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Busy { .. }
                | Error::ConnectionLost { .. }
                | Error::Timeout { .. }
                | Error::Connection { .. }
        )
    }
}

/// What [`Error::JobStateConflict`] says after the state: what the action needs, and what
/// to do instead.
fn conflict_hint(action: &str, state: crate::job_state::JobState) -> String {
    use crate::job_state::JobState;
    let what = match action {
        "cancel" => "cancelled",
        "reschedule" => "rescheduled",
        "set_priority" => "given a new priority",
        _ => "retried",
    };
    if action == "retry" {
        let instead = if state.is_waiting() {
            "; to run a waiting job now, reschedule it"
        } else {
            ""
        };
        return format!("only a dead job can be {what}, nothing was changed{instead}");
    }
    let why = match state {
        JobState::Leased => "; wait for its attempt to end, or release it from its consumer",
        JobState::Dead => "; retry it first",
        _ => "",
    };
    format!("only a waiting (ready or delayed) job can be {what}, nothing was changed{why}")
}

/// A value quoted for an error message: in full when short, else its first characters and
/// its length (a message never repeats a 100 MB argument).
pub(crate) fn preview(value: &str) -> String {
    const SHOWN: usize = 40;
    let n = value.chars().count();
    if n <= SHOWN {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(SHOWN).collect();
        format!("{head:?}... ({n} characters)")
    }
}

/// Longest error text kept with a failed job, step or run.
pub(crate) const MAX_ERROR_TEXT: usize = 64 * 1024;

/// An error text as stored with a failed job, step or run: a NUL (which PostgreSQL cannot
/// store in text, and which would fail the whole write) becomes U+FFFD, and a text longer
/// than [`MAX_ERROR_TEXT`] bytes is cut, saying so. Error texts are diagnostics: recording
/// the failure matters more than every byte of its message.
pub(crate) fn storable_error(text: &str) -> String {
    let mut out = text.replace('\0', "\u{FFFD}");
    if out.len() > MAX_ERROR_TEXT {
        let total = out.len();
        let mut end = MAX_ERROR_TEXT;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str(&format!("... [cut: {total} bytes in all]"));
    }
    out
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serialization {
            message: e.to_string(),
        }
    }
}

/// Normalise a sqlx error into a pgqrs [`Error`].
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn from_sqlx(e: sqlx::Error, target: &str) -> Error {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut => Error::Timeout {
            during: format!("waiting for a connection to {target} from the pool"),
            after: Duration::ZERO,
        },
        E::PoolClosed => Error::Closed,
        E::Io(io) => Error::ConnectionLost {
            message: format!("{target}: {io}"),
        },
        E::Tls(t) => Error::Connection {
            target: target.to_string(),
            message: tls_message(&t),
        },
        E::Database(db) => {
            let code = db.code().map(|c| c.to_string());
            let message = db.message().to_string();
            match code.as_deref() {
                // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes.
                Some("5") | Some("6") | Some("261") | Some("517") | Some("262") => {
                    Error::Busy { message }
                }
                // PostgreSQL: undefined_table / invalid_schema_name → schema missing.
                Some("42P01") | Some("3F000") => Error::SchemaNotInstalled {
                    where_: format!(" ({message})"),
                },
                // untranslatable_character: jsonb cannot hold \u0000.
                Some("22P05") => Error::Validation {
                    field: "payload",
                    message: format!("{message}; PostgreSQL cannot store the NUL character (\\u0000) in JSON: remove it or encode the data (e.g. base64)"),
                },
                // duplicate_prepared_statement, invalid_sql_statement_name: prepared statements
                // that vanish or clash between calls, the mark of a pooler that hands each
                // transaction a different server connection.
                Some("42P05") | Some("26000") => Error::Database {
                    code,
                    message: format!(
                        "{message}: is a connection pooler in transaction mode in between? pgqrs \
                         needs PgBouncer in session pooling mode, or PgBouncer 1.21+ with \
                         max_prepared_statements > 0 (and notify=false) for transaction pooling"
                    ),
                },
                // admin_shutdown, crash_shutdown, cannot_connect_now
                Some("57P01") | Some("57P02") | Some("57P03") => {
                    Error::ConnectionLost { message }
                }
                // Class 08, connection exceptions. PgBouncer reports every failure of its own
                // with 08P01 ("server login has been failing, try again later", "pgbouncer
                // cannot connect to server", "server conn crashed?"): while the server behind
                // it restarts, a worker must wait and retry, not stop.
                Some(c) if c.starts_with("08") => Error::ConnectionLost {
                    message: format!("{message} (SQLSTATE {c})"),
                },
                _ if message.contains("no such table") => Error::SchemaNotInstalled {
                    where_: format!(" ({message})"),
                },
                _ => Error::Database { code, message },
            }
        }
        other => Error::Database {
            code: None,
            message: other.to_string(),
        },
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn tls_message(t: &dyn std::fmt::Display) -> String {
    format!(
        "TLS failed: {t}; check sslmode (and the certificates) in the connection string and the \
         server's TLS setup"
    )
}

/// A PostgreSQL connection that could not be opened, as [`Error::Connection`] saying what is
/// wrong and how to fix it: no such database, authentication, refused, unknown host, ...
/// Only the server's message is kept, never the driver's rendering of it (which carries the
/// server's source file and line).
#[cfg(feature = "postgres")]
pub(crate) fn pg_connect_error(e: sqlx::Error, target: &str, database: &str, user: &str) -> Error {
    use sqlx::Error as E;
    use std::io::ErrorKind;
    let message = match &e {
        E::Database(db) => {
            let text = db.message();
            match db.code().as_deref() {
                // invalid_catalog_name
                Some("3D000") => format!(
                    "database {database:?} does not exist on the server: create it \
                     (CREATE DATABASE \"{database}\") or fix the database name in the \
                     connection string"
                ),
                // invalid_password
                Some("28P01") => format!(
                    "password authentication failed for user {user:?}: check the user name \
                     and password in the connection string"
                ),
                // invalid_authorization_specification: unknown role, no pg_hba.conf entry
                Some("28000") => format!(
                    "{text}: check the user name (and password) in the connection string, \
                     and that the server's pg_hba.conf lets this user connect from here"
                ),
                // too_many_connections
                Some("53300") => format!(
                    "{text}: the server has no free connection slots; lower pool_size or \
                     raise the server's max_connections"
                ),
                // cannot_connect_now
                Some("57P03") => {
                    format!("{text}: the server is starting up or shutting down; retry shortly")
                }
                _ => format!("the server refused the connection: {text}"),
            }
        }
        E::Io(io) if io.kind() == ErrorKind::ConnectionRefused => format!(
            "connection refused: is the PostgreSQL server running and listening on {target}? \
             (check the host and port in the connection string)"
        ),
        E::Io(io) => format!(
            "{io}: check the host and port in the connection string, and that the server is \
             running and reachable from here"
        ),
        E::Tls(t) => tls_message(t),
        E::Configuration(c) => format!("{c}: fix the connection string"),
        E::PoolTimedOut => format!(
            "no connection within connect_timeout: is the PostgreSQL server running and \
             reachable at {target}? (or raise connect_timeout)"
        ),
        other => format!("{other} (is the server running and reachable?)"),
    };
    Error::Connection {
        target: target.to_string(),
        message,
    }
}

/// Why a database file could not be opened, said as what to fix: a missing folder, a folder
/// where the file should be, or else `what` and the path to check.
#[cfg(any(feature = "sqlite", feature = "turso"))]
pub(crate) fn file_open_message(path: &std::path::Path, what: &str) -> String {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.exists() {
        format!(
            "the folder {} does not exist: create it (mkdir -p {}) or fix the path in the \
             connection string",
            dir.display(),
            dir.display()
        )
    } else if !dir.is_dir() {
        format!(
            "{} is a file, not a folder: fix the path in the connection string",
            dir.display()
        )
    } else if path.is_dir() {
        format!(
            "{} is a folder, not a database file: fix the path in the connection string",
            path.display()
        )
    } else {
        format!(
            "{what}: check the path in the connection string, and that this process may read \
             and write {} and its folder",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_storable() {
        assert_eq!(storable_error("a\0b"), "a\u{FFFD}b");
        let long = "é".repeat(MAX_ERROR_TEXT); // 2 bytes each
        let cut = storable_error(&long);
        assert!(cut.len() <= MAX_ERROR_TEXT + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("[cut: {} bytes in all]", long.len())));
        assert_eq!(storable_error("short"), "short");
    }

    #[test]
    fn previews_are_short() {
        assert_eq!(preview("q"), "\"q\"");
        let p = preview(&"x".repeat(1_000_000));
        assert!(p.len() < 100 && p.ends_with("(1000000 characters)"), "{p}");
    }
}
