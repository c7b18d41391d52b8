//! Live reconfiguration: a validated new [`Config`] replaces the old one while learned state stays.
//!
//! Arms are matched by (task class, model): one that stays keeps its posterior; a model added to a
//! class starts from its configured priors (so Thompson sampling explores it by itself: its wide
//! prior wins draws until evidence says otherwise); a removed one is set aside with its history
//! (re-adding it later brings that history back). A price change shifts the arm's cost evidence by
//! the log of the price ratio, so the next decisions see the new price at once instead of after
//! enough feedback. Breakers and ledgers of models and budgets that remain are kept; pending
//! decisions stay and can still receive feedback: one for a removed model settles its spend and is
//! accepted ([`Engine::retired_feedback`]) but teaches nothing (the arm gets no more traffic).

use super::*;

/// What a reconfiguration changed, for the reply and the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconfigured {
    /// (task class, model) arms that start from priors (or from history they had before removal).
    pub added: Vec<(String, String)>,
    /// (task class, model) arms no longer routed to (their history is kept).
    pub removed: Vec<(String, String)>,
    /// (task class, model) arms whose price-table cost changed.
    pub repriced: Vec<(String, String)>,
}

impl Engine {
    /// Swaps in `config` (already validated), keeping learned state as the module docs describe.
    pub fn reconfigure(&mut self, config: Config, now_ms: u64) -> Reconfigured {
        let mut next = Engine::new(config, now_ms);
        let mut out = Reconfigured::default();
        let mut old_arms: BTreeMap<(String, String), Arm> = BTreeMap::new();
        for (class, state) in std::mem::take(&mut self.classes) {
            let models = self
                .config
                .task_classes
                .get(&class)
                .map(|c| c.models.clone())
                .unwrap_or_default();
            for (model, arm) in models.into_iter().zip(state.arms) {
                old_arms.insert((class.clone(), model), arm);
            }
        }
        for (name, class) in &next.config.task_classes {
            let Some(state) = next.classes.get_mut(name) else {
                continue;
            };
            for (model, slot) in class.models.iter().zip(state.arms.iter_mut()) {
                let key = (name.clone(), model.clone());
                let kept = old_arms.remove(&key);
                let arm = match kept {
                    Some(arm) => arm,
                    None => {
                        out.added.push(key.clone());
                        match self.retired.remove(&key) {
                            Some(arm) => arm,
                            None => continue, // starts from its priors, as `Engine::new` made it
                        }
                    }
                };
                *slot = arm;
                let old_cost = typical_cost(&self.config, name, model);
                let new_cost = typical_cost(&next.config, name, model);
                if let (Some(old), Some(new)) = (old_cost, new_cost) {
                    if old > 0.0 && new > 0.0 && old != new {
                        let shift = (new / old).ln();
                        slot.cost.prior_mu += shift;
                        slot.cost.mean += shift;
                        out.repriced.push(key);
                    }
                }
            }
        }
        out.removed = old_arms.keys().cloned().collect();
        self.retired.extend(old_arms);
        for (model, breaker) in std::mem::take(&mut self.breakers) {
            if let Some(slot) = next.breakers.get_mut(&model) {
                *slot = breaker;
            }
        }
        for (key, ledger) in std::mem::take(&mut self.ledgers) {
            if let Some(slot) = next.ledgers.get_mut(&key) {
                *slot = ledger;
            }
        }
        self.config = next.config;
        self.classes = next.classes;
        self.breakers = next.breakers;
        self.ledgers = next.ledgers;
        // Pools are derived from the arms: refilled on first use.
        self.pools.clear();
        self.dirty_classes = self.classes.keys().cloned().collect();
        out
    }
}

impl Engine {
    /// Feedback for a decision made before a reload removed its model from the class: its spend
    /// is settled and the outcome marked, so in-flight requests do not fail across a reload.
    /// `None` when the decision's model was not removed (the normal path applies). Returns the
    /// crossed budget thresholds.
    pub fn retired_feedback(
        &mut self,
        input: &FeedbackInput,
        now_ms: u64,
    ) -> Option<Vec<BudgetAlert>> {
        // Every Feedback asks: answer the common case (nothing retired, or not this decision's
        // model) from the compact record, without expanding it.
        if self.retired.is_empty() {
            return None;
        }
        let compact = self.pending.live(&input.decision_id, now_ms)?;
        let model = if input.model.is_empty() {
            compact.model().to_string()
        } else {
            input.model.clone()
        };
        if !self
            .retired
            .contains_key(&(compact.task_class().to_string(), model.clone()))
        {
            return None;
        }
        let pending = compact.expand();
        let d = &pending.decision;
        let (budget_key, new_outcome) = (d.budget_key.clone(), !pending.outcomes.contains(&model));
        let mut alerts = Vec::new();
        if let (Some(key), Some(outcome), true) = (budget_key, input.outcome, new_outcome) {
            // The model's price may be gone with it: the reservation stands in for a missing cost.
            let estimate = self
                .ledgers
                .get(&key)
                .and_then(|l| l.reservation_usd(&input.decision_id))
                .filter(|_| outcome != crate::policy::Outcome::RateLimited)
                .unwrap_or(0.0);
            let (crossed, _, recorded) =
                self.settle_budget(&key, &input.decision_id, input.cost_usd, estimate, now_ms);
            alerts = crossed;
            if let (Some(usd), Some(p)) = (recorded, self.pending(&input.decision_id)) {
                let d = &p.decision;
                self.account_spend(
                    spending::SpendOf {
                        model: &model,
                        task_class: &d.task_class,
                        budget_key: Some(&key),
                        tags: &d.tags,
                        usd,
                        input_tokens: None,
                        output_tokens: None,
                    },
                    now_ms,
                );
            }
        }
        if input.outcome.is_some() && new_outcome {
            self.pending.change(&input.decision_id, |p, names| {
                p.mark_outcome(&model, false, names)
            });
        }
        self.pending.mark(&input.decision_id);
        Some(alerts)
    }
}

