//! The in-memory form of a pending decision: up to `limits.max_pending` (100 000 by default) are
//! held at once, so their size is most of the service's memory. A [`PendingDecision`] holds about
//! twenty owned strings, its id three times over (map key, creation order, decision); measured at
//! ~2 KB each (2028 resident bytes in `pending_tests.rs`'s measurement). Here what a decision
//! repeats from the config and from other decisions (task class, model, provider, policy, budget
//! key, tenant, the eligible models, the fallbacks) is one shared [`Shape`] taken from a table (a
//! class's traffic has a handful of shapes), the id is a fixed-size [`DecisionKey`], and what most
//! decisions never have (tags, a shadow call, a cache hit, reported outcomes) sits behind one
//! optional box.
//!
//! The full [`PendingDecision`] (and the wire id string) is produced at the edge, by
//! [`CompactPending::expand`]: Route returns the decision it built, Feedback and the store
//! expand what they read. Nothing here is persisted as such: on restart the store's records are
//! read back as [`PendingDecision`]s and compacted again, and the name table starts empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::*;

/// A decision id as a map key: an id the engine made (32 lowercase hex digits) as its 128 bits,
/// any other (a decision adopted from elsewhere or read back from an older data dir) as its text.
/// Ordered by its bits, so ids order the same as their text among the engine's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecisionKey {
    Hex([u64; 2]),
    Text(Box<str>),
}

impl DecisionKey {
    /// Read on every Route (its pending record) and Feedback: the hex is decoded directly, a
    /// digit at a time, rather than through `u64::from_str_radix`.
    pub fn of(id: &str) -> DecisionKey {
        let b = id.as_bytes();
        match (
            b.len(),
            b.get(..16).and_then(hex64),
            b.get(16..).and_then(hex64),
        ) {
            (32, Some(hi), Some(lo)) => DecisionKey::Hex([hi, lo]),
            _ => DecisionKey::Text(id.into()),
        }
    }
}

/// The value of lowercase hex digits (at most 16), or `None` if any byte is not one.
fn hex64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(d))
    })
}

impl fmt::Display for DecisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionKey::Hex([hi, lo]) => write!(f, "{hi:016x}{lo:016x}"),
            DecisionKey::Text(s) => f.write_str(s),
        }
    }
}

/// Past this many entries a table stops growing: a new name or list is then allocated for its
/// decision alone (correct, only not shared). Config names number in the tens; the bound only
/// guards against ids adopted from elsewhere naming ever new things.
const MAX_SHARED: usize = 4096;

/// A shared list of (model, provider).
type Refs = Arc<[(Arc<str>, Arc<str>)]>;

/// A set hashed with FxHash: every Route looks a dozen names and a shape up here, and std's
/// SipHash (which resists hash flooding) was most of that cost. The keys are names from the
/// config and from decisions the engine made (bounded by [`MAX_SHARED`]), not free request text.
type FxSet<T> = HashSet<T, rustc_hash::FxBuildHasher>;

/// The shared names, lists and shapes. Entries are never removed (they are bounded by
/// [`MAX_SHARED`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Names {
    names: FxSet<Arc<str>>,
    lists: FxSet<Arc<[Arc<str>]>>,
    refs: FxSet<Refs>,
    shapes: FxSet<Arc<Shape>>,
    /// The shapes by a hash of a decision's own strings, so that a Route whose shape is known
    /// finds it without looking each name up and building the shape first (`Names::shape_of`).
    by_print: ShapeMemo,
}

/// A cache over `Names::shapes`, not part of the value: two tables with the same names and
/// shapes are equal whatever either has looked up since.
#[derive(Debug, Clone, Default)]
struct ShapeMemo(HashMap<u64, Arc<Shape>, rustc_hash::FxBuildHasher>);

impl PartialEq for ShapeMemo {
    fn eq(&self, _: &ShapeMemo) -> bool {
        true
    }
}

/// A hash of the strings that make decision `d`'s shape (with `tenant`).
fn shape_print(d: &Decision, tenant: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    d.task_class.hash(&mut h);
    d.model.hash(&mut h);
    d.provider.hash(&mut h);
    d.policy.hash(&mut h);
    d.budget_key.hash(&mut h);
    tenant.hash(&mut h);
    h.write_usize(d.fallbacks.len());
    for m in &d.fallbacks {
        m.model.hash(&mut h);
        m.provider.hash(&mut h);
    }
    d.eligible.hash(&mut h);
    h.finish()
}

/// What a decision has in common with many others. Read by the store, which encodes a shape's
/// names once and keeps them by the shape's identity ([`CompactPending::shape`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub task_class: Arc<str>,
    pub model: Arc<str>,
    pub provider: Arc<str>,
    pub policy: Arc<str>,
    pub budget_key: Option<Arc<str>>,
    pub tenant: Option<Arc<str>>,
    /// (model, provider) of each fallback.
    pub fallbacks: Refs,
    pub eligible: Arc<[Arc<str>]>,
}

