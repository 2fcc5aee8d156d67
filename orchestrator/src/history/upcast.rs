//! Schema evolution of stored events: a payload written under an older schema version of its type
//! is upcast, step by step, to the version this build writes ([`current_schema`]) whenever it is
//! read (fold, feed, publication). Stored rows are never rewritten.
//!
//! The versions so far:
//! - `saga.started` 1 → 2: `total_cents` added (the order's lines summed), so readers need not
//!   price an order themselves. Version 1 is what the migration to the event store wrote for the
//!   sagas that existed before it.
//! - every other type: version 1.
//!
//! Golden fixtures of every type at every version live in `orchestrator/fixtures/history/`
//! (`<type>.v<N>.json`); the tests below read each one with this build.

use contracts::history::{EventType, current_schema};
use contracts::order::OrderRequest;
use serde_json::Value;

/// Why a stored payload cannot be read by this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("{event_type} schema version {version} is not one this build reads (1 to {current})")]
    UnsupportedVersion { event_type: &'static str, version: i32, current: u32 },
    #[error("{event_type} v{version} payload cannot be upcast: {why}")]
    Malformed { event_type: &'static str, version: i32, why: String },
}

/// The payload of a `event_type` event stored under `version`, in the current schema.
pub fn upcast(event_type: &str, version: i32, payload: Value) -> Result<(EventType, Value), UpcastError> {
    let t = EventType::parse(event_type).ok_or_else(|| UpcastError::UnknownType(event_type.to_owned()))?;
    let current = current_schema(t);
    if version < 1 || u32::try_from(version).is_ok_and(|v| v > current) {
        return Err(UpcastError::UnsupportedVersion { event_type: t.as_str(), version, current });
    }
    let mut payload = payload;
    let mut at = version;
    while u32::try_from(at).is_ok_and(|v| v < current) {
        payload = step(t, at, payload)?;
        at += 1;
    }
    Ok((t, payload))
}

/// One version up.
fn step(t: EventType, from: i32, mut payload: Value) -> Result<Value, UpcastError> {
    let malformed = |why: String| UpcastError::Malformed { event_type: t.as_str(), version: from, why };
    match (t, from) {
        (EventType::SagaStarted, 1) => {
            let order: OrderRequest = serde_json::from_value(payload.get("order").cloned().unwrap_or(Value::Null))
                .map_err(|e| malformed(format!("order: {e}")))?;
            let total = order.total_cents().ok_or_else(|| malformed("the order's total overflows".into()))?;
            match payload.as_object_mut() {
                Some(fields) => fields.insert("total_cents".into(), total.into()),
                None => return Err(malformed("not an object".into())),
            };
            Ok(payload)
        }
        _ => Err(malformed(format!("no upcaster from version {from}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;
    use crate::history::{
        CommandDeadLettered, DeadlinePassed, NoticeReceived, OperatorActed, ReplyIgnored, ReplyReceived, SagaAbandoned,
        Started, TimelineRecorded,
    };

    fn fixture(t: EventType, version: u32) -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/history")
            .join(format!("{}.v{version}.json", t.as_str()));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The fixture, upcast, read as the current payload type, and written back: the current
    /// fixture's exact JSON (so a renamed or dropped field breaks this test).
    fn roundtrip<T: DeserializeOwned + serde::Serialize>(t: EventType) {
        let current = current_schema(t);
        let golden = fixture(t, current);
        for version in 1..=current {
            let (parsed, upcast) = upcast(t.as_str(), version as i32, fixture(t, version)).unwrap();
            assert_eq!(parsed, t);
            let typed: T = serde_json::from_value(upcast.clone())
                .unwrap_or_else(|e| panic!("{} v{version} upcast does not read: {e}", t.as_str()));
            assert_eq!(serde_json::to_value(&typed).unwrap(), golden, "{} v{version}", t.as_str());
        }
    }

    #[test]
    fn every_type_at_every_version_reads_as_the_current_schema() {
        for t in EventType::ALL {
            match t {
                EventType::SagaStarted => roundtrip::<Started>(t),
                EventType::ReplyReceived => roundtrip::<ReplyReceived>(t),
                EventType::ReplyIgnored => roundtrip::<ReplyIgnored>(t),
                EventType::DeadlinePassed => roundtrip::<DeadlinePassed>(t),
                EventType::CommandDeadLettered => roundtrip::<CommandDeadLettered>(t),
                EventType::NoticeReceived => roundtrip::<NoticeReceived>(t),
                EventType::OperatorActed => roundtrip::<OperatorActed>(t),
                EventType::SagaAbandoned => roundtrip::<SagaAbandoned>(t),
                EventType::TimelineRecorded => roundtrip::<TimelineRecorded>(t),
            }
        }
    }

    #[test]
    fn a_started_event_of_schema_1_gets_its_total() {
        let (_, p) = upcast("saga.started", 1, fixture(EventType::SagaStarted, 1)).unwrap();
        let order: OrderRequest = serde_json::from_value(p["order"].clone()).unwrap();
        assert_eq!(p["total_cents"], json!(order.total_cents().unwrap()));
    }

    #[test]
    fn what_this_build_cannot_read_is_an_error_not_a_guess() {
        assert_eq!(upcast("order.teleported", 1, json!({})), Err(UpcastError::UnknownType("order.teleported".into())));
        assert!(matches!(upcast("saga.started", 3, json!({})), Err(UpcastError::UnsupportedVersion { .. })));
        assert!(matches!(upcast("reply.received", 0, json!({})), Err(UpcastError::UnsupportedVersion { .. })));
        assert!(matches!(
            upcast("saga.started", 1, json!({"definition": "order", "order": {"customer_id": 1}})),
            Err(UpcastError::Malformed { .. })
        ));
    }
}
