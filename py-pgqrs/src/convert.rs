//! Values crossing the boundary: seconds, JSON text, times, retry policies, and the check
//! that an object is used in the process that made it.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

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

/// A duration from a non-negative number of seconds; `ValidationError` (naming `name`) for a
/// negative, NaN, infinite or unrepresentable one. Upper bounds are the core's.
pub fn secs(name: &str, s: f64) -> PyResult<Duration> {
    if s.is_nan() || s < 0.0 {
        return Err(validation(
            name,
            format!("{name} must be a non-negative number of seconds, got {s}"),
        ));
    }
    Duration::try_from_secs_f64(s).map_err(|_| {
        validation(
            name,
            format!("{name} must be a finite number of seconds, got {s}"),
        )
    })
}

/// The Python type name of `v`, for messages.
fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A `str` argument as Rust text: `ValidationError` for another type, or for text holding a
/// lone surrogate (which is not UTF-8).
pub fn text(field: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = v.cast::<PyString>().map_err(|_| {
        validation(
            field,
            format!("{field} must be a str, got {}", type_name(v)),
        )
    })?;
    s.to_str().map(str::to_owned).map_err(|_| {
        validation(
            field,
            format!("{field} contains a lone surrogate, which is not valid UTF-8 text; remove it"),
        )
    })
}

/// Free text (error messages): a lone surrogate becomes U+FFFD rather than failing the call
/// that records it.
pub fn text_lossy(field: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = v.cast::<PyString>().map_err(|_| {
        validation(
            field,
            format!("{field} must be a str, got {}", type_name(v)),
        )
    })?;
    Ok(s.to_string_lossy().into_owned())
}

/// An `int` argument that fits in 64 bits; `ValidationError` otherwise (a `bool` is refused
/// too: `True` is not an id).
pub fn int(field: &str, v: &Bound<'_, PyAny>) -> PyResult<i64> {
    if !v.is_instance_of::<PyInt>() || v.is_instance_of::<PyBool>() {
        return Err(validation(
            field,
            format!("{field} must be an int, got {}", type_name(v)),
        ));
    }
    v.extract::<i64>().map_err(|_| {
        let bits = v
            .call_method0("bit_length")
            .and_then(|b| b.extract::<u64>())
            .unwrap_or(0);
        validation(
            field,
            format!(
                "{field} must be from {} to {}, got an int of {bits} bits",
                i64::MIN,
                i64::MAX
            ),
        )
    })
}

/// A count (batch size, attempts): a non-negative [`int`]; the core checks its range.
pub fn count<T: TryFrom<i64>>(field: &str, v: &Bound<'_, PyAny>) -> PyResult<T> {
    let n = int(field, v)?;
    T::try_from(n).map_err(|_| {
        validation(
            field,
            format!("{field} must be a positive whole number, got {n}"),
        )
    })
}

/// A list of ids: each an [`int`].
pub fn ints(field: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if v.is_instance_of::<PyString>() {
        return Err(validation(
            field,
            format!("{field} must be a list of ints, got str"),
        ));
    }
    let items = v.try_iter().map_err(|_| {
        validation(
            field,
            format!("{field} must be a list of ints, got {}", type_name(v)),
        )
    })?;
    items.map(|item| int(field, &item?)).collect()
}

/// A list of optional texts (the keys of a batch): each a `str` ([`text`]) or `None`.
pub fn opt_texts(field: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<Option<String>>> {
    if v.is_instance_of::<PyString>() {
        return Err(validation(
            field,
            format!("{field} must be a list of str (or None), one per job, got str"),
        ));
    }
    let items = v.try_iter().map_err(|_| {
        validation(
            field,
            format!(
                "{field} must be a list of str (or None), one per job, got {}",
                type_name(v)
            ),
        )
    })?;
    items
        .map(|item| {
            let item = item?;
            if item.is_none() {
                Ok(None)
            } else {
                text(field, &item).map(Some)
            }
        })
        .collect()
}

/// [`secs`], `None` staying `None` ("not given": the core's default applies).
pub fn opt_secs(name: &str, s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| secs(name, s)).transpose()
}

/// Seconds given as any Python object: an `int` or a `float` ([`secs`]); another type (a
/// `str`, a `bool`) is a `ValidationError` naming the argument.
pub fn opt_secs_any(name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(v) = v else { return Ok(None) };
    let numeric = (v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>())
        && !v.is_instance_of::<PyBool>();
    if !numeric {
        return Err(validation(
            name,
            format!("{name} must be a number of seconds, got {}", type_name(v)),
        ));
    }
    // An int too large for a float is too long anyway.
    let s = v.extract::<f64>().unwrap_or(f64::INFINITY);
    secs(name, s).map(Some)
}

/// A retention: the text `"forever"`, or a number of seconds ([`opt_secs_any`]); `None`
/// stays `None` ("not given"). Its range is the core's to check.
pub fn opt_retention(
    name: &str,
    v: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<pgqrs::Retention>> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(s) = v.cast::<PyString>() {
        return match s.to_str() {
            Ok("forever") => Ok(Some(pgqrs::Retention::Forever)),
            _ => Err(validation(
                name,
                format!(
                    "{name} must be a number of seconds or \"forever\", got the str {}",
                    s.repr()
                        .map(|r| r.to_string().chars().take(42).collect::<String>())
                        .unwrap_or_default()
                ),
            )),
        };
    }
    Ok(opt_secs_any(name, Some(v))?.map(pgqrs::Retention::For))
}

/// A retry policy as the `pgqrs.RetryPolicy` dataclass holds it (read by attribute name;
/// each field converted here, so a wrong type is a `ValidationError` naming it).
#[derive(FromPyObject)]
pub struct RetrySpec<'py> {
    #[pyo3(attribute)]
    max_attempts: Bound<'py, PyAny>,
    #[pyo3(attribute)]
    backoff: Bound<'py, PyAny>,
    #[pyo3(attribute)]
    base: Bound<'py, PyAny>,
    #[pyo3(attribute)]
    max: Bound<'py, PyAny>,
}

/// Seconds from a Python number (`int` or `float`, not `bool`).
fn number_secs(field: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if v.is_instance_of::<PyBool>() {
        return Err(validation(
            field,
            format!("{field} must be seconds (int or float), got bool"),
        ));
    }
    let s = v.extract::<f64>().map_err(|_| {
        validation(
            field,
            format!(
                "{field} must be seconds (int or float), got {}",
                type_name(v)
            ),
        )
    })?;
    secs(field, s)
}

impl RetrySpec<'_> {
    /// The core's policy, or `ValidationError`. The one check of a retry policy's fields
    /// (`pgqrs.RetryPolicy` runs it when built).
    pub fn policy(&self) -> PyResult<pgqrs::RetryPolicy> {
        let max_attempts = if self.max_attempts.is_none() {
            None
        } else {
            Some(count::<u32>("max_attempts", &self.max_attempts)?)
        };
        if max_attempts == Some(0) {
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
        let (base, max) = (
            number_secs("base", &self.base)?,
            number_secs("max", &self.max)?,
        );
        let backoff = match kind {
            "fixed" => pgqrs::Backoff::Fixed(base),
            "exponential" => pgqrs::Backoff::Exponential { base, max },
            _ => pgqrs::Backoff::ExponentialJitter { base, max },
        };
        Ok(pgqrs::RetryPolicy {
            max_attempts,
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
