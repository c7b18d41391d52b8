//! The binary arm record (tree `arms`): one prost message per (task class, model).
//!
//! Why: a class's arms are rewritten by every writer cycle that saw a decision or Feedback of the
//! class, and serde_json spent more instructions per arm (formatting some twenty floats as
//! shortest decimals) than the rest of the writer's work per decision. A prost record encodes the
//! floats as their eight bytes, reads back bit-exactly (also a non-finite value, which JSON
//! cannot hold), and evolves like the decision records: new fields take new tags.
//!
//! Old records: data dirs written before hold JSON arms. [`decode`] reads both (a JSON object
//! starts with `{`, which no arm message does: its first byte is field 1's tag, 0x0a), so a
//! data dir is migrated as its arms are next written, with no migration step at open. Nothing
//! here holds state.

use crate::policy::{Arm, BetaPosterior, NormalGamma};

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBeta {
    #[prost(double, tag = "1")]
    pub prior_alpha: f64,
    #[prost(double, tag = "2")]
    pub prior_beta: f64,
    #[prost(double, tag = "3")]
    pub s: f64,
    #[prost(double, tag = "4")]
    pub f: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredNormalGamma {
    #[prost(double, tag = "1")]
    pub prior_mu: f64,
    #[prost(double, tag = "2")]
    pub prior_kappa: f64,
    #[prost(double, tag = "3")]
    pub prior_alpha: f64,
    #[prost(double, tag = "4")]
    pub prior_beta: f64,
    #[prost(double, tag = "5")]
    pub n: f64,
    #[prost(double, tag = "6")]
    pub mean: f64,
    #[prost(double, tag = "7")]
    pub m2: f64,
}

/// [`Arm`] field for field (see its docs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredArm {
    #[prost(message, optional, tag = "1")]
    pub success: Option<StoredBeta>,
    #[prost(message, optional, tag = "2")]
    pub quality: Option<StoredBeta>,
    #[prost(message, optional, tag = "3")]
    pub latency: Option<StoredNormalGamma>,
    #[prost(message, optional, tag = "4")]
    pub cost: Option<StoredNormalGamma>,
    #[prost(uint64, tag = "5")]
    pub pulls: u64,
    #[prost(uint64, tag = "6")]
    pub successes: u64,
    #[prost(uint64, tag = "7")]
    pub failures: u64,
    #[prost(uint64, tag = "8")]
    pub quality_reports: u64,
    #[prost(uint64, tag = "9")]
    pub decayed_at_ms: u64,
    #[prost(uint64, tag = "10")]
    pub last_feedback_ms: u64,
    #[prost(double, tag = "11")]
    pub share: f64,
    #[prost(uint64, tag = "12")]
    pub share_at_ms: u64,
    #[prost(double, repeated, tag = "13")]
    pub recent_latency: Vec<f64>,
    #[prost(double, tag = "14")]
    pub reward_sum: f64,
    #[prost(double, tag = "15")]
    pub reward_n: f64,
    #[prost(message, optional, tag = "16")]
    pub adaptive: Option<StoredBeta>,
    #[prost(uint64, tag = "17")]
    pub zero_cost_successes: u64,
    #[prost(uint64, tag = "18")]
    pub priced_successes: u64,
    #[prost(double, tag = "19")]
    pub failure_cost_sum: f64,
    #[prost(uint64, tag = "20")]
    pub failure_costs: u64,
}

fn beta(b: &BetaPosterior) -> Option<StoredBeta> {
    Some(StoredBeta {
        prior_alpha: b.prior_alpha,
        prior_beta: b.prior_beta,
        s: b.s,
        f: b.f,
    })
}

fn normal_gamma(g: &NormalGamma) -> Option<StoredNormalGamma> {
    Some(StoredNormalGamma {
        prior_mu: g.prior_mu,
        prior_kappa: g.prior_kappa,
        prior_alpha: g.prior_alpha,
        prior_beta: g.prior_beta,
        n: g.n,
        mean: g.mean,
        m2: g.m2,
    })
}

fn beta_of(b: Option<StoredBeta>, what: &str) -> Result<BetaPosterior, String> {
    let b = b.ok_or_else(|| format!("the arm record has no {what} posterior"))?;
    Ok(BetaPosterior {
        prior_alpha: b.prior_alpha,
        prior_beta: b.prior_beta,
        s: b.s,
        f: b.f,
    })
}

