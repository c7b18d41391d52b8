//! The tenant a decision was made under, so Feedback can be scoped to it.
//!
//! Why record it rather than infer it from the budget key: two tenants may share a budget (or a
//! tenant may have no budget of its own), and then the budget key cannot tell whose decision it
//! was. The server sets the tenant on the pending record right after `route`, under the same engine
//! lock, so no Feedback can see the decision without it. It persists with the decision (stored
//! decision tag 65) and so survives a restart; a decision made without a tenant key has none.
//! Per replica: it lives where the pending decision lives.

use super::Engine;

/// Whose a decision is, as far as Feedback scoping can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionOwner<'a> {
    /// Pending: made under this tenant (`None` = without one).
    Pending(Option<&'a str>),
    /// Expired or evicted with a reservation (late settlement): its budget, and the tenant it
    /// was made under when the tombstone recorded it (`Some(None)` = without a tenant).
    Late {
        budget_key: &'a str,
        tenant: Option<Option<&'a str>>,
    },
    /// Not known here: Feedback answers NOT_FOUND by itself.
    Unknown,
}

impl Engine {
    /// Records the tenant decision `decision_id` was made under (no-op for an unknown id).
    pub fn set_tenant(&mut self, decision_id: &str, tenant: Option<&str>) {
        if self
            .pending
            .get(decision_id)
            .is_some_and(|p| p.tenant() != tenant)
        {
            self.pending
                .change(decision_id, |p, names| p.set_tenant(tenant, names));
        }
    }

    /// Whose decision `decision_id` is.
    pub fn decision_owner(&self, decision_id: &str) -> DecisionOwner<'_> {
        if let Some(p) = self.pending.get(decision_id) {
            return DecisionOwner::Pending(p.tenant());
        }
        self.ledgers
            .iter()
            .find_map(|(key, l)| Some((key, l.tombstone(decision_id)?)))
            .map_or(DecisionOwner::Unknown, |(key, t)| DecisionOwner::Late {
                budget_key: key.as_str(),
                tenant: t.tenant.as_ref().map(Option::as_deref),
            })
    }
}
