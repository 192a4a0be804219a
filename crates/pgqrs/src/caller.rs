//! Enqueueing on the caller's own sqlx connection, inside the caller's transaction
//! ([`EnqueueBuilder::execute_in`](crate::EnqueueBuilder::execute_in)).
//!
//! **Backends: PostgreSQL and SQLite**, the two that pgqrs reaches through sqlx. Turso is
//! not sqlx (pgqrs talks to it through the `turso` crate), so a Turso store refuses with
//! [`Error::Validation`] (field `connection`) and says so; so does a store whose backend is
//! not the connection's.

use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::store::{Caller, Store};

/// A sqlx connection that [`EnqueueBuilder::execute_in`](crate::EnqueueBuilder::execute_in)
/// can run on: [`sqlx::PgConnection`] (feature `postgres`) or [`sqlx::SqliteConnection`]
/// (feature `sqlite`), a [`sqlx::Transaction`] on one, or a pooled one
/// ([`sqlx::pool::PoolConnection`]). Use the sqlx that pgqrs re-exports ([`crate::sqlx`]), so
/// that the types are the ones pgqrs was built with.
///
/// Turso is not sqlx: a Turso store has no connection of this kind (see the README's
/// "Enqueue inside your transaction"). This trait is sealed.
pub trait SqlxConnection: sealed::Sealed {}

pub(crate) mod sealed {
    /// Hands pgqrs the connection.
    pub trait Sealed {
        fn caller(&mut self) -> crate::store::Caller<'_>;
    }
}

macro_rules! sqlx_connection {
    ($feature:literal, $variant:ident, $db:ty, $conn:ty) => {
        #[cfg(feature = $feature)]
        impl sealed::Sealed for $conn {
            fn caller(&mut self) -> Caller<'_> {
                Caller::$variant(self)
            }
        }
        #[cfg(feature = $feature)]
        impl SqlxConnection for $conn {}

        #[cfg(feature = $feature)]
        impl sealed::Sealed for sqlx::Transaction<'_, $db> {
            fn caller(&mut self) -> Caller<'_> {
                Caller::$variant(&mut *self)
            }
        }
        #[cfg(feature = $feature)]
        impl SqlxConnection for sqlx::Transaction<'_, $db> {}

        #[cfg(feature = $feature)]
        impl sealed::Sealed for sqlx::pool::PoolConnection<$db> {
            fn caller(&mut self) -> Caller<'_> {
                Caller::$variant(&mut *self)
            }
        }
        #[cfg(feature = $feature)]
        impl SqlxConnection for sqlx::pool::PoolConnection<$db> {}
    };
}

sqlx_connection!("postgres", Postgres, sqlx::Postgres, sqlx::PgConnection);
sqlx_connection!("sqlite", Sqlite, sqlx::Sqlite, sqlx::SqliteConnection);

/// The connection must be of the store's backend, and the backend one that sqlx speaks.
pub(crate) fn check(store: &Store, conn: &Caller<'_>) -> Result<()> {
    let (store_kind, conn_kind) = (store.backend(), conn.kind());
    if store_kind == BackendKind::Turso {
        return Err(Error::validation(
            "connection",
            "enqueueing on your own connection works on PostgreSQL and SQLite stores only: \
             Turso is not sqlx (pgqrs reaches it through the turso crate), so there is no \
             sqlx connection to a Turso database to run in; enqueue with .execute(&store)",
        ));
    }
    if store_kind != conn_kind {
        return Err(Error::validation(
            "connection",
            format!(
                "this is a {} connection, but the store is a {} store: pass a connection to \
                 the store's own database",
                conn_kind.name(),
                store_kind.name()
            ),
        ));
    }
    Ok(())
}
