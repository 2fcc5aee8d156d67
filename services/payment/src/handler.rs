//! The payment commands as a [`CallingHandler`]: `begin` applies the rules of
//! [`domain`](crate::domain) to the order's payment row and either answers or records an intent
//! (`authorizing`, `voiding`, `capturing`); `call` talks to the gateway with no transaction open;
//! `finish` records the answer. Both transactions take the order's advisory lock first, so one
//! order's commands never interleave inside a transaction.

use contracts::commands::{AuthorizePayment, CapturePayment, VoidPayment};
use contracts::replies::{Done, PaymentAuthorized, Rejected};
use contracts::{Command, Meta, Reply};
use infra::participant::{CallingHandler, HandlerError, Step};
use infra::resilience::CallError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, OnAuthorize, OnCapture, OnVoid, Stored, VOIDED_BEFORE_AUTHORIZATION};
use crate::gateway::Gateway;

#[derive(Clone)]
pub struct PaymentHandler {
    pub gateway: Gateway,
    pub limit_cents: i64,
}

/// A gateway call, as its intent records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayCall {
    Authorize { order_id: Uuid, amount_cents: i64, currency: String },
    Capture { order_id: Uuid, authorization_id: String },
    Void { order_id: Uuid },
}

/// What the gateway answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayAnswer {
    Authorized(String),
    Done,
    /// A permanent refusal (4xx): nothing was applied.
    Refused(String),
}

impl CallingHandler<Command> for PaymentHandler {
    type Call = GatewayCall;
    type Answer = GatewayAnswer;

    async fn begin(
        &self,
        tx: &mut PgConnection,
        _meta: &Meta,
        command: Command,
    ) -> Result<Step<GatewayCall>, HandlerError> {
        let order_id = command.order_id();
        let stored = stored(tx, order_id).await?;
        match command {
            Command::AuthorizePayment(c) => self.authorize(tx, stored.as_ref(), c).await,
            Command::VoidPayment(c) => void(tx, stored.as_ref(), c).await,
            Command::CapturePayment(c) => capture(tx, stored.as_ref(), c).await,
            other => Err(HandlerError::Permanent {
                code: "unexpected_command",
                message: format!("payment does not handle {other:?}"),
            }),
        }
    }

