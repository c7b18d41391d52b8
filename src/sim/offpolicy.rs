//! Off-policy evaluation of logged traffic: what would a target policy have earned on the requests
//! another (logging) policy served?
//!
//! - Replay (Li, Chu, Langford, Wang 2011, "Unbiased offline evaluation of contextual-bandit-based
//!   news article recommendation algorithms"): run the target on the log in order; keep the events
//!   where it picks the logged model and feed their outcomes to it; the value is the mean reward of
//!   the kept events. Unbiased when the logging policy was uniformly random.
//! - IPS (Horvitz-Thompson): mean of w_i r_i with w_i = pi(a_i | x_i) / mu_i, mu_i the logged
//!   propensity.
//! - SNIPS (self-normalised IPS, Swaminathan & Joachims 2015): sum w_i r_i / sum w_i.
//! - Doubly robust (Dudik, Langford, Li 2011): mean of q(x_i, pi) + w_i (r_i - q(x_i, a_i)), with q
//!   the mean reward per (task class, model) in the log (the direct method's model).
//!
//! Rewards are the realised utility of the logged outcome under the class's weights. Each estimate
//! comes with its effective sample size (sum w)^2 / sum w^2 and a 95% confidence half-width (normal
//! approximation: t-interval of the per-event terms; delta method for SNIPS).
//!
//! A fixed target (`model:ID`) has pi(a | x) = 1 for a = ID when ID is eligible, else the event is
//! skipped. An engine policy target is run through the engine (learning from the kept events, as in
//! replay); its pi(a_i | x_i) is estimated by the indicator that its one draw picks a_i, which is
//! unbiased for the propensity.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

use super::metrics::t975;
use super::run::PolicySpec;
use super::trace::LoggedDecision;
use super::truth::ClassInfo;
use super::{mix_seed, SimError};
use crate::config::Config;
use crate::engine::{Engine, FeedbackInput, Reason, RouteInput};

/// A policy to evaluate on logged traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Always this model (when eligible).
    Fixed(String),
    /// The engine with a policy spec.
    Policy(PolicySpec),
}

impl Target {
    /// Parses `model:ID` or a policy spec.
    pub fn parse(text: &str) -> Result<Target, SimError> {
        match text.trim().strip_prefix("model:") {
            Some(m) => Ok(Target::Fixed(m.to_string())),
            None => Ok(Target::Policy(PolicySpec::parse(text)?)),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Target::Fixed(m) => format!("model:{m}"),
            Target::Policy(p) => p.label().to_string(),
        }
    }
}

/// One estimate with its spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Estimated mean reward per request.
    pub value: f64,
    /// 95% confidence half-width.
    pub ci95: f64,
    /// Effective sample size.
    pub ess: f64,
}

/// All estimates for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffPolicyResult {
    pub target: String,
    /// Logged events used (with an outcome, the target defined).
    pub events: usize,
    pub replay: Estimate,
    pub ips: Estimate,
    pub snips: Estimate,
    pub dr: Estimate,
}

fn mean_ci(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::INFINITY);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

fn ess(w: &[f64]) -> f64 {
    let s: f64 = w.iter().sum();
    let s2: f64 = w.iter().map(|x| x * x).sum();
    if s2 > 0.0 {
        s * s / s2
    } else {
        0.0
    }
}

/// The realised utility of a logged outcome, or None when a term the class weighs is missing (a
/// success without its quality score, a call without its cost, a success without its latency):
/// such an event is skipped, since counting the missing term as 0 would bias every estimate.
/// A failure's quality is 0 by definition, not missing.
fn logged_reward(
    class: &ClassInfo,
    d: &LoggedDecision,
    outcome: crate::policy::Outcome,
) -> Option<f64> {
    let w = class.config.weights;
    let ok = outcome.is_success();
    let quality = match (ok, d.quality) {
        (false, _) => 0.0,
        (true, Some(q)) => q,
        (true, None) if w.quality > 0.0 => return None,
        (true, None) => 0.0,
    };
    // What the engine charged (from tokens when the caller sent no cost), else the caller's.
    let cost_usd = match d.charged_usd.or(d.cost_usd) {
        Some(c) => c,
        None if w.cost > 0.0 => return None,
        None => 0.0,
    };
    if ok && w.latency > 0.0 && d.latency_ms.is_none() {
        return None;
    }
    Some(class.realised_utility(&super::trace::ModelOutcome {
        status: outcome,
        quality,
        latency_ms: d.latency_ms,
        cost_usd,
        output_tokens: 0,
    }))
}

