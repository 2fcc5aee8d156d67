//! PostgreSQL: the connection pool and migrations. Every process applies the plumbing's own
//! migrations (outbox, inbox; tracked in `_infra_migrations`) and then its own (tracked in
//! `_sqlx_migrations`) at start. Migrations take an advisory lock, so instances may start together.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPoolOptions;

/// How long a caller waits for a pooled connection (or for a new one to the database) before the
/// error: an HTTP request then answers `503` with `Retry-After`, a message takes a delayed retry
/// round.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect a pool of at most `size` connections (the outbox relay's listener holds one of them).
/// One connection is made directly first, so a refusal (`sorry, too many clients already`, a bad
/// password, a missing database) is reported in the database's own words instead of as a pool
/// timeout.
pub async fn connect(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await?.close().await?;
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        // No ping before each use: a dead connection fails its statement, and every caller
        // already treats a database error as transient (retried), so the ping is a wasted
        // round trip on every transaction.
        .test_before_acquire(false)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
}

/// Apply the plumbing's migrations, then the service's.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> Result<(), MigrateError> {
    let mut infra = sqlx::migrate!("./migrations");
    infra.dangerous_set_table_name("_infra_migrations");
    infra.run(pool).await?;
    service.run(pool).await
}

/// Serialize transactions about one entity (e.g. an order): a transaction-scoped advisory lock on
/// a 64-bit hash of `id`, released at commit or rollback. Participants take it first in every
/// command about an order, so a compensation racing its own (late) action (a void and the
/// authorize it undoes) never interleaves with it inside a transaction.
pub async fn lock_entity(conn: &mut sqlx::PgConnection, id: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {LOCK_ENTITY}"))).bind(id).execute(conn).await?;
    Ok(())
}

/// [`lock_entity`] as an SQL expression on `$1` (the entity's id), to take the lock in the same
/// statement as the first read of the transaction and save a round trip:
/// `SELECT r.* FROM (SELECT {LOCK_ENTITY}::text AS locked) AS l, LATERAL (SELECT ... WHERE ... AND
/// l.locked IS NOT NULL FOR UPDATE) AS r`. The read refers to the lock, so the lock is taken first
/// (a one-time filter before the scan), also when there is no row to read.
pub const LOCK_ENTITY: &str = "pg_advisory_xact_lock(hashtextextended($1::text, 0))";

/// Whether `e` says the database cannot be reached now (down, restarting, refusing connections,
/// the network or the pool gave up) rather than that a statement failed: the caller should answer
/// "try again shortly" (`503` with `Retry-After`), not report a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 57P01-03: the server is shutting down or starting;
        // 53300: too many connections.
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300"))
        }
        _ => false,
    }
}
