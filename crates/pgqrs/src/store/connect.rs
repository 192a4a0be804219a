//! Building a backend from a configuration: the one place that knows every backend.

use std::sync::Arc;

use super::{Backend, Store};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};

/// Open a store for a configuration.
pub async fn connect_with(config: Config) -> Result<Store> {
    // Settings made with the setters that do not check (poll interval, timeouts).
    config.validate()?;
    let inner: Arc<dyn Backend> = match config.kind {
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => Arc::new(super::postgres::PgBackend::connect(config).await?),
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => Arc::new(
            super::sqlite::SqliteBackend::<super::sqlite::sqlx::SqlxSqlite>::connect(config)
                .await?,
        ),
        #[cfg(feature = "turso")]
        BackendKind::Turso => Arc::new(
            super::sqlite::SqliteBackend::<super::sqlite::turso::Turso>::connect(config).await?,
        ),
        #[allow(unreachable_patterns)]
        kind => {
            return Err(Error::BackendNotEnabled {
                scheme: kind.name().into(),
                feature: kind.name(),
            })
        }
    };
    Ok(Store { inner })
}
