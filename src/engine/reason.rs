//! Why a decision picked its model: named once here, written on the wire (the proto's `reason`
//! string, logged traffic, metrics labels) as its snake_case name by [`Reason::as_str`].

use serde::{Deserialize, Serialize};

/// Why a decision picked its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Thompson sampling drew the best utility for it.
    Sampled,
    /// The adaptive policy sampled it.
    AdaptiveSampled,
    /// Epsilon-greedy explored.
    Explore,
    /// Epsilon-greedy exploited the best mean.
    Exploit,
    /// An upper-confidence-bound policy ranked it first.
    Ucb,
    Ucb1,
    /// Chosen uniformly at random.
    Uniform,
    /// Fixed baselines.
    Cheapest,
    LowestLatency,
    StaticBest,
    /// It was the only eligible model.
    OnlyCandidate,
    /// Every arm looked worse than this one even after its constraint penalty.
    ConstraintsUnmet,
    /// The expected-best model's breaker is open; the policy chose among the others.
    BreakerFallback,
    /// A half-open breaker took this request as its probe.
    BreakerProbe,
    /// Every candidate's breaker is open and `all_open = least_bad` routed the soonest to reopen.
    AllBreakersOpen,
    /// The budget was exhausted and the cheapest model that still fits was routed.
    BudgetExhausted,
    /// The pacing multiplier moved the expected-best model to a cheaper one.
    BudgetPacing,
    /// The `min_propensity` floor's uniform draw picked it.
    ExplorationFloor,
    /// The simulator's oracle (the best model in hindsight), in simulated logged traffic.
    Oracle,
    /// The response cache answered with a stored response; no model is called.
    CacheHit,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 20] = [
        Reason::Sampled,
        Reason::AdaptiveSampled,
        Reason::Explore,
        Reason::Exploit,
        Reason::Ucb,
        Reason::Ucb1,
        Reason::Uniform,
        Reason::Cheapest,
        Reason::LowestLatency,
        Reason::StaticBest,
        Reason::OnlyCandidate,
        Reason::ConstraintsUnmet,
        Reason::BreakerFallback,
        Reason::BreakerProbe,
        Reason::AllBreakersOpen,
        Reason::BudgetExhausted,
        Reason::BudgetPacing,
        Reason::ExplorationFloor,
        Reason::Oracle,
        Reason::CacheHit,
    ];

    /// The wire name (proto `reason`, logged traffic, metrics label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Sampled => "sampled",
            Reason::AdaptiveSampled => "adaptive_sampled",
            Reason::Explore => "explore",
            Reason::Exploit => "exploit",
            Reason::Ucb => "ucb",
            Reason::Ucb1 => "ucb1",
            Reason::Uniform => "uniform",
            Reason::Cheapest => "cheapest",
            Reason::LowestLatency => "lowest_latency",
            Reason::StaticBest => "static_best",
            Reason::OnlyCandidate => "only_candidate",
            Reason::ConstraintsUnmet => "constraints_unmet",
            Reason::BreakerFallback => "breaker_fallback",
            Reason::BreakerProbe => "breaker_probe",
            Reason::AllBreakersOpen => "all_breakers_open",
            Reason::BudgetExhausted => "budget_exhausted",
            Reason::BudgetPacing => "budget_pacing",
            Reason::ExplorationFloor => "exploration_floor",
            Reason::Oracle => "oracle",
            Reason::CacheHit => "cache_hit",
        }
    }

    /// The reason named by `name` (the wire form), if any. The policies still name their reasons as
    /// static strings; the engine turns them into a `Reason` here, once per decision.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether the policy's own choice stood (no breaker or budget override).
    pub const fn is_policy_choice(self) -> bool {
        !matches!(
            self,
            Reason::ConstraintsUnmet
                | Reason::BreakerFallback
                | Reason::BreakerProbe
                | Reason::AllBreakersOpen
                | Reason::BudgetExhausted
                | Reason::BudgetPacing
                | Reason::Oracle
                | Reason::CacheHit
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde_and_parse_back() {
        for r in Reason::ALL {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("no_such_reason"), None);
    }
}
