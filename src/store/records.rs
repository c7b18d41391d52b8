//! The compact on-disk decision record (schema 3) and the name table it refers to.
//!
//! Why binary: a decision was a 700-900 byte JSON pending record plus a 250 byte JSON event, and a
//! Feedback added events that repeated the decision; at tens of thousands of decisions a second
//! that was most of the writer's work and of the data dir. Now a decision is ONE prost message
//! (versioned and schema-evolvable: new fields take new tags, old readers skip them) that Feedback
//! rewrites in place. Names (task classes, models, providers, policies, budget keys, reasons,
//! outcomes) are small integers from the name table, so a record repeats no string; decision ids
//! are 16-byte keys (the engine's ids are 32 hex digits; any other id is kept as text).

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::{
    Decision, Expected, ExperimentGroup, ModelRef, PairSides, PendingDecision, Side,
};
use crate::record::DecisionRecord;

/// One decision: what the engine needs to accept its feedback after a restart (the pending
/// fields) and what `trace export` folds into a logged-traffic line (the outcome fields).
/// Name fields hold ids of the name table; 0 means absent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredDecision {
    /// The id when it is not 32 hex digits (then the key holds a hash of it).
    #[prost(string, tag = "1")]
    pub id_text: String,
    #[prost(uint32, tag = "2")]
    pub task_class: u32,
    #[prost(uint32, tag = "3")]
    pub model: u32,
    #[prost(uint32, tag = "4")]
    pub provider: u32,
    #[prost(uint32, repeated, tag = "5")]
    pub fallback_models: Vec<u32>,
    #[prost(uint32, repeated, tag = "6")]
    pub fallback_providers: Vec<u32>,
    #[prost(double, tag = "7")]
    pub propensity: f64,
    /// cost, latency, quality, success rate, latency p95.
    #[prost(double, repeated, tag = "8")]
    pub expected: Vec<f64>,
    #[prost(uint32, tag = "9")]
    pub reason: u32,
    #[prost(uint32, tag = "10")]
    pub policy: u32,
    #[prost(uint32, repeated, tag = "11")]
    pub eligible: Vec<u32>,
    /// Time to live after creation (the creation time is in the key).
    #[prost(uint64, tag = "12")]
    pub ttl_ms: u64,
    #[prost(uint32, tag = "13")]
    pub budget_key: u32,
    /// Token counts the decision assumed.
    #[prost(uint64, tag = "14")]
    pub assumed_input_tokens: u64,
    #[prost(uint64, tag = "15")]
    pub assumed_output_tokens: u64,
    #[prost(bool, tag = "16")]
    pub replayed: bool,
    #[prost(string, optional, tag = "17")]
    pub request_id: Option<String>,
    /// Models whose outcome, failure, quality was reported.
    #[prost(uint32, repeated, tag = "18")]
    pub outcomes: Vec<u32>,
    #[prost(uint32, repeated, tag = "19")]
    pub failed: Vec<u32>,
    #[prost(uint32, repeated, tag = "20")]
    pub qualities: Vec<u32>,
    /// The folded outcome (the decided model's, else the first reported): its model and name.
    #[prost(uint32, tag = "21")]
    pub outcome_model: u32,
    #[prost(uint32, tag = "22")]
    pub outcome: u32,
    #[prost(double, optional, tag = "23")]
    pub latency_ms: Option<f64>,
    #[prost(double, optional, tag = "24")]
    pub cost_usd: Option<f64>,
    #[prost(double, optional, tag = "25")]
    pub charged_usd: Option<f64>,
    #[prost(double, optional, tag = "26")]
    pub failure_cost_usd: Option<f64>,
    #[prost(uint64, optional, tag = "27")]
    pub input_tokens: Option<u64>,
    #[prost(uint64, optional, tag = "28")]
    pub output_tokens: Option<u64>,
    #[prost(uint32, tag = "29")]
    pub quality_model: u32,
    #[prost(double, optional, tag = "30")]
    pub quality: Option<f64>,
    #[prost(uint32, tag = "31")]
    pub experiment_group: u32,
    #[prost(bool, tag = "32")]
    pub shadow: bool,
    #[prost(btree_map = "string, string", tag = "33")]
    pub tags: BTreeMap<String, String>,
    /// False for a decision known only from a migrated event log (no pending fields).
    #[prost(bool, tag = "34")]
    pub has_pending: bool,
    /// The quality target the decision was made under (`min_cost` classes).
    #[prost(double, optional, tag = "35")]
    pub quality_target: Option<f64>,
    /// The output-length limit returned to the caller (the class's governance).
    #[prost(uint64, optional, tag = "50")]
    pub max_output_tokens: Option<u64>,
    /// The classifier rule that chose the task class (the rule's name, never the prompt).
    #[prost(string, optional, tag = "51")]
    pub classified_by: Option<String>,
    /// The tenant the decision was made under (name id; 0 = none), for Feedback scoping.
    #[prost(uint32, tag = "65")]
    pub tenant: u32,
    /// Shadow traffic: the shadow call's model and provider (empty: none), then what it reported
    /// (kept apart from the decision's own outcome above).
    #[prost(uint32, repeated, tag = "45")]
    pub shadow_model: Vec<u32>,
    #[prost(uint32, tag = "46")]
    pub shadow_outcome: u32,
    #[prost(double, optional, tag = "47")]
    pub shadow_latency_ms: Option<f64>,
    #[prost(double, optional, tag = "48")]
    pub shadow_charged_usd: Option<f64>,
    #[prost(double, optional, tag = "49")]
    pub shadow_quality: Option<f64>,
}

