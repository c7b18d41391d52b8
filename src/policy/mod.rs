//! Pure decision maths: what an arm (task class, model) has learned, how a request scores it, and
//! the policies that turn scores into a choice with its propensity.
//!
//! Nothing here knows of time sources, I/O or threads: callers pass `now_ms` and an RNG.
//!
//! # Layout
//! - [`posterior`]: Beta and Normal-Gamma posteriors over decayed sufficient statistics.
//! - [`Arm`]: one (task class, model)'s posteriors and counters, updated by feedback.
//! - [`Scoring`]: a request's weights, reference scales and constraints; [`Scoring::utility`] scores
//!   a draw. [`objective`]: money-denominated values ([`Valuation`]) and the least cost at a quality
//!   target ([`QualityTargetState`]); every policy is generic over [`Utility`], so both drive it.
//! - [`floor`]: the `min_propensity` exploration floor and propensities under a substitution map.
//! - One file per policy: [`thompson`], [`ucb`], and the baselines [`uniform`], [`cheapest`],
//!   [`lowest_latency`], [`static_best`], [`epsilon_greedy`], [`ucb1`], [`adaptive`], behind
//!   [`PolicyKind`] and [`choose`].

pub mod adaptive;
pub mod cheapest;
pub mod epsilon_greedy;
pub mod floor;
pub mod lowest_latency;
pub mod merge;
pub mod objective;
pub mod pool;
pub mod posterior;
pub mod static_best;
pub mod thompson;
pub mod ucb;
pub mod ucb1;
pub mod uniform;

use std::collections::VecDeque;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use objective::{ArmValue, Objective, QualityTargetState, RequestScoring, Utility, Valuation};
pub use posterior::{decay_factor, BetaPosterior, GammaSampler, NormalGamma, Z95};

/// How many recent latencies the lowest-latency baseline averages (LiteLLM's latency routing keeps 10).
pub const LATENCY_WINDOW: usize = 10;

/// Evidence cap of the LiteLLM-style adaptive baseline (alpha + beta beyond the prior).
pub const ADAPTIVE_EVIDENCE_CAP: f64 = 200.0;

/// Normalised cost or latency terms are capped at this many reference units, so one wild draw from a
/// vague posterior (a huge sampled latency) cannot dominate the utility with an infinite value.
pub const MAX_NORMALISED_TERM: f64 = 50.0;

/// Half-life of the decayed selection counts behind "recent traffic share" in arm statistics.
pub const SHARE_HALF_LIFE_SECS: f64 = 300.0;

/// Smallest latency (ms) taken to the log scale: a reported 0 ms is a clock artefact, not a value.
pub const MIN_LATENCY_MS: f64 = 0.01;
/// Smallest price-table cost (USD) a prior's log-normal is centred on: a free model's prior is
/// "very cheap", which only sets where the posterior starts. Observed costs are never clamped (see
/// [`Arm::observe_outcome`]).
pub const MIN_COST_USD: f64 = 1e-9;

/// Relative weights of quality, cost and latency in the utility.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub quality: f64,
    pub cost: f64,
    pub latency: f64,
}

/// What happened to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Error,
    Timeout,
    RateLimited,
}

impl Outcome {
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

/// Priors for one arm, from config: a benchmark score, a typical latency and its p95, a success rate,
/// and a typical cost from the price table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmPrior {
    pub quality: f64,
    pub success_rate: f64,
    pub latency_ms: f64,
    pub latency_p95_ms: f64,
    pub cost_usd: f64,
    /// Spread of ln(cost) before any evidence.
    pub cost_log_sd: f64,
    /// Pseudo-observations each prior is worth.
    pub strength: f64,
}

