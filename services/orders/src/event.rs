//! A history event as the read side takes it, decoded leniently and validated, without IO.
//!
//! The wire shape is [`contracts::history::HistoryEvent`]; this module reads it field by field so
//! that an event type this build does not know is not a decoding error: every event carries the
//! saga's readable facts (`status`, `step`, `failure_reason`), which is all the summary needs from
//! a type it cannot interpret. Such an event is applied for those facts and counted under the
//! label `unknown` (see ARCHITECTURE.md, Read side). What cannot be applied at all (not JSON, a
//! missing field, a position or version below 1, an unknown status, a `saga.started` without its
//! order) is an [`EventError`]: the consumer dead-letters it with the reason.

use chrono::{DateTime, Utc};
use contracts::history::{EventMetadata, EventType};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// The statuses a saga can have, as events carry them.
pub const STATUSES: [&str; 5] = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"];

/// Why an event cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not a history event: not JSON, or a field missing or of the wrong type.
    #[error("not a history event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A history event whose values break the contract.
    #[error("invalid history event at position {position}: {message}")]
    Invalid { position: i64, message: String },
}

impl EventError {
    /// The dead-letter reason code (a bounded label).
    pub fn code(&self) -> &'static str {
        match self {
            EventError::Malformed(_) => "malformed",
            EventError::Invalid { .. } => "invalid_event",
        }
    }
}

/// The event's type: one this build knows, or another (applied for its readable facts only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Known(EventType),
    Unknown(String),
}

impl Kind {
    /// A bounded metric label: the type's name, or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Known(t) => t.as_str(),
            Kind::Unknown(_) => "unknown",
        }
    }

    /// The type's name as the event spelled it.
    pub fn name(&self) -> &str {
        match self {
            Kind::Known(t) => t.as_str(),
            Kind::Unknown(s) => s,
        }
    }
}

/// The order as `saga.started` carries it (payload schema 2; schema 1 had no `total_cents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub customer_id: String,
    pub currency: String,
    pub total_cents: i64,
    /// Units ordered: the sum of the items' quantities.
    pub item_count: i64,
}

/// One validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub position: i64,
    pub order_id: Uuid,
    pub version: i64,
    pub kind: Kind,
    pub recorded_at: DateTime<Utc>,
    pub status: String,
    pub step: Option<String>,
    pub failure_reason: Option<String>,
    /// For `saga.started`: the order.
    pub started: Option<Started>,
}

/// An event as it travels (a message body, one event of a feed page), before validation.
#[derive(Deserialize)]
pub(crate) struct Wire {
    position: i64,
    order_id: Uuid,
    version: i64,
    event_type: String,
    #[serde(default)]
    payload: Value,
    metadata: EventMetadata,
    status: String,
    step: Option<String>,
    failure_reason: Option<String>,
}

#[derive(Deserialize)]
struct StartedPayload {
    order: OrderPayload,
    total_cents: Option<i64>,
}

#[derive(Deserialize)]
struct OrderPayload {
    customer_id: String,
    currency: String,
    items: Vec<ItemPayload>,
}

#[derive(Deserialize)]
struct ItemPayload {
    quantity: i64,
    unit_price_cents: i64,
}

impl Event {
    /// Decode a message body (or one event of a feed page).
    pub fn decode(body: &[u8]) -> Result<Event, EventError> {
        Event::from_wire(serde_json::from_slice(body)?)
    }

    /// Decode one event of a feed page.
    pub fn from_value(value: Value) -> Result<Event, EventError> {
        Event::from_wire(serde_json::from_value(value)?)
    }

    /// Validate an event decoded from the wire.
    pub(crate) fn from_wire(w: Wire) -> Result<Event, EventError> {
        let invalid = |message: String| EventError::Invalid { position: w.position, message };
        if w.position < 1 {
            return Err(invalid(format!("position must be at least 1, got {}", w.position)));
        }
        if w.version < 1 {
            return Err(invalid(format!("version must be at least 1, got {}", w.version)));
        }
        if w.metadata.correlation_id != w.order_id {
            return Err(invalid(format!(
                "metadata.correlation_id {} is not the order id {}",
                w.metadata.correlation_id, w.order_id
            )));
        }
        if !STATUSES.contains(&w.status.as_str()) {
            return Err(invalid(format!("unknown status {:?} (expected one of {})", w.status, STATUSES.join(", "))));
        }
        let kind = EventType::parse(&w.event_type).map_or_else(|| Kind::Unknown(w.event_type.clone()), Kind::Known);
        let started = match kind {
            Kind::Known(EventType::SagaStarted) => Some(started(&w.payload).map_err(invalid)?),
            _ => None,
        };
        Ok(Event {
            position: w.position,
            order_id: w.order_id,
            version: w.version,
            kind,
            recorded_at: w.metadata.recorded_at,
            status: w.status,
            step: w.step,
            failure_reason: w.failure_reason,
            started,
        })
    }
}