/// The key of a decision: creation time (big-endian ms, so the log trims by range) and the id.
pub type DecisionKey = [u8; 24];

/// The 16 bytes of a decision id: its value when it is 32 hex digits, else a hash of the text.
pub fn id_bytes(id: &str) -> ([u8; 16], bool) {
    // Lower-case hex digits only (an upper-case id is another id, kept as text).
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; 16];
    let hex = id.len() == 32
        && id
            .as_bytes()
            .chunks_exact(2)
            .zip(out.iter_mut())
            .all(|(pair, o)| match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => {
                    *o = hi << 4 | lo;
                    true
                }
                _ => false,
            });
    if !hex {
        // FNV-1a over the text, twice with different offsets: only a key; the text is kept.
        let mut h = [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4u64];
        for (j, hj) in h.iter_mut().enumerate() {
            for b in id.bytes().chain([j as u8]) {
                *hj ^= u64::from(b);
                *hj = hj.wrapping_mul(0x0100_0000_01b3);
            }
        }
        out[..8].copy_from_slice(&h[0].to_be_bytes());
        out[8..].copy_from_slice(&h[1].to_be_bytes());
    }
    (out, hex)
}

pub fn decision_key(created_ms: u64, id: &str) -> DecisionKey {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&created_ms.to_be_bytes());
    k[8..].copy_from_slice(&id_bytes(id).0);
    k
}

/// Creation time of a decision key.
pub fn key_ms(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if k.len() >= 8 {
        b.copy_from_slice(&k[..8]);
    }
    u64::from_be_bytes(b)
}

/// A key as an error message names it.
pub(super) fn show_key(k: &[u8]) -> String {
    if k.len() == 24 {
        let id: String = k[8..].iter().map(|b| format!("{b:02x}")).collect();
        format!("decision {id} (made at unix ms {})", key_ms(k))
    } else {
        format!("{:?}", String::from_utf8_lossy(k))
    }
}

/// The hex id of a decision key (a restart makes one per pending decision: no `format!`).
fn key_id(k: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * k.len().saturating_sub(8));
    for &b in k.iter().skip(8) {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// A quick hasher for the name table's short keys, looked up a dozen times per record written
/// (std's SipHash resists hash flooding, which names from the config and the engine do not need).
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildNameHasher;

impl std::hash::BuildHasher for BuildNameHasher {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(0)
    }
}

