//! The consistency auditor: does every participant, and every outside system, agree with the
//! sagas? [`rules`] says what agreement means; [`sources`] reads the records through each
//! participant's own read API (never its tables) and the outside systems' listings. Operators run
//! it with `GET /admin/audit/consistency` or the `saga-audit` binary; each run sets
//! `saga_audit_violations{kind}`.

pub mod rules;
pub mod sources;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::metrics::SagaMetrics;
pub use rules::Violation;
pub use sources::{AuditUrls, SourceError, Sources};

/// What one audit found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// Terminal sagas checked.
    pub checked: usize,
    #[schema(value_type = Vec<ViolationDoc>)]
    pub violations: Vec<Violation>,
}

/// One disagreement (the document's view of [`Violation`]).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ViolationDoc {
    /// The saga it is about; `null` for a catalog-wide one (stock).
    saga_id: Option<uuid::Uuid>,
    /// A stable code, e.g. `payment_not_captured`, `held_for_unknown_saga`, `stock_not_conserved`.
    kind: String,
    detail: String,
}

/// Runs audits. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    pub pool: PgPool,
    pub sources: Sources,
    pub metrics: SagaMetrics,
}

impl Auditor {
    /// Check every saga finished since `since` (every terminal one without it).
    pub async fn run(&self, since: Option<DateTime<Utc>>) -> Result<Report, SourceError> {
        let records = self.sources.read(&self.pool, since).await?;
        let violations = rules::check(&records);
        let checked = records.sagas.values().filter(|s| s.is_terminal()).count();
        self.metrics.audit_violations.reset();
        for v in &violations {
            self.metrics.audit_violations.with_label_values(&[v.kind]).inc();
        }
        self.metrics.audit_runs.inc();
        if !violations.is_empty() {
            tracing::warn!(checked, violations = violations.len(), "the consistency audit found violations");
        }
        Ok(Report { checked, violations })
    }
}