/// Evaluates `target` on `log` (in time order) under `config`'s task classes and weights.
pub fn evaluate(
    log: &[LoggedDecision],
    config: &Config,
    target: &Target,
    seed: u64,
) -> Result<OffPolicyResult, SimError> {
    let classes: BTreeMap<&str, ClassInfo> = config
        .task_classes
        .values()
        .map(|c| {
            (
                c.name.as_str(),
                ClassInfo {
                    config: (**c).clone(),
                    all_mask: 0,
                },
            )
        })
        .collect();
    // Rewards of the usable events, and the direct-method model: mean reward per (class, model).
    let mut usable = Vec::new();
    let mut q_sum: BTreeMap<(&str, &str), (f64, f64)> = BTreeMap::new();
    for (i, d) in log.iter().enumerate() {
        // A cache hit called no model: it says nothing about any policy's choice.
        let Some(outcome) = d.outcome.filter(|_| d.reason != Reason::CacheHit) else {
            continue;
        };
        let Some(class) = classes.get(d.task_class.as_str()) else {
            return Err(SimError::new(
                format!("logged decision {} ({})", i + 1, d.decision_id),
                format!("task class {:?} is not in the config", d.task_class),
            ));
        };
        if !(d.propensity > 0.0 && d.propensity <= 1.0) {
            return Err(SimError::new(
                format!("logged decision {} ({}).propensity", i + 1, d.decision_id),
                format!("must be in (0, 1], got {}", d.propensity),
            ));
        }
        let Some(r) = logged_reward(class, d, outcome) else {
            continue;
        };
        let e = q_sum
            .entry((d.task_class.as_str(), d.model.as_str()))
            .or_default();
        e.0 += r;
        e.1 += 1.0;
        usable.push((d, r));
    }
    let q = |class: &str, model: &str| -> f64 {
        q_sum.get(&(class, model)).map_or(0.0, |(s, n)| s / n)
    };

    let mut engine = match target {
        Target::Policy(p) => Some(Engine::new(
            p.apply(config.clone())?,
            usable.first().map_or(0, |(d, _)| d.t_ms),
        )),
        Target::Fixed(_) => None,
    };
    let mut rng = SmallRng::seed_from_u64(mix_seed(seed, &[4]));
    let (mut w, mut wr, mut dr, mut kept) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut events = 0;
    for (d, r) in &usable {
        let pick = match (target, engine.as_mut()) {
            (Target::Fixed(m), _) => {
                if !d.eligible.contains(m) {
                    continue;
                }
                m.clone()
            }
            (Target::Policy(_), Some(engine)) => {
                let input = RouteInput {
                    task_class: d.task_class.clone(),
                    candidates: d.eligible.clone(),
                    ..Default::default()
                };
                match engine.route(&input, d.t_ms, &mut rng) {
                    Ok(dec) => {
                        if dec.model == d.model {
                            let fb = FeedbackInput {
                                decision_id: dec.id.clone(),
                                outcome: d.outcome,
                                latency_ms: d.latency_ms,
                                cost_usd: d.cost_usd,
                                quality: d.outcome.filter(|o| o.is_success()).and(d.quality),
                                ..Default::default()
                            };
                            if let Err(e) = engine.feedback(&fb, d.t_ms) {
                                tracing::debug!(error = %e, "off-policy feedback refused");
                            }
                        }
                        dec.model
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, decision = %d.decision_id, "target cannot route this event; skipped");
                        continue;
                    }
                }
            }
            (Target::Policy(_), None) => continue,
        };
        events += 1;
        let matched = pick == d.model;
        let wi = if matched { 1.0 / d.propensity } else { 0.0 };
        if matched {
            kept.push(*r);
        }
        w.push(wi);
        wr.push(wi * r);
        dr.push(q(&d.task_class, &pick) + wi * (r - q(&d.task_class, &d.model)));
    }
    let (replay_v, replay_ci) = mean_ci(&kept);
    let (ips_v, ips_ci) = mean_ci(&wr);
    let (dr_v, dr_ci) = mean_ci(&dr);
    let sum_w: f64 = w.iter().sum();
    let snips_v = if sum_w > 0.0 {
        wr.iter().sum::<f64>() / sum_w
    } else {
        f64::NAN
    };
    let snips_se = if sum_w > 0.0 {
        w.iter()
            .zip(&wr)
            .map(|(wi, wri)| (wri - wi * snips_v).powi(2))
            .sum::<f64>()
            .sqrt()
            / sum_w
    } else {
        f64::NAN
    };
    let ess_w = ess(&w);
    Ok(OffPolicyResult {
        target: target.label(),
        events,
        replay: Estimate {
            value: replay_v,
            ci95: replay_ci,
            ess: kept.len() as f64,
        },
        ips: Estimate {
            value: ips_v,
            ci95: ips_ci,
            ess: ess_w,
        },
        snips: Estimate {
            value: snips_v,
            ci95: 1.96 * snips_se,
            ess: ess_w,
        },
        dr: Estimate {
            value: dr_v,
            ci95: dr_ci,
            ess: ess_w,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Outcome;

    fn decision(outcome: Outcome, quality: Option<f64>, cost: Option<f64>) -> LoggedDecision {
        LoggedDecision {
            decision_id: "d".to_string(),
            t_ms: 0,
            task_class: "qa".to_string(),
            policy: "thompson".to_string(),
            eligible: vec!["a".to_string()],
            model: "a".to_string(),
            propensity: 1.0,
            reason: crate::engine::Reason::Sampled,
            outcome: Some(outcome),
            latency_ms: Some(100.0),
            cost_usd: cost,
            quality,
            budget_key: None,
            charged_usd: None,
            failure_cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            experiment_group: None,
            shadow: false,
            tags: Default::default(),
            shadow_call: None,
        }
    }

    #[test]
    fn a_missing_weighted_term_skips_the_event() {
        let config = Config::from_toml_str(
            "[models.a]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [task_classes.qa]\nmodels = [\"a\"]\n",
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let class = ClassInfo {
            config: (**config
                .task_classes
                .values()
                .next()
                .unwrap_or_else(|| panic!("qa")))
            .clone(),
            all_mask: 1,
        };
        let ok = Outcome::Success;
        assert!(logged_reward(&class, &decision(ok, Some(0.8), Some(0.001)), ok).is_some());
        assert_eq!(
            logged_reward(&class, &decision(ok, None, Some(0.001)), ok),
            None
        );
        assert_eq!(
            logged_reward(&class, &decision(ok, Some(0.8), None), ok),
            None
        );
        // A failure's quality is 0, not missing.
        let err = Outcome::Error;
        let r = logged_reward(&class, &decision(err, None, Some(0.0)), err);
        assert_eq!(
            r,
            Some(class.realised_utility(&super::super::trace::ModelOutcome {
                status: err,
                quality: 0.0,
                latency_ms: Some(100.0),
                cost_usd: 0.0,
                output_tokens: 0,
            }))
        );
    }
}