/// FxHash's step over 8-byte words (see [`BuildNameHasher`]).
pub struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The name table: name <-> small id (ids from 1; 0 is "absent"). New names are handed out by
/// [`Names::id`] and queued for the writer to persist before the records that use them.
#[derive(Debug, Default)]
pub struct Names {
    ids: HashMap<String, u32, BuildNameHasher>,
    names: Vec<String>,
    /// Assigned but not yet written.
    pub(super) fresh: Vec<(u32, String)>,
    /// The ids of the engine's shared decision shapes (`compact_record.rs`).
    pub(super) shapes: super::compact_record::ShapeIds,
}

impl Names {
    pub fn insert_loaded(&mut self, id: u32, name: String) {
        let i = id as usize;
        if self.names.len() < i {
            self.names.resize(i, String::new());
        }
        self.names[i - 1] = name.clone();
        self.ids.insert(name, id);
    }

    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        self.names.push(name.to_string());
        let id = self.names.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.fresh.push((id, name.to_string()));
        id
    }

    fn opt(&mut self, name: Option<&str>) -> u32 {
        name.map_or(0, |n| self.id(n))
    }

    /// The name of `id` ("" for 0 or an unknown id, which [`Names::check`] reports).
    pub fn name(&self, id: u32) -> &str {
        id.checked_sub(1)
            .and_then(|i| self.names.get(i as usize))
            .map_or("", String::as_str)
    }

    fn name_opt(&self, id: u32) -> Option<String> {
        (id != 0).then(|| self.name(id).to_string())
    }

    fn list(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| self.name(i).to_string()).collect()
    }

    fn ids(&mut self, names: &[String]) -> Vec<u32> {
        names.iter().map(|n| self.id(n)).collect()
    }

    /// An enum's serde name as an id (reasons and outcomes are unit variants).
    fn variant<T: Serialize>(&mut self, v: &T) -> u32 {
        match serde_json::to_value(v) {
            Ok(serde_json::Value::String(s)) => self.id(&s),
            _ => 0,
        }
    }

    fn variant_of<T: DeserializeOwned>(&self, id: u32) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::String(self.name(id).to_string()))
            .map_err(|e| format!("name id {id} ({:?}): {e}", self.name(id)))
    }

    /// Checks that every name id a record uses is known.
    pub fn check(&self, r: &StoredDecision) -> Result<(), String> {
        let singles = [
            r.task_class,
            r.model,
            r.provider,
            r.reason,
            r.policy,
            r.budget_key,
            r.outcome_model,
            r.outcome,
            r.quality_model,
            r.experiment_group,
            r.tenant,
            r.shadow_outcome,
        ];
        let lists = [
            &r.fallback_models,
            &r.fallback_providers,
            &r.eligible,
            &r.outcomes,
            &r.failed,
            &r.qualities,
            &r.shadow_model,
        ];
        let known = self.names.len() as u32;
        let bad = singles
            .iter()
            .chain(lists.into_iter().flatten())
            .find(|&&i| i > known)
            .copied();
        match bad {
            Some(i) => Err(format!("refers to name id {i}, the name table has {known}")),
            None => Ok(()),
        }
    }
}

pub(super) fn finite(what: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{what} is {v}, not a finite number"))
    }
}

fn finite_opt(what: &str, v: Option<f64>) -> Result<Option<f64>, String> {
    v.map(|v| finite(what, v)).transpose()
}