fn normal_gamma_of(g: Option<StoredNormalGamma>, what: &str) -> Result<NormalGamma, String> {
    let g = g.ok_or_else(|| format!("the arm record has no {what} posterior"))?;
    Ok(NormalGamma {
        prior_mu: g.prior_mu,
        prior_kappa: g.prior_kappa,
        prior_alpha: g.prior_alpha,
        prior_beta: g.prior_beta,
        n: g.n,
        mean: g.mean,
        m2: g.m2,
    })
}

/// The record of `arm`.
pub fn encode(arm: &Arm) -> Vec<u8> {
    use prost::Message;
    StoredArm {
        success: beta(&arm.success),
        quality: beta(&arm.quality),
        latency: normal_gamma(&arm.latency),
        cost: normal_gamma(&arm.cost),
        pulls: arm.pulls,
        successes: arm.successes,
        failures: arm.failures,
        quality_reports: arm.quality_reports,
        decayed_at_ms: arm.decayed_at_ms,
        last_feedback_ms: arm.last_feedback_ms,
        share: arm.share,
        share_at_ms: arm.share_at_ms,
        recent_latency: arm.recent_latency.iter().copied().collect(),
        reward_sum: arm.reward_sum,
        reward_n: arm.reward_n,
        adaptive: beta(&arm.adaptive),
        zero_cost_successes: arm.zero_cost_successes,
        priced_successes: arm.priced_successes,
        failure_cost_sum: arm.failure_cost_sum,
        failure_costs: arm.failure_costs,
    }
    .encode_to_vec()
}

