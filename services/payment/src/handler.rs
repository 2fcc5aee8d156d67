//! One function per payment command, each inside the participant transaction: authorize (or
//! decline), void (a no-op for anything not authorized), capture.

use contracts::commands::{AuthorizePayment, CapturePayment, VoidPayment};
use contracts::replies::{Done, PaymentAuthorized, Rejected};
use contracts::{Command, Meta, Reply};
use infra::participant::{HandlerError, MessageHandler};
use sqlx::PgConnection;

use crate::domain;
use crate::gateway::Gateway;

#[derive(Clone)]
pub struct PaymentHandler {
    pub gateway: Gateway,
    pub limit_cents: i64,
}

impl MessageHandler<Command> for PaymentHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        meta: &Meta,
        command: Command,
    ) -> Result<Option<Reply>, HandlerError> {
        let key = meta.dedupe_key();
        let order_id = match &command {
            Command::AuthorizePayment(c) => c.order_id,
            Command::VoidPayment(c) => c.order_id,
            Command::CapturePayment(c) => c.order_id,
            _ => uuid::Uuid::nil(),
        };
        // One order's commands never interleave (a void racing its own late authorize).
        infra::db::lock_entity(tx, order_id).await?;
        let reply = match command {
            Command::AuthorizePayment(c) => self.authorize(tx, &key, c).await?,
            Command::VoidPayment(c) => self.void(tx, &key, c).await?,
            Command::CapturePayment(c) => self.capture(tx, &key, c).await?,
            other => {
                return Err(HandlerError::Permanent {
                    code: "unexpected_command",
                    message: format!("payment does not handle {other:?}"),
                });
            }
        };
        Ok(Some(reply))
    }
}

/// Status and authorization id of an order's payment, locked; `(None, None)` if there is none.
async fn state(tx: &mut PgConnection, order_id: uuid::Uuid) -> Result<(Option<String>, Option<String>), sqlx::Error> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, authorization_id FROM payments WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(tx)
            .await?;
    Ok(row.map_or((None, None), |(s, a)| (Some(s), a)))
}

impl PaymentHandler {
    async fn authorize(&self, tx: &mut PgConnection, key: &str, c: AuthorizePayment) -> Result<Reply, HandlerError> {
        let existing: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, authorization_id, decline_code FROM payments WHERE order_id = $1 FOR UPDATE",
        )
        .bind(c.order_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((status, auth, code)) = existing {
            // Answer what was decided before; never a second authorization.
            return Ok(match (status.as_str(), auth) {
                ("declined", _) => Reply::PaymentDeclined(Rejected {
                    order_id: c.order_id,
                    code: code.unwrap_or_else(|| "declined".into()),
                    reason: "declined before".into(),
                }),
                ("voided", None) => Reply::PaymentDeclined(Rejected {
                    order_id: c.order_id,
                    code: "voided_before_authorization".into(),
                    reason: "the order was cancelled before this authorization arrived".into(),
                }),
                (_, Some(authorization_id)) => {
                    Reply::PaymentAuthorized(PaymentAuthorized { order_id: c.order_id, authorization_id })
                }
                (other, None) => {
                    return Err(HandlerError::Permanent {
                        code: "inconsistent_payment",
                        message: format!("payment {} is {other} without an authorization id", c.order_id),
                    });
                }
            });
        }
        if let Some(d) = domain::decline(c.amount_cents, &c.currency, self.limit_cents) {
            sqlx::query(
                "INSERT INTO payments (order_id, customer_id, amount_cents, currency, status, decline_code)
                 VALUES ($1, $2, $3, $4, 'declined', $5)",
            )
            .bind(c.order_id)
            .bind(&c.customer_id)
            .bind(c.amount_cents)
            .bind(&c.currency)
            .bind(d.code)
            .execute(&mut *tx)
            .await?;
            tracing::info!(order_id = %c.order_id, code = d.code, "payment declined");
            return Ok(Reply::PaymentDeclined(Rejected {
                order_id: c.order_id,
                code: d.code.into(),
                reason: d.reason,
            }));
        }
        let authorization_id = self.gateway.authorize(key, c.amount_cents, &c.currency).await?;
        sqlx::query(
            "INSERT INTO payments (order_id, customer_id, amount_cents, currency, status, authorization_id)
             VALUES ($1, $2, $3, $4, 'authorized', $5)",
        )
        .bind(c.order_id)
        .bind(&c.customer_id)
        .bind(c.amount_cents)
        .bind(&c.currency)
        .bind(&authorization_id)
        .execute(&mut *tx)
        .await?;
        Ok(Reply::PaymentAuthorized(PaymentAuthorized { order_id: c.order_id, authorization_id }))
    }

    async fn void(&self, tx: &mut PgConnection, key: &str, c: VoidPayment) -> Result<Reply, HandlerError> {
        let (status, auth) = state(tx, c.order_id).await?;
        match status.as_deref() {
            Some("authorized") => {
                self.gateway.void(key, auth.as_deref().unwrap_or_default()).await?;
                sqlx::query("UPDATE payments SET status = 'voided', updated_at = now() WHERE order_id = $1")
                    .bind(c.order_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some("captured") => {
                return Err(HandlerError::Permanent {
                    code: "void_after_capture",
                    message: format!("payment {} is captured and cannot be voided", c.order_id),
                });
            }
            None => {
                // Voided before it was authorized (the authorize command is late or lost): leave a
                // tombstone so a late authorize is refused instead of holding money forever.
                sqlx::query(
                    "INSERT INTO payments (order_id, customer_id, amount_cents, currency, status, decline_code)
                     VALUES ($1, '', 0, '', 'voided', 'voided_before_authorization') ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(c.order_id)
                .execute(&mut *tx)
                .await?;
                tracing::info!(order_id = %c.order_id, "void before authorization: tombstone recorded");
            }
            // Declined or already voided: nothing to undo.
            _ => tracing::info!(order_id = %c.order_id, status = ?status, "void is a no-op"),
        }
        Ok(Reply::PaymentVoided(Done { order_id: c.order_id }))
    }

    async fn capture(&self, tx: &mut PgConnection, key: &str, c: CapturePayment) -> Result<Reply, HandlerError> {
        let (status, auth) = state(tx, c.order_id).await?;
        match status.as_deref() {
            Some("authorized") => {
                self.gateway.capture(key, auth.as_deref().unwrap_or_default()).await?;
                sqlx::query("UPDATE payments SET status = 'captured', updated_at = now() WHERE order_id = $1")
                    .bind(c.order_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some("captured") => {}
            other => {
                return Err(HandlerError::Permanent {
                    code: "capture_without_authorization",
                    message: format!("payment {} cannot be captured: {}", c.order_id, other.unwrap_or("unknown")),
                });
            }
        }
        Ok(Reply::PaymentCaptured(Done { order_id: c.order_id }))
    }
}
