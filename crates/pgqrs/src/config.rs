//! Connection string parsing and settings.
//!
//! Settings come from a [`Config`] built in code, or from query parameters on the connection
//! string (`postgresql://host/db?schema=jobs&pool_size=20`). pgqrs removes its own parameters
//! before handing the rest to the database driver.

use std::time::Duration;

use crate::error::{preview, Error, Result};
use crate::limits::MAX_LEASE;

/// Which database a connection string selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// PostgreSQL (`postgresql://`, `postgres://`).
    Postgres,
    /// SQLite through sqlx (`sqlite://PATH`, `sqlite::memory:`).
    Sqlite,
    /// Turso, the embedded SQLite-compatible engine (`turso://PATH`, `turso::memory:`).
    Turso,
}

impl BackendKind {
    /// The short name: `postgres`, `sqlite` or `turso`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Postgres => "postgres",
            BackendKind::Sqlite => "sqlite",
            BackendKind::Turso => "turso",
        }
    }
}

/// How hard SQLite/Turso work to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a committed job survives power loss. The default.
    Full,
    /// `synchronous=NORMAL` in WAL mode: faster; a power loss (not a process crash) may lose
    /// the last commits. Opt-in.
    Normal,
}

/// pgqrs settings. Build with [`Config::new`] and the setters, or let
/// [`connect`](crate::connect) read them from the connection string's query parameters.
///
/// | query parameter | setter | default |
/// |---|---|---|
/// | `pool_size` | [`pool_size`](Config::pool_size) | 10 (PostgreSQL), 4 (SQLite) |
/// | `schema` | [`schema`](Config::schema) | `public` (PostgreSQL only) |
/// | `visibility_timeout` (seconds) | [`visibility_timeout`](Config::visibility_timeout) | 30 s |
/// | `max_attempts` | [`max_attempts`](Config::max_attempts) | 5 |
/// | `poll_interval_ms` | [`poll_interval`](Config::poll_interval) | 200 ms |
/// | `max_payload_bytes` | [`max_payload_bytes`](Config::max_payload_bytes) | 1 MiB |
/// | `connect_timeout` (seconds) | [`connect_timeout`](Config::connect_timeout) | 5 s |
/// | `busy_timeout_ms` | [`busy_timeout`](Config::busy_timeout) | 5000 ms (SQLite/Turso) |
/// | `synchronous` (`full`/`normal`) | [`durability`](Config::durability) | `full` (SQLite/Turso) |
/// | `statement_cache` (`true`/`false`) | [`statement_cache`](Config::statement_cache) | `true`; `false` for PgBouncer transaction pooling |
/// | `notify` (`true`/`false`) | [`notify`](Config::notify) | `true` (PostgreSQL LISTEN/NOTIFY wake-ups) |
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) kind: BackendKind,
    /// The DSN without pgqrs's own query parameters.
    pub(crate) driver_dsn: String,
    pub(crate) redacted: String,
    pub(crate) pool_size: Option<u32>,
    pub(crate) schema: String,
    pub(crate) visibility_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) max_payload_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) statement_cache: bool,
    pub(crate) notify: bool,
}

/// Longest identifier PostgreSQL keeps.
const MAX_SCHEMA_LEN: usize = 63;

/// Most connections in one pool.
const MAX_POOL_SIZE: u32 = 10_000;

/// Longest poll interval, connect timeout and busy timeout: a day.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Largest `max_payload_bytes`: 1 GiB, the most PostgreSQL stores in one value.
const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// pgqrs's own query parameters.
const PGQRS_PARAMS: &[&str] = &[
    "pool_size",
    "schema",
    "visibility_timeout",
    "max_attempts",
    "poll_interval_ms",
    "max_payload_bytes",
    "connect_timeout",
    "busy_timeout_ms",
    "synchronous",
    "statement_cache",
    "notify",
];

/// The query parameters the database driver reads (handed on to it).
fn driver_params(kind: BackendKind) -> &'static [&'static str] {
    match kind {
        BackendKind::Postgres => &[
            "sslmode",
            "ssl-mode",
            "sslrootcert",
            "ssl-root-cert",
            "ssl-ca",
            "sslcert",
            "ssl-cert",
            "sslkey",
            "ssl-key",
            "statement-cache-capacity",
            "host",
            "hostaddr",
            "port",
            "dbname",
            "user",
            "password",
            "application_name",
            "options",
        ],
        BackendKind::Sqlite => &["mode", "cache", "immutable", "vfs"],
        BackendKind::Turso => &[],
    }
}

