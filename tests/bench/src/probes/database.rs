//! The databases' commit counters: `pg_stat_database.xact_commit` summed over a set of
//! databases. Every committed transaction counts, read-only statements run outside a transaction
//! too; an idle backend reports its counts within 10 s.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// An administrator's connection to PostgreSQL (one connection: it only reads statistics and
/// creates the floor's database).
pub async fn admin_pool(admin_url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(admin_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL at --postgres-admin-url: {e}"))
}

/// Sums the commits of `databases`.
#[derive(Debug, Clone)]
pub struct DatabaseProbe {
    admin: PgPool,
    databases: Vec<String>,
}

impl DatabaseProbe {
    /// Every database must exist: a typo would silently count nothing.
    pub async fn new(admin: PgPool, databases: Vec<String>) -> anyhow::Result<DatabaseProbe> {
        let found: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = ANY($1)")
            .bind(&databases)
            .fetch_all(&admin)
            .await?;
        let missing: Vec<&String> = databases.iter().filter(|d| !found.contains(d)).collect();
        anyhow::ensure!(
            missing.is_empty(),
            "no such database: {} (give the platform's databases with --databases)",
            missing.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
        );
        Ok(DatabaseProbe { admin, databases })
    }

    /// Commits so far, summed.
    pub async fn commits(&self) -> anyhow::Result<i64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(xact_commit), 0)::bigint FROM pg_stat_database WHERE datname = ANY($1)",
        )
        .bind(&self.databases)
        .fetch_one(&self.admin)
        .await?;
        Ok(n)
    }
}
