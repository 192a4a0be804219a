//! Producing: enqueue one job or many, now or later.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{validate_queue_name, EnqueueParams, On, Store, Visibility};

pub use crate::limits::MAX_DEPTH;

/// Refuse JSON text that could not be read back as it was written: nested deeper than
/// [`MAX_DEPTH`], or holding a number outside the 64-bit ranges (see [`check_number`]). One
/// byte scan; strings are skipped. `field` names the argument.
pub(crate) fn check_json(json: &str, field: &'static str) -> Result<()> {
    let bytes = json.as_bytes();
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            match b {
                b'u' if escaped => {
                    escaped = false;
                    i = check_unicode_escape(bytes, i + 1, field)?;
                    continue;
                }
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Error::validation(
                        field,
                        format!("nested more than {MAX_DEPTH} levels deep; flatten it"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                check_number(&json[start..i], field)?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The hex value of the 4 digits of a `\\u` escape at `at`, if well formed.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// Check the `\\u` escape whose digits start at `at`: a surrogate must come as a pair (a
/// lone one parses here but not when the job is claimed). Returns where scanning resumes.
fn check_unicode_escape(bytes: &[u8], at: usize, field: &'static str) -> Result<usize> {
    let lone = || {
        Error::validation(
            field,
            "holds a string with a lone UTF-16 surrogate escape (\\ud800-\\udfff not in a pair), which is not valid text; remove it",
        )
    };
    // Malformed escapes are the JSON parser's to report.
    let Some(unit) = hex4(bytes, at) else {
        return Ok(at);
    };
    match unit {
        0xD800..=0xDBFF => {
            let pair = bytes.get(at + 4..at + 6) == Some(b"\\u".as_slice())
                && hex4(bytes, at + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
            if pair {
                Ok(at + 10)
            } else {
                Err(lone())
            }
        }
        0xDC00..=0xDFFF => Err(lone()),
        _ => Ok(at + 4),
    }
}

/// A number token must read back as written: an integer must fit in i64 or u64 (else it
/// would come back as a rounded float), a float must be finite (`1e400` parses here but not
/// when the job is claimed).
fn check_number(token: &str, field: &'static str) -> Result<()> {
    if token.contains(['.', 'e', 'E']) {
        if !token.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(Error::validation(
                field,
                format!(
                    "holds the number {}, beyond the range of a 64-bit float; send it as a string",
                    crate::error::preview(token)
                ),
            ));
        }
        return Ok(());
    }
    // 18 digits always fit; only longer ones need parsing.
    let digits = token.trim_start_matches('-').len();
    if digits > 18 && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
        return Err(Error::validation(
            field,
            format!(
                "holds an integer of {digits} digits, outside the 64-bit range ({} to {}) that is read back exactly; send it as a string",
                i64::MIN,
                u64::MAX
            ),
        ));
    }
    Ok(())
}

/// Builds an enqueue. Start with [`enqueue`].
///
/// ```no_run
/// # async fn run(store: &pgqrs::Store) -> pgqrs::Result<()> {
/// use std::time::Duration;
/// let ids = pgqrs::enqueue()
///     .messages(&[1, 2, 3])
///     .delay(Duration::from_secs(60))
///     .to("tasks")
///     .execute(store)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "an enqueue does nothing until .execute(&store) is awaited"]
pub struct EnqueueBuilder {
    payloads: Vec<String>,
    error: Option<Error>,
    queue: Option<String>,
    delay: Option<Duration>,
    at: Option<DateTime<Utc>>,
    max_attempts: Option<u32>,
    priority: Option<i64>,
    timeout: Option<Duration>,
    group: Option<String>,
    unique: crate::unique::UniqueOptions,
}

pub use crate::limits::{MAX_PRIORITY, MIN_PRIORITY};

/// A job priority as stored: from [`MIN_PRIORITY`] to [`MAX_PRIORITY`], or a typed error
/// naming the range. Every priority a caller gives (enqueue, `set_job_priority`) goes
/// through here.
pub(crate) fn validate_priority(priority: i64) -> Result<i16> {
    i16::try_from(priority).map_err(|_| {
        Error::validation(
            "priority",
            format!(
                "must be between {MIN_PRIORITY} and {MAX_PRIORITY} (higher runs first), \
                 got {priority}"
            ),
        )
    })
}

/// When a job becomes claimable, from a delay or a time (at most one of them; neither, or a
/// zero delay: now), each at most 100 years ahead. Enqueues and `reschedule_job` share it.
pub(crate) fn visibility(delay: Option<Duration>, at: Option<DateTime<Utc>>) -> Result<Visibility> {
    Ok(match (at, delay) {
        (Some(_), Some(_)) => {
            return Err(Error::validation(
                "delay",
                "give either a delay or a time (at), not both",
            ))
        }
        (Some(t), None) => {
            let ahead = (t - Utc::now()).to_std().unwrap_or_default();
            crate::limits::validate_delay("at", ahead)?;
            Visibility::At(t)
        }
        (None, Some(d)) if !d.is_zero() => {
            crate::limits::validate_delay("delay", d)?;
            Visibility::After(d)
        }
        (None, _) => Visibility::Now,
    })
}

/// Start building an enqueue.
pub fn enqueue() -> EnqueueBuilder {
    EnqueueBuilder::default()
}

impl EnqueueBuilder {
    /// Add one message: any value that serializes to JSON.
    pub fn message<T: Serialize + ?Sized>(mut self, payload: &T) -> Self {
        match serde_json::to_string(payload) {
            Ok(s) => self = self.message_json(s),
            Err(e) => self.error = self.error.or(Some(e.into())),
        }
        self
    }

    /// Add many messages; they are inserted in one statement.
    pub fn messages<T: Serialize>(mut self, payloads: impl IntoIterator<Item = T>) -> Self {
        for p in payloads {
            self = self.message(&p);
        }
        self
    }

    /// Add one message given as JSON text. The text is checked to be valid JSON that can be
    /// read back: nesting deeper than [`MAX_DEPTH`] levels is refused here rather than found
    /// at claim time.
    pub fn message_json(mut self, json: impl Into<String>) -> Self {
        let json = json.into();
        let checked = serde_json::from_str::<serde::de::IgnoredAny>(&json)
            .map_err(Error::from)
            .and_then(|_| check_json(&json, "payload"));
        match checked {
            Ok(()) => self.payloads.push(json),
            Err(e) => self.error = self.error.or(Some(e)),
        }
        self
    }

    /// Add many messages given as one JSON array text: each element becomes one message
    /// (`"[1, {\"a\": 2}]"` adds two). Cheaper than one [`message_json`](Self::message_json)
    /// per element when the producer already holds the array's text: it is parsed once.
    pub fn messages_json_array(mut self, json: &str) -> Self {
        match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(json) {
            Ok(items) => {
                self.payloads.reserve(items.len());
                for item in items {
                    let text = item.get();
                    match check_json(text, "payload") {
                        Ok(()) => self.payloads.push(text.to_owned()),
                        Err(e) => {
                            self.error = self.error.or(Some(e));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                self.error = self.error.or(Some(Error::validation(
                    "payloads",
                    format!("expected a JSON array of messages: {e}"),
                )))
            }
        }
        self
    }

    /// The queue to add to.
    pub fn to(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Make the jobs claimable only after this delay.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Make the jobs claimable only from this time on.
    pub fn at(mut self, t: DateTime<Utc>) -> Self {
        self.at = Some(t);
        self
    }

    /// Attempts allowed before a job becomes a dead letter (default from the store's config).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Claims take jobs of higher priority first (then the earliest visible, then the
    /// lowest id). Default 0; from [`MIN_PRIORITY`] (-32768) to [`MAX_PRIORITY`] (32767).
    pub fn priority(mut self, p: i64) -> Self {
        self.priority = Some(p);
        self
    }

    /// A handler that runs longer than this on one of these jobs is cancelled and the attempt
    /// recorded as failed ("handler exceeded its timeout of 30 s …"), then retried per the
    /// worker's retry policy. From 1 ms to 7 days; without it, the worker's
    /// [`job_timeout`](crate::WorkerBuilder::job_timeout) applies, if any.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The jobs' group (a customer, a tenant, an API account…): in a queue with a
    /// [group concurrency limit](crate::QueueLimits::group_concurrency), at most that many
    /// jobs of one group are leased at once. 1 to [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES)
    /// bytes, no NUL. Every job of this enqueue gets it.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The job's unique key: while a job of the queue with this key is waiting or running
    /// (or, with [`unique_for`](Self::unique_for), finished within that window), no second
    /// job is created, and the enqueue gets what [`on_duplicate`](Self::on_duplicate) says
    /// (by default the existing job's id). For one job only; a batch gives each job its own
    /// key with [`keys`](Self::keys). 1 to [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES) bytes,
    /// no NUL.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.unique.key = Some(key.into());
        self
    }

    /// One unique key (or none) per job of the batch, in the jobs' order (see
    /// [`key`](Self::key)): `.keys(["a", "b"])`, or `.keys([Some("a"), None])`. Jobs of the
    /// batch with the same key are one job (all of them get its id, or the batch fails with
    /// [`OnDuplicate::Error`](crate::OnDuplicate::Error)).
    pub fn keys<K: IntoKey>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.unique.keys = Some(keys.into_iter().map(IntoKey::into_key).collect());
        self
    }

    /// What a job whose key is taken gets: the existing job's id
    /// ([`OnDuplicate::Existing`](crate::OnDuplicate::Existing), the default) or
    /// [`Error::DuplicateJob`] ([`OnDuplicate::Error`](crate::OnDuplicate::Error)).
    pub fn on_duplicate(mut self, policy: crate::OnDuplicate) -> Self {
        self.unique.on_duplicate = Some(policy);
        self
    }

    /// A job with the key that finished (was archived) less than this long ago also holds
    /// the key. Jobs deleted on completion, and dead letters, hold no key.
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.unique.unique_for = Some(window);
        self
    }

    /// Insert the jobs, in one statement. Returns their ids in order. An empty builder
    /// inserts nothing and returns an empty list.
    pub async fn execute(self, store: &Store) -> Result<Vec<i64>> {
        self.run(store, On::Pool).await
    }

    /// Insert the jobs on your own sqlx connection, inside the transaction it is in: they
    /// exist if and only if that transaction commits. Same options, validation, defaults and
    /// statements as [`execute`](Self::execute); returns the ids in order.
    ///
    /// **PostgreSQL and SQLite only** (the backends pgqrs reaches through sqlx): `conn` is a
    /// [`sqlx::Transaction`], a connection, or a pooled connection of the store's database
    /// (see [`SqlxConnection`](crate::SqlxConnection)); use [`pgqrs::sqlx`](crate::sqlx) for a
    /// matching sqlx. A Turso store, or a connection of another backend than the store's, gets
    /// [`Error::Validation`] (field `connection`).
    ///
    /// Waking workers: on PostgreSQL the enqueue's NOTIFY is delivered when the transaction
    /// commits (and dropped if it rolls back), so idle workers in every process wake at the
    /// commit. On SQLite, idle workers notice the commit through their change watcher (within
    /// about 10 ms), in this process and in others. Before the commit no worker can see the
    /// jobs.
    ///
    /// On SQLite, begin the transaction with `BEGIN IMMEDIATE`
    /// (`conn.begin_with("BEGIN IMMEDIATE")`) when it reads before it writes, so that it
    /// takes the write lock at once rather than failing with a busy error when it first
    /// writes. A keyed batch runs in a savepoint of its own: when it fails, or one of its
    /// keys is taken with [`OnDuplicate::Error`](crate::OnDuplicate::Error), nothing of it
    /// stays and the transaction goes on.
    ///
    /// ```no_run
    /// # async fn run(
    /// #     store: &pgqrs::Store,
    /// #     pool: &pgqrs::sqlx::PgPool,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// // ... your own writes on &mut *tx ...
    /// let ids = pgqrs::enqueue()
    ///     .message(&serde_json::json!({"order": 42}))
    ///     .to("emails")
    ///     .execute_in(store, &mut tx)
    ///     .await?;
    /// tx.commit().await?; // the job exists from here on; a rollback leaves none
    /// # let _ = ids;
    /// # Ok(()) }
    /// ```
    // Without sqlx's drivers (a Turso-only build) no connection type exists, so the body
    // after `caller()` cannot be reached.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite")),
        allow(unused_variables)
    )]
    pub async fn execute_in<C>(self, store: &Store, conn: &mut C) -> Result<Vec<i64>>
    where
        C: crate::SqlxConnection + ?Sized,
    {
        let caller = conn.caller();
        crate::caller::check(store, &caller)?;
        self.run(store, On::Caller(caller)).await
    }

    /// Validate, apply the defaults, and insert on `on`.
    async fn run(self, store: &Store, on: On<'_>) -> Result<Vec<i64>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let queue = self.queue.ok_or_else(|| {
            Error::validation("queue", "no queue given: call .to(\"queue-name\")")
        })?;
        validate_queue_name(&queue)?;
        let cfg = store.config();
        let max_attempts = self.max_attempts.unwrap_or(cfg.max_attempts);
        if max_attempts == 0 || max_attempts > i32::MAX as u32 {
            return Err(Error::validation(
                "max_attempts",
                format!("must be between 1 and {}, got {max_attempts}", i32::MAX),
            ));
        }
        let priority = validate_priority(self.priority.unwrap_or(0))?;
        if let Some(t) = self.timeout {
            crate::deadline::validate_timeout("timeout", t)?;
        }
        if let Some(g) = &self.group {
            crate::limits::validate_key("group", g)?;
        }
        let unique = self.unique.check(self.payloads.len())?;
        if self.payloads.is_empty() {
            return Ok(Vec::new());
        }
        let max = cfg.max_payload_bytes;
        if let Some(p) = self.payloads.iter().find(|p| p.len() > max) {
            return Err(Error::PayloadTooLarge { size: p.len(), max });
        }
        let visibility = visibility(self.delay, self.at)?;
        let params = EnqueueParams {
            queue: &queue,
            payloads: self.payloads,
            visibility,
            max_attempts: max_attempts as i32,
            priority,
            timeout_ms: self.timeout.map(crate::deadline::stored_ms),
            group: self.group,
        };
        match unique {
            Some(u) => crate::unique::enqueue_keyed(store, params, u, on).await,
            None => store.backend_impl().enqueue_jobs(params, on).await,
        }
    }
}