/// What the router has learned about one (task class, model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Beta over SUCCESS vs ERROR / TIMEOUT / RATE_LIMITED.
    pub success: BetaPosterior,
    /// Beta over quality scores in [0, 1] (fractional updates), given success.
    pub quality: BetaPosterior,
    /// Normal-Gamma over ln(latency_ms) of successful calls.
    pub latency: NormalGamma,
    /// Normal-Gamma over ln(cost_usd) at the class's typical request size.
    pub cost: NormalGamma,
    /// Decisions that chose this arm.
    pub pulls: u64,
    pub successes: u64,
    pub failures: u64,
    pub quality_reports: u64,
    /// When decay was last applied (Unix ms).
    pub decayed_at_ms: u64,
    /// Last feedback (Unix ms), 0 = never.
    pub last_feedback_ms: u64,
    /// Decayed count of selections (half-life [`SHARE_HALF_LIFE_SECS`]) and when it was last decayed.
    pub share: f64,
    pub share_at_ms: u64,
    /// Last [`LATENCY_WINDOW`] latencies per output token (lowest-latency baseline).
    pub recent_latency: VecDeque<f64>,
    /// Sum and count of observed rewards in [0, 1] (UCB1 baseline; never decayed).
    pub reward_sum: f64,
    pub reward_n: f64,
    /// Beta over 0.7 quality + 0.3 (1 - normalised cost) (LiteLLM-style adaptive baseline).
    pub adaptive: BetaPosterior,
    /// Successful calls whose reported cost was exactly 0 (cached or free): they are not in the
    /// log-normal `cost` posterior (0 has no logarithm), and the expected cost of a success is the
    /// posterior mean times the share of non-zero costs (see [`Arm::zero_cost_share`]).
    #[serde(default)]
    pub zero_cost_successes: u64,
    /// Successful calls whose cost went into the `cost` posterior.
    #[serde(default)]
    pub priced_successes: u64,
    /// Sum and count of the costs reported for failed calls, at the class's typical size: a failure
    /// costs what the provider bills for it, learned apart from successes so that free errors do not
    /// drag the success cost down (and billed ones do not drag it up).
    #[serde(default)]
    pub failure_cost_sum: f64,
    #[serde(default)]
    pub failure_costs: u64,
}

impl Arm {
    /// A fresh arm holding only its priors.
    pub fn new(prior: &ArmPrior, now_ms: u64) -> Self {
        let latency_sd = ((prior.latency_p95_ms / prior.latency_ms).ln() / Z95).max(0.05);
        Self {
            success: BetaPosterior::with_prior(prior.success_rate, prior.strength),
            quality: BetaPosterior::with_prior(prior.quality, prior.strength),
            latency: NormalGamma::with_prior(prior.latency_ms.ln(), latency_sd, prior.strength),
            cost: NormalGamma::with_prior(
                prior.cost_usd.max(MIN_COST_USD).ln(),
                prior.cost_log_sd,
                prior.strength,
            ),
            pulls: 0,
            successes: 0,
            failures: 0,
            quality_reports: 0,
            decayed_at_ms: now_ms,
            last_feedback_ms: 0,
            share: 0.0,
            share_at_ms: now_ms,
            recent_latency: VecDeque::with_capacity(LATENCY_WINDOW),
            reward_sum: 0.0,
            reward_n: 0.0,
            adaptive: BetaPosterior::with_prior(0.5, 2.0),
            zero_cost_successes: 0,
            priced_successes: 0,
            failure_cost_sum: 0.0,
            failure_costs: 0,
        }
    }

    /// Fades the posteriors' evidence by the time elapsed since the last decay, under `half_life_secs`.
    pub fn decay_to(&mut self, now_ms: u64, half_life_secs: Option<f64>) {
        if now_ms <= self.decayed_at_ms {
            return;
        }
        let gamma = decay_factor(
            (now_ms - self.decayed_at_ms) as f64 / 1000.0,
            half_life_secs,
        );
        self.success.decay(gamma);
        self.quality.decay(gamma);
        self.latency.decay(gamma);
        self.cost.decay(gamma);
        self.decayed_at_ms = now_ms;
    }

    /// Weakens the latency and success evidence by `factor` (e.g. after an outage ends, so the router
    /// re-learns instead of trusting pre-outage numbers).
    pub fn weaken_health_evidence(&mut self, factor: f64) {
        self.success.decay(factor);
        self.latency.decay(factor);
    }

    /// Counts one selection for the recent traffic share.
    pub fn record_pull(&mut self, now_ms: u64) {
        self.pulls += 1;
        self.share = self.share_at(now_ms) + 1.0;
        self.share_at_ms = self.share_at_ms.max(now_ms);
    }

    /// The decayed selection count as of `now_ms`.
    pub fn share_at(&self, now_ms: u64) -> f64 {
        let dt = now_ms.saturating_sub(self.share_at_ms) as f64 / 1000.0;
        self.share * decay_factor(dt, Some(SHARE_HALF_LIFE_SECS))
    }

