//! Encoding a decision record straight from the engine's compact pending form.
//!
//! Why: the writer encodes every new decision and every decision a Feedback changed. Expanding
//! the compact form into a [`crate::engine::PendingDecision`] first copied about twenty strings
//! (and formatted the id as hex) only for [`StoredDecision::set_pending`] to look each up in the
//! name table again; it was the largest part of the writer's cost per decision. Here the record
//! is filled from the compact form's borrowed fields, and the names a decision shares with many
//! others (its [`PendingShape`]: task class, model, provider, policy, budget key, tenant,
//! fallbacks, eligible models) are looked up once per shape and kept by the shape's identity.
//!
//! State: [`ShapeIds`] lives in the store's name table, for as long as the open store; it holds
//! each cached shape (so its address cannot be reused by another while cached) and is dropped
//! whole past [`MAX_SHAPES`]. Nothing here is persisted, and it is per process (replicas each
//! have their own store and name table).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::{CompactPending, DecisionKey, PendingShape};

use super::records::{finite, id_bytes, Names, StoredDecision};

/// Shapes cached at most (a class's traffic has a handful; the engine shares up to 4096).
pub const MAX_SHAPES: usize = 4096;

/// The name ids of one shape.
#[derive(Debug, Clone)]
struct Ids {
    /// Held so that the address keying it stays this shape's.
    _shape: Arc<PendingShape>,
    task_class: u32,
    model: u32,
    provider: u32,
    policy: u32,
    budget_key: u32,
    tenant: u32,
    fallback_models: Vec<u32>,
    fallback_providers: Vec<u32>,
    eligible: Vec<u32>,
}

/// Name ids of the shapes seen, by the shape's address (see the module doc).
#[derive(Debug, Default)]
pub struct ShapeIds(HashMap<usize, Ids>);

/// The 16 key bytes of a decision id, and its text when it is not 32 lowercase hex digits (as
/// [`id_bytes`] gives them for the id's text, without formatting it).
pub fn key_bytes(k: &DecisionKey) -> ([u8; 16], Option<&str>) {
    match k {
        DecisionKey::Hex([hi, lo]) => {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&hi.to_be_bytes());
            out[8..].copy_from_slice(&lo.to_be_bytes());
            (out, None)
        }
        DecisionKey::Text(t) => match id_bytes(t) {
            (b, true) => (b, None),
            (b, false) => (b, Some(t)),
        },
    }
}

/// The ids of `shape`'s names, from the cache or looked up (and cached).
fn shape_ids<'n>(names: &'n mut Names, shape: &Arc<PendingShape>) -> &'n Ids {
    let addr = Arc::as_ptr(shape) as usize;
    if names.shapes.0.len() >= MAX_SHAPES && !names.shapes.0.contains_key(&addr) {
        names.shapes.0.clear();
    }
    if !names.shapes.0.contains_key(&addr) {
        let s = &**shape;
        let ids = Ids {
            _shape: Arc::clone(shape),
            task_class: names.id(&s.task_class),
            model: names.id(&s.model),
            provider: names.id(&s.provider),
            policy: names.id(&s.policy),
            budget_key: s.budget_key.as_deref().map_or(0, |n| names.id(n)),
            tenant: s.tenant.as_deref().map_or(0, |n| names.id(n)),
            fallback_models: s.fallbacks.iter().map(|(m, _)| names.id(m)).collect(),
            fallback_providers: s.fallbacks.iter().map(|(_, p)| names.id(p)).collect(),
            eligible: s.eligible.iter().map(|m| names.id(m)).collect(),
        };
        names.shapes.0.insert(addr, ids);
    }
    &names.shapes.0[&addr]
}

