//! [`contracts::Meta`] <-> AMQP properties and headers, and the [`Outgoing`] / [`Incoming`]
//! message views the rest of the code works with.

use chrono::{DateTime, TimeZone, Utc};
use contracts::envelope::{CONTENT_TYPE_JSON, headers};
use contracts::{DecodeError, Message, Meta};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use uuid::Uuid;

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    /// `true` for commands and replies: an unroutable message is an error, not a silent drop.
    pub mandatory: bool,
    pub meta: Meta,
    pub body: Vec<u8>,
    /// Headers beyond those [`Meta`] carries (dead-letter reasons, replay marks).
    pub extra_headers: Vec<(String, HeaderValue)>,
}

/// A header value we write ourselves.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Str(String),
    Int(i64),
}

impl Outgoing {
    /// `message` as the body, `type` and routing key from the message itself.
    pub fn new(exchange: &str, mandatory: bool, meta: Meta, message: &impl Message) -> Self {
        debug_assert_eq!(meta.message_type, message.message_type());
        Outgoing {
            exchange: exchange.to_owned(),
            routing_key: message.message_type().to_owned(),
            mandatory,
            meta,
            body: message.encode(),
            extra_headers: Vec::new(),
        }
    }

    pub fn properties(&self) -> BasicProperties {
        let mut table = meta_headers(&self.meta);
        for (k, v) in &self.extra_headers {
            let value = match v {
                HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
                HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
            };
            table.insert(ShortString::from(k.as_str()), value);
        }
        BasicProperties::default()
            .with_content_type(CONTENT_TYPE_JSON.into())
            .with_delivery_mode(2)
            .with_message_id(self.meta.message_id.to_string().into())
            .with_correlation_id(self.meta.saga_id.to_string().into())
            .with_type(self.meta.message_type.as_str().into())
            .with_timestamp(u64::try_from(self.meta.timestamp.timestamp()).unwrap_or(0))
            .with_headers(table)
    }
}

fn meta_headers(meta: &Meta) -> FieldTable {
    let mut t = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes()));
    t.insert(headers::SCHEMA_VERSION.into(), AMQPValue::LongLongInt(i64::from(meta.schema_version)));
    t.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(meta.attempt)));
    if let Some(c) = meta.causation_id {
        t.insert(headers::CAUSATION_ID.into(), s(&c.to_string()));
    }
    if let Some(tp) = &meta.traceparent {
        t.insert(headers::TRACEPARENT.into(), s(tp));
    }
    if let Some(k) = &meta.idempotency_key {
        t.insert(headers::IDEMPOTENCY_KEY.into(), s(k));
    }
    t
}

/// What a handler sees of a delivery: no channel, no acker.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Incoming {
    /// A header as text (string headers, or numbers rendered).
    pub fn header_str(&self, name: &str) -> Option<String> {
        header(&self.properties, name).and_then(value_to_string)
    }

    /// A header as an integer (integer headers, or text holding a number).
    pub fn header_int(&self, name: &str) -> Option<i64> {
        header(&self.properties, name).and_then(value_to_int)
    }

    /// The metadata, validated: message id, saga id and type must be present and well formed.
    pub fn meta(&self) -> Result<Meta, DecodeError> {
        let p = &self.properties;
        let message_type = p
            .kind()
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or(DecodeError::MissingType)?;
        let message_id = p
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .ok_or(DecodeError::MissingField("message_id"))?;
        let saga_id = p
            .correlation_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .ok_or(DecodeError::MissingField("correlation_id"))?;
        let timestamp = p
            .timestamp()
            .and_then(|ts| i64::try_from(ts).ok())
            .and_then(|ts| Utc.timestamp_opt(ts, 0).single())
            .unwrap_or_else(Utc::now);
        let schema_version = match self.header_int(headers::SCHEMA_VERSION) {
            None => 1,
            Some(v) => u32::try_from(v).map_err(|_| DecodeError::MissingField(headers::SCHEMA_VERSION))?,
        };
        let causation_id = match self.header_str(headers::CAUSATION_ID) {
            None => None,
            Some(c) => Some(Uuid::parse_str(&c).map_err(|_| DecodeError::MissingField(headers::CAUSATION_ID))?),
        };
        let attempt = self.header_int(headers::ATTEMPT).and_then(|a| u32::try_from(a).ok()).unwrap_or(1).max(1);
        Ok(Meta {
            message_id,
            saga_id,
            message_type,
            timestamp,
            causation_id,
            schema_version,
            traceparent: self.header_str(headers::TRACEPARENT),
            idempotency_key: self.header_str(headers::IDEMPOTENCY_KEY),
            attempt,
        })
    }

    /// Metadata and typed body together.
    pub fn decode<M: Message>(&self) -> Result<(Meta, M), DecodeError> {
        let meta = self.meta()?;
        let message = M::decode(&meta.message_type, meta.schema_version, &self.body)?;
        Ok((meta, message))
    }
}