    /// Records an outcome: success counts, latency of successful calls, cost when known, and the
    /// baselines' statistics. Inputs are validated by the caller (finite, non-negative).
    ///
    /// Cost: only a success's cost enters the log-normal posterior, and only when positive; a zero
    /// cost on a success is counted in [`Arm::zero_cost_share`] instead (never clamped into log
    /// space, where ln(1e-9) = -20.7 would wreck the mean); a failure's cost is summed apart
    /// ([`Arm::failure_cost_mean`]).
    pub fn observe_outcome(&mut self, obs: &Observation, scoring: &Scoring, now_ms: u64) {
        let ok = obs.outcome.is_success();
        self.success.observe(if ok { 1.0 } else { 0.0 });
        if ok {
            self.successes += 1;
        } else {
            self.failures += 1;
        }
        if let (true, Some(latency_ms)) = (ok, obs.latency_ms) {
            self.latency.observe(latency_ms.max(MIN_LATENCY_MS).ln());
            let per_token = match obs.output_tokens {
                Some(t) if t > 0 => latency_ms / t as f64,
                _ => latency_ms,
            };
            if self.recent_latency.len() == LATENCY_WINDOW {
                self.recent_latency.pop_front();
            }
            self.recent_latency.push_back(per_token);
        }
        match (ok, obs.cost_usd_typical) {
            (true, Some(c)) if c > 0.0 => {
                self.cost.observe(c.ln());
                self.priced_successes += 1;
            }
            (true, Some(_)) => self.zero_cost_successes += 1,
            (false, Some(c)) => {
                self.failure_cost_sum += c.max(0.0);
                self.failure_costs += 1;
            }
            (_, None) => {}
        }
        self.last_feedback_ms = self.last_feedback_ms.max(now_ms);
        // Baseline statistics: quality of a failure is 0; of a success, the reported score or the
        // current posterior mean while the score is still to come.
        let quality = if ok {
            obs.quality.unwrap_or_else(|| self.quality.mean())
        } else {
            0.0
        };
        let latency = obs.latency_ms.unwrap_or_else(|| self.latency.mean_exp());
        let cost = obs.cost_usd.unwrap_or_else(|| self.cost.mean_exp());
        self.reward_sum += scoring.observed_reward01(quality, cost, latency);
        self.reward_n += 1.0;
        let cost_norm = (cost / scoring.cost_ref_usd).min(1.0);
        self.adaptive
            .observe(0.7 * quality + 0.3 * (1.0 - cost_norm));
        let evidence = self.adaptive.evidence();
        if evidence > ADAPTIVE_EVIDENCE_CAP {
            self.adaptive.decay(ADAPTIVE_EVIDENCE_CAP / evidence);
        }
    }

    /// Records a quality score in [0, 1] of a successful call.
    pub fn observe_quality(&mut self, quality: f64, now_ms: u64) {
        self.quality.observe(quality);
        self.quality_reports += 1;
        self.last_feedback_ms = self.last_feedback_ms.max(now_ms);
    }

    /// Outcomes and quality scores observed since the arm was created (never decayed).
    pub fn observations(&self) -> u64 {
        self.successes + self.failures + self.quality_reports
    }

    /// Share of successful calls reported free, with one pseudo-observation on "priced" so that a
    /// single free call does not make an arm free: z / (z + p + 1).
    pub fn zero_cost_share(&self) -> f64 {
        let z = self.zero_cost_successes as f64;
        z / (z + self.priced_successes as f64 + 1.0)
    }

    /// Mean reported cost of a failed call at the class's typical size (0 before any is reported:
    /// failures are free unless the caller says otherwise).
    pub fn failure_cost_mean(&self) -> f64 {
        if self.failure_costs == 0 {
            0.0
        } else {
            self.failure_cost_sum / self.failure_costs as f64
        }
    }

    /// Expected cost of choosing the arm once at the class's typical size, given the success
    /// probability `success` and a success's log-normal mean `success_cost` (from the posterior or
    /// a draw): (1 - zero share) x success_cost + (1 - success) x failure cost. The success cost
    /// is charged whether or not the call succeeds, because a failure is followed by a retry or a
    /// fallback that costs about as much (so a flaky arm never looks cheaper for failing); a
    /// billed failure adds its own cost on top.
    pub fn expected_cost(&self, success: f64, success_cost: f64) -> f64 {
        (1.0 - self.zero_cost_share()) * success_cost + (1.0 - success) * self.failure_cost_mean()
    }