impl Shape {
    /// Whether this is the shape of decision `d` made under `tenant`.
    /// Destructured, so that a field added to the shape cannot be left out of the check.
    fn is_of(&self, d: &Decision, tenant: Option<&str>) -> bool {
        let Shape {
            task_class,
            model,
            provider,
            policy,
            budget_key,
            tenant: of_tenant,
            fallbacks,
            eligible,
        } = self;
        **task_class == *d.task_class
            && **model == *d.model
            && **provider == *d.provider
            && **policy == *d.policy
            && budget_key.as_deref() == d.budget_key.as_deref()
            && of_tenant.as_deref() == tenant
            && fallbacks.len() == d.fallbacks.len()
            && (fallbacks.iter().zip(&d.fallbacks))
                .all(|((m, p), r)| **m == *r.model && **p == *r.provider)
            && eligible.len() == d.eligible.len()
            && (eligible.iter().zip(&d.eligible)).all(|(a, b)| **a == **b)
    }
}

impl Names {
    pub(super) fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = s.into();
        if self.names.len() < MAX_SHARED {
            self.names.insert(Arc::clone(&a));
        }
        a
    }

    fn list(&mut self, xs: &[String]) -> Arc<[Arc<str>]> {
        let v: Vec<Arc<str>> = xs.iter().map(|s| self.name(s)).collect();
        share(&mut self.lists, v)
    }

    fn refs(&mut self, xs: &[ModelRef]) -> Refs {
        let v: Vec<(Arc<str>, Arc<str>)> = xs
            .iter()
            .map(|m| (self.name(&m.model), self.name(&m.provider)))
            .collect();
        share(&mut self.refs, v)
    }
}

impl Names {
    /// The shared shape of decision `d` made under `tenant`. A shape seen before is found by a
    /// hash of `d`'s strings and checked field by field against them; only a new one is built
    /// from shared names and interned.
    fn shape_of(&mut self, d: &Decision, tenant: Option<&str>) -> Arc<Shape> {
        let print = shape_print(d, tenant);
        if let Some(s) = self.by_print.0.get(&print).filter(|s| s.is_of(d, tenant)) {
            return Arc::clone(s);
        }
        let shape = Shape {
            task_class: self.name(&d.task_class),
            model: self.name(&d.model),
            provider: self.name(&d.provider),
            policy: self.name(&d.policy),
            budget_key: d.budget_key.as_deref().map(|s| self.name(s)),
            tenant: tenant.map(|s| self.name(s)),
            fallbacks: self.refs(&d.fallbacks),
            eligible: self.list(&d.eligible),
        };
        let shape = self.shape(shape);
        if self.by_print.0.len() < MAX_SHARED {
            // A colliding print keeps its first shape; the other is built each time.
            self.by_print
                .0
                .entry(print)
                .or_insert_with(|| Arc::clone(&shape));
        }
        shape
    }

    fn shape(&mut self, s: Shape) -> Arc<Shape> {
        if let Some(a) = self.shapes.get(&s) {
            return Arc::clone(a);
        }
        let a = Arc::new(s);
        if self.shapes.len() < MAX_SHARED {
            self.shapes.insert(Arc::clone(&a));
        }
        a
    }
}

fn share<T: Eq + std::hash::Hash>(set: &mut FxSet<Arc<[T]>>, v: Vec<T>) -> Arc<[T]> {
    if let Some(a) = set.get(v.as_slice()) {
        return Arc::clone(a);
    }
    let a: Arc<[T]> = v.into();
    if set.len() < MAX_SHARED {
        set.insert(Arc::clone(&a));
    }
    a
}

/// What few decisions have: boxed, so a decision without any costs one pointer.
#[derive(Debug, Clone, Default, PartialEq)]
struct Extra {
    replayed: bool,
    quality_target: Option<f64>,
    max_output_tokens: Option<u64>,
    classified_by: Option<Arc<str>>,
    tags: BTreeMap<String, String>,
    shadow: Option<(Arc<str>, Arc<str>)>,
    cache_hit: Option<crate::cache::Hit>,
    outcomes: Vec<Arc<str>>,
    failed: Vec<Arc<str>>,
    qualities: Vec<Arc<str>>,
    sides: PairSides,
}

impl Extra {
    fn is_empty(&self) -> bool {
        *self == Extra::default()
    }
}

/// What Feedback has reported of a decision so far (nothing, for one Route just made).
#[derive(Default)]
struct Reports<'a> {
    outcomes: &'a [String],
    failed: &'a [String],
    qualities: &'a [String],
    sides: PairSides,
}