fn header<'a>(p: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    p.headers().as_ref().and_then(|h| h.inner().get(name))
}

fn value_to_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => value_to_int(other).map(|i| i.to_string()),
    }
}

fn value_to_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// Set (or replace) headers on a property set.
pub fn with_headers(p: BasicProperties, extra: &[(String, HeaderValue)]) -> BasicProperties {
    let mut table = p.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        let value = match v {
            HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
            HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
        };
        table.insert(ShortString::from(k.as_str()), value);
    }
    p.with_headers(table)
}

/// Remove headers from a property set.
pub fn without_headers(p: BasicProperties, names: &[&str]) -> BasicProperties {
    let mut kept = FieldTable::default();
    if let Some(h) = p.headers() {
        for (k, v) in h.inner() {
            if !names.contains(&k.as_str()) {
                kept.insert(k.clone(), v.clone());
            }
        }
    }
    p.with_headers(kept)
}

/// Every header as JSON, for operators: strings and numbers as such, anything else (tables and
/// arrays such as `x-death`) as JSON structures.
pub fn headers_json(p: &BasicProperties) -> serde_json::Value {
    fn value(v: &AMQPValue) -> serde_json::Value {
        match v {
            AMQPValue::LongString(s) => serde_json::Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => serde_json::Value::from(s.as_str()),
            AMQPValue::Boolean(b) => serde_json::Value::from(*b),
            AMQPValue::FieldTable(t) => table(t),
            AMQPValue::FieldArray(a) => serde_json::Value::Array(a.as_slice().iter().map(value).collect()),
            AMQPValue::Timestamp(t) => serde_json::Value::from(*t),
            other => value_to_int(other)
                .map_or_else(|| serde_json::Value::from(format!("{other:?}")), serde_json::Value::from),
        }
    }
    fn table(t: &FieldTable) -> serde_json::Value {
        serde_json::Value::Object(t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), value(v))).collect())
    }
    p.headers().as_ref().map_or(serde_json::Value::Object(Default::default()), table)
}

/// RFC 3339 with milliseconds, for header timestamps.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::Command;
    use contracts::commands::ReleaseInventory;

    #[test]
    fn meta_round_trips_through_amqp_properties() {
        let saga = Uuid::now_v7();
        let meta = Meta::new(saga, "inventory.release")
            .caused_by(Uuid::now_v7())
            .with_idempotency_key("k:1")
            .with_attempt(3)
            .with_traceparent(Some("00-abc-def-01".into()));
        let cmd = Command::ReleaseInventory(ReleaseInventory { order_id: saga });
        let out = Outgoing::new("saga.commands", true, meta.clone(), &cmd);
        let incoming = Incoming {
            exchange: out.exchange.clone(),
            routing_key: out.routing_key.clone(),
            redelivered: false,
            properties: out.properties(),
            body: out.body.clone(),
        };
        let (back, decoded): (Meta, Command) = incoming.decode().unwrap();
        let mut expected = meta;
        expected.timestamp = Utc.timestamp_opt(expected.timestamp.timestamp(), 0).unwrap();
        assert_eq!(back, expected);
        assert_eq!(decoded, cmd);
    }

    #[test]
    fn missing_properties_are_decode_errors() {
        let incoming = Incoming {
            exchange: String::new(),
            routing_key: "x".into(),
            redelivered: false,
            properties: BasicProperties::default(),
            body: b"{}".to_vec(),
        };
        assert!(matches!(incoming.meta(), Err(DecodeError::MissingType)));
        let incoming =
            Incoming { properties: BasicProperties::default().with_type("inventory.release".into()), ..incoming };
        assert!(matches!(incoming.meta(), Err(DecodeError::MissingField("message_id"))));
    }
}