    /// Posterior-mean summary, scaled to a request by `cost_scale`. `cost_usd` is the expected cost
    /// of a call, failures included ([`Arm::expected_cost`]).
    pub fn means(&self, cost_scale: f64) -> Means {
        let success = self.success.mean();
        Means {
            success,
            quality: self.quality.mean(),
            cost_usd: self.expected_cost(success, self.cost.mean_exp()) * cost_scale,
            latency_ms: self.latency.mean_exp(),
            latency_p95_ms: self.latency.predictive_p95_exp(),
        }
    }

    /// Mean of the last latencies per output token; 0 when none (so an untried model is tried first,
    /// as LiteLLM's latency routing does).
    pub fn moving_latency(&self) -> f64 {
        if self.recent_latency.is_empty() {
            0.0
        } else {
            self.recent_latency.iter().sum::<f64>() / self.recent_latency.len() as f64
        }
    }
}

/// One feedback's measured values, validated and converted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub outcome: Outcome,
    pub latency_ms: Option<f64>,
    pub output_tokens: Option<u64>,
    /// Actual cost of this call.
    pub cost_usd: Option<f64>,
    /// The same cost scaled to the class's typical request size (what the cost posterior learns).
    pub cost_usd_typical: Option<f64>,
    pub quality: Option<f64>,
}

/// Expected values of one arm for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Means {
    pub success: f64,
    pub quality: f64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub latency_p95_ms: f64,
}

/// How a request scores arms: weights, reference scales, constraints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scoring {
    pub weights: Weights,
    pub cost_ref_usd: f64,
    pub latency_ref_ms: f64,
    /// Latency SLA on the p95 (ms), if any.
    pub max_latency_ms: Option<f64>,
    /// Cost cap (USD), if any.
    pub max_cost_usd: Option<f64>,
    /// Utility subtracted per broken constraint.
    pub violation_penalty: f64,
}

impl Scoring {
    /// U = w_q * success * quality - w_c * cost / cost_ref - w_l * latency / latency_ref, each
    /// normalised term capped at [`MAX_NORMALISED_TERM`], minus the violation penalty for a p95 over
    /// the SLA and for a cost over the cap.
    pub fn utility(&self, s: &Sample) -> f64 {
        let w = self.weights;
        let mut u = w.quality * s.success * s.quality
            - w.cost * (s.cost_usd / self.cost_ref_usd).min(MAX_NORMALISED_TERM)
            - w.latency * (s.latency_ms / self.latency_ref_ms).min(MAX_NORMALISED_TERM);
        u -= self.violation_penalty * f64::from(self.violations(s));
        u
    }

    /// The latency SLA (on p95) and the cost cap, +infinity where unset: `x > limit` is then
    /// false for every x, as [`Scoring::violations`] takes an unset limit.
    pub fn limits(&self) -> (f64, f64) {
        (
            self.max_latency_ms.unwrap_or(f64::INFINITY),
            self.max_cost_usd.unwrap_or(f64::INFINITY),
        )
    }

    /// How many of the request's constraints the draw breaks (0, 1 or 2).
    pub fn violations(&self, s: &Sample) -> u8 {
        let sla = self.max_latency_ms.is_some_and(|m| s.latency_p95_ms > m);
        let cap = self.max_cost_usd.is_some_and(|m| s.cost_usd > m);
        u8::from(sla) + u8::from(cap)
    }

    /// An observed outcome's reward mapped to [0, 1] for the UCB1 baseline: the utility with each
    /// penalty term capped at one reference unit, shifted by w_c + w_l and divided by the weights' sum.
    pub fn observed_reward01(&self, success_quality: f64, cost_usd: f64, latency_ms: f64) -> f64 {
        let w = self.weights;
        let total = w.quality + w.cost + w.latency;
        if total <= 0.0 {
            return 0.0;
        }
        let u = w.quality * success_quality
            - w.cost * (cost_usd / self.cost_ref_usd).min(1.0)
            - w.latency * (latency_ms / self.latency_ref_ms).min(1.0);
        ((u + w.cost + w.latency) / total).clamp(0.0, 1.0)
    }
}

