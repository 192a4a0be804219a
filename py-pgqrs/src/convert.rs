//! Values crossing the boundary: seconds, JSON text, times, retry policies, and the check
//! that an object is used in the process that made it.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::{exc, validation};

/// Microseconds since the Unix epoch.
pub fn us(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// A time from microseconds since the Unix epoch.
pub fn from_us(t: i64) -> PyResult<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros(t)
        .ok_or_else(|| exc::ValidationError::new_err(format!("time {t} µs is out of range")))
}

/// Compact JSON text of a value.
pub fn json_text(v: &serde_json::Value) -> String {
    // Serializing a serde_json::Value cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// JSON text from Python, checked and kept as is.
pub fn raw(text: String) -> PyResult<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(text)
        .map_err(|e| exc::SerializationError::new_err(format!("invalid JSON: {e}")))
}

/// A duration from a non-negative number of seconds.
pub fn secs(name: &str, s: f64) -> PyResult<Duration> {
    if !s.is_finite() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// [`secs`], `None` staying `None` ("not given": the core's default applies).
pub fn opt_secs(name: &str, s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| secs(name, s)).transpose()
}

/// A retry policy as the `pgqrs.RetryPolicy` dataclass holds it (read by attribute name).
#[derive(FromPyObject)]
pub struct RetrySpec<'py> {
    #[pyo3(attribute)]
    max_attempts: Option<u32>,
    #[pyo3(attribute)]
    backoff: Bound<'py, PyAny>,
    #[pyo3(attribute)]
    base: f64,
    #[pyo3(attribute)]
    max: f64,
}

impl RetrySpec<'_> {
    /// The core's policy, or `ValidationError`. The one check of a retry policy's fields
    /// (`pgqrs.RetryPolicy` runs it when built).
    pub fn policy(&self) -> PyResult<pgqrs::RetryPolicy> {
        if self.max_attempts == Some(0) {
            return Err(validation(
                "max_attempts",
                "max_attempts must be at least 1",
            ));
        }
        let kind = self.backoff.extract::<String>().ok();
        let kind = match kind.as_deref() {
            Some(k @ ("fixed" | "exponential" | "exponential_jitter")) => k,
            _ => {
                let got = self
                    .backoff
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                return Err(validation(
                    "backoff",
                    format!("backoff must be fixed, exponential or exponential_jitter, got {got}"),
                ));
            }
        };
        if !(self.base.is_finite() && self.max.is_finite() && self.base >= 0.0 && self.max >= 0.0) {
            return Err(validation("backoff", "backoff delays must not be negative"));
        }
        let (base, max) = (
            Duration::from_secs_f64(self.base),
            Duration::from_secs_f64(self.max),
        );
        let backoff = match kind {
            "fixed" => pgqrs::Backoff::Fixed(base),
            "exponential" => pgqrs::Backoff::Exponential { base, max },
            _ => pgqrs::Backoff::ExponentialJitter { base, max },
        };
        Ok(pgqrs::RetryPolicy {
            max_attempts: self.max_attempts,
            backoff,
        })
    }
}

/// The core's policy for `retry`, or `otherwise` when none was given.
pub fn policy_or(
    retry: Option<RetrySpec<'_>>,
    otherwise: pgqrs::RetryPolicy,
) -> PyResult<pgqrs::RetryPolicy> {
    retry.map_or(Ok(otherwise), |r| r.policy())
}

/// Refuse objects created in another process (before `os.fork()`).
pub fn same_process(pid: u32, what: &str) -> PyResult<()> {
    if pid != std::process::id() {
        return Err(exc::ForkError::new_err(format!(
            "this {what} was created in process {pid}, before os.fork(); its connections belong to the parent. Call pgqrs.connect() again in the child process"
        )));
    }
    Ok(())
}
