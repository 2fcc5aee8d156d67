//! What the orchestrator's OpenAPI document says beyond the shapes the types derive: the names
//! its enumerations take on the wire (the kernel's types stay free of documentation derives; the
//! tests below keep both lists equal), and the rules of `POST /orders` from [`crate::validate`]
//! (lengths, ranges, patterns, the country codes, the configured most items), so that the document
//! accepts what the API accepts.

use contracts::countries::ISO_3166_ALPHA2;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, Object, Schema};
use utoipa::openapi::{OpenApi, RefOr};

use crate::validate::{Limits, MAX_ID, MAX_QUANTITY, MAX_TEXT, MAX_UNIT_PRICE_CENTS};

/// A saga's status.
#[derive(ToSchema)]
#[schema(as = SagaStatus)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum SagaStatusName {
    RUNNING,
    COMPENSATING,
    COMPLETED,
    COMPENSATED,
    FAILED,
}

/// A step's status.
#[derive(ToSchema)]
#[schema(as = StepStatus)]
#[allow(dead_code, non_camel_case_types)]
pub enum StepStatusName {
    pending,
    running,
    succeeded,
    failed,
    timed_out,
    abandoned,
    compensating,
    compensated,
    compensation_failed,
}

/// A step's kind: `compensatable` (undone by its compensation), `pivot` (once it succeeded the
/// saga goes through), `retriable` (after the pivot, retried until done).
#[derive(ToSchema)]
#[schema(as = StepKind)]
#[allow(dead_code, non_camel_case_types)]
pub enum StepKindName {
    compensatable,
    pivot,
    retriable,
}

/// Characters `validate` refuses in every text: the control characters (`char::is_control`).
const CONTROL: [(char, char); 2] = [('\u{0}', '\u{1f}'), ('\u{7f}', '\u{9f}')];
/// Whitespace as `str::trim` sees it (`char::is_whitespace`), less the control characters: a text
/// made only of these is blank.
const BLANK: [(char, char); 8] = [
    (' ', ' '),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// `ranges` as the inside of a regular expression's character class, with `\uXXXX` escapes (which
/// ECMA-262, Python and Rust read alike).
fn class(ranges: &[(char, char)]) -> String {
    let escape = |c: char| format!("\\u{:04x}", u32::from(c));
    ranges.iter().map(|&(a, b)| if a == b { escape(a) } else { format!("{}-{}", escape(a), escape(b)) }).collect()
}

/// No control characters.
fn free_text() -> String {
    format!("^[^{}]*$", class(&CONTROL))
}

/// No control characters, and not blank.
fn text() -> String {
    let control = class(&CONTROL);
    format!("^[^{control}]*[^{control}{}][^{control}]*$", class(&BLANK))
}

/// Not blank (`str::trim` leaves something), and no NUL (which PostgreSQL text cannot hold): the
/// operators' notes and reasons.
pub fn not_blank() -> String {
    let whitespace = class(&[('\u{0}', '\u{0}'), ('\u{9}', '\u{d}'), ('\u{85}', '\u{85}')]) + &class(&BLANK);
    format!(r"^[^\u0000]*[^{whitespace}][^\u0000]*$")
}

/// Add the rules of [`crate::validate::order`] to the schemas of the order request in `doc`.
pub fn order_rules(doc: &mut OpenApi, limits: Limits) {
    property(doc, "OrderRequest", "customer_id", |o| id(o, "The customer"));
    property(doc, "OrderRequest", "currency", |o| o.pattern = Some("^[A-Z]{3}$".into()));
    array_property(doc, "OrderRequest", "items", |a| {
        a.min_items = Some(1);
        a.max_items = Some(limits.max_items);
    });
    property(doc, "OrderItem", "sku", |o| id(o, "The stock keeping unit"));
    property(doc, "OrderItem", "quantity", |o| {
        o.minimum = Some(1.into());
        o.maximum = Some((MAX_QUANTITY as usize).into());
    });
    property(doc, "OrderItem", "unit_price_cents", |o| {
        o.minimum = Some(0.into());
        o.maximum = Some((MAX_UNIT_PRICE_CENTS as usize).into());
    });
    for field in ["name", "line1", "city", "postal_code"] {
        property(doc, "Address", field, |o| {
            o.max_length = Some(MAX_TEXT);
            o.pattern = Some(text());
        });
    }
    property(doc, "Address", "line2", |o| {
        o.max_length = Some(MAX_TEXT);
        o.pattern = Some(free_text());
    });
    property(doc, "Address", "country", |o| {
        o.enum_values = Some(ISO_3166_ALPHA2.iter().map(|c| Value::from(*c)).collect());
    });
}

fn id(o: &mut Object, what: &str) {
    o.max_length = Some(MAX_ID);
    o.pattern = Some(text());
    o.description = Some(format!("{what}: at most {MAX_ID} characters, not blank, no control characters"));
}

/// The schema of property `name` of component `component`, if both exist as plain schemas.
fn schema_of<'a>(doc: &'a mut OpenApi, component: &str, name: &str) -> Option<&'a mut Schema> {
    let schema = doc.components.as_mut()?.schemas.get_mut(component)?;
    let RefOr::T(Schema::Object(object)) = schema else { return None };
    match object.properties.get_mut(name)? {
        RefOr::T(schema) => Some(schema),
        RefOr::Ref(_) => None,
    }
}