/// One draw (or one set of bounds) of an arm's components for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub success: f64,
    pub quality: f64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub latency_p95_ms: f64,
}

impl From<Means> for Sample {
    fn from(m: Means) -> Self {
        Sample {
            success: m.success,
            quality: m.quality,
            cost_usd: m.cost_usd,
            latency_ms: m.latency_ms,
            latency_p95_ms: m.latency_p95_ms,
        }
    }
}

/// An eligible arm as a policy sees it for one request.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub arm: &'a Arm,
    /// Ratio of this request's price-table cost to the class's typical one, for this model.
    pub cost_scale: f64,
    /// Multiplier (<= 1) on the quality term from an outside DEGRADED signal; 1 when healthy.
    pub health: f64,
    /// Utility of the arm's priors alone (what a static choice would go by).
    pub prior_utility: f64,
    /// The arm's pool of posterior draws at the class's typical size and full health (see
    /// [`pool`]), by component; [`pool::Columns::empty`] when the caller keeps none.
    pub pool: &'a pool::Columns,
}

impl Candidate<'_> {
    /// Prepares the arm's posteriors for repeated Thompson draws.
    pub fn sampler(&self) -> ArmSampler {
        ArmSampler::new(self.arm, self.cost_scale, self.health)
    }

    /// A pooled draw (cost at the class's typical size, full health) scaled to this request.
    pub fn scale(&self, s: &Sample) -> Sample {
        Sample {
            quality: s.quality * self.health,
            cost_usd: s.cost_usd * self.cost_scale,
            ..*s
        }
    }

    /// Posterior means as a sample.
    pub fn mean_sample(&self) -> Sample {
        self.mean_sample_of(self.arm.means(self.cost_scale))
    }

    /// [`Candidate::mean_sample`] from the arm's means already taken
    /// (`arm.means(cost_scale)`).
    pub fn mean_sample_of(&self, means: Means) -> Sample {
        let mut s = Sample::from(means);
        s.quality *= self.health;
        s
    }
}

/// An arm's posteriors prepared for many draws (distribution set-up done once per decision).
#[derive(Debug, Clone, Copy)]
pub struct ArmSampler {
    success: (GammaSampler, GammaSampler),
    quality: (GammaSampler, GammaSampler),
    latency: NormalGammaSampler,
    cost: NormalGammaSampler,
    /// 1 - the arm's zero-cost share, and its mean failure cost.
    priced_share: f64,
    failure_cost: f64,
    cost_scale: f64,
    health: f64,
}

/// Draws (mu, sigma) from a Normal-Gamma: tau ~ Gamma(alpha, rate beta), mu ~ N(mu_n, 1/(kappa tau)).
#[derive(Debug, Clone, Copy)]
struct NormalGammaSampler {
    tau: GammaSampler,
    mu: f64,
    kappa: f64,
}