impl StoredDecision {
    /// Sets the pending fields from the engine's record (outcome fields are left as they are).
    pub fn set_pending(&mut self, p: &PendingDecision, names: &mut Names) -> Result<(), String> {
        let d = &p.decision;
        let (_, hex) = id_bytes(&d.id);
        self.id_text = if hex { String::new() } else { d.id.clone() };
        self.task_class = names.id(&d.task_class);
        self.model = names.id(&d.model);
        self.provider = names.id(&d.provider);
        self.fallback_models = d.fallbacks.iter().map(|f| names.id(&f.model)).collect();
        self.fallback_providers = d.fallbacks.iter().map(|f| names.id(&f.provider)).collect();
        self.propensity = finite("propensity", d.propensity)?;
        let e = &d.expected;
        self.expected = vec![
            finite("expected cost_usd", e.cost_usd)?,
            finite("expected latency_ms", e.latency_ms)?,
            finite("expected quality", e.quality)?,
            finite("expected success_rate", e.success_rate)?,
            finite("expected latency_p95_ms", e.latency_p95_ms)?,
        ];
        // The wire name is the serde name (`Reason::as_str`), without a JSON round trip.
        self.reason = names.id(d.reason.as_str());
        self.policy = names.id(&d.policy);
        self.eligible = names.ids(&d.eligible);
        self.ttl_ms = d.expires_ms.saturating_sub(d.created_ms);
        self.budget_key = names.opt(d.budget_key.as_deref());
        self.assumed_input_tokens = d.input_tokens;
        self.assumed_output_tokens = d.output_tokens;
        self.replayed = d.replayed;
        self.quality_target = d.quality_target;
        self.max_output_tokens = d.max_output_tokens;
        self.classified_by = d.classified_by.clone();
        self.experiment_group = names.opt(d.experiment_group.map(|g| g.as_str()));
        self.shadow_model = d.shadow.as_ref().map_or_else(Vec::new, |s| {
            vec![names.id(&s.model), names.id(&s.provider)]
        });
        self.request_id = p.request_id.clone();
        self.outcomes = names.ids(&p.outcomes);
        self.failed = names.ids(&p.failed);
        self.qualities = names.ids(&p.qualities);
        self.tags = d.tags.clone();
        self.tenant = names.opt(p.tenant.as_deref());
        self.has_pending = true;
        Ok(())
    }

    /// Folds one model's outcome in: the first reported, or the decided model's over a fallback's
    /// (the precedence of [`crate::record::fold`]).
    pub fn set_outcome(
        &mut self,
        o: &crate::record::OutcomeRecord,
        names: &mut Names,
    ) -> Result<(), String> {
        let model = names.id(&o.model);
        if o.shadow {
            self.shadow_outcome = names.id(o.outcome.as_str());
            self.shadow_latency_ms = finite_opt("shadow latency_ms", o.latency_ms)?;
            self.shadow_charged_usd = finite_opt("shadow charged_usd", o.charged_usd)?;
        } else if self.outcome == 0 || model == self.model {
            self.outcome_model = model;
            self.outcome = names.id(o.outcome.as_str());
            self.latency_ms = finite_opt("latency_ms", o.latency_ms)?;
            self.cost_usd = finite_opt("cost_usd", o.cost_usd)?;
            self.charged_usd = finite_opt("charged_usd", o.charged_usd)?;
            self.input_tokens = o.input_tokens;
            self.output_tokens = o.output_tokens;
        }
        Ok(())
    }

    pub fn set_quality(
        &mut self,
        q: &crate::record::QualityRecord,
        names: &mut Names,
    ) -> Result<(), String> {
        let model = names.id(&q.model);
        if q.shadow {
            self.shadow_quality = Some(finite("shadow quality", q.quality)?);
        } else if self.quality.is_none() || model == self.model {
            self.quality_model = model;
            self.quality = Some(finite("quality", q.quality)?);
        }
        Ok(())
    }

