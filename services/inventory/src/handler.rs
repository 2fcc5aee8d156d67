//! One function per inventory command, each inside the participant transaction (see
//! `infra::participant`): reserve all lines or none, release, commit.

use std::collections::BTreeMap;

use contracts::commands::{CommitInventory, ReleaseInventory, ReserveInventory};
use contracts::replies::{Done, InventoryReserved, Rejected};
use contracts::{Command, Meta, Reply};
use infra::participant::{HandlerError, MessageHandler};
use sqlx::PgConnection;

use crate::domain::{self, Level};

/// The inventory participant.
#[derive(Debug, Clone, Default)]
pub struct InventoryHandler;

impl MessageHandler<Command> for InventoryHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        _meta: &Meta,
        command: Command,
    ) -> Result<Option<Reply>, HandlerError> {
        let order_id = match &command {
            Command::ReserveInventory(c) => c.order_id,
            Command::ReleaseInventory(c) => c.order_id,
            Command::CommitInventory(c) => c.order_id,
            _ => uuid::Uuid::nil(),
        };
        // One order's commands never interleave (a release racing its own late reserve): each takes
        // the order's lock first (reserve within its first read, saving a round trip).
        let reply = match command {
            Command::ReserveInventory(c) => reserve(tx, c).await?,
            Command::ReleaseInventory(c) => {
                infra::db::lock_entity(tx, order_id).await?;
                release(tx, c).await?
            }
            Command::CommitInventory(c) => {
                infra::db::lock_entity(tx, order_id).await?;
                commit(tx, c).await?
            }
            other => {
                return Err(HandlerError::Permanent {
                    code: "unexpected_command",
                    message: format!("inventory does not handle {other:?}"),
                });
            }
        };
        Ok(Some(reply))
    }
}

/// Reserve every line of the order or none. Takes the order's lock ([`infra::db::LOCK_ENTITY`])
/// in its first read.
pub async fn reserve(tx: &mut PgConnection, c: ReserveInventory) -> Result<Reply, HandlerError> {
    // A re-delivery with another idempotency key must not hold twice, and a reserve that arrives
    // after its order was released must not hold at all.
    let (held, released): (i64, bool) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM reservations WHERE order_id = $1 AND l.locked IS NOT NULL),
                EXISTS (SELECT 1 FROM released_orders WHERE order_id = $1 AND l.locked IS NOT NULL)
         FROM (SELECT {}::text AS locked) AS l",
        infra::db::LOCK_ENTITY
    )))
    .bind(c.order_id)
    .fetch_one(&mut *tx)
    .await?;
    if released {
        tracing::warn!(order_id = %c.order_id, "reserve after release; refused");
        return Ok(Reply::InventoryRejected(Rejected {
            order_id: c.order_id,
            code: "released".into(),
            reason: "the order was cancelled before this reservation arrived".into(),
        }));
    }
    if held > 0 {
        tracing::warn!(order_id = %c.order_id, "order already has a reservation; answering reserved");
        return Ok(Reply::InventoryReserved(InventoryReserved { order_id: c.order_id }));
    }
    let demand = domain::demand(&c.items);
    let skus: Vec<String> = demand.keys().cloned().collect();
    // Lock the rows in SKU order: concurrent reservations never deadlock.
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .bind(&skus)
            .fetch_all(&mut *tx)
            .await?;
    let stock: BTreeMap<String, Level> =
        rows.into_iter().map(|(sku, on_hand, reserved)| (sku, Level { on_hand, reserved })).collect();
    if let Some(short) = domain::shortage(&demand, &stock) {
        tracing::info!(order_id = %c.order_id, code = short.code(), "reservation refused");
        return Ok(Reply::InventoryRejected(Rejected {
            order_id: c.order_id,
            code: short.code().into(),
            reason: short.reason(),
        }));
    }
    let quantities: Vec<i64> = demand.values().copied().collect();
    sqlx::query(
        "WITH d AS (SELECT * FROM UNNEST($2::text[], $3::int8[]) AS d(sku, quantity)),
              s AS (UPDATE stock SET reserved = stock.reserved + d.quantity FROM d WHERE stock.sku = d.sku RETURNING 1)
         INSERT INTO reservations (order_id, sku, quantity, status) SELECT $1, sku, quantity, 'held' FROM d",
    )
    .bind(c.order_id)
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    Ok(Reply::InventoryReserved(InventoryReserved { order_id: c.order_id }))
}

