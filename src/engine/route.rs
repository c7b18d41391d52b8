//! Route: validate the request, gate the candidates by breaker, let the policy choose, apply the
//! budget, and record the pending decision.

use rand::Rng;

use crate::breaker::BreakerState;
use crate::config::{Config, ModelConfig, TaskClassConfig, MAX_COST_CAP_USD, MAX_WEIGHT};
use crate::policy::objective::{self, ArmValue, RequestScoring, Valuation};
use crate::policy::pool::{Columns, DrawPool};
use crate::policy::{self, floor, Candidate, Means, PolicyKind, Sample, Scoring};

use super::*;

impl Engine {
    /// Picks a model for one request.
    pub fn route<R: Rng + ?Sized>(
        &mut self,
        input: &RouteInput,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Decision, EngineError> {
        let prompt = prompted::prompt_of(input)?;
        let mut counted = prompted::Counted::new(prompt, input.prompt_tokens);
        let resolved = self.resolve_class(input, prompt, &mut counted)?;
        let class = self.class(&resolved.class)?.clone();
        check_id("request_id", &input.request_id)?;
        self.note_class(&class.name);
        if let Some(replay) = self.replay(input, &class.name, now_ms)? {
            return Ok(replay);
        }
        let mut prepared = self.prepare(&class, input, &mut counted, now_ms)?;
        prepared.classified_by = resolved.classified_by;
        self.refresh_arms(&class.name, &prepared.requested, now_ms, rng)?;
        let picked = self.pick(&class, input, &prepared, now_ms, rng)?;
        self.take_arm(&class.name, &picked, now_ms);
        let ask = ShadowAsk {
            decision_id: &picked.id,
            chosen: picked.arm_index,
            closed: &prepared.gate.closed,
            budget_key: prepared.budget_key.as_deref(),
            pace: prepared.pace,
            input_tokens: prepared.input_tokens,
            output_tokens: prepared.output_tokens,
            max_output_given: input.max_output_tokens > 0,
        };
        let shadow = self.pick_shadow(&class, &ask, now_ms, rng);
        Ok(self.remember(&class, input, prepared, picked, shadow, now_ms))
    }

    /// Validates the request and settles everything the policy needs: the scoring (paced by the
    /// budget), token counts, the requested models and what the breakers let through.
    fn prepare(
        &mut self,
        class: &TaskClassConfig,
        input: &RouteInput,
        counted: &mut prompted::Counted<'_>,
        now_ms: u64,
    ) -> Result<Prepared, EngineError> {
        let unpaced = self.request_scoring(class, input)?;
        let requested = self.candidate_indices(class, &input.candidates)?;
        let input_tokens = match tokens("input_tokens", input.input_tokens)? {
            Some(n) => n,
            None => {
                let models = self
                    .classes
                    .get(&class.name)
                    .map_or(&[][..], |s| s.models.as_slice());
                counted
                    .input_tokens(
                        requested
                            .iter()
                            .filter_map(|&i| models.get(i))
                            .map(|m| m.tokenizer),
                    )
                    .unwrap_or(class.typical_input_tokens)
            }
        };
        let (output_tokens, max_output_tokens) =
            prompted::output_tokens(class, tokens("max_output_tokens", input.max_output_tokens)?);
        let gate = self.breaker_gate(class, &requested, now_ms)?;
        let eligible = gate.eligible();
        let budget = budget_for(&self.config, class, &input.budget_key)?;
        let quality_target = match input.quality_target {
            Some(t) if t.is_finite() && t > 0.0 && t <= 1.0 => Some(t),
            Some(t) => {
                return Err(invalid(
                    "quality_target",
                    format!(
                        "must be in (0, 1] (a share of the class's best model's quality, e.g. \
                         0.95), or unset for the class's own objective; got {t}"
                    ),
                ))
            }
            None => class.quality_target(),
        };
        crate::spend::tags::check(&input.tags).map_err(|e| invalid("tags", e.0))?;
        let money = request_money(input)?;
        let pace = self.pace(budget, now_ms);
        let mut scoring = unpaced;
        scoring.weights.cost *= pace;
        Ok(Prepared {
            scoring,
            unpaced,
            pace,
            quality_target,
            usd_per_second: input
                .value_usd_per_second
                .or(class.value_usd_per_second)
                .unwrap_or(0.0),
            valuation: match money {
                Some(m) => m,
                None if input.weights.is_some() => Valuation::Weights,
                None => class.valuation(),
            },
            input_tokens,
            output_tokens,
            max_output_tokens,
            classified_by: None,
            requested,
            gate,
            eligible,
            budget_key: budget.map(|b| b.key.clone()),
        })
    }

    /// Decays the requested arms to now and refreshes their pools of posterior draws.
    fn refresh_arms<R: Rng + ?Sized>(
        &mut self,
        class: &str,
        requested: &[usize],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(), EngineError> {
        let half_life = self.config.policy.half_life_secs;
        let settings = self.config.policy.settings;
        let state = self.classes.get_mut(class).ok_or_else(|| no_state(class))?;
        for &i in requested {
            state.arms[i].decay_to(now_ms, half_life);
        }
        if !self.pools.contains_key(class) {
            self.pools.insert(class.to_string(), Vec::new());
        }
        let Some(pools) = self.pools.get_mut(class) else {
            return Ok(());
        };
        if settings.kind == PolicyKind::Thompson && settings.propensity_samples > 0 {
            pools.resize_with(state.arms.len(), DrawPool::default);
            let size = settings.propensity_samples as usize;
            for &i in requested {
                pools[i].refresh(
                    &state.arms[i],
                    size,
                    now_ms,
                    half_life.unwrap_or(f64::INFINITY),
                    rng,
                );
            }
        }
        Ok(())
    }

    /// Chooses the model (breaker, policy, then budget), and ranks the fallbacks.
    fn pick<R: Rng + ?Sized>(
        &mut self,
        class: &TaskClassConfig,
        input: &RouteInput,
        p: &Prepared,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Picked, EngineError> {
        let Engine {
            config,
            classes,
            pools,
            ledgers,
            objectives,
            shared_budgets,
            cap_plans,
            id_salt,
            ..
        } = self;
        let state = classes
            .get(&class.name)
            .ok_or_else(|| no_state(&class.name))?;
        let pools = pools.get(&class.name).map_or(&[][..], Vec::as_slice);
        let degraded_factor = config.health.degraded_quality_factor;
        let candidate_of = |i: usize, model: &ModelConfig| -> Candidate<'_> {
            let degraded = p.gate.degraded.contains(&i);
            Candidate {
                arm: &state.arms[i],
                cost_scale: cost_scale(model, class, p.input_tokens, p.output_tokens),
                health: if degraded { degraded_factor } else { 1.0 },
                prior_utility: state.prior_utility[i],
                pool: pools.get(i).map_or(Columns::empty(), DrawPool::draws),
            }
        };
        let candidate =
            |i: usize| -> Option<Candidate<'_>> { Some(candidate_of(i, state.models.get(i)?)) };
        // The eligible models and their candidates.
        let (models, candidates): (Vec<&ModelConfig>, Vec<Candidate<'_>>) = p
            .eligible
            .iter()
            .filter_map(|&i| {
                let m = state.models.get(i)?;
                Some((m, candidate_of(i, m)))
            })
            .unzip();
        // Each candidate's posterior means, taken once: for the objective, the fallbacks' rank,
        // the constraints check and the decision's expected figures.
        let means: Vec<Means> = candidates
            .iter()
            .map(|c| c.arm.means(c.cost_scale))
            .collect();
        let mean_samples: Vec<Sample> = candidates
            .iter()
            .zip(&means)
            .map(|(c, &m)| c.mean_sample_of(m))
            .collect();
        // What each candidate is expected to deliver (quality as the policy sees it, health
        // included), for the objective's multiplier.
        let values: Vec<ArmValue> = candidates
            .iter()
            .zip(&means)
            .map(|(c, &m)| {
                let mut v = ArmValue::from_means(c.arm, m);
                v.quality *= c.health;
                v
            })
            .collect();
        let step = config.policy.quality_step;
        let mut target_state = p.quality_target.map(|t| {
            let st = objectives
                .entry(class.name.clone())
                .or_default()
                .entry(target_key(t))
                .or_default();
            st.start(&values, now_ms);
            (t, st)
        });
        let valuation = match &target_state {
            Some((_, st)) => st
                .valuation(step, p.usd_per_second)
                .unwrap_or(Valuation::Weights),
            None => p.valuation,
        };
        let rs = RequestScoring {
            scoring: p.scoring,
            valuation: paced(valuation, p.pace),
        };
        let (choice, probs, experiment_group) = match p.gate.forced {
            Some((_, reason)) => (
                Chosen {
                    index: 0,
                    propensity: 1.0,
                    reason,
                },
                one_hot(candidates.len(), 0),
                // Forced by the breakers whatever the group; still counted in its group.
                class
                    .experiment
                    .as_ref()
                    .map(|e| experiment::assign(e.fraction, &input.request_id, rng)),
            ),
            None => {
                let requested: Vec<Candidate<'_>> = if p.requested.len() > p.eligible.len() {
                    p.requested.iter().filter_map(|&i| candidate(i)).collect()
                } else {
                    Vec::new()
                };
                let router = policy_choice(config, &candidates, &requested, p, &rs, rng);
                match &class.experiment {
                    Some(e) => {
                        let (c, probs, g) = experiment::under_experiment(
                            e,
                            &config.policy.settings,
                            &input.request_id,
                            &candidates,
                            &models,
                            &rs,
                            router,
                            rng,
                        );
                        (c, probs, Some(g))
                    }
                    None => (router.0, router.1, None),
                }
            }
        };
        let id = decision_id(
            rng.random::<u64>() ^ id_salt.0,
            rng.random::<u64>() ^ id_salt.1,
        );
        let mut plan = None;
        let choice = match p.budget_key.as_ref().and_then(|k| config.budgets.get(k)) {
            Some(b) => {
                let req = BudgetRequest {
                    id: &id,
                    candidates: &candidates,
                    models: &models,
                    paced: &p.scoring,
                    unpaced: &p.unpaced,
                    input_tokens: p.input_tokens,
                    output_tokens: p.output_tokens,
                    max_output_given: p.max_output_tokens.is_some() || input.max_output_tokens > 0,
                    now_ms,
                    probs: &probs,
                };
                // Cluster mode: the cap rule runs on the shared figures (`cap.rs`).
                let ledger = ledgers
                    .entry(b.key.clone())
                    .or_insert_with(|| Ledger::new(b, now_ms));
                let shared = config.cluster.as_ref().and_then(|_| {
                    cap::plan_shared(ledger, shared_budgets.get(&b.key), b, &req, choice)
                });
                match shared {
                    Some((c, p)) => {
                        plan = Some(p);
                        c
                    }
                    None => apply_budget(ledgers, b, &req, choice)?,
                }
            }
            None => choice,
        };
        if let Some((t, st)) = target_state.as_mut() {
            st.on_decision(
                *t,
                values[choice.index].quality,
                objective::best_quality(&values),
                step,
                now_ms,
            );
        }
        let reason = if p.gate.forced.is_none()
            && choice.reason.is_policy_choice()
            && p.scoring.violations(&mean_samples[choice.index]) > 0
            && candidates.len() > 1
        {
            // Every arm looked worse than this one even after its penalty.
            Reason::ConstraintsUnmet
        } else {
            choice.reason
        };
        let ranked: Vec<usize> = policy::rank_by_utility(&mean_samples, &rs)
            .into_iter()
            .filter(|&i| p.gate.closed.contains(&p.eligible[i]))
            .collect();
        let fallbacks = ranked
            .iter()
            .filter(|&&i| i != choice.index)
            .take(config.limits.max_fallbacks)
            .map(|&i| model_ref(models[i]))
            .collect();
        if let Some(plan) = plan {
            cap::keep_plan(
                cap_plans,
                cap::CapPlan {
                    arms: p.eligible.clone(),
                    models: models.iter().map(|&m| model_ref(m)).collect(),
                    expected: means.iter().map(|&m| Expected::from(m)).collect(),
                    ranked,
                    max_fallbacks: config.limits.max_fallbacks,
                    ..plan
                },
            );
        }
        Ok(Picked {
            id,
            arm_index: p.eligible[choice.index],
            model: model_ref(models[choice.index]),
            propensity: choice.propensity,
            reason,
            expected: Expected::from(means[choice.index]),
            fallbacks,
            eligible: models.iter().map(|m| m.id.clone()).collect(),
            experiment_group,
        })
    }

    /// Counts the pull on the chosen arm and, for a half-open breaker, takes its probe slot.
    fn take_arm(&mut self, class: &str, picked: &Picked, now_ms: u64) {
        let Some(state) = self.classes.get_mut(class) else {
            return;
        };
        state.arms[picked.arm_index].record_pull(now_ms);
        let slot = state.breaker_slots.get(picked.arm_index).copied().flatten();
        if let Some(b) = slot.and_then(|s| self.breakers.at_mut(s)) {
            if b.state(now_ms) == BreakerState::HalfOpen {
                b.admit(now_ms, &self.config.breaker);
            }
        }
    }

    /// Builds the decision and keeps it pending for feedback.
    fn remember(
        &mut self,
        class: &TaskClassConfig,
        input: &RouteInput,
        prepared: Prepared,
        picked: Picked,
        shadow: Option<ModelRef>,
        now_ms: u64,
    ) -> Decision {
        let ttl_ms = (self.config.limits.pending_ttl_secs * 1000.0) as u64;
        let policy = match (picked.experiment_group, &class.experiment) {
            (Some(ExperimentGroup::Control), Some(e)) => e.control.label(),
            _ => self.config.policy.settings.kind.as_str().to_string(),
        };
        let decision = Decision {
            id: picked.id,
            task_class: class.name.clone(),
            model: picked.model.model,
            provider: picked.model.provider,
            fallbacks: picked.fallbacks,
            propensity: picked.propensity,
            expected: picked.expected,
            reason: picked.reason,
            policy,
            eligible: picked.eligible,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            budget_key: prepared.budget_key,
            input_tokens: prepared.input_tokens,
            output_tokens: prepared.output_tokens,
            replayed: false,
            quality_target: prepared.quality_target,
            max_output_tokens: prepared.max_output_tokens,
            classified_by: prepared.classified_by,
            tags: input.tags.clone(),
            shadow,
            experiment_group: picked.experiment_group,
            cache_hit: None,
        };
        let (evicted, held) = self.pending.insert_new(
            &decision,
            Some(input.request_id.as_str()).filter(|r| !r.is_empty()),
            self.config.limits.max_pending,
        );
        self.bury(&evicted, now_ms);
        // A decision waiting for its shared admission is logged once admitted (`cap.rs`).
        // Checked only when something takes the log: without a data dir nothing does.
        if self.log_events && !self.awaits_admission(&decision.id) {
            self.log(|| Logged::Decision(held));
        }
        decision
    }

    /// The pending decision for a repeated request_id, if any.
    pub(super) fn replay(
        &self,
        input: &RouteInput,
        task_class: &str,
        now_ms: u64,
    ) -> Result<Option<Decision>, EngineError> {
        if input.request_id.is_empty() {
            return Ok(None);
        }
        let Some(p) = self.pending.by_request(&input.request_id) else {
            return Ok(None);
        };
        if p.expires_ms() <= now_ms {
            return Ok(None);
        }
        if p.task_class() != task_class {
            return Err(EngineError::FailedPrecondition(format!(
                "request_id {:?} already names a pending decision of task_class {:?}; use a new \
                 request_id for a request of task_class {:?}",
                input.request_id,
                p.task_class(),
                task_class
            )));
        }
        let mut d = p.decision();
        d.replayed = true;
        Ok(Some(d))
    }

    pub(super) fn request_scoring(
        &self,
        class: &TaskClassConfig,
        input: &RouteInput,
    ) -> Result<Scoring, EngineError> {
        let max_latency = latency("max_latency_ms", input.max_latency_ms)?;
        let max_cost = bounded(
            "max_cost_usd",
            input.max_cost_usd,
            MAX_COST_CAP_USD,
            "0 means no cap",
        )?;
        if let Some(w) = input.weights {
            for (name, v) in [
                ("weights.quality", w.quality),
                ("weights.cost", w.cost),
                ("weights.latency", w.latency),
            ] {
                bounded(name, v, MAX_WEIGHT, "weights are relative")?;
            }
            if w.quality + w.cost + w.latency <= 0.0 {
                return Err(invalid(
                    "weights",
                    "at least one of quality, cost, latency must be > 0 (or omit weights to use \
                     the class's)",
                ));
            }
        }
        let mut scoring = class_scoring(&self.config, class, input.weights);
        if max_latency > 0.0 {
            scoring.max_latency_ms = Some(max_latency);
        }
        if max_cost > 0.0 {
            scoring.max_cost_usd = Some(max_cost);
        }
        Ok(scoring)
    }

    /// Indices (into the class's models) of the request's candidates, deduplicated, in class order.
    pub(super) fn candidate_indices(
        &self,
        class: &TaskClassConfig,
        candidates: &[String],
    ) -> Result<Vec<usize>, EngineError> {
        if candidates.is_empty() {
            return Ok((0..class.models.len()).collect());
        }
        let mut picked = vec![false; class.models.len()];
        for (n, c) in candidates.iter().enumerate() {
            match class.models.iter().position(|m| m == c) {
                Some(i) => picked[i] = true,
                None => {
                    return Err(invalid(
                        &format!("candidates[{n}]"),
                        format!(
                            "model {} is not a model of task_class {:?}; its models are: {}",
                            echo(c),
                            class.name,
                            class.models.join(", ")
                        ),
                    ))
                }
            }
        }
        Ok((0..class.models.len()).filter(|&i| picked[i]).collect())
    }
}

/// What Route settled before the policy runs.
struct Prepared {
    /// The request's scoring with the budget's pacing multiplier on the cost weight, and without.
    scoring: Scoring,
    unpaced: Scoring,
    /// The budget's pacing multiplier (1 without a budget).
    pace: f64,
    /// The `min_cost` target the request is decided under: its own, else the class's.
    quality_target: Option<f64>,
    /// How draws are valued outside `min_cost` (unpaced).
    valuation: Valuation,
    /// USD one second of latency costs under money valuations (the request's, else the class's).
    usd_per_second: f64,
    /// Token counts the decision assumes (the request's, else the class's typical ones).
    input_tokens: u64,
    output_tokens: u64,
    /// The output limit the class governs, returned for the caller to apply.
    max_output_tokens: Option<u64>,
    /// The classifier rule that chose the class (set by Route after the class is resolved).
    classified_by: Option<String>,
    /// The requested models (indices into the class's models).
    requested: Vec<usize>,
    gate: Gate,
    /// The pool the decision and its fallbacks come from: a forced pick first, then the closed.
    eligible: Vec<usize>,
    budget_key: Option<String>,
}

/// The routed model and what the decision records about it.
struct Picked {
    id: String,
    /// Index of the chosen arm in the class.
    arm_index: usize,
    model: ModelRef,
    propensity: f64,
    reason: Reason,
    expected: Expected,
    fallbacks: Vec<ModelRef>,
    eligible: Vec<String>,
    experiment_group: Option<ExperimentGroup>,
}

/// A choice among the eligible candidates, with its reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Chosen {
    /// Index into the eligible candidates.
    pub index: usize,
    pub propensity: f64,
    pub reason: Reason,
}

/// The policy's choice among `candidates`. `requested` holds every requested candidate when some
/// are shut out by their breakers (else it is empty): when the best of them by posterior means is
/// one of those, the reason is [`Reason::BreakerFallback`].
///
/// Decides under the `min_propensity` floor and returns, with the choice, every candidate's
/// probability of being chosen (for the propensity under budget substitution).
fn policy_choice<R: Rng + ?Sized>(
    config: &Config,
    candidates: &[Candidate<'_>],
    requested: &[Candidate<'_>],
    p: &Prepared,
    rs: &RequestScoring,
    rng: &mut R,
) -> (Chosen, Vec<f64>) {
    let f = floor::choose_floored(
        &config.policy.settings,
        candidates,
        rs,
        config.policy.min_propensity,
        rng,
    );
    let c = f.choice;
    let mut reason = Reason::parse(c.reason).unwrap_or(Reason::Sampled);
    if !requested.is_empty() {
        let best = policy::rank_by_mean_utility(requested, rs)
            .first()
            .map(|&k| p.requested[k]);
        if best.is_some_and(|b| !p.eligible.contains(&b)) {
            reason = Reason::BreakerFallback;
        }
    }
    (
        Chosen {
            index: c.index,
            propensity: c.propensity,
            reason,
        },
        f.probs,
    )
}

/// `valuation` under the budget's pacing multiplier `pace` (>= 1 while spend runs ahead): money
/// values shrink against cost by the same factor the cost weight grows by.
fn paced(valuation: Valuation, pace: f64) -> Valuation {
    match valuation {
        Valuation::Money {
            usd_per_quality,
            usd_per_second,
        } if pace > 0.0 => Valuation::Money {
            usd_per_quality: usd_per_quality / pace,
            usd_per_second: usd_per_second / pace,
        },
        v => v,
    }
}

/// Probability 1 on `index` among `n`.
fn one_hot(n: usize, index: usize) -> Vec<f64> {
    (0..n).map(|i| if i == index { 1.0 } else { 0.0 }).collect()
}

fn model_ref(m: &ModelConfig) -> ModelRef {
    ModelRef {
        model: m.id.clone(),
        provider: m.provider.clone(),
    }
}

fn no_state(class: &str) -> EngineError {
    EngineError::NotFound(format!("task_class {class:?} has no learned state"))
}

/// The request's own money valuation, when it sends one: `value_usd_per_quality` (and optionally
/// `value_usd_per_second`), each finite and in [0, 1e6]; not together with `weights` or
/// `quality_target`, which state the trade-off another way.
pub(super) fn request_money(input: &RouteInput) -> Result<Option<Valuation>, EngineError> {
    let check = |field: &str, v: Option<f64>| -> Result<Option<f64>, EngineError> {
        match v {
            Some(x) if !(x.is_finite() && (0.0..=MAX_WEIGHT).contains(&x)) => Err(invalid(
                field,
                format!("must be a finite number of USD in [0, {MAX_WEIGHT:e}]; got {x}"),
            )),
            other => Ok(other),
        }
    };
    let q = check("value_usd_per_quality", input.value_usd_per_quality)?;
    let s = check("value_usd_per_second", input.value_usd_per_second)?;
    let Some(usd_per_quality) = q else {
        return match s {
            Some(_) if input.quality_target.is_none() => Err(invalid(
                "value_usd_per_second",
                "needs value_usd_per_quality beside it (the money value of quality), or a \
                 quality_target",
            )),
            _ => Ok(None),
        };
    };
    if input.weights.is_some() {
        return Err(invalid(
            "value_usd_per_quality",
            "states the trade-off in money, weights state it without units: send one of \
             value_usd_per_quality and weights",
        ));
    }
    if input.quality_target.is_some() {
        return Err(invalid(
            "value_usd_per_quality",
            "prices quality directly, quality_target asks for the least cost at a quality: send \
             one of value_usd_per_quality and quality_target",
        ));
    }
    Ok(Some(Valuation::Money {
        usd_per_quality,
        usd_per_second: s.unwrap_or(0.0),
    }))
}

/// A new decision's id: two random words as 32 lowercase hex digits (the form
/// [`DecisionKey::of`] keeps as two integers). Written into a fixed buffer: `format!` cost
/// 1.1k instructions per Route (callgrind), this 0.5k.
fn decision_id(hi: u64, lo: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        let word = if i < 16 { hi } else { lo };
        *digit = DIGITS[((word >> ((15 - i % 16) * 4)) & 0xf) as usize];
    }
    // Hex digits are ASCII: never the empty default.
    String::from_utf8(hex.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod id_tests {
    use super::decision_id;

    #[test]
    fn decision_ids_are_the_two_words_in_fixed_width_hex() {
        for (hi, lo) in [
            (0, 0),
            (1, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
        ] {
            assert_eq!(decision_id(hi, lo), format!("{hi:016x}{lo:016x}"));
        }
        let id = decision_id(0xdead_beef, 42);
        assert_eq!(
            crate::engine::compact::DecisionKey::of(&id),
            crate::engine::compact::DecisionKey::Hex([0xdead_beef, 42])
        );
    }
}
