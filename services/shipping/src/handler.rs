//! The shipping commands as a [`CallingHandler`]: schedule (book) a shipment, or refuse an
//! unsupported destination; cancel a booking whose outcome the saga never learnt. `begin` applies
//! the rules of [`domain`](crate::domain) and either answers or records an intent (`booking`,
//! `cancelling`); `call` talks to the carrier with no transaction open; `finish` records the
//! answer. Both transactions take the order's advisory lock first.

use std::collections::BTreeSet;

use contracts::commands::{CancelShipment, ScheduleShipment};
use contracts::replies::{Done, Rejected, ShipmentScheduled};
use contracts::{Command, Meta, Reply};
use infra::participant::{CallingHandler, HandlerError, Step};
use infra::resilience::CallError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::carrier::Carrier;
use crate::domain::{self, OnCancel, OnSchedule, Stored};

#[derive(Clone)]
pub struct ShippingHandler {
    pub carrier: Carrier,
    pub unsupported: BTreeSet<String>,
}

/// A carrier call, as its intent records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierCall {
    Book { order_id: Uuid, country: String },
    Cancel { order_id: Uuid },
}

/// What the carrier answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierAnswer {
    Booked(String),
    Cancelled,
    /// A permanent refusal (4xx): nothing was applied.
    Refused(String),
}

impl CallingHandler<Command> for ShippingHandler {
    type Call = CarrierCall;
    type Answer = CarrierAnswer;

    async fn begin(
        &self,
        tx: &mut PgConnection,
        _meta: &Meta,
        command: Command,
    ) -> Result<Step<CarrierCall>, HandlerError> {
        let order_id = command.order_id();
        let stored = stored(tx, order_id).await?;
        match command {
            Command::ScheduleShipment(c) => self.schedule(tx, stored.as_ref(), c).await,
            Command::CancelShipment(c) => cancel(tx, stored.as_ref(), c).await,
            other => Err(HandlerError::Permanent {
                code: "unexpected_command",
                message: format!("shipping does not handle {other:?}"),
            }),
        }
    }