pub async fn release(tx: &mut PgConnection, c: ReleaseInventory) -> Result<Reply, HandlerError> {
    let (released, committed): (i64, i64) = sqlx::query_as(
        // `held` locks the order's stock rows in SKU order, as `reserve` does, so commands over
        // overlapping SKUs never deadlock; the stock update joins it, so it only touches rows
        // already locked.
        "WITH held AS MATERIALIZED (
            SELECT stock.sku FROM stock JOIN reservations r ON r.sku = stock.sku
            WHERE r.order_id = $1 AND r.status = 'held' ORDER BY stock.sku FOR UPDATE OF stock
         ), r AS (
            UPDATE reservations SET status = 'released', updated_at = now()
            WHERE order_id = $1 AND status = 'held' RETURNING sku, quantity
         ), s AS (
            UPDATE stock SET reserved = stock.reserved - r.quantity
            FROM r JOIN held ON held.sku = r.sku WHERE stock.sku = r.sku RETURNING 1
         )
         SELECT (SELECT count(*) FROM r),
                (SELECT count(*) FROM reservations WHERE order_id = $1 AND status = 'committed')",
    )
    .bind(c.order_id)
    .fetch_one(&mut *tx)
    .await?;
    if committed > 0 {
        tracing::warn!(order_id = %c.order_id, "release of a committed reservation: nothing to give back");
    } else if released == 0 {
        // Nothing held: maybe the reserve is late. Remember the release so it is refused.
        let known: bool = sqlx::query_scalar(
            "WITH t AS (INSERT INTO released_orders (order_id) SELECT $1
                        WHERE NOT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)
                        ON CONFLICT (order_id) DO NOTHING RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)",
        )
        .bind(c.order_id)
        .fetch_one(&mut *tx)
        .await?;
        tracing::info!(order_id = %c.order_id, known, "nothing held for this order; release is a no-op");
    }
    Ok(Reply::InventoryReleased(Done { order_id: c.order_id }))
}

pub async fn commit(tx: &mut PgConnection, c: CommitInventory) -> Result<Reply, HandlerError> {
    let (committed, already): (i64, i64) = sqlx::query_as(
        // `held` locks the order's stock rows in SKU order, as `reserve` does, so commands over
        // overlapping SKUs never deadlock; the stock update joins it, so it only touches rows
        // already locked.
        "WITH held AS MATERIALIZED (
            SELECT stock.sku FROM stock JOIN reservations r ON r.sku = stock.sku
            WHERE r.order_id = $1 AND r.status = 'held' ORDER BY stock.sku FOR UPDATE OF stock
         ), r AS (
            UPDATE reservations SET status = 'committed', updated_at = now()
            WHERE order_id = $1 AND status = 'held' RETURNING sku, quantity
         ), s AS (
            UPDATE stock SET on_hand = stock.on_hand - r.quantity, reserved = stock.reserved - r.quantity
            FROM r JOIN held ON held.sku = r.sku WHERE stock.sku = r.sku RETURNING 1
         )
         SELECT (SELECT count(*) FROM r),
                (SELECT count(*) FROM reservations WHERE order_id = $1 AND status = 'committed')",
    )
    .bind(c.order_id)
    .fetch_one(&mut *tx)
    .await?;
    if committed == 0 && already == 0 {
        // Commit comes only after a successful reserve: a missing reservation is lost data.
        return Err(HandlerError::Permanent {
            code: "unknown_reservation",
            message: format!("no held or committed reservation for order {}", c.order_id),
        });
    }
    Ok(Reply::InventoryCommitted(Done { order_id: c.order_id }))
}