/// The price-table cost of a class's typical request on `model`, as `config` prices it.
fn typical_cost(config: &Config, class: &str, model: &str) -> Option<f64> {
    let c = config.task_classes.get(class)?;
    let m = config.models.get(model)?;
    Some(m.cost_usd(c.typical_input_tokens, c.typical_output_tokens))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(models: &[(&str, f64)]) -> Config {
        let mut text = String::new();
        for (id, price) in models {
            text.push_str(&format!(
                "[models.{id}]\nprovider = \"p\"\ninput_usd_per_mtok = {price}\noutput_usd_per_mtok = {price}\nlatency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.8\n"
            ));
        }
        let ids: Vec<String> = models.iter().map(|(m, _)| format!("\"{m}\"")).collect();
        text.push_str(&format!(
            "[task_classes.qa]\nmodels = [{}]\n",
            ids.join(", ")
        ));
        Config::from_toml_str(&text, "t").unwrap()
    }

    fn arm<'a>(e: &'a Engine, model: &str) -> Option<&'a Arm> {
        e.class_arms("qa")
            .into_iter()
            .find(|(m, _)| *m == model)
            .map(|(_, a)| a)
    }

    #[test]
    fn reconfigure_keeps_learned_arms_starts_new_ones_at_priors_and_sets_removed_ones_aside() {
        let mut e = Engine::new(config(&[("a", 1.0), ("b", 1.0)]), 0);
        e.classes.get_mut("qa").unwrap().arms[0].pulls = 7;
        e.classes.get_mut("qa").unwrap().arms[1].pulls = 3;
        let out = e.reconfigure(config(&[("a", 1.0), ("c", 1.0)]), 10);
        assert_eq!(out.added, [("qa".to_string(), "c".to_string())]);
        assert_eq!(out.removed, [("qa".to_string(), "b".to_string())]);
        assert_eq!(arm(&e, "a").unwrap().pulls, 7);
        assert_eq!(arm(&e, "c").unwrap().pulls, 0);
        assert!(arm(&e, "b").is_none());
        // Re-adding the removed model brings its history back.
        let out = e.reconfigure(config(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]), 20);
        assert_eq!(out.added, [("qa".to_string(), "b".to_string())]);
        assert_eq!(arm(&e, "b").unwrap().pulls, 3);
    }

    #[test]
    fn breakers_gate_their_own_models_after_a_reload_moves_their_places() {
        use rand::SeedableRng;
        let mut e = Engine::new(config(&[("b", 1.0), ("c", 1.0), ("d", 1.0)]), 0);
        let health = |model: &str, state| HealthInput {
            model: model.into(),
            state: Some(state),
            provider: String::new(),
            ttl_secs: 3_600,
            reason: String::new(),
        };
        e.report_health(&health("c", HealthSignal::Down), 0)
            .unwrap();
        e.report_health(&health("d", HealthSignal::Degraded), 0)
            .unwrap();
        // "a" sorts first: every breaker's place among the breakers moves up by one.
        e.reconfigure(
            config(&[("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0)]),
            10,
        );
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut chosen = BTreeMap::<String, usize>::new();
        for t in 0..200 {
            let input = RouteInput {
                task_class: "qa".into(),
                ..Default::default()
            };
            let d = e.route(&input, 20 + t, &mut rng).unwrap();
            assert_ne!(d.model, "c", "the model whose breaker is down was chosen");
            assert!(
                d.fallbacks.iter().all(|f| f.model != "c"),
                "{:?}",
                d.fallbacks
            );
            *chosen.entry(d.model).or_default() += 1;
        }
        // Equal models but for health: the degraded one (quality discounted) is picked least.
        let n = |m: &str| chosen.get(m).copied().unwrap_or(0);
        assert!(n("d") < n("a") && n("d") < n("b"), "{chosen:?}");
        assert!(e.breaker("c").unwrap().open_until_ms(30).is_some());
        assert!(e.breaker("d").unwrap().degraded(30));
        assert!(!e.breaker("a").unwrap().degraded(30) && !e.breaker("b").unwrap().degraded(30));
    }

    #[test]
    fn a_price_change_scales_the_expected_cost_at_once() {
        let mut e = Engine::new(config(&[("a", 1.0)]), 0);
        let before = arm(&e, "a").unwrap().cost.mean_exp();
        let out = e.reconfigure(config(&[("a", 4.0)]), 10);
        assert_eq!(out.repriced, [("qa".to_string(), "a".to_string())]);
        let after = arm(&e, "a").unwrap().cost.mean_exp();
        assert!((after / before - 4.0).abs() < 1e-9, "{before} -> {after}");
    }
}