impl NormalGammaSampler {
    fn new(p: posterior::NormalGammaParams) -> Self {
        NormalGammaSampler {
            tau: GammaSampler::new(p.alpha, 1.0 / p.beta),
            mu: p.mu,
            kappa: p.kappa,
        }
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> (f64, f64) {
        let tau = self.tau.sample(rng).max(1e-12);
        let z: f64 = rng.sample(rand_distr::StandardNormal);
        (self.mu + z / (self.kappa * tau).sqrt(), (1.0 / tau).sqrt())
    }
}

fn beta_draw<R: Rng + ?Sized>(g: &(GammaSampler, GammaSampler), rng: &mut R) -> f64 {
    let x = g.0.sample(rng);
    let y = g.1.sample(rng);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

impl ArmSampler {
    /// Prepares `arm`'s posteriors for repeated draws, with costs scaled by `cost_scale` and the
    /// quality term by `health`.
    pub fn new(arm: &Arm, cost_scale: f64, health: f64) -> Self {
        ArmSampler {
            success: (
                GammaSampler::new(arm.success.alpha(), 1.0),
                GammaSampler::new(arm.success.beta(), 1.0),
            ),
            quality: (
                GammaSampler::new(arm.quality.alpha(), 1.0),
                GammaSampler::new(arm.quality.beta(), 1.0),
            ),
            latency: NormalGammaSampler::new(arm.latency.params()),
            cost: NormalGammaSampler::new(arm.cost.params()),
            priced_share: 1.0 - arm.zero_cost_share(),
            failure_cost: arm.failure_cost_mean(),
            cost_scale,
            health,
        }
    }

    /// One Thompson draw of the arm's components, scaled to the request.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Sample {
        let (lat_mu, lat_sigma) = self.latency.sample(rng);
        let (cost_mu, cost_sigma) = self.cost.sample(rng);
        let success = beta_draw(&self.success, rng);
        let success_cost = (cost_mu + 0.5 * cost_sigma * cost_sigma).min(700.0).exp();
        Sample {
            success,
            quality: beta_draw(&self.quality, rng) * self.health,
            cost_usd: (self.priced_share * success_cost + (1.0 - success) * self.failure_cost)
                * self.cost_scale,
            latency_ms: (lat_mu + 0.5 * lat_sigma * lat_sigma).min(700.0).exp(),
            latency_p95_ms: (lat_mu + Z95 * lat_sigma).min(700.0).exp(),
        }
    }
}

/// Which policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Thompson,
    Ucb,
    Uniform,
    Cheapest,
    LowestLatency,
    StaticBest,
    EpsilonGreedy,
    Ucb1,
    Adaptive,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 9] = [
        PolicyKind::Thompson,
        PolicyKind::Ucb,
        PolicyKind::Uniform,
        PolicyKind::Cheapest,
        PolicyKind::LowestLatency,
        PolicyKind::StaticBest,
        PolicyKind::EpsilonGreedy,
        PolicyKind::Ucb1,
        PolicyKind::Adaptive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Thompson => "thompson",
            PolicyKind::Ucb => "ucb",
            PolicyKind::Uniform => "uniform",
            PolicyKind::Cheapest => "cheapest",
            PolicyKind::LowestLatency => "lowest_latency",
            PolicyKind::StaticBest => "static_best",
            PolicyKind::EpsilonGreedy => "epsilon_greedy",
            PolicyKind::Ucb1 => "ucb1",
            PolicyKind::Adaptive => "adaptive",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Tunable settings every policy reads from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicySettings {
    pub kind: PolicyKind,
    /// Size of each arm's pool of posterior draws: the propensity is the exact share of pool
    /// indices the chosen arm wins (without pools, the number of Monte Carlo draws instead).
    pub propensity_samples: u32,
    /// UCB's exploration multiplier on sqrt(2 ln t).
    pub ucb_exploration: f64,
    /// Epsilon-greedy's exploration probability.
    pub epsilon: f64,
}

/// A policy's choice among the candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub index: usize,
    /// Probability that the policy picks this arm in this state.
    pub propensity: f64,
    pub reason: &'static str,
}

