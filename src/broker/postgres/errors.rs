//! How PostgreSQL and pool errors become the crate's [`Error`].

use crate::error::{BoxError, Error};

/// The SQLSTATE classes and codes that mean "try again later": the
/// connection or the server is going away or not there yet, or a
/// concurrent transaction got in the way.
fn is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now
            | "53300" // too_many_connections
            | "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available
        )
}

/// Maps a sqlx error into the crate's [`Error`]: lost connections, an
/// exhausted pool and servers shutting down are [`Error::Unavailable`]; a
/// read-only database and other refusals are [`Error::Backend`].
pub(super) fn map_err(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut => Error::Unavailable(
            "no database connection became free within the acquire timeout: every connection of the pool \
             is busy (raise `PostgresBrokerBuilder::max_connections`, or hold fewer connections elsewhere) \
             or PostgreSQL cannot be reached"
                .into(),
        ),
        sqlx::Error::PoolClosed => Error::Unavailable("the broker's connection pool is closed".into()),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => {
            Error::Unavailable(Box::new(e))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if code == "25006" {
                return Error::Backend(
                    "PostgreSQL refused a write because the database is read-only (a standby, or \
                     `default_transaction_read_only` is on): point the broker at the primary; nothing was changed"
                        .into(),
                );
            }
            let boxed: BoxError = Box::new(sqlx::Error::Database(db));
            if is_transient(&code) {
                Error::Unavailable(boxed)
            } else {
                Error::Backend(boxed)
            }
        }
        other => Error::Backend(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient() {
        assert!(is_transient("08006"));
        assert!(is_transient("57P01"));
        assert!(is_transient("40P01"));
        assert!(!is_transient("23505"));
        assert!(!is_transient("25006"));
        assert!(map_err(sqlx::Error::PoolTimedOut).is_transient());
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(map_err(io).is_transient());
        assert!(!map_err(sqlx::Error::RowNotFound).is_transient());
    }
}