/// The message for a query parameter neither pgqrs nor the driver reads: a typo must not pass
/// silently (a misspelt `visibility_timeout` would leave leases at their default).
fn unknown_param(kind: BackendKind, key: &str) -> String {
    let known: Vec<&str> = PGQRS_PARAMS
        .iter()
        .chain(driver_params(kind))
        .copied()
        .collect();
    let hint = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2 || (key.len() >= 4 && k.starts_with(key)))
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    format!(
        "unknown query parameter {}{hint}; pgqrs reads {}{}",
        preview(key),
        PGQRS_PARAMS.join(", "),
        match driver_params(kind) {
            [] => String::new(),
            d => format!(", and the {} driver reads {}", kind.name(), d.join(", ")),
        }
    )
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Config {
    /// Parse a connection string, including pgqrs's query parameters.
    pub fn new(dsn: &str) -> Result<Self> {
        let redacted = redact(dsn);
        let shown = clip(&redacted);
        let bad = |reason: String| Error::InvalidDsn {
            dsn: shown.clone(),
            reason,
        };
        let dsn = dsn.trim();
        if dsn.is_empty() {
            return Err(bad(
                "it is empty; use postgresql://user@host/db, sqlite://path/to/file.db or sqlite::memory:".into(),
            ));
        }
        let Some((scheme, _)) = dsn.split_once(':') else {
            return Err(bad(
                "no scheme; start it with postgresql://, sqlite:// or turso://".into(),
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let kind = match scheme.as_str() {
            "postgres" | "postgresql" => BackendKind::Postgres,
            "sqlite" => BackendKind::Sqlite,
            "turso" => BackendKind::Turso,
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?}; pgqrs speaks postgresql://, postgres://, sqlite:// and turso://"
                )))
            }
        };

        let (base, query) = match dsn.split_once('?') {
            Some((b, q)) => (b.to_string(), q.to_string()),
            None => (dsn.to_string(), String::new()),
        };
        let mut cfg = Config {
            kind,
            driver_dsn: String::new(),
            redacted: redacted.clone(),
            pool_size: None,
            schema: "public".into(),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            poll_interval: Duration::from_millis(200),
            max_payload_bytes: 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_millis(5000),
            durability: Durability::Full,
            statement_cache: true,
            notify: true,
        };
        let mut passthrough = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let num = |what: &str| -> Result<u64> {
                v.parse::<u64>().map_err(|_| {
                    bad(format!(
                        "{what} must be a whole number (at most {}), got {}",
                        u64::MAX,
                        preview(v)
                    ))
                })
            };
            let boolean = || -> Result<bool> {
                match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(bad(format!(
                        "{k} must be true or false, got {}",
                        preview(v)
                    ))),
                }
            };
            match k {
                "pool_size" => cfg.pool_size = Some(num(k)?.min(u32::MAX as u64) as u32),
                "schema" => cfg.schema = v.to_string(),
                "visibility_timeout" => cfg.visibility_timeout = Duration::from_secs(num(k)?),
                "max_attempts" => cfg.max_attempts = num(k)?.min(u32::MAX as u64) as u32,
                "poll_interval_ms" => cfg.poll_interval = Duration::from_millis(num(k)?),
                "max_payload_bytes" => {
                    cfg.max_payload_bytes = num(k)?.min(usize::MAX as u64) as usize
                }
                "connect_timeout" => cfg.connect_timeout = Duration::from_secs(num(k)?),
                "busy_timeout_ms" => cfg.busy_timeout = Duration::from_millis(num(k)?),
                "statement_cache" => cfg.statement_cache = boolean()?,
                "notify" => cfg.notify = boolean()?,
                "synchronous" => {
                    cfg.durability = match v.to_ascii_lowercase().as_str() {
                        "full" => Durability::Full,
                        "normal" => Durability::Normal,
                        _ => {
                            return Err(bad(format!(
                                "synchronous must be full or normal, got {}",
                                preview(v)
                            )))
                        }
                    }
                }
                _ if driver_params(kind).contains(&k) => passthrough.push(pair.to_string()),
                _ => return Err(bad(unknown_param(kind, k))),
            }
        }
        cfg.driver_dsn = if passthrough.is_empty() {
            base
        } else {
            format!("{base}?{}", passthrough.join("&"))
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.kind == BackendKind::Postgres {
            let s = &self.schema;
            let ok = !s.is_empty()
                && s.len() <= MAX_SCHEMA_LEN
                && s.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(Error::validation(
                    "schema",
                    format!("{s:?} is not a plain identifier: use letters, digits and _ (at most {MAX_SCHEMA_LEN}, not starting with a digit)"),
                ));
            }
        }
        let in_range = |field: &'static str, value: u128, lo: u128, hi: u128, unit: &str| {
            if value < lo || value > hi {
                Err(Error::validation(
                    field,
                    format!("must be from {lo} to {hi}{unit}, got {value}{unit}"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(n) = self.pool_size {
            in_range("pool_size", n.into(), 1, MAX_POOL_SIZE.into(), "")?;
        }
        in_range(
            "max_attempts",
            self.max_attempts.into(),
            1,
            i32::MAX as u128,
            "",
        )?;
        in_range(
            "visibility_timeout",
            self.visibility_timeout.as_secs().into(),
            1,
            MAX_LEASE.as_secs().into(),
            " s",
        )?;
        in_range(
            "poll_interval_ms",
            self.poll_interval.as_millis(),
            1,
            MAX_WAIT.as_millis(),
            " ms",
        )?;
        in_range(
            "max_payload_bytes",
            self.max_payload_bytes as u128,
            1,
            MAX_PAYLOAD_BYTES as u128,
            " bytes",
        )?;
        in_range(
            "connect_timeout",
            self.connect_timeout.as_secs().into(),
            1,
            MAX_WAIT.as_secs().into(),
            " s",
        )?;
        in_range(
            "busy_timeout_ms",
            self.busy_timeout.as_millis(),
            0,
            MAX_WAIT.as_millis(),
            " ms",
        )?;
        Ok(())
    }

    /// The backend this configuration selects.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// Connections in the pool.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = Some(n.clamp(1, MAX_POOL_SIZE));
        self
    }

    /// PostgreSQL schema that holds pgqrs's tables (created by `install`). Ignored by
    /// SQLite/Turso.
    pub fn schema(mut self, name: impl Into<String>) -> Result<Self> {
        self.schema = name.into();
        self.validate()?;
        Ok(self)
    }

    /// Default lease length for claimed jobs.
    pub fn visibility_timeout(mut self, d: Duration) -> Result<Self> {
        self.visibility_timeout = d;
        self.validate()?;
        Ok(self)
    }

    /// Default attempts before a job becomes a dead letter.
    pub fn max_attempts(mut self, n: u32) -> Result<Self> {
        self.max_attempts = n;
        self.validate()?;
        Ok(self)
    }

    /// How often an idle worker polls (it backs off up to 10× this when idle).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Largest accepted payload, in bytes of serialized JSON.
    pub fn max_payload_bytes(mut self, n: usize) -> Result<Self> {
        self.max_payload_bytes = n;
        self.validate()?;
        Ok(self)
    }

    /// How long `connect` waits for the database before giving up.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// SQLite/Turso: how long a writer waits for the lock.
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }

    /// SQLite/Turso: commit durability. [`Durability::Full`] by default.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// PostgreSQL: use prepared statements (default). Turn off behind PgBouncer in
    /// transaction pooling mode.
    pub fn statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// PostgreSQL: wake idle workers with LISTEN/NOTIFY (default). Turn off behind PgBouncer
    /// in transaction pooling mode; workers then only poll.
    pub fn notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// The connection string with the password hidden, for messages.
    pub fn redacted_dsn(&self) -> &str {
        &self.redacted
    }

    /// How long an idle worker waits before it looks for jobs again (at first; the wait
    /// doubles while idle, up to ten times this). Set with [`poll_interval`](Self::poll_interval)
    /// or `poll_interval_ms`.
    pub fn idle_poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

/// A connection string cut for an error message (at most 200 characters).
fn clip(dsn: &str) -> String {
    const SHOWN: usize = 200;
    match dsn.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}... ({} characters)", &dsn[..end], dsn.chars().count()),
        None => dsn.to_string(),
    }
}