/// Picks one of `candidates` (non-empty) under `scoring` with the policy in `settings`.
pub fn choose<R: Rng + ?Sized, S: Utility + ?Sized>(
    settings: &PolicySettings,
    candidates: &[Candidate<'_>],
    scoring: &S,
    rng: &mut R,
) -> Choice {
    if candidates.len() == 1 {
        return Choice {
            index: 0,
            propensity: 1.0,
            reason: "only_candidate",
        };
    }
    match settings.kind {
        PolicyKind::Thompson => {
            thompson::choose(candidates, scoring, settings.propensity_samples, rng)
        }
        PolicyKind::Ucb => ucb::choose(candidates, scoring, settings.ucb_exploration),
        PolicyKind::Uniform => uniform::choose(candidates, rng),
        PolicyKind::Cheapest => cheapest::choose(candidates),
        PolicyKind::LowestLatency => lowest_latency::choose(candidates),
        PolicyKind::StaticBest => static_best::choose(candidates),
        PolicyKind::EpsilonGreedy => {
            epsilon_greedy::choose(candidates, scoring, settings.epsilon, rng)
        }
        PolicyKind::Ucb1 => ucb1::choose(candidates),
        PolicyKind::Adaptive => adaptive::choose(candidates, settings.propensity_samples, rng),
    }
}

/// Index of the largest value; ties go to the earliest (deterministic, so propensity 1 is exact).
pub fn argmax(values: impl IntoIterator<Item = f64>) -> usize {
    let mut best = 0;
    let mut best_value = f64::NEG_INFINITY;
    for (i, v) in values.into_iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

/// Candidates ordered by posterior-mean utility, best first (fallback order).
pub fn rank_by_mean_utility<S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
) -> Vec<usize> {
    let samples: Vec<Sample> = candidates.iter().map(Candidate::mean_sample).collect();
    rank_by_utility(&samples, scoring)
}

/// [`rank_by_mean_utility`] from the candidates' mean samples already taken.
pub fn rank_by_utility<S: Utility + ?Sized>(mean_samples: &[Sample], scoring: &S) -> Vec<usize> {
    let mut scored: Vec<(usize, f64)> = mean_samples
        .iter()
        .enumerate()
        .map(|(i, s)| (i, scoring.utility(s)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn prior(quality: f64, latency_ms: f64, cost_usd: f64) -> ArmPrior {
        ArmPrior {
            quality,
            success_rate: 0.99,
            latency_ms,
            latency_p95_ms: latency_ms * 2.0,
            cost_usd,
            cost_log_sd: 0.3,
            strength: 2.0,
        }
    }

    pub fn scoring() -> Scoring {
        Scoring {
            weights: Weights {
                quality: 1.0,
                cost: 0.2,
                latency: 0.2,
            },
            cost_ref_usd: 0.001,
            latency_ref_ms: 1000.0,
            max_latency_ms: None,
            max_cost_usd: None,
            violation_penalty: 1.0,
        }
    }

    pub fn candidates(arms: &[Arm]) -> Vec<Candidate<'_>> {
        arms.iter()
            .map(|arm| Candidate {
                arm,
                cost_scale: 1.0,
                health: 1.0,
                prior_utility: 0.0,
                pool: pool::Columns::empty(),
            })
            .collect()
    }

    pub fn success(quality: f64, latency_ms: f64, cost_usd: f64) -> Observation {
        Observation {
            outcome: Outcome::Success,
            latency_ms: Some(latency_ms),
            output_tokens: None,
            cost_usd: Some(cost_usd),
            cost_usd_typical: Some(cost_usd),
            quality: Some(quality),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn utility_formula_and_penalties() {
        let mut sc = scoring();
        let s = Sample {
            success: 0.9,
            quality: 0.8,
            cost_usd: 0.002,
            latency_ms: 500.0,
            latency_p95_ms: 1500.0,
        };
        let expected = 0.9 * 0.8 - 0.2 * 2.0 - 0.2 * 0.5;
        assert!((sc.utility(&s) - expected).abs() < 1e-12);
        sc.max_latency_ms = Some(1000.0);
        assert_eq!(sc.violations(&s), 1);
        assert!((sc.utility(&s) - (expected - 1.0)).abs() < 1e-12);
        sc.max_cost_usd = Some(0.001);
        assert_eq!(sc.violations(&s), 2);
    }

    #[test]
    fn observed_reward_is_in_unit_interval() {
        let sc = scoring();
        assert_eq!(sc.observed_reward01(1.0, 0.0, 0.0), 1.0);
        assert_eq!(sc.observed_reward01(0.0, 1.0, 1e9), 0.0);
        let r = sc.observed_reward01(0.5, 0.0005, 500.0);
        assert!((r - (0.5 - 0.1 - 0.1 + 0.4) / 1.4).abs() < 1e-12);
    }

    #[test]
    fn arm_learns_from_observations() {
        let mut arm = Arm::new(&prior(0.5, 1000.0, 0.001), 0);
        let sc = scoring();
        for _ in 0..50 {
            arm.observe_outcome(&success(0.9, 200.0, 0.0001), &sc, 1);
            arm.observe_quality(0.9, 1);
        }
        let m = arm.means(1.0);
        assert!(m.quality > 0.85, "{m:?}");
        assert!((m.latency_ms - 200.0).abs() < 30.0, "{m:?}");
        assert!((m.cost_usd - 0.0001).abs() < 0.00003, "{m:?}");
        assert_eq!(arm.successes, 50);
    }

    #[test]
    fn decay_with_infinite_half_life_is_exactly_no_decay() {
        let sc = scoring();
        let mut a = Arm::new(&prior(0.5, 1000.0, 0.001), 0);
        for i in 0..20 {
            a.observe_outcome(&success(0.7, 300.0 + f64::from(i), 0.0002), &sc, 0);
        }
        let mut b = a.clone();
        a.decay_to(3_600_000, None);
        b.decay_to(3_600_000, Some(f64::INFINITY));
        assert_eq!(a, b);
        assert_eq!(a.success.s, 20.0);
    }

    #[test]
    fn decay_after_one_half_life_halves_evidence() {
        let sc = scoring();
        let mut a = Arm::new(&prior(0.5, 1000.0, 0.001), 0);
        for _ in 0..10 {
            a.observe_outcome(&success(0.7, 300.0, 0.0002), &sc, 0);
        }
        a.decay_to(60_000, Some(60.0));
        assert!((a.success.s - 5.0).abs() < 1e-12);
        assert!((a.latency.n - 5.0).abs() < 1e-12);
    }

    #[test]
    fn adaptive_evidence_is_capped() {
        let sc = scoring();
        let mut a = Arm::new(&prior(0.5, 1000.0, 0.001), 0);
        for _ in 0..1000 {
            a.observe_outcome(&success(0.9, 300.0, 0.0002), &sc, 0);
        }
        assert!(a.adaptive.evidence() <= ADAPTIVE_EVIDENCE_CAP + 1e-9);
    }

    #[test]
    fn free_errors_do_not_skew_the_learned_cost() {
        // 10% of calls fail and report cost 0; successes cost log-normally around 0.002 USD. The
        // learned mean cost of a success stays within 10% of the truth and the failures are
        // tracked apart (free), so they add nothing to the expected cost of choosing the arm.
        use rand::rngs::SmallRng;
        use rand::SeedableRng;
        let mut rng = SmallRng::seed_from_u64(12);
        let sc = scoring();
        let (median, sigma) = (0.002f64, 0.4f64);
        let truth = median * (0.5 * sigma * sigma).exp();
        let mut arm = Arm::new(&prior(0.5, 1000.0, 0.01), 0);
        for i in 0..1000 {
            let obs = if i % 10 == 3 {
                Observation {
                    outcome: Outcome::Error,
                    latency_ms: None,
                    output_tokens: None,
                    cost_usd: Some(0.0),
                    cost_usd_typical: Some(0.0),
                    quality: None,
                }
            } else {
                let z: f64 = rng.sample(rand_distr::StandardNormal);
                let c = median * (sigma * z).exp();
                success(0.8, 300.0, c)
            };
            arm.observe_outcome(&obs, &sc, 0);
        }
        let learned = arm.cost.mean_exp();
        assert!((learned / truth - 1.0).abs() < 0.1, "{learned} vs {truth}");
        assert_eq!((arm.failure_costs, arm.failure_cost_mean()), (100, 0.0));
        assert_eq!(arm.zero_cost_successes, 0);
        let m = arm.means(1.0);
        let want = learned;
        assert!(
            (m.cost_usd - want).abs() < 1e-15,
            "{} vs {want}",
            m.cost_usd
        );
    }

    #[test]
    fn billed_failures_and_free_successes_enter_the_expected_cost() {
        let sc = scoring();
        let mut arm = Arm::new(&prior(0.5, 1000.0, 0.001), 0);
        arm.success = BetaPosterior::with_prior(0.5, 2.0);
        let fail = Observation {
            outcome: Outcome::Timeout,
            latency_ms: None,
            output_tokens: None,
            cost_usd: Some(0.004),
            cost_usd_typical: Some(0.004),
            quality: None,
        };
        arm.observe_outcome(&fail, &sc, 0);
        arm.observe_outcome(&success(0.9, 100.0, 0.0), &sc, 0);
        assert_eq!(arm.failure_cost_mean(), 0.004);
        assert_eq!(arm.zero_cost_successes, 1);
        // The free success did not enter the log posterior (still the prior's 2 pseudo-obs).
        assert_eq!(arm.cost.n, 0.0);
        assert!((arm.zero_cost_share() - 0.5).abs() < 1e-12);
        let s = arm.success.mean();
        let want = 0.5 * arm.cost.mean_exp() + (1.0 - s) * 0.004;
        assert!((arm.means(1.0).cost_usd - want).abs() < 1e-15);
    }

    #[test]
    fn argmax_breaks_ties_to_the_first() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax([f64::NAN, 0.0]), 1);
    }
}