/// A pending decision as the engine holds it (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct CompactPending {
    key: DecisionKey,
    shape: Arc<Shape>,
    request_id: Option<Box<str>>,
    propensity: f64,
    expected: Expected,
    created_ms: u64,
    expires_ms: u64,
    input_tokens: u64,
    output_tokens: u64,
    reason: Reason,
    experiment_group: Option<ExperimentGroup>,
    extra: Option<Box<Extra>>,
}

/// A pending decision shared between the engine and its change set (a reference count, not a
/// copy; a later change copies on write).
pub type SharedPending = Arc<CompactPending>;

fn text(a: &Arc<str>) -> String {
    a.to_string()
}

fn texts(xs: &[Arc<str>]) -> Vec<String> {
    xs.iter().map(text).collect()
}

impl CompactPending {
    pub(super) fn new(p: PendingDecision, names: &mut Names) -> CompactPending {
        let reports = Reports {
            outcomes: &p.outcomes,
            failed: &p.failed,
            qualities: &p.qualities,
            sides: p.sides,
        };
        let (request_id, tenant) = (p.request_id.as_deref(), p.tenant.as_deref());
        CompactPending::build(&p.decision, request_id, tenant, reports, names)
    }

    /// A decision Route just made (no tenant yet, nothing reported), read in place: Route
    /// returns the same decision, so it is not copied into a [`PendingDecision`] first.
    pub(super) fn of_decision(
        d: &Decision,
        request_id: Option<&str>,
        names: &mut Names,
    ) -> CompactPending {
        CompactPending::build(d, request_id, None, Reports::default(), names)
    }

    fn build(
        d: &Decision,
        request_id: Option<&str>,
        tenant: Option<&str>,
        reports: Reports<'_>,
        names: &mut Names,
    ) -> CompactPending {
        let names_of = |xs: &[String], names: &mut Names| -> Vec<Arc<str>> {
            xs.iter().map(|s| names.name(s)).collect()
        };
        let extra = Extra {
            replayed: d.replayed,
            quality_target: d.quality_target,
            max_output_tokens: d.max_output_tokens,
            classified_by: d.classified_by.as_deref().map(|s| names.name(s)),
            tags: d.tags.clone(),
            shadow: d
                .shadow
                .as_ref()
                .map(|m| (names.name(&m.model), names.name(&m.provider))),
            cache_hit: d.cache_hit.clone(),
            outcomes: names_of(reports.outcomes, names),
            failed: names_of(reports.failed, names),
            qualities: names_of(reports.qualities, names),
            sides: reports.sides,
        };
        let shape = names.shape_of(d, tenant);
        CompactPending {
            key: DecisionKey::of(&d.id),
            shape,
            request_id: request_id.map(Box::from),
            propensity: d.propensity,
            expected: d.expected,
            created_ms: d.created_ms,
            expires_ms: d.expires_ms,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            reason: d.reason,
            experiment_group: d.experiment_group,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        }
    }

    /// The full pending decision, as the rest of the service reads it.
    pub fn expand(&self) -> PendingDecision {
        let x = self.extra.as_deref();
        let list = |f: fn(&Extra) -> &Vec<Arc<str>>| x.map(|x| texts(f(x))).unwrap_or_default();
        PendingDecision {
            decision: self.decision(),
            request_id: self.request_id.as_deref().map(str::to_string),
            outcomes: list(|x| &x.outcomes),
            failed: list(|x| &x.failed),
            qualities: list(|x| &x.qualities),
            tenant: self.shape.tenant.as_ref().map(text),
            sides: x.map(|x| x.sides).unwrap_or_default(),
        }
    }

    /// The decision alone (for its event-log record).
    pub fn decision(&self) -> Decision {
        let x = self.extra.as_deref();
        let s = &*self.shape;
        let model_ref = |(m, p): &(Arc<str>, Arc<str>)| ModelRef {
            model: text(m),
            provider: text(p),
        };
        Decision {
            id: self.key.to_string(),
            task_class: text(&s.task_class),
            model: text(&s.model),
            provider: text(&s.provider),
            fallbacks: s.fallbacks.iter().map(model_ref).collect(),
            propensity: self.propensity,
            expected: self.expected,
            reason: self.reason,
            policy: text(&s.policy),
            eligible: texts(&s.eligible),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            budget_key: s.budget_key.as_ref().map(text),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            replayed: x.is_some_and(|x| x.replayed),
            quality_target: x.and_then(|x| x.quality_target),
            max_output_tokens: x.and_then(|x| x.max_output_tokens),
            classified_by: x.and_then(|x| x.classified_by.as_ref()).map(text),
            tags: x.map(|x| x.tags.clone()).unwrap_or_default(),
            shadow: x.and_then(|x| x.shadow.as_ref()).map(model_ref),
            experiment_group: self.experiment_group,
            cache_hit: x.and_then(|x| x.cache_hit.clone()),
        }
    }

