//! Embedded, versioned migrations in the broker's own schema.
//!
//! Each migration runs once, in order, in one transaction with the
//! `schema_migrations` row that records it, under a transaction-level
//! advisory lock, so processes starting together migrate once. A database
//! already at a version this build does not know is refused: an older
//! worker must not run against tables a newer one changed.

use sqlx::{Connection, PgConnection};

use super::{errors::map_err, sql::Schema};
use crate::error::{Error, Result};

/// One migration: its version, a name, and its SQL (with `{schema}` and
/// `{channel}` placeholders).
#[derive(Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped; add the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("sql/migrations/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "control",
        sql: include_str!("sql/migrations/0002_control.sql"),
    },
    Migration {
        version: 3,
        name: "history",
        sql: include_str!("sql/migrations/0003_history.sql"),
    },
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 3;

/// First key of the advisory lock migrations hold (the second is the
/// schema name's hash): "fw" in ASCII, to stay clear of other users' locks.
const LOCK_CLASS: i32 = 0x6677;

/// Brings `schema` up to [`SCHEMA_VERSION`]; returns the versions applied.
pub(super) async fn migrate(conn: &mut PgConnection, schema: &Schema) -> Result<Vec<i32>> {
    let mut tx = conn.begin().await.map_err(map_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(schema.name())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let setup = schema.fill(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    );
    sqlx::raw_sql(&setup).execute(&mut *tx).await.map_err(map_err)?;
    let current = current_version(&mut tx, schema).await?;
    refuse_newer(schema, current)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(&schema.fill(migration.sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                Error::Backend(
                    format!(
                        "migration {} ({}) of schema `{}` failed: {e}",
                        migration.version,
                        migration.name,
                        schema.name()
                    )
                    .into(),
                )
            })?;
        sqlx::query(&schema.fill("INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"))
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        applied.push(migration.version);
    }
    tx.commit().await.map_err(map_err)?;
    if !applied.is_empty() {
        tracing::info!(schema = schema.name(), versions = ?applied, "database schema migrated");
    }
    Ok(applied)
}

/// Checks that `schema` is at [`SCHEMA_VERSION`] without changing anything.
pub(super) async fn check(conn: &mut PgConnection, schema: &Schema) -> Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{}.schema_migrations", schema.quoted()))
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let current = if exists {
        current_version(conn, schema).await?
    } else {
        0
    };
    refuse_newer(schema, current)?;
    if current < SCHEMA_VERSION {
        return Err(Error::InvalidConfig(format!(
            "the flagship-worker tables in schema `{}` are at version {current}, this build needs version \
             {SCHEMA_VERSION}: run `PostgresBroker::migrate` (or connect with migrations on)",
            schema.name()
        )));
    }
    Ok(())
}

async fn current_version(conn: &mut PgConnection, schema: &Schema) -> Result<i32> {
    let version: Option<i32> = sqlx::query_scalar(&schema.fill("SELECT max(version) FROM {schema}.schema_migrations"))
        .fetch_one(conn)
        .await
        .map_err(map_err)?;
    Ok(version.unwrap_or(0))
}

fn refuse_newer(schema: &Schema, current: i32) -> Result<()> {
    if current > SCHEMA_VERSION {
        return Err(Error::InvalidConfig(format!(
            "the flagship-worker tables in schema `{}` are at version {current}, newer than this build knows \
             (version {SCHEMA_VERSION}): a newer flagship-worker migrated them; upgrade this one, nothing was changed",
            schema.name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (n, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, n as i32 + 1, "{}", migration.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