    async fn call(&self, call: &CarrierCall) -> Result<CarrierAnswer, HandlerError> {
        let done = match call {
            CarrierCall::Book { order_id, country } => {
                self.carrier.book(*order_id, country).await.map(CarrierAnswer::Booked)
            }
            CarrierCall::Cancel { order_id } => self.carrier.cancel(*order_id).await.map(|()| CarrierAnswer::Cancelled),
        };
        match done {
            Ok(answer) => Ok(answer),
            Err(CallError::Permanent { error, .. }) => Ok(CarrierAnswer::Refused(error.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish(
        &self,
        tx: &mut PgConnection,
        _meta: &Meta,
        call: CarrierCall,
        answer: CarrierAnswer,
    ) -> Result<Option<Reply>, HandlerError> {
        let order_id = match &call {
            CarrierCall::Book { order_id, .. } | CarrierCall::Cancel { order_id } => *order_id,
        };
        let stored = stored(tx, order_id).await?;
        let reply = match (call, answer) {
            (CarrierCall::Book { .. }, answer) => booked(tx, order_id, stored.as_ref(), answer).await?,
            (CarrierCall::Cancel { .. }, CarrierAnswer::Refused(why)) => {
                return Err(HandlerError::Permanent { code: "cancel_refused", message: why });
            }
            (CarrierCall::Cancel { .. }, _) => {
                if stored.is_some_and(|s| s.status == "cancelling") {
                    set_status(tx, order_id, "cancelled", None).await?;
                }
                Reply::ShipmentCancelled(Done { order_id })
            }
        };
        Ok(Some(reply))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    status: String,
    shipment_id: Uuid,
    tracking_number: Option<String>,
    country: String,
    reason: Option<String>,
}

/// Take the order's lock ([`infra::db::LOCK_ENTITY`]) and read its shipment row, locked, in one
/// round trip.
async fn stored(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<Stored>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT s.* FROM (SELECT {}::text AS locked) AS l, LATERAL (
            SELECT status, shipment_id, tracking_number, country, reason FROM shipments
            WHERE order_id = $1 AND l.locked IS NOT NULL FOR UPDATE
         ) AS s",
        infra::db::LOCK_ENTITY
    )))
    .bind(order_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|r| Stored {
        status: r.status,
        shipment_id: r.shipment_id,
        tracking_number: r.tracking_number,
        country: r.country,
        reason: r.reason,
    }))
}

async fn set_status(
    tx: &mut PgConnection,
    order_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE shipments SET status = $2, reason = coalesce($3, reason), updated_at = now() WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(status)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// The reply `on_schedule` gives for what is stored, or `None` if it means calling the carrier.
fn answer(order_id: Uuid, next: OnSchedule) -> Result<Option<Reply>, HandlerError> {
    Ok(match next {
        OnSchedule::Start | OnSchedule::Resume { .. } => None,
        OnSchedule::Scheduled { shipment_id, tracking_number } => {
            Some(Reply::ShipmentScheduled(ShipmentScheduled { order_id, shipment_id, tracking_number }))
        }
        OnSchedule::Rejected { code, reason } => {
            Some(Reply::ShipmentRejected(Rejected { order_id, code: code.into(), reason }))
        }
        OnSchedule::Inconsistent(what) => {
            return Err(HandlerError::Permanent { code: "inconsistent_shipment", message: what });
        }
    })
}

impl ShippingHandler {
    async fn schedule(
        &self,
        tx: &mut PgConnection,
        stored: Option<&Stored>,
        c: ScheduleShipment,
    ) -> Result<Step<CarrierCall>, HandlerError> {
        let order_id = c.order_id;
        match domain::on_schedule(stored) {
            OnSchedule::Resume { country } => return Ok(Step::Call(CarrierCall::Book { order_id, country })),
            OnSchedule::Start => {}
            next => return answer(order_id, next).map(Step::Reply),
        }
        if let Some(r) = domain::check_destination(&c.address.country, &self.unsupported) {
            tracing::info!(order_id = %order_id, code = r.code, "shipment refused");
            let reply = Reply::ShipmentRejected(Rejected { order_id, code: r.code.into(), reason: r.reason });
            return Ok(Step::Reply(Some(reply)));
        }
        sqlx::query("INSERT INTO shipments (order_id, shipment_id, country, status) VALUES ($1, $2, $3, 'booking')")
            .bind(order_id)
            .bind(Uuid::now_v7())
            .bind(&c.address.country)
            .execute(&mut *tx)
            .await?;
        Ok(Step::Call(CarrierCall::Book { order_id, country: c.address.country }))
    }
}

async fn cancel(
    tx: &mut PgConnection,
    stored: Option<&Stored>,
    c: CancelShipment,
) -> Result<Step<CarrierCall>, HandlerError> {
    let order_id = c.order_id;
    match domain::on_cancel(stored) {
        OnCancel::Tombstone => {
            sqlx::query(
                "INSERT INTO shipments (order_id, shipment_id, country, status, reason)
                 VALUES ($1, $2, '', 'cancelling', 'cancelled before it was booked')",
            )
            .bind(order_id)
            .bind(Uuid::now_v7())
            .execute(&mut *tx)
            .await?;
            tracing::info!(order_id = %order_id, "cancel before booking: tombstone recorded");
        }
        OnCancel::Cancel => set_status(tx, order_id, "cancelling", Some("cancelled by the saga")).await?,
        OnCancel::Done => return Ok(Step::Reply(Some(Reply::ShipmentCancelled(Done { order_id })))),
    }
    Ok(Step::Call(CarrierCall::Cancel { order_id }))
}

/// The carrier answered a booking: record it, unless a cancel got there first.
async fn booked(
    tx: &mut PgConnection,
    order_id: Uuid,
    stored: Option<&Stored>,
    answer_: CarrierAnswer,
) -> Result<Reply, HandlerError> {
    if stored.is_none_or(|s| s.status != "booking") {
        // A cancel (or a racing delivery) moved the row on; answer what it says now.
        let next = domain::on_schedule(stored);
        return answer(order_id, next)?.ok_or_else(|| HandlerError::Transient("the booking intent is gone".into()));
    }
    match answer_ {
        CarrierAnswer::Booked(tracking_number) => {
            let shipment_id: Uuid = sqlx::query_scalar(
                "UPDATE shipments SET status = 'scheduled', tracking_number = $2, updated_at = now()
                 WHERE order_id = $1 RETURNING shipment_id",
            )
            .bind(order_id)
            .bind(&tracking_number)
            .fetch_one(tx)
            .await?;
            Ok(Reply::ShipmentScheduled(ShipmentScheduled { order_id, shipment_id, tracking_number }))
        }
        CarrierAnswer::Refused(why) => {
            set_status(tx, order_id, "rejected", Some(&why)).await?;
            tracing::info!(order_id = %order_id, reason = %why, "the carrier refused the booking");
            Ok(Reply::ShipmentRejected(Rejected { order_id, code: "carrier_refused".into(), reason: why }))
        }
        CarrierAnswer::Cancelled => Err(HandlerError::Permanent {
            code: "inconsistent_carrier",
            message: "the carrier answered a booking with a cancellation".into(),
        }),
    }
}