impl StoredDecision {
    /// [`StoredDecision::set_pending`] of `p.expand()`, without expanding: sets the pending
    /// fields from the compact record (outcome fields are left as they are).
    pub fn set_compact(&mut self, p: &CompactPending, names: &mut Names) -> Result<(), String> {
        let e = p.expected();
        let expected = [
            finite("expected cost_usd", e.cost_usd)?,
            finite("expected latency_ms", e.latency_ms)?,
            finite("expected quality", e.quality)?,
            finite("expected success_rate", e.success_rate)?,
            finite("expected latency_p95_ms", e.latency_p95_ms)?,
        ];
        self.propensity = finite("propensity", p.propensity())?;
        self.id_text = key_bytes(p.key()).1.map(str::to_string).unwrap_or_default();
        let ids = shape_ids(names, p.shape());
        self.task_class = ids.task_class;
        self.model = ids.model;
        self.provider = ids.provider;
        self.policy = ids.policy;
        self.budget_key = ids.budget_key;
        self.tenant = ids.tenant;
        self.fallback_models.clone_from(&ids.fallback_models);
        self.fallback_providers.clone_from(&ids.fallback_providers);
        self.eligible.clone_from(&ids.eligible);
        self.expected.clear();
        self.expected.extend_from_slice(&expected);
        self.reason = names.id(p.reason().as_str());
        self.ttl_ms = p.expires_ms().saturating_sub(p.created_ms());
        (self.assumed_input_tokens, self.assumed_output_tokens) = p.tokens();
        self.replayed = p.replayed();
        self.quality_target = p.quality_target();
        self.max_output_tokens = p.max_output_tokens();
        self.classified_by = p.classified_by().map(str::to_string);
        self.experiment_group = p.experiment_group().map_or(0, |g| names.id(g.as_str()));
        self.shadow_model = match p.shadow() {
            Some((m, pr)) => vec![names.id(m), names.id(pr)],
            None => Vec::new(),
        };
        self.request_id = p.request_id().map(str::to_string);
        self.outcomes = p.outcomes().iter().map(|m| names.id(m)).collect();
        self.failed = p.failed().iter().map(|m| names.id(m)).collect();
        self.qualities = p.qualities().iter().map(|m| names.id(m)).collect();
        self.tags.clone_from(p.tags());
        self.has_pending = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{Engine, FeedbackInput, Logged, RouteInput};
    use crate::policy::Outcome;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    /// The record encoded from the compact form equals the one encoded from its expansion, for
    /// decisions with and without tags, request ids, budget keys and reported outcomes; and a
    /// text id keeps its text under the key `id_bytes` gives it.
    #[test]
    fn compact_encoding_equals_the_expanded_one() {
        let config = Config::builtin().unwrap();
        let classes: Vec<String> = config.task_classes.keys().cloned().collect();
        let now = 1_700_000_000_000u64;
        let mut engine = Engine::new(config, now);
        engine.log_events();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut ids = Vec::new();
        for (i, class) in classes.iter().cycle().take(12).enumerate() {
            let mut tags = BTreeMap::new();
            if i % 2 == 0 {
                tags.insert("team".to_string(), format!("t{i}"));
            }
            let input = RouteInput {
                task_class: class.clone(),
                request_id: if i % 3 == 0 {
                    format!("req-{i}")
                } else {
                    String::new()
                },
                tags,
                ..Default::default()
            };
            ids.push(engine.route(&input, now + i as u64, &mut rng).unwrap().id);
        }
        for id in ids.iter().step_by(2) {
            let input = FeedbackInput {
                decision_id: id.clone(),
                outcome: Some(Outcome::Error),
                ..Default::default()
            };
            engine.feedback(&input, now + 100).unwrap();
        }
        let changes = engine.take_changes();
        let shared = changes
            .events
            .iter()
            .filter_map(|l| match l {
                Logged::Decision(p) => Some(p),
                Logged::Event(_) => None,
            })
            .chain(changes.pending.iter().filter_map(|(_, p)| p.as_ref()));
        // One name table: the expanded encoding assigns the ids, the compact one must find
        // every name it uses already there (no name of its own) and give the same record.
        let mut names = Names::default();
        let mut seen = 0;
        for p in shared {
            let mut a = StoredDecision::default();
            a.set_pending(&p.expand(), &mut names).unwrap();
            let known = names.fresh.len();
            let mut b = StoredDecision::default();
            b.set_compact(p, &mut names).unwrap();
            assert_eq!(names.fresh.len(), known, "decision {}", p.id());
            assert_eq!(a, b, "decision {}", p.id());
            assert_eq!(key_bytes(p.key()).0, id_bytes(&p.id()).0);
            seen += 1;
        }
        let live = changes.pending.iter().filter(|(_, p)| p.is_some()).count();
        assert_eq!(seen, 12 + live);
        let text = DecisionKey::of("req-text-id");
        assert_eq!(
            key_bytes(&text),
            (id_bytes("req-text-id").0, Some("req-text-id"))
        );
    }
}