    /// The decision's tags (a Feedback's merged in), without expanding the decision.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.extra.as_deref().map_or(&NONE, |x| &x.tags)
    }

    pub fn key(&self) -> &DecisionKey {
        &self.key
    }

    /// The shared names (the same `Arc` for every decision of the shape while the engine's
    /// table holds it).
    pub fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }

    pub fn propensity(&self) -> f64 {
        self.propensity
    }

    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Token counts the decision assumed (input, output).
    pub fn tokens(&self) -> (u64, u64) {
        (self.input_tokens, self.output_tokens)
    }

    pub fn experiment_group(&self) -> Option<ExperimentGroup> {
        self.experiment_group
    }

    pub fn replayed(&self) -> bool {
        self.extra.as_deref().is_some_and(|x| x.replayed)
    }

    pub fn quality_target(&self) -> Option<f64> {
        self.extra.as_deref().and_then(|x| x.quality_target)
    }

    pub fn max_output_tokens(&self) -> Option<u64> {
        self.extra.as_deref().and_then(|x| x.max_output_tokens)
    }

    pub fn classified_by(&self) -> Option<&str> {
        self.extra
            .as_deref()
            .and_then(|x| x.classified_by.as_deref())
    }

    /// The shadow call's (model, provider), if the decision issued one.
    pub fn shadow(&self) -> Option<(&str, &str)> {
        self.extra
            .as_deref()
            .and_then(|x| x.shadow.as_ref())
            .map(|(m, p)| (&**m, &**p))
    }

    /// Models whose reported outcome was a failure.
    pub fn failed(&self) -> &[Arc<str>] {
        self.extra.as_deref().map_or(&[], |x| &x.failed)
    }

    pub fn id(&self) -> String {
        self.key.to_string()
    }

    pub fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    pub fn task_class(&self) -> &str {
        &self.shape.task_class
    }

    pub fn model(&self) -> &str {
        &self.shape.model
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    pub fn budget_key(&self) -> Option<&str> {
        self.shape.budget_key.as_deref()
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    pub fn tenant(&self) -> Option<&str> {
        self.shape.tenant.as_deref()
    }

    /// The stored response that answered the decision (reason `cache_hit`).
    pub fn cache_hit(&self) -> Option<&crate::cache::Hit> {
        self.extra.as_deref().and_then(|x| x.cache_hit.as_ref())
    }

    /// The model of the shadow call, if the decision issued one.
    pub fn shadow_model(&self) -> Option<&str> {
        self.extra
            .as_deref()
            .and_then(|x| x.shadow.as_ref())
            .map(|(m, _)| &**m)
    }

    /// The chosen model, then its fallbacks.
    pub fn offered(&self) -> impl Iterator<Item = &str> + Clone {
        let s = &*self.shape;
        std::iter::once(&*s.model).chain(s.fallbacks.iter().map(|(m, _)| &**m))
    }

    /// Models whose outcome was reported.
    pub fn outcomes(&self) -> &[Arc<str>] {
        self.extra.as_deref().map_or(&[], |x| &x.outcomes)
    }

    /// Models whose quality was reported.
    pub fn qualities(&self) -> &[Arc<str>] {
        self.extra.as_deref().map_or(&[], |x| &x.qualities)
    }

    /// What was reported of the decided model's and the shadow's calls.
    pub fn sides(&self) -> PairSides {
        self.extra.as_deref().map(|x| x.sides).unwrap_or_default()
    }

    /// Whether `self` and `other` hold the same shared names and lists (not copies).
    #[cfg(test)]
    pub(super) fn shares_names_with(&self, other: &CompactPending) -> bool {
        Arc::ptr_eq(&self.shape, &other.shape)
    }

    pub(super) fn set_tenant(&mut self, tenant: Option<&str>, names: &mut Names) {
        let mut shape = Shape::clone(&self.shape);
        shape.tenant = tenant.map(|t| names.name(t));
        self.shape = names.shape(shape);
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Notes a reported outcome of `model` (and whether it failed).
    pub(super) fn mark_outcome(&mut self, model: &str, failed: bool, names: &mut Names) {
        let m = names.name(model);
        let x = self.extra_mut();
        if failed {
            x.failed.push(Arc::clone(&m));
        }
        x.outcomes.push(m);
    }

    /// Notes a reported quality score of `model`.
    pub(super) fn mark_quality(&mut self, model: &str, names: &mut Names) {
        let m = names.name(model);
        self.extra_mut().qualities.push(m);
    }

    /// Replaces the decision's tags (a Feedback's merged in).
    pub(super) fn set_tags(&mut self, tags: &BTreeMap<String, String>) {
        if self.extra.as_deref().map(|x| &x.tags) != Some(tags) {
            if tags.is_empty() && self.extra.is_none() {
                return;
            }
            self.extra_mut().tags = tags.clone();
        }
    }
}
