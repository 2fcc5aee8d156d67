//! The floor's scratch database and tables: created before a floor run, the tables dropped
//! after it (the database stays, empty, for the next run).

use sqlx::PgPool;

/// The floor's tables, in the order they are dropped.
pub const TABLES: [&str; 5] = ["floor_sagas", "floor_outbox", "floor_inbox", "floor_business", "floor_replies_outbox"];

/// Created fresh at every floor run: the orchestrator's saga rows and outbox, the participant's
/// inbox, business rows and outbox. No index beyond the primary keys, like the thinnest real code.
/// Autovacuum leaves these short-lived tables alone, so the database's commits are the floor's.
const CREATE: &str = "
CREATE TABLE floor_sagas (id UUID PRIMARY KEY, step INT NOT NULL, status TEXT NOT NULL,
                          updated_at TIMESTAMPTZ NOT NULL DEFAULT now()) WITH (autovacuum_enabled = false);
CREATE TABLE floor_outbox (id UUID PRIMARY KEY, saga_id UUID NOT NULL, body BYTEA NOT NULL)
    WITH (autovacuum_enabled = false);
CREATE TABLE floor_inbox (message_id UUID PRIMARY KEY, received_at TIMESTAMPTZ NOT NULL DEFAULT now())
    WITH (autovacuum_enabled = false);
CREATE TABLE floor_business (id UUID PRIMARY KEY, saga_id UUID NOT NULL, step INT NOT NULL)
    WITH (autovacuum_enabled = false);
CREATE TABLE floor_replies_outbox (id UUID PRIMARY KEY, saga_id UUID NOT NULL, body BYTEA NOT NULL)
    WITH (autovacuum_enabled = false);
";

/// A database name we are willing to put into `CREATE DATABASE` (it cannot be a bind parameter).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Create `name` unless it exists.
pub async fn ensure_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_name(name),
        "--floor-database `{name}`: use lowercase letters, digits and `_` (at most 63, not starting with a digit)"
    );
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await?;
    if !exists {
        // The name was checked above: letters, digits and underscores only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(admin).await?;
    }
    Ok(())
}

/// Drop what a previous run may have left, then create the tables.
pub async fn create_tables(pool: &PgPool) -> anyhow::Result<()> {
    drop_tables(pool).await?;
    sqlx::raw_sql(CREATE).execute(pool).await?;
    Ok(())
}

pub async fn drop_tables(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", TABLES.join(", ")))).execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_reach_create_database() {
        assert!(valid_name("saga_floor"));
        assert!(valid_name("t_floor_1a2b"));
        for bad in ["", "Saga", "x\"; DROP DATABASE postgres; --", "1abc", "a-b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