    /// A record from a logged-traffic line (migration of an old event log).
    pub fn from_record(r: &DecisionRecord, names: &mut Names) -> Result<Self, String> {
        let mut s = StoredDecision {
            id_text: if id_bytes(&r.decision_id).1 {
                String::new()
            } else {
                r.decision_id.clone()
            },
            task_class: names.id(&r.task_class),
            model: names.id(&r.model),
            propensity: finite("propensity", r.propensity)?,
            reason: names.variant(&r.reason),
            policy: names.id(&r.policy),
            eligible: names.ids(&r.eligible),
            budget_key: names.opt(r.budget_key.as_deref()),
            failure_cost_usd: finite_opt("failure_cost_usd", r.failure_cost_usd)?,
            experiment_group: names.opt(r.experiment_group.as_deref()),
            shadow: r.shadow,
            tags: r.tags.clone(),
            ..Default::default()
        };
        if let Some(sc) = &r.shadow_call {
            // The provider is not in a logged-traffic line; the model names it well enough here.
            s.shadow_model = vec![names.id(&sc.model), 0];
            s.shadow_outcome = sc.outcome.map_or(0, |o| names.variant(&o));
            s.shadow_latency_ms = finite_opt("shadow latency_ms", sc.latency_ms)?;
            s.shadow_charged_usd = finite_opt("shadow charged_usd", sc.charged_usd)?;
            s.shadow_quality = finite_opt("shadow quality", sc.quality)?;
        }
        if let Some(o) = r.outcome {
            s.outcome_model = s.model;
            s.outcome = names.variant(&o);
            s.latency_ms = finite_opt("latency_ms", r.latency_ms)?;
            s.cost_usd = finite_opt("cost_usd", r.cost_usd)?;
            s.charged_usd = finite_opt("charged_usd", r.charged_usd)?;
            s.input_tokens = r.input_tokens;
            s.output_tokens = r.output_tokens;
        }
        if let Some(q) = r.quality {
            s.quality_model = s.model;
            s.quality = Some(finite("quality", q)?);
        }
        Ok(s)
    }

    fn id(&self, key: &[u8]) -> String {
        if self.id_text.is_empty() {
            key_id(key)
        } else {
            self.id_text.clone()
        }
    }

    /// The engine's pending record, when this decision has one.
    pub fn pending(&self, key: &[u8], names: &Names) -> Result<Option<PendingDecision>, String> {
        if !self.has_pending {
            return Ok(None);
        }
        let created_ms = key_ms(key);
        let e = |i: usize| self.expected.get(i).copied().unwrap_or(0.0);
        let decision = Decision {
            id: self.id(key),
            task_class: names.name(self.task_class).to_string(),
            model: names.name(self.model).to_string(),
            provider: names.name(self.provider).to_string(),
            fallbacks: self
                .fallback_models
                .iter()
                .zip(&self.fallback_providers)
                .map(|(&m, &p)| ModelRef {
                    model: names.name(m).to_string(),
                    provider: names.name(p).to_string(),
                })
                .collect(),
            propensity: self.propensity,
            expected: Expected {
                cost_usd: e(0),
                latency_ms: e(1),
                quality: e(2),
                success_rate: e(3),
                latency_p95_ms: e(4),
            },
            reason: names.variant_of(self.reason)?,
            policy: names.name(self.policy).to_string(),
            eligible: names.list(&self.eligible),
            created_ms,
            expires_ms: created_ms.saturating_add(self.ttl_ms),
            budget_key: names.name_opt(self.budget_key),
            input_tokens: self.assumed_input_tokens,
            output_tokens: self.assumed_output_tokens,
            replayed: self.replayed,
            quality_target: self.quality_target,
            max_output_tokens: self.max_output_tokens,
            classified_by: self.classified_by.clone(),
            tags: self.tags.clone(),
            shadow: self.shadow_ref(names),
            experiment_group: ExperimentGroup::parse(names.name(self.experiment_group)),
            cache_hit: None,
        };
        let own = |m: u32| m != 0 && m == self.model;
        // Only a shadowed decision pairs its calls (`engine::shadow`).
        let sides = if decision.shadow.is_none() {
            PairSides::default()
        } else {
            PairSides {
                primary: Side {
                    outcome: match self.outcome {
                        o if o != 0 && own(self.outcome_model) => Some(names.variant_of(o)?),
                        _ => None,
                    },
                    latency_ms: self.latency_ms.filter(|_| own(self.outcome_model)),
                    cost_usd: self.charged_usd.filter(|_| own(self.outcome_model)),
                    quality: self.quality.filter(|_| own(self.quality_model)),
                },
                shadow: self.shadow_side(names)?,
            }
        };
        Ok(Some(PendingDecision {
            decision,
            request_id: self.request_id.clone(),
            outcomes: names.list(&self.outcomes),
            failed: names.list(&self.failed),
            qualities: names.list(&self.qualities),
            tenant: names.name_opt(self.tenant),
            sides,
        }))
    }