fn property(doc: &mut OpenApi, component: &str, name: &str, rule: impl FnOnce(&mut Object)) {
    match schema_of(doc, component, name) {
        Some(Schema::Object(o)) => rule(o),
        _ => tracing::warn!(component, name, "OpenAPI: no such property to describe"),
    }
}

fn array_property(doc: &mut OpenApi, component: &str, name: &str, rule: impl FnOnce(&mut Array)) {
    match schema_of(doc, component, name) {
        Some(Schema::Array(a)) => rule(a),
        _ => tracing::warn!(component, name, "OpenAPI: no such array property to describe"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{SagaStatus, StepKind, StepStatus};
    use utoipa::PartialSchema;

    /// The `enum` values of a derived schema.
    fn names<T: PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).expect("a schema serializes");
        let values = schema["enum"].as_array().cloned().unwrap_or_default();
        values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    }

    fn wire<T: serde::Serialize>(value: T) -> String {
        serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    #[test]
    fn documented_saga_statuses_are_the_kernels() {
        let kernel: Vec<String> = SagaStatus::ALL.iter().map(wire).collect();
        assert_eq!(names::<SagaStatusName>(), kernel);
    }

    #[test]
    fn documented_step_statuses_are_the_kernels() {
        use StepStatus::*;
        let all =
            [Pending, Running, Succeeded, Failed, TimedOut, Abandoned, Compensating, Compensated, CompensationFailed];
        // A new variant fails to compile here: add it to the list and to `StepStatusName`.
        for s in all {
            match s {
                Pending | Running | Succeeded | Failed | TimedOut | Abandoned | Compensating | Compensated
                | CompensationFailed => {}
            }
        }
        let kernel: Vec<String> = all.iter().map(wire).collect();
        assert_eq!(names::<StepStatusName>(), kernel);
    }

    #[test]
    fn documented_step_kinds_are_the_kernels() {
        let all = [StepKind::Compensatable, StepKind::Pivot, StepKind::Retriable];
        for k in all {
            match k {
                StepKind::Compensatable | StepKind::Pivot | StepKind::Retriable => {}
            }
        }
        let kernel: Vec<String> = all.iter().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names::<StepKindName>(), kernel);
    }

    fn within(ranges: &[(char, char)], c: char) -> bool {
        ranges.iter().any(|&(a, b)| (a..=b).contains(&c))
    }

    #[test]
    fn the_character_classes_are_rusts() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(within(&CONTROL, c), c.is_control(), "{c:?}");
            assert_eq!(within(&BLANK, c), c.is_whitespace() && !c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn the_patterns_are_written_as_escapes() {
        assert_eq!(free_text(), r"^[^\u0000-\u001f\u007f-\u009f]*$");
        assert!(text().contains(r"\u0020\u00a0\u1680\u2000-\u200a"), "{}", text());
    }
}
