//! The one shipping command: schedule (book) a shipment, or refuse an unsupported destination.

use std::collections::BTreeSet;

use contracts::commands::ScheduleShipment;
use contracts::replies::{Rejected, ShipmentScheduled};
use contracts::{Command, Meta, Reply};
use infra::participant::{HandlerError, MessageHandler};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::carrier::Carrier;
use crate::domain;

#[derive(Clone)]
pub struct ShippingHandler {
    pub carrier: Carrier,
    pub unsupported: BTreeSet<String>,
}

impl MessageHandler<Command> for ShippingHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        meta: &Meta,
        command: Command,
    ) -> Result<Option<Reply>, HandlerError> {
        match command {
            Command::ScheduleShipment(c) => Ok(Some(self.schedule(tx, &meta.dedupe_key(), c).await?)),
            other => Err(HandlerError::Permanent {
                code: "unexpected_command",
                message: format!("shipping does not handle {other:?}"),
            }),
        }
    }
}

impl ShippingHandler {
    async fn schedule(&self, tx: &mut PgConnection, key: &str, c: ScheduleShipment) -> Result<Reply, HandlerError> {
        let existing: Option<(Uuid, String)> =
            sqlx::query_as("SELECT shipment_id, tracking_number FROM shipments WHERE order_id = $1")
                .bind(c.order_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((shipment_id, tracking_number)) = existing {
            return Ok(Reply::ShipmentScheduled(ShipmentScheduled {
                order_id: c.order_id,
                shipment_id,
                tracking_number,
            }));
        }
        if let Some(r) = domain::check_destination(&c.address.country, &self.unsupported) {
            tracing::info!(order_id = %c.order_id, code = r.code, "shipment refused");
            return Ok(Reply::ShipmentRejected(Rejected {
                order_id: c.order_id,
                code: r.code.into(),
                reason: r.reason,
            }));
        }
        let tracking_number = self.carrier.book(key, &c.address.country).await?;
        let shipment_id = Uuid::now_v7();
        // A racing duplicate with another key inserts nothing and answers the first booking.
        let (shipment_id, tracking_number): (Uuid, String) = sqlx::query_as(
            "WITH ins AS (
                INSERT INTO shipments (order_id, shipment_id, tracking_number, country) VALUES ($1, $2, $3, $4)
                ON CONFLICT (order_id) DO NOTHING RETURNING shipment_id, tracking_number
             )
             SELECT shipment_id, tracking_number FROM ins
             UNION ALL SELECT shipment_id, tracking_number FROM shipments WHERE order_id = $1
             LIMIT 1",
        )
        .bind(c.order_id)
        .bind(shipment_id)
        .bind(&tracking_number)
        .bind(&c.address.country)
        .fetch_one(&mut *tx)
        .await?;
        Ok(Reply::ShipmentScheduled(ShipmentScheduled { order_id: c.order_id, shipment_id, tracking_number }))
    }
}