    /// The shadow call's model and provider, when the decision issued one.
    fn shadow_ref(&self, names: &Names) -> Option<ModelRef> {
        match self.shadow_model.as_slice() {
            [m, p, ..] if *m != 0 => Some(ModelRef {
                model: names.name(*m).to_string(),
                provider: names.name(*p).to_string(),
            }),
            _ => None,
        }
    }

    /// What the shadow call reported.
    fn shadow_side(&self, names: &Names) -> Result<Side, String> {
        Ok(Side {
            outcome: match self.shadow_outcome {
                0 => None,
                o => Some(names.variant_of(o)?),
            },
            latency_ms: self.shadow_latency_ms,
            cost_usd: self.shadow_charged_usd,
            quality: self.shadow_quality,
        })
    }

    /// The logged-traffic line of this decision (`trace export`).
    pub fn record(&self, key: &[u8], names: &Names) -> Result<DecisionRecord, String> {
        Ok(DecisionRecord {
            decision_id: self.id(key),
            t_ms: key_ms(key),
            task_class: names.name(self.task_class).to_string(),
            policy: names.name(self.policy).to_string(),
            eligible: names.list(&self.eligible),
            model: names.name(self.model).to_string(),
            propensity: self.propensity,
            reason: names.variant_of(self.reason)?,
            outcome: match self.outcome {
                0 => None,
                o => Some(names.variant_of(o)?),
            },
            latency_ms: self.latency_ms,
            cost_usd: self.cost_usd,
            quality: self.quality,
            budget_key: names.name_opt(self.budget_key),
            charged_usd: self.charged_usd,
            failure_cost_usd: self.failure_cost_usd,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            experiment_group: names.name_opt(self.experiment_group),
            shadow: self.shadow,
            tags: self.tags.clone(),
            shadow_call: match self.shadow_ref(names) {
                Some(m) => {
                    let s = self.shadow_side(names)?;
                    Some(crate::record::ShadowRecord {
                        model: m.model,
                        outcome: s.outcome,
                        latency_ms: s.latency_ms,
                        charged_usd: s.cost_usd,
                        quality: s.quality,
                    })
                }
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_16_byte_keys_and_other_ids_keep_their_text() {
        let id = "00ff10203040506070809a0b0c0d0e0f";
        let k = decision_key(42, id);
        assert_eq!(key_ms(&k), 42);
        assert_eq!(key_id(&k), id);
        assert!(id_bytes(id).1);
        let (a, hex) = id_bytes("req-1");
        assert!(!hex);
        assert_ne!(a, id_bytes("req-2").0);
        assert!(!id_bytes(&id.to_uppercase()).1);
    }

    /// Records name an outcome by `Outcome::as_str` and read it back by its serde name.
    #[test]
    fn outcomes_are_stored_by_their_serde_names() {
        use crate::policy::Outcome;
        let mut n = Names::default();
        for o in [
            Outcome::Success,
            Outcome::Error,
            Outcome::Timeout,
            Outcome::RateLimited,
        ] {
            let id = n.id(o.as_str());
            assert_eq!(n.variant(&o), id);
            assert_eq!(n.variant_of::<Outcome>(id).unwrap(), o);
        }
    }

    #[test]
    fn names_round_trip_and_unknown_ids_are_reported() {
        let mut n = Names::default();
        assert_eq!((n.id("qa"), n.id("m"), n.id("qa")), (1, 2, 1));
        assert_eq!(n.fresh.len(), 2);
        assert_eq!(n.name(2), "m");
        let r = StoredDecision {
            model: 9,
            ..Default::default()
        };
        assert!(n.check(&r).unwrap_err().contains("name id 9"));
    }
}
