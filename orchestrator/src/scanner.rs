//! The timeout scanner: no saga waits forever unseen. It sleeps until the earliest step deadline
//! (or `scan_interval`, whichever is sooner), then lets the engine handle every due saga: re-send
//! with backoff, compensate, or mark FAILED, as the kernel decides. Several orchestrators may scan
//! at once; a due saga is locked with `SKIP LOCKED`, so each is handled once.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::store;

const BATCH: i64 = 200;

pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let interval = engine.settings.scan_interval;
    loop {
        let handled = match engine.expire_due(BATCH).await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "timeout scan failed; will try again");
                0
            }
        };
        if handled as i64 >= BATCH {
            continue;
        }
        let wait = match store::next_deadline(&engine.pool).await {
            Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(interval),
            _ => interval,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {},
        }
    }
    tracing::info!("timeout scanner stopped");
}
