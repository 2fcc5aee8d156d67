//! Stock row locks are taken in one global order (by SKU) by every inventory command, so
//! reservations, releases and commits of orders whose SKUs overlap never deadlock: many
//! concurrent transactions call the handler's command functions directly (as the participant
//! does: advisory lock on the order, then the command), on a real database, and count the
//! transactions PostgreSQL aborted with `deadlock_detected` (40P01). Stock is conserved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use contracts::Reply;
use contracts::commands::{CommitInventory, ReleaseInventory, ReserveInventory};
use contracts::order::StockLine;
use infra::participant::HandlerError;
use infra::testing::TestDb;
use inventory::handler;
use sqlx::PgPool;
use uuid::Uuid;

const TASKS: usize = 8;
const ROUNDS: usize = 40;
const ON_HAND: i64 = 1_000_000;
const SKUS: [&str; 5] = ["SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5"];

/// Overlapping SKU sets, listed in different orders (the order's lines are not sorted).
const ORDERS: [&[&str]; 8] = [
    &["SKU-1", "SKU-2", "SKU-3"],
    &["SKU-3", "SKU-2", "SKU-1"],
    &["SKU-2", "SKU-3", "SKU-4"],
    &["SKU-5", "SKU-4", "SKU-3", "SKU-2", "SKU-1"],
    &["SKU-4", "SKU-1"],
    &["SKU-5", "SKU-3", "SKU-1"],
    &["SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5"],
    &["SKU-2", "SKU-5"],
];

/// One command, in its own transaction.
#[derive(Debug, Clone)]
enum Step {
    Reserve(ReserveInventory),
    Release(ReleaseInventory),
    Commit(CommitInventory),
}

/// A database with the inventory schema and a large stock of every SKU in [`SKUS`].
async fn database() -> (TestDb, PgPool) {
    let db = TestDb::create("invlock").await;
    let pool = infra::db::connect(&db.url, TASKS as u32 + 1).await.expect("connect");
    infra::db::migrate(&pool, &inventory::MIGRATOR).await.expect("migrate");
    sqlx::query("INSERT INTO stock (sku, on_hand, received) SELECT sku, $2, $2 FROM UNNEST($1::text[]) AS s(sku)")
        .bind(SKUS.map(String::from).to_vec())
        .bind(ON_HAND)
        .execute(&pool)
        .await
        .expect("seed stock");
    // Statistics, as a live database has them (autovacuum): with them the planner joins a small
    // `stock` by a sequential scan, which visits rows in heap order, not SKU order.
    sqlx::query("ANALYZE stock, reservations").execute(&pool).await.expect("analyze");
    (db, pool)
}

/// `BEGIN`; the order's advisory lock; the command; `COMMIT`, as the participant runs it.
async fn run_once(pool: &PgPool, step: Step) -> Result<Reply, HandlerError> {
    let mut tx = pool.begin().await?;
    // A deadlock is looked for after `deadlock_timeout` (1 s by default); look sooner, so a
    // regression fails in seconds rather than minutes. It does not make deadlocks likelier.
    sqlx::query("SET LOCAL deadlock_timeout = '50ms'").execute(&mut *tx).await?;
    let order_id = match &step {
        Step::Reserve(c) => c.order_id,
        Step::Release(c) => c.order_id,
        Step::Commit(c) => c.order_id,
    };
    infra::db::lock_entity(&mut tx, order_id).await?;
    let reply = match step {
        Step::Reserve(c) => handler::reserve(&mut tx, c).await?,
        Step::Release(c) => handler::release(&mut tx, c).await?,
        Step::Commit(c) => handler::commit(&mut tx, c).await?,
    };
    tx.commit().await?;
    Ok(reply)
}

/// Run `step` until it commits, counting the deadlocks that aborted it. Any other error fails.
async fn run(pool: &PgPool, step: Step, deadlocks: &AtomicUsize) -> Reply {
    for _ in 0..50 {
        match run_once(pool, step.clone()).await {
            Ok(reply) => return reply,
            // `HandlerError` maps SQLSTATE 40P01 (and 40001, which READ COMMITTED never raises)
            // to `Conflict`; the message says which.
            Err(HandlerError::Conflict(m)) if m.contains("deadlock detected") => {
                deadlocks.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("{step:?} failed: {e}"),
        }
    }
    panic!("{step:?} deadlocked 50 times in a row")
}

/// One worker: `ROUNDS` orders, each reserved and then committed or released. Returns the units
/// it committed per SKU.
async fn worker(pool: PgPool, task: usize, deadlocks: Arc<AtomicUsize>) -> BTreeMap<String, i64> {
    let mut committed = BTreeMap::new();
    for round in 0..ROUNDS {
        let order_id = Uuid::new_v4();
        let skus = ORDERS[(task * 3 + round) % ORDERS.len()];
        let quantity = 1 + ((task + round) % 3) as u32;
        let items = skus.iter().map(|s| StockLine { sku: (*s).into(), quantity }).collect();
        let reserved = run(&pool, Step::Reserve(ReserveInventory { order_id, items }), &deadlocks).await;
        assert!(matches!(reserved, Reply::InventoryReserved(_)), "{reserved:?}");
        if (task + round).is_multiple_of(2) {
            let done = run(&pool, Step::Commit(CommitInventory { order_id }), &deadlocks).await;
            assert!(matches!(done, Reply::InventoryCommitted(_)), "{done:?}");
            for sku in skus {
                *committed.entry((*sku).to_owned()).or_insert(0) += i64::from(quantity);
            }
        } else {
            let done = run(&pool, Step::Release(ReleaseInventory { order_id }), &deadlocks).await;
            assert!(matches!(done, Reply::InventoryReleased(_)), "{done:?}");
        }
    }
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_release_and_commit_over_overlapping_skus_never_deadlock() {
    let (_db, pool) = database().await;
    let deadlocks = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..TASKS).map(|task| tokio::spawn(worker(pool.clone(), task, deadlocks.clone()))).collect();
    let mut committed: BTreeMap<String, i64> = BTreeMap::new();
    for w in workers {
        for (sku, units) in w.await.expect("worker finishes") {
            *committed.entry(sku).or_insert(0) += units;
        }
    }
    let deadlocks = deadlocks.load(Ordering::Relaxed);
    let stock: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM stock ORDER BY sku").fetch_all(&pool).await.unwrap();
    for (sku, on_hand, reserved) in &stock {
        let gone = committed.get(sku).copied().unwrap_or(0);
        assert_eq!((*on_hand, *reserved), (ON_HAND - gone, 0), "{sku}: committed {gone}, nothing left held");
    }
    let (held, committed_rows): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'held'), count(*) FILTER (WHERE status = 'committed')
         FROM reservations",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, 0, "every reservation was committed or released");
    assert!(committed_rows > 0);
    assert_eq!(deadlocks, 0, "transactions aborted by deadlock_detected (40P01)");
}
