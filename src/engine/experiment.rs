//! The A/B experiment against a control: a class's `experiment = { control, fraction }` routes
//! that share of its requests by the control (the static best, a fixed model or another policy)
//! and the rest by the router, and labels each decision with its group.
//!
//! Assignment is stateless: a request with a request_id is in the control group when a stable
//! hash of the id (FNV-1a 64, fixed across versions and machines) falls below the fraction, so a
//! retried request stays in its group and a restart changes nothing; without a request_id the
//! engine's (seeded) RNG decides. Nothing of the experiment is kept in the engine: on restart it
//! is the config again.
//!
//! Both policies are evaluated on every decision, so the logged propensity is the probability of
//! the chosen model under the whole mixture, `f * p_control + (1 - f) * p_router`, which is what
//! off-policy estimates need (a request's group is random to the estimator). Control decisions
//! are evidence for their arms like any other.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::experiment::{Control, ExperimentConfig};
use crate::config::ModelConfig;
use crate::policy::objective::RequestScoring;
use crate::policy::{floor, static_best, Candidate, PolicySettings};

use super::route::Chosen;
use super::Reason;

/// A decision's experiment group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentGroup {
    Control,
    Router,
}

impl ExperimentGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentGroup::Control => "control",
            ExperimentGroup::Router => "router",
        }
    }

    pub fn parse(s: &str) -> Option<ExperimentGroup> {
        match s {
            "control" => Some(ExperimentGroup::Control),
            "router" => Some(ExperimentGroup::Router),
            _ => None,
        }
    }
}

/// FNV-1a 64 of `text`, finished with MurmurHash3's 64-bit mixer (FNV alone leaves the high bits
/// of ids that differ in their last characters, such as `req-1`, `req-2`, nearly equal), as a
/// number in [0, 1).
pub fn stable_unit(text: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The group of a request: by the hash of its request_id when it has one, else by the RNG.
pub fn assign<R: Rng + ?Sized>(fraction: f64, request_id: &str, rng: &mut R) -> ExperimentGroup {
    let u = if request_id.is_empty() {
        rng.random::<f64>()
    } else {
        stable_unit(request_id)
    };
    if u < fraction {
        ExperimentGroup::Control
    } else {
        ExperimentGroup::Router
    }
}

/// The control's choice among `candidates` and every candidate's probability under it.
fn control_choice<R: Rng + ?Sized>(
    control: &Control,
    base: &PolicySettings,
    candidates: &[Candidate<'_>],
    models: &[&ModelConfig],
    rs: &RequestScoring,
    rng: &mut R,
) -> (Chosen, Vec<f64>) {
    let fixed = match control {
        Control::Model(id) => models.iter().position(|m| m.id == *id),
        Control::StaticBest => None,
        Control::Policy { .. } => {
            let f = floor::choose_floored(&control.settings(base), candidates, rs, 0.0, rng);
            let chosen = Chosen {
                index: f.choice.index,
                propensity: f.choice.propensity,
                reason: Reason::parse(f.choice.reason).unwrap_or(Reason::Sampled),
            };
            return (chosen, f.probs);
        }
    };
    // A fixed model shut out by its breaker: the static best of the rest.
    let index = fixed.unwrap_or_else(|| static_best::choose(candidates).index);
    let probs = (0..candidates.len())
        .map(|i| if i == index { 1.0 } else { 0.0 })
        .collect();
    (
        Chosen {
            index,
            propensity: 1.0,
            reason: Reason::StaticBest,
        },
        probs,
    )
}

/// Routes one decision under the class's experiment: the group's choice, with the propensity
/// and probabilities of the whole mixture (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(super) fn under_experiment<R: Rng + ?Sized>(
    exp: &ExperimentConfig,
    base: &PolicySettings,
    request_id: &str,
    candidates: &[Candidate<'_>],
    models: &[&ModelConfig],
    rs: &RequestScoring,
    router: (Chosen, Vec<f64>),
    rng: &mut R,
) -> (Chosen, Vec<f64>, ExperimentGroup) {
    let group = assign(exp.fraction, request_id, rng);
    let (control, control_probs) = control_choice(&exp.control, base, candidates, models, rs, rng);
    let (router, router_probs) = router;
    let f = exp.fraction;
    let mixture: Vec<f64> = control_probs
        .iter()
        .zip(&router_probs)
        .map(|(c, r)| f * c + (1.0 - f) * r)
        .collect();
    let mut chosen = match group {
        ExperimentGroup::Control => control,
        ExperimentGroup::Router => router,
    };
    if let Some(&p) = mixture.get(chosen.index) {
        chosen.propensity = p;
    }
    (chosen, mixture, group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn assignment_by_request_id_is_stable_and_at_the_fraction() {
        let mut rng = SmallRng::seed_from_u64(7);
        let a = assign(0.3, "req-42", &mut rng);
        assert_eq!(a, assign(0.3, "req-42", &mut rng));
        let n = 20_000;
        let control = (0..n)
            .filter(|i| assign(0.3, &format!("req-{i}"), &mut rng) == ExperimentGroup::Control)
            .count() as f64;
        // Binomial(20000, 0.3): sd 64.8; 5 sd.
        assert!((control - 6000.0).abs() < 5.0 * 64.8, "{control}");
        let random = (0..n)
            .filter(|_| assign(0.3, "", &mut rng) == ExperimentGroup::Control)
            .count() as f64;
        assert!((random - 6000.0).abs() < 5.0 * 64.8, "{random}");
    }
}
