//! The store's embedded, versioned migrations: each runs once, in order,
//! in one transaction with the `schema_migrations` row recording it, under
//! an advisory lock so processes starting together migrate once. A schema
//! at a version this build does not know is refused.

use sqlx::{Connection, PgConnection};

use super::db_error;
use crate::{Error, Result};

/// Every migration (version, name, SQL), oldest first. Never edit one that
/// has shipped; add the next.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "stores", include_str!("0001_stores.sql"))];

/// The schema version this build reads and writes.
pub(super) const STORE_SCHEMA_VERSION: i32 = 1;

/// First key of the advisory lock ("fs"); the second is the schema's hash.
const LOCK_CLASS: i32 = 0x6673;

/// Brings `schema` (quoted) up to [`STORE_SCHEMA_VERSION`].
pub(super) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let mut tx = conn.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    );
    sqlx::raw_sql(&setup).execute(&mut *tx).await.map_err(db_error)?;
    let current: Option<i32> = sqlx::query_scalar(&format!("SELECT max(version) FROM {schema}.schema_migrations"))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    let current = current.unwrap_or(0);
    if current > STORE_SCHEMA_VERSION {
        return Err(Error::InvalidConfig(format!(
            "the FlagShip store tables in schema {schema} are at version {current}, newer than this build knows \
             (version {STORE_SCHEMA_VERSION}): upgrade flagship-worker; nothing was changed"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        sqlx::raw_sql(&sql.replace("{schema}", schema))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::Backend(format!("FlagShip store migration {version} ({name}) failed: {e}").into()))?;
        sqlx::query(&format!(
            "INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"
        ))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tracing::info!(schema, version, "FlagShip store schema migrated");
    }
    tx.commit().await.map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (n, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, n as i32 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(STORE_SCHEMA_VERSION));
    }
}