/// A unique key, or none, for [`EnqueueBuilder::keys`]: `&str`, `String` and their
/// `Option`s.
pub trait IntoKey {
    /// The key, or `None` for a job without one.
    fn into_key(self) -> Option<String>;
}

impl IntoKey for &str {
    fn into_key(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl IntoKey for String {
    fn into_key(self) -> Option<String> {
        Some(self)
    }
}

impl IntoKey for &String {
    fn into_key(self) -> Option<String> {
        Some(self.clone())
    }
}

impl<K: IntoKey> IntoKey for Option<K> {
    fn into_key(self) -> Option<String> {
        self.and_then(IntoKey::into_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(json: &str) -> bool {
        matches!(
            check_json(json, "payload"),
            Err(Error::Validation {
                field: "payload",
                ..
            })
        )
    }

    #[test]
    fn numbers_must_read_back_as_written() {
        for ok in [
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "123456789012345678",
            "1e308",
            "-1.5e-300",
            "5e-324",
            r#"{"a":[1,2.5,-3]}"#,
            r#""99999999999999999999999 in a string""#,
        ] {
            assert!(check_json(ok, "payload").is_ok(), "{ok}");
        }
        for bad in [
            "18446744073709551616",
            "-9223372036854775809",
            r#"{"deep":[1000000000000000000000000000000]}"#,
            "1e400",
            "-1e400",
            "[1.7976931348623157e309]",
        ] {
            assert!(refused(bad), "{bad}");
        }
    }

    #[test]
    fn surrogate_escapes_must_pair() {
        assert!(check_json(r#""\ud83d\ude00""#, "payload").is_ok());
        assert!(
            check_json(r#""\u00e9 \\ud800""#, "payload").is_ok(),
            "an escaped backslash"
        );
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud83d\u0041""#,
            r#"{"\ud800":1}"#,
        ] {
            assert!(refused(bad), "{bad}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_json(&ok, "payload").is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(refused(&deep));
    }
}
