//! The operator's verbs on a saga (`retry`, `compensate`, `resolve`): the kernel decides whether
//! the verb makes sense; if it does, the transition, its timeline entry ("operator") and the audit
//! row commit together; if not, nothing is written and the refusal says why.

use serde_json::json;
use uuid::Uuid;

use super::{Cause, Engine, EngineError};
use crate::audit;
use crate::kernel::{Decision, Input, SagaState, Verb};
use crate::store;

impl Engine {
    /// Apply `verb` to saga `saga_id` on behalf of `actor`. Returns the saga's new state.
    pub async fn operate(&self, saga_id: Uuid, verb: Verb, actor: &str, note: &str) -> Result<SagaState, EngineError> {
        let outcome = self.try_operate(saga_id, verb, actor, note).await;
        let label = match &outcome {
            Ok(_) => "applied",
            Err(EngineError::Refused(_) | EngineError::UnknownSaga(_)) => "refused",
            Err(_) => "error",
        };
        self.metrics.operator_actions.with_label_values(&[verb.as_str(), label]).inc();
        outcome
    }

    async fn try_operate(&self, saga_id: Uuid, verb: Verb, actor: &str, note: &str) -> Result<SagaState, EngineError> {
        self.retrying(|| self.operate_once(saga_id, verb, actor, note)).await
    }

    async fn operate_once(&self, saga_id: Uuid, verb: Verb, actor: &str, note: &str) -> Result<SagaState, EngineError> {
        let mut tx = self.pool.begin().await?;
        let loaded = store::load(&mut tx, saga_id).await.map_err(EngineError::Store).and_then(|s| self.caught_up(s));
        let saga = match loaded {
            Ok(Some(saga)) => saga,
            Ok(None) => return Err(EngineError::UnknownSaga(saga_id)),
            Err(e) if e.is_unreadable() => {
                return Err(EngineError::Refused(format!("{e}; the scanner ends it FAILED")));
            }
            Err(e) => return Err(e),
        };
        let input = Input::Operator { verb, actor, note };
        let state = match self.decide(&mut tx, &saga, input, &Cause::of("operator")).await {
            Ok(Decision::Applied { state, .. }) => state,
            Ok(Decision::Refused(why)) => return Err(EngineError::Refused(why)),
            Ok(Decision::Ignored(why)) => {
                return Err(EngineError::Refused(format!("nothing to do ({})", why.as_str())));
            }
            Err(e) if e.is_unreadable() => {
                return Err(EngineError::Refused(format!("{e}; the scanner ends it FAILED")));
            }
            Err(e) => return Err(e),
        };
        let detail = json!({"status_before": saga.state.status, "status_after": state.status, "step": saga.state.current_step_name()});
        let action = audit::Action {
            actor,
            action: verb.as_str(),
            queue: None,
            message_id: None,
            message_type: None,
            saga_id: Some(saga_id),
            reason: Some(note).filter(|n| !n.is_empty()),
            detail,
        };
        audit::record(&mut tx, &action).await?;
        tx.commit().await?;
        self.wake();
        tracing::info!(saga_id = %saga_id, verb = verb.as_str(), actor, status = state.status.as_str(), "operator action applied");
        Ok(state)
    }
}
