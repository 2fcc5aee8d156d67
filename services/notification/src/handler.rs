//! Records a notification for each order event. Dedupe by message id is done by the processor
//! (inbox), in the same transaction.

use contracts::{Event, Meta, Reply};
use infra::participant::{HandlerError, MessageHandler};
use sqlx::PgConnection;

use crate::domain;

#[derive(Debug, Clone, Default)]
pub struct NotificationHandler;

impl MessageHandler<Event> for NotificationHandler {
    async fn handle(&self, tx: &mut PgConnection, _meta: &Meta, event: Event) -> Result<Option<Reply>, HandlerError> {
        let n = domain::notice(&event);
        sqlx::query(
            "INSERT INTO notifications (order_id, kind, customer_id, message, reason) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.order_id())
        .bind(n.kind)
        .bind(&n.customer_id)
        .bind(&n.message)
        .bind(&n.reason)
        .execute(&mut *tx)
        .await?;
        tracing::info!(order_id = %event.order_id(), kind = n.kind, "notification recorded");
        Ok(None)
    }
}