/// The order of a `saga.started` payload; its total when the payload has none (schema 1).
fn started(payload: &Value) -> Result<Started, String> {
    let p = StartedPayload::deserialize(payload).map_err(|e| format!("saga.started payload without its order: {e}"))?;
    let mut item_count = 0i64;
    let mut total = 0i64;
    for (i, item) in p.order.items.iter().enumerate() {
        if item.quantity < 1 || item.unit_price_cents < 0 {
            return Err(format!("saga.started payload: items[{i}] has a quantity below 1 or a negative price"));
        }
        item_count = item_count.checked_add(item.quantity).ok_or("saga.started payload: too many items")?;
        total = item
            .quantity
            .checked_mul(item.unit_price_cents)
            .and_then(|line| total.checked_add(line))
            .ok_or("saga.started payload: the total overflows")?;
    }
    let total_cents = p.total_cents.unwrap_or(total);
    if total_cents < 0 {
        return Err(format!("saga.started payload: negative total_cents {total_cents}"));
    }
    Ok(Started { customer_id: p.order.customer_id, currency: p.order.currency, total_cents, item_count })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A history event as the orchestrator writes it.
    pub fn wire(position: i64, order: Uuid, version: i64, event_type: &str, status: &str) -> Value {
        json!({
            "position": position, "order_id": order, "version": version, "event_type": event_type,
            "schema_version": 1, "payload": {},
            "metadata": {"causation_id": null, "correlation_id": order, "recorded_at": "2026-12-01T10:00:00Z"},
            "status": status, "step": null, "failure_reason": null, "note": "n"
        })
    }

    #[test]
    fn a_started_event_carries_its_order_and_total() {
        let id = Uuid::now_v7();
        let mut w = wire(1, id, 1, "saga.started", "RUNNING");
        w["schema_version"] = json!(2);
        w["payload"] = json!({"definition": "order", "definition_version": 1, "total_cents": 3998,
            "order": {"customer_id": "c-1", "currency": "EUR", "shipping_address": {},
                      "items": [{"sku": "a", "quantity": 2, "unit_price_cents": 1999}]}});
        let e = Event::from_value(w.clone()).unwrap();
        assert_eq!(e.kind, Kind::Known(EventType::SagaStarted));
        assert_eq!(
            e.started,
            Some(Started { customer_id: "c-1".into(), currency: "EUR".into(), total_cents: 3998, item_count: 2 })
        );
        // Schema 1: no total, computed from the items.
        w["payload"].as_object_mut().unwrap().remove("total_cents");
        assert_eq!(Event::from_value(w).unwrap().started.unwrap().total_cents, 3998);
    }

    #[test]
    fn an_unknown_type_is_kept_for_its_facts_and_bad_values_are_refused_with_a_reason() {
        let id = Uuid::now_v7();
        let e = Event::from_value(wire(3, id, 2, "saga.renamed", "RUNNING")).unwrap();
        assert_eq!((e.kind.label(), e.kind.name()), ("unknown", "saga.renamed"));
        for (w, needle) in [
            (wire(0, id, 1, "reply.received", "RUNNING"), "position"),
            (wire(1, id, 0, "reply.received", "RUNNING"), "version"),
            (wire(1, id, 1, "reply.received", "DONE"), "unknown status"),
            (wire(1, id, 1, "saga.started", "RUNNING"), "without its order"),
        ] {
            let err = Event::from_value(w).unwrap_err();
            assert_eq!(err.code(), "invalid_event");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let mut w = wire(1, id, 1, "reply.received", "RUNNING");
        w["metadata"]["correlation_id"] = json!(Uuid::now_v7());
        assert!(Event::from_value(w).unwrap_err().to_string().contains("correlation_id"));
        let err = Event::decode(b"{\"position\": 1").unwrap_err();
        assert_eq!(err.code(), "malformed");
    }
}