/// Replace the password in `scheme://user:password@host` with `***`.
pub(crate) fn redact(dsn: &str) -> String {
    let Some(start) = dsn.find("://").map(|i| i + 3) else {
        return dsn.to_string();
    };
    let rest = &dsn[start..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &dsn[..start], &rest[..colon], &rest[at..]),
            None => dsn.to_string(),
        },
        None => dsn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            Config::new("postgresql://h/db").unwrap().kind,
            BackendKind::Postgres
        );
        assert_eq!(
            Config::new("postgres://h/db").unwrap().kind,
            BackendKind::Postgres
        );
        assert_eq!(
            Config::new("sqlite::memory:").unwrap().kind,
            BackendKind::Sqlite
        );
        assert_eq!(
            Config::new("sqlite://x.db").unwrap().kind,
            BackendKind::Sqlite
        );
        assert_eq!(
            Config::new("turso://x.db").unwrap().kind,
            BackendKind::Turso
        );
        for bad in ["", "   ", "mysql://h/db", "nonsense", "http://x"] {
            assert!(
                matches!(Config::new(bad), Err(Error::InvalidDsn { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn params_are_stripped_and_parsed() {
        let c = Config::new("postgresql://u:secret@h/db?schema=jobs&sslmode=disable&pool_size=3&visibility_timeout=7").unwrap();
        assert_eq!(c.schema, "jobs");
        assert_eq!(c.pool_size, Some(3));
        assert_eq!(c.visibility_timeout, Duration::from_secs(7));
        assert_eq!(c.driver_dsn, "postgresql://u:secret@h/db?sslmode=disable");
        assert_eq!(
            c.redacted_dsn(),
            "postgresql://u:***@h/db?schema=jobs&sslmode=disable&pool_size=3&visibility_timeout=7"
        );
        assert!(matches!(
            Config::new("postgresql://h/db?pool_size=x"),
            Err(Error::InvalidDsn { .. })
        ));
        assert!(matches!(
            Config::new("postgresql://h/db?schema=a;drop"),
            Err(Error::Validation {
                field: "schema",
                ..
            })
        ));
        assert!(matches!(
            Config::new("sqlite::memory:?max_attempts=0"),
            Err(Error::Validation { .. })
        ));
    }

    #[test]
    fn unknown_params_are_refused_with_a_hint() {
        for (dsn, hint) in [
            (
                "postgresql://h/db?visiblity_timeout=2",
                "did you mean visibility_timeout?",
            ),
            (
                "postgresql://h/db?poll_interval=100",
                "did you mean poll_interval_ms?",
            ),
            ("sqlite:///x.db?pool-size=3", "did you mean pool_size?"),
            ("turso:///x.db?foo=bar", "pgqrs reads pool_size"),
        ] {
            let e = Config::new(dsn).unwrap_err();
            assert!(matches!(e, Error::InvalidDsn { .. }), "{dsn}: {e:?}");
            assert!(e.to_string().contains(hint), "{dsn}: {e}");
        }
        // The driver's own parameters still pass through.
        let c = Config::new("postgresql://h/db?sslmode=disable&application_name=x").unwrap();
        assert_eq!(
            c.driver_dsn,
            "postgresql://h/db?sslmode=disable&application_name=x"
        );
        assert!(Config::new("sqlite:///x.db?mode=rwc").is_ok());
    }

    #[test]
    fn settings_out_of_range_are_refused_not_clamped() {
        for (param, field) in [
            ("pool_size=0", "pool_size"),
            ("pool_size=100000", "pool_size"),
            ("visibility_timeout=0", "visibility_timeout"),
            (
                "visibility_timeout=18446744073709551615",
                "visibility_timeout",
            ),
            ("max_attempts=2147483648", "max_attempts"),
            ("poll_interval_ms=0", "poll_interval_ms"),
            ("poll_interval_ms=18446744073709551615", "poll_interval_ms"),
            ("max_payload_bytes=2147483648", "max_payload_bytes"),
            // These two once panicked (an overflowing deadline; SQLite's busy timeout).
            ("connect_timeout=18446744073709551615", "connect_timeout"),
            ("connect_timeout=0", "connect_timeout"),
            ("busy_timeout_ms=18446744073709551615", "busy_timeout_ms"),
        ] {
            for base in ["postgresql://h/db", "sqlite:///x.db", "turso:///x.db"] {
                let dsn = format!("{base}?{param}");
                match Config::new(&dsn) {
                    Err(Error::Validation { field: f, message }) => {
                        assert_eq!(f, field, "{dsn}");
                        assert!(message.contains("must be from"), "{dsn}: {message}");
                    }
                    other => panic!("{dsn}: {other:?}"),
                }
            }
        }
        let bad = |v: &str| Config::new(&format!("sqlite::memory:?max_attempts={v}"));
        assert!(matches!(
            bad("99999999999999999999999"),
            Err(Error::InvalidDsn { .. })
        ));
        // Settings made in code are checked when connecting.
        let c = Config::new("sqlite::memory:")
            .unwrap()
            .poll_interval(Duration::MAX);
        assert!(matches!(
            c.validate(),
            Err(Error::Validation {
                field: "poll_interval_ms",
                ..
            })
        ));
    }

    #[test]
    fn a_scheme_is_required_and_long_dsns_are_cut_in_messages() {
        // "sqlite" alone once opened a file named sqlite in the working directory.
        for dsn in ["sqlite", "turso", "jobs.db"] {
            let e = Config::new(dsn).unwrap_err();
            assert!(e.to_string().contains("no scheme"), "{dsn}: {e}");
        }
        let long = format!("ftp://{}", "a".repeat(100_000));
        let e = Config::new(&long).unwrap_err();
        assert!(e.to_string().len() < 1000, "{}", e.to_string().len());
        assert!(e.to_string().contains("100006 characters"), "{e}");
    }
}