    async fn call(&self, call: &GatewayCall) -> Result<GatewayAnswer, HandlerError> {
        let done = match call {
            GatewayCall::Authorize { order_id, amount_cents, currency } => {
                self.gateway.authorize(*order_id, *amount_cents, currency).await.map(GatewayAnswer::Authorized)
            }
            GatewayCall::Capture { order_id, authorization_id } => {
                self.gateway.capture(*order_id, authorization_id).await.map(|()| GatewayAnswer::Done)
            }
            GatewayCall::Void { order_id } => self.gateway.void(*order_id).await.map(|()| GatewayAnswer::Done),
        };
        match done {
            Ok(answer) => Ok(answer),
            Err(CallError::Permanent { error, .. }) => Ok(GatewayAnswer::Refused(error.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish(
        &self,
        tx: &mut PgConnection,
        _meta: &Meta,
        call: GatewayCall,
        answer: GatewayAnswer,
    ) -> Result<Option<Reply>, HandlerError> {
        let order_id = match &call {
            GatewayCall::Authorize { order_id, .. }
            | GatewayCall::Capture { order_id, .. }
            | GatewayCall::Void { order_id } => *order_id,
        };
        let stored = stored(tx, order_id).await?;
        let status = stored.as_ref().map(|s| s.status.as_str());
        let reply = match (call, answer) {
            (GatewayCall::Authorize { .. }, answer) => authorized(tx, order_id, stored.as_ref(), answer).await?,
            (GatewayCall::Capture { .. }, GatewayAnswer::Refused(why)) => {
                return Err(HandlerError::Permanent { code: "capture_refused", message: why });
            }
            (GatewayCall::Capture { .. }, _) => {
                set_status(tx, order_id, "captured", status.is_some_and(|s| s == "capturing")).await?;
                Reply::PaymentCaptured(Done { order_id })
            }
            (GatewayCall::Void { .. }, GatewayAnswer::Refused(why)) => {
                return Err(HandlerError::Permanent { code: "void_refused", message: why });
            }
            (GatewayCall::Void { .. }, _) => {
                set_status(tx, order_id, "voided", status.is_some_and(|s| s == "voiding")).await?;
                Reply::PaymentVoided(Done { order_id })
            }
        };
        Ok(Some(reply))
    }
}

/// Take the order's lock ([`infra::db::LOCK_ENTITY`]) and read its payment row, locked, in one
/// round trip.
async fn stored(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<Stored>, sqlx::Error> {
    let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT p.* FROM (SELECT {}::text AS locked) AS l, LATERAL (
            SELECT status, authorization_id, decline_code FROM payments WHERE order_id = $1 AND l.locked IS NOT NULL FOR UPDATE) AS p",
        infra::db::LOCK_ENTITY
    )))
    .bind(order_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|(status, authorization_id, decline_code)| Stored { status, authorization_id, decline_code }))
}

async fn set_status(tx: &mut PgConnection, order_id: Uuid, status: &str, when: bool) -> Result<(), sqlx::Error> {
    if when {
        sqlx::query("UPDATE payments SET status = $2, updated_at = now() WHERE order_id = $1")
            .bind(order_id)
            .bind(status)
            .execute(tx)
            .await?;
    }
    Ok(())
}

fn declined(order_id: Uuid, code: String, reason: String) -> Reply {
    Reply::PaymentDeclined(Rejected { order_id, code, reason })
}

impl PaymentHandler {
    async fn authorize(
        &self,
        tx: &mut PgConnection,
        stored: Option<&Stored>,
        c: AuthorizePayment,
    ) -> Result<Step<GatewayCall>, HandlerError> {
        let call =
            GatewayCall::Authorize { order_id: c.order_id, amount_cents: c.amount_cents, currency: c.currency.clone() };
        let reply = match domain::on_authorize(stored) {
            OnAuthorize::Resume => return Ok(Step::Call(call)),
            OnAuthorize::Authorized(authorization_id) => {
                Reply::PaymentAuthorized(PaymentAuthorized { order_id: c.order_id, authorization_id })
            }
            OnAuthorize::Declined(code) => declined(c.order_id, code, "declined before".into()),
            OnAuthorize::Inconsistent(what) => {
                return Err(HandlerError::Permanent {
                    code: "inconsistent_payment",
                    message: format!("payment {} is {what}", c.order_id),
                });
            }
            OnAuthorize::Start => {
                let refusal = domain::decline(c.amount_cents, &c.currency, self.limit_cents);
                let (status, code) = match &refusal {
                    Some(d) => ("declined", Some(d.code)),
                    None => ("authorizing", None),
                };
                sqlx::query(
                    "INSERT INTO payments (order_id, customer_id, amount_cents, currency, status, decline_code)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(c.order_id)
                .bind(&c.customer_id)
                .bind(c.amount_cents)
                .bind(&c.currency)
                .bind(status)
                .bind(code)
                .execute(&mut *tx)
                .await?;
                let Some(d) = refusal else { return Ok(Step::Call(call)) };
                tracing::info!(order_id = %c.order_id, code = d.code, "payment declined");
                declined(c.order_id, d.code.into(), d.reason)
            }
        };
        Ok(Step::Reply(Some(reply)))
    }
}

/// The gateway answered an authorize: record it, unless a void got there first.
async fn authorized(
    tx: &mut PgConnection,
    order_id: Uuid,
    stored: Option<&Stored>,
    answer: GatewayAnswer,
) -> Result<Reply, HandlerError> {
    let status = stored.map(|s| s.status.as_str());
    if status != Some("authorizing") {
        // A void (or a racing delivery) moved the row on; answer what it says now.
        return Ok(match domain::on_authorize(stored) {
            OnAuthorize::Authorized(authorization_id) => {
                Reply::PaymentAuthorized(PaymentAuthorized { order_id, authorization_id })
            }
            _ => declined(
                order_id,
                VOIDED_BEFORE_AUTHORIZATION.into(),
                "the order was cancelled before this authorization completed".into(),
            ),
        });
    }
    match answer {
        GatewayAnswer::Authorized(authorization_id) => {
            sqlx::query(
                "UPDATE payments SET status = 'authorized', authorization_id = $2, updated_at = now() WHERE order_id = $1",
            )
            .bind(order_id)
            .bind(&authorization_id)
            .execute(tx)
            .await?;
            Ok(Reply::PaymentAuthorized(PaymentAuthorized { order_id, authorization_id }))
        }
        GatewayAnswer::Refused(why) => {
            sqlx::query(
                "UPDATE payments SET status = 'declined', decline_code = 'gateway_refused', updated_at = now()
                 WHERE order_id = $1",
            )
            .bind(order_id)
            .execute(tx)
            .await?;
            tracing::info!(order_id = %order_id, reason = %why, "gateway refused the authorization");
            Ok(declined(order_id, "gateway_refused".into(), why))
        }
        GatewayAnswer::Done => Err(HandlerError::Permanent {
            code: "inconsistent_gateway",
            message: "the gateway answered an authorize without an authorization id".into(),
        }),
    }
}

async fn void(
    tx: &mut PgConnection,
    stored: Option<&Stored>,
    c: VoidPayment,
) -> Result<Step<GatewayCall>, HandlerError> {
    let order_id = c.order_id;
    match domain::on_void(stored) {
        OnVoid::Tombstone => {
            // The authorize is late or lost: a tombstone refuses it when it comes, and the gateway
            // is still asked, by the authorization's key, to void whatever it might hold.
            sqlx::query(
                "INSERT INTO payments (order_id, customer_id, amount_cents, currency, status, decline_code)
                 VALUES ($1, '', 0, '', 'voiding', $2)",
            )
            .bind(order_id)
            .bind(VOIDED_BEFORE_AUTHORIZATION)
            .execute(&mut *tx)
            .await?;
            tracing::info!(order_id = %order_id, "void before authorization: tombstone recorded");
        }
        OnVoid::Void => set_status(tx, order_id, "voiding", true).await?,
        OnVoid::Done => return Ok(Step::Reply(Some(Reply::PaymentVoided(Done { order_id })))),
        OnVoid::AfterCapture => {
            return Err(HandlerError::Permanent {
                code: "void_after_capture",
                message: format!("payment {order_id} is captured and cannot be voided"),
            });
        }
    }
    Ok(Step::Call(GatewayCall::Void { order_id }))
}

async fn capture(
    tx: &mut PgConnection,
    stored: Option<&Stored>,
    c: CapturePayment,
) -> Result<Step<GatewayCall>, HandlerError> {
    let order_id = c.order_id;
    match domain::on_capture(stored) {
        OnCapture::Capture(authorization_id) => {
            set_status(tx, order_id, "capturing", stored.is_some_and(|s| s.status == "authorized")).await?;
            Ok(Step::Call(GatewayCall::Capture { order_id, authorization_id }))
        }
        OnCapture::Done => Ok(Step::Reply(Some(Reply::PaymentCaptured(Done { order_id })))),
        OnCapture::NotAuthorized(status) => Err(HandlerError::Permanent {
            code: "capture_without_authorization",
            message: format!("payment {order_id} cannot be captured: {status}"),
        }),
    }
}