/// An arm from its record: binary, or JSON as written before (see the module doc).
pub fn decode(v: &[u8]) -> Result<Arm, String> {
    use prost::Message;
    if v.first() == Some(&b'{') {
        return serde_json::from_slice(v).map_err(|e| format!("bad JSON arm record: {e}"));
    }
    let r = StoredArm::decode(v).map_err(|e| format!("bad arm record: {e}"))?;
    Ok(Arm {
        success: beta_of(r.success, "success")?,
        quality: beta_of(r.quality, "quality")?,
        latency: normal_gamma_of(r.latency, "latency")?,
        cost: normal_gamma_of(r.cost, "cost")?,
        pulls: r.pulls,
        successes: r.successes,
        failures: r.failures,
        quality_reports: r.quality_reports,
        decayed_at_ms: r.decayed_at_ms,
        last_feedback_ms: r.last_feedback_ms,
        share: r.share,
        share_at_ms: r.share_at_ms,
        recent_latency: r.recent_latency.into(),
        reward_sum: r.reward_sum,
        reward_n: r.reward_n,
        adaptive: beta_of(r.adaptive, "adaptive")?,
        zero_cost_successes: r.zero_cost_successes,
        priced_successes: r.priced_successes,
        failure_cost_sum: r.failure_cost_sum,
        failure_costs: r.failure_costs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{Engine, FeedbackInput, RouteInput};
    use crate::policy::Outcome;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// Arms that learned something read back equal from the binary record and from the JSON
    /// record written before; the binary record is the smaller; garbage is an error, not an arm.
    #[test]
    fn arms_round_trip_in_binary_and_json_records_still_read() {
        let config = Config::builtin().unwrap();
        let class = config.task_classes.keys().next().unwrap().clone();
        let now = 1_700_000_000_000u64;
        let mut engine = Engine::new(config, now);
        let mut rng = SmallRng::seed_from_u64(3);
        for i in 0..40u64 {
            let input = RouteInput {
                task_class: class.clone(),
                ..Default::default()
            };
            let d = engine.route(&input, now + i * 1000, &mut rng).unwrap();
            let failed = i % 4 == 0;
            let feedback = FeedbackInput {
                decision_id: d.id,
                outcome: Some(if failed {
                    Outcome::Timeout
                } else {
                    Outcome::Success
                }),
                latency_ms: Some(100.0 + i as f64),
                cost_usd: Some(0.001 * i as f64),
                quality: (!failed).then_some(0.5 + (i % 5) as f64 / 10.0),
                ..Default::default()
            };
            engine.feedback(&feedback, now + i * 1000 + 500).unwrap();
        }
        let arms = engine.class_arms(&class);
        assert!(arms
            .iter()
            .any(|(_, a)| a.pulls > 0 && a.recent_latency.len() > 1));
        for (model, arm) in arms {
            let binary = encode(arm);
            assert_eq!(&decode(&binary).unwrap(), arm, "{model}");
            let json = serde_json::to_vec(arm).unwrap();
            assert_eq!(&decode(&json).unwrap(), arm, "{model}");
            assert!(
                binary.len() < json.len(),
                "{} >= {}",
                binary.len(),
                json.len()
            );
        }
        assert!(decode(b"{\"pulls\": 1}").unwrap_err().contains("JSON"));
        assert!(decode(&[0x0a, 0xff]).is_err());
        assert!(decode(&[]).unwrap_err().contains("no success posterior"));
    }

    /// A data dir whose arms are JSON records (as every release before wrote them) opens and
    /// restores them; the arms written next are binary, and a restart restores both kinds.
    #[test]
    fn a_data_dir_with_json_arm_records_is_read_and_rewritten_in_binary() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::builtin().unwrap();
        let classes: Vec<String> = config.task_classes.keys().cloned().collect();
        let now = 1_700_000_000_000u64;
        let mut engine = Engine::new(config, now);
        let mut rng = SmallRng::seed_from_u64(5);
        let mut pair = |engine: &mut Engine, class: &str, t: u64| {
            let input = RouteInput {
                task_class: class.to_string(),
                ..Default::default()
            };
            let d = engine.route(&input, t, &mut rng).unwrap();
            let feedback = FeedbackInput {
                decision_id: d.id,
                outcome: Some(Outcome::Success),
                latency_ms: Some(250.0),
                quality: Some(0.9),
                ..Default::default()
            };
            engine.feedback(&feedback, t + 10).unwrap();
        };
        for (i, class) in classes.iter().enumerate() {
            pair(&mut engine, class, now + i as u64);
        }
        let arms_of = |e: &Engine| -> Vec<((String, String), Arm)> {
            classes
                .iter()
                .flat_map(|c| {
                    e.class_arms(c)
                        .into_iter()
                        .map(|(m, a)| ((c.clone(), m.to_string()), a.clone()))
                })
                .collect()
        };
        // Reopens after a drop (sled lets go of its lock shortly after).
        let reopen = || {
            for _ in 0..200 {
                match Store::open_with(dir.path(), 8) {
                    Err(crate::store::StoreError::Locked(_)) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    other => return other.unwrap(),
                }
            }
            panic!("{} stayed locked", dir.path().display());
        };
        let load = |store: &Store| -> Vec<((String, String), Arm)> {
            store.load(now, 100).unwrap().arms.into_iter().collect()
        };
        let mut want = arms_of(&engine);
        want.sort_by(|a, b| a.0.cmp(&b.0));
        {
            // The data dir as the previous release left it: every arm a JSON record.
            let store = Store::open_with(dir.path(), 8).unwrap();
            for ((class, model), arm) in &want {
                let key = crate::store::arm_key(class, model);
                store
                    .arms
                    .insert(key, serde_json::to_vec(arm).unwrap())
                    .unwrap();
            }
            store.rescan().unwrap();
            store.flush().unwrap();
        }
        let store = reopen();
        assert_eq!(load(&store), want);
        assert_eq!(store.skipped_arms(), 0);
        // New learning in one class: its arms are written again, in binary.
        engine.take_changes();
        pair(&mut engine, &classes[0], now + 1_000);
        store.write(engine.take_changes()).unwrap();
        store.flush().unwrap();
        let mut kinds = (0, 0);
        for kv in store.arms.iter() {
            let (_, v) = kv.unwrap();
            if v.first() == Some(&b'{') {
                kinds.0 += 1;
            } else {
                kinds.1 += 1;
            }
        }
        let first_class = engine.class_arms(&classes[0]).len();
        assert_eq!(kinds, (want.len() - first_class, first_class));
        drop(store);
        let store = reopen();
        let mut want = arms_of(&engine);
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(load(&store), want);
    }
}
