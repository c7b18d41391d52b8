//! Per-key spend budgets: a pure ledger with reservations, period rollover,
//! threshold alerts and pacing.
//!
//! The ledger does no I/O, reads no clock and spawns no threads: every
//! operation takes the current time as `now_ms` (Unix milliseconds) and the
//! key's [`BudgetConfig`], so the same inputs always give the same result and
//! the store can persist a [`Ledger`] as plain data. Money is `f64` USD; no
//! non-finite, negative or absurdly large amount ever enters the ledger.
//!
//! Flow for one routed request: [`Ledger::try_reserve`] the estimated cost
//! before calling the model, then [`Ledger::settle`] with the actual cost
//! (or [`Ledger::release`] if the request was never made). Reservations that
//! are never settled are dropped by [`Ledger::expire`] after
//! [`BudgetConfig::reservation_ttl_secs`]. [`Ledger::pacing_multiplier`] gives
//! the factor by which the router should weigh cost so that spend follows a
//! straight line to the end of the period.

mod config;
mod pacing;
mod period;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use config::*;
pub use pacing::*;
pub use period::*;

use crate::time::format_secs;

/// Default time a reservation may stay unsettled before [`Ledger::expire`]
/// drops it: an hour, the default time a decision accepts feedback
/// (`limits.pending_ttl_secs`), which the configuration never lets it undercut:
/// a reservation dropped while its decision is live lets other requests fill
/// the headroom, and the late settlement then overruns the limit.
pub const DEFAULT_RESERVATION_TTL_SECS: f64 = 3600.0;

/// Default alert thresholds, as fractions of the limit: half, most, all.
pub const DEFAULT_ALERT_THRESHOLDS: [f64; 3] = [0.5, 0.8, 1.0];

/// Remaining budget (USD) below which the budget counts as exhausted: a
/// millionth of a dollar is below the cost of any real LLM request, so such a
/// remainder only reflects floating-point rounding.
pub const EXHAUSTED_EPSILON_USD: f64 = 1e-6;

/// Largest amount (USD) accepted for one reservation or settlement. Anything
/// larger is a caller bug (e.g. a price in the wrong unit); the bound also
/// keeps sums finite.
pub const MAX_AMOUNT_USD: f64 = 1e12;

/// How many closed periods [`Ledger::history`] keeps (a year of months).
pub const HISTORY_LEN: usize = 12;

/// One closed budget period, as kept in [`Ledger::history`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClosedPeriod {
    /// Period start (inclusive), Unix ms.
    pub start_ms: u64,
    /// Period end (exclusive), Unix ms.
    pub end_ms: u64,
    /// Settled spend recorded in the period, USD.
    pub spent_usd: f64,
}

/// A reservation refused because it would take spent + reserved past the
/// limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "budget exhausted: spent ${spent_usd:.4} + reserved ${reserved_usd:.4} of ${limit_usd:.4} limit; resets at {}",
    format_secs(*.resets_at_ms)
)]
pub struct Exhausted {
    /// Settled spend of the current period, USD.
    pub spent_usd: f64,
    /// Sum of live reservations, USD (unchanged by the refused request).
    pub reserved_usd: f64,
    /// The period limit, USD.
    pub limit_usd: f64,
    /// When the current period ends and spend resets, Unix ms.
    pub resets_at_ms: u64,
}

/// Why [`Ledger::try_reserve`] refused a reservation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReserveError {
    /// The budget cannot cover the amount.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// The amount was NaN, infinite, negative or above [`MAX_AMOUNT_USD`].
    #[error("invalid reservation amount {amount_usd} USD (must be finite, >= 0 and <= {MAX_AMOUNT_USD})")]
    InvalidAmount {
        /// The rejected amount.
        amount_usd: f64,
    },
}

/// Result of [`Ledger::settle`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settlement {
    /// Alert thresholds (fractions of the limit, ascending) that settled
    /// spend crossed with this settlement; each fires once per period.
    pub crossed: Vec<f64>,
    /// How far this settlement pushed committed spend (spent + reserved)
    /// past the limit, USD: cost that neither the reservation nor the
    /// remaining headroom covered. 0 whenever the actual cost is at most the
    /// reserved amount. The sum over a period bounds how far spent + reserved
    /// can exceed the limit.
    pub overrun_usd: f64,
    /// What was added to spent, USD: the actual cost, or, when the actual
    /// cost was invalid (non-finite, negative, above [`MAX_AMOUNT_USD`]),
    /// the reserved estimate (0 without a reservation).
    pub recorded_usd: f64,
}

/// Coarse budget condition for the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetState {
    /// Spend is on or behind plan.
    Ok,
    /// Spend runs ahead of plan: the pacing multiplier is above 1.
    Pacing,
    /// Spent + reserved reached the limit (or the remainder is below
    /// [`EXHAUSTED_EPSILON_USD`]).
    Exhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Reservation {
    amount_usd: f64,
    created_ms: u64,
    /// Start of the period the reservation was made in (`None` in records written before
    /// reservations outlived a rollover: the current period). A reservation of a closed period
    /// settles into that period and no longer takes headroom of the current one.
    #[serde(default)]
    period_start_ms: Option<u64>,
}

/// What is left of a budgeted decision that expired or was evicted with its reservation still
/// live: enough to charge a late Feedback to the right period and model. Kept for
/// [`TombstoneLimits::ttl_ms`] and at most [`TombstoneLimits::max`] per ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub task_class: String,
    /// The chosen model first, then the listed fallbacks: the models a Feedback may name.
    pub models: Vec<String>,
    /// The reservation it held, charged when the late Feedback carries no cost.
    pub reserved_usd: f64,
    /// Start of the period the reservation was made in.
    pub period_start_ms: u64,
    /// When the decision was buried.
    pub buried_ms: u64,
    /// Whose decision it was, for Feedback scoping: `Some(None)` = made without a tenant; `None`
    /// = not recorded (a tombstone written before tenants were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Option<String>>,
    /// The decision's tags, so late spend is reported under them (bounded by
    /// `crate::spend::tags`: at most 8 short labels; omitted when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// How long and how many [`Tombstone`]s a ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TombstoneLimits {
    pub ttl_ms: u64,
    pub max: usize,
}

/// What a late settlement charged, by [`Ledger::settle_late`].
#[derive(Debug, Clone, PartialEq)]
pub struct LateSettlement {
    /// The tombstone it consumed (its models were checked by the caller).
    pub tombstone: Tombstone,
    pub settlement: Settlement,
}

/// Spend ledger of one budget key for the current period.
///
/// Invariants: every amount is finite and >= 0; a reservation is admitted
/// only if spent + reserved stays within the limit, so spent + reserved
/// exceeds the limit only by the settlements' [`Settlement::overrun_usd`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    period_start_ms: u64,
    period_end_ms: u64,
    spent_usd: f64,
    /// Live reservations by id; ordered so sums and serialisation are
    /// deterministic.
    reservations: BTreeMap<String, Reservation>,
    /// Thresholds that already fired this period.
    alerted: Vec<f64>,
    previous_period_spent_usd: f64,
    /// Last closed periods, oldest first, at most [`HISTORY_LEN`].
    history: Vec<ClosedPeriod>,
    /// Expired or evicted decisions whose reservation was live, by decision id.
    #[serde(default)]
    tombstones: BTreeMap<String, Tombstone>,
    /// Running sum of the live reservations of the current period, in pico-USD: an integer, so
    /// reserving and settling are O(1) and never drift however many add and remove; negative
    /// ([`SUM_UNKNOWN`]) in a record written before the sum was kept, recomputed on first use.
    #[serde(default = "sum_unknown")]
    reserved_pico: i128,
    /// Whether anything changed since [`Ledger::take_changed`]: the engine hands the store only
    /// the ledgers that changed, without comparing them. Not persisted (a ledger read back is
    /// what the data dir holds: unchanged; a new one is changed), and no part of equality.
    #[serde(skip)]
    changed: Changed,
}

/// [`Ledger`]'s change flag: equal whatever its value, so that two ledgers holding the same
/// money compare equal however they were last persisted.
#[derive(Debug, Clone, Copy, Default)]
struct Changed(bool);

impl PartialEq for Changed {
    fn eq(&self, _: &Changed) -> bool {
        true
    }
}

/// [`Ledger`]'s reservation sum before it is recomputed.
const SUM_UNKNOWN: i128 = -1;

fn sum_unknown() -> i128 {
    SUM_UNKNOWN
}

/// `usd` in pico-USD (amounts are at most [`MAX_AMOUNT_USD`], so 1e24 at most).
fn pico(usd: f64) -> i128 {
    (usd * 1e12).round() as i128
}

fn valid_amount(x: f64) -> bool {
    x.is_finite() && (0.0..=MAX_AMOUNT_USD).contains(&x)
}

impl Ledger {
    /// A ledger with nothing spent, opened on the period containing `now_ms`.
    pub fn new(cfg: &BudgetConfig, now_ms: u64) -> Self {
        let (start, end) = period_bounds(cfg.period, cfg.time_zone, now_ms);
        Self {
            period_start_ms: start,
            period_end_ms: end,
            spent_usd: 0.0,
            reservations: BTreeMap::new(),
            alerted: Vec::new(),
            previous_period_spent_usd: 0.0,
            history: Vec::new(),
            tombstones: BTreeMap::new(),
            reserved_pico: 0,
            changed: Changed(true),
        }
    }

    /// Whether the ledger changed since the last call (or since it was made, when new); clears it.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed.0)
    }

    /// Whether reservation `r` takes headroom of the current period.
    fn current(&self, r: &Reservation) -> bool {
        r.period_start_ms.is_none_or(|s| s == self.period_start_ms)
    }

    /// The current period's reservations summed by walking them (for a record without the sum).
    fn walked_sum(&self) -> i128 {
        self.reservations
            .values()
            .filter(|r| self.current(r))
            .map(|r| pico(r.amount_usd))
            .sum()
    }

    /// Inserts reservation `r` under `id`, keeping the running sum; returns the one it replaced.
    fn put(&mut self, id: &str, r: Reservation) -> Option<Reservation> {
        self.changed.0 = true;
        if self.current(&r) {
            self.reserved_pico += pico(r.amount_usd);
        }
        let old = self.reservations.insert(id.to_string(), r);
        if let Some(o) = &old {
            self.forget(o);
        }
        old
    }

    /// Removes reservation `id`, keeping the running sum.
    fn take(&mut self, id: &str) -> Option<Reservation> {
        let r = self.reservations.remove(id)?;
        self.changed.0 = true;
        self.forget(&r);
        Some(r)
    }

    /// Takes removed reservation `r` out of the running sum.
    fn forget(&mut self, r: &Reservation) {
        if self.current(r) {
            self.reserved_pico -= pico(r.amount_usd);
        }
    }

    /// Starts the period containing `now_ms` if the current one has ended,
    /// returning the closed period.
    ///
    /// The new period starts with nothing spent and no fired alerts. Live
    /// reservations stay, pinned to the closed period: they no longer take
    /// headroom of the new one, and their settlement is charged to the period
    /// they were made in (its [`Ledger::history`] entry). The closed period goes into [`Ledger::history`]; its spend
    /// becomes [`Ledger::previous_period_spent_usd`] if it immediately
    /// precedes the new period (0 if whole periods passed without activity).
    /// A change of `cfg.period` or `cfg.time_zone` takes effect at the next
    /// rollover; a clock going backwards never reopens an old period.
    pub fn roll(&mut self, cfg: &BudgetConfig, now_ms: u64) -> Option<ClosedPeriod> {
        if self.reserved_pico < 0 {
            self.reserved_pico = self.walked_sum();
            self.changed.0 = true;
        }
        if now_ms < self.period_end_ms {
            return None;
        }
        self.changed.0 = true;
        let closed = ClosedPeriod {
            start_ms: self.period_start_ms,
            end_ms: self.period_end_ms,
            spent_usd: self.spent_usd,
        };
        let (start, end) = period_bounds(cfg.period, cfg.time_zone, now_ms);
        self.previous_period_spent_usd = if start == closed.end_ms {
            closed.spent_usd
        } else {
            0.0
        };
        self.history.push(closed);
        if self.history.len() > HISTORY_LEN {
            let excess = self.history.len() - HISTORY_LEN;
            self.history.drain(..excess);
        }
        self.period_start_ms = start;
        self.period_end_ms = end;
        self.spent_usd = 0.0;
        for r in self.reservations.values_mut() {
            r.period_start_ms.get_or_insert(closed.start_ms);
        }
        // Every live reservation now belongs to the closed period.
        self.reserved_pico = 0;
        self.alerted.clear();
        Some(closed)
    }

    /// Reserves `amount_usd` under `id` if spent + reserved + amount stays
    /// within the limit (reserving an existing id replaces its amount and
    /// restarts its TTL).
    ///
    /// On refusal the ledger is unchanged (a replaced reservation keeps its
    /// old amount). An amount that is non-finite, negative or above
    /// [`MAX_AMOUNT_USD`] is refused with [`ReserveError::InvalidAmount`]
    /// rather than admitted at 0, so a pricing bug cannot bypass the budget.
    /// A non-finite or non-positive limit admits nothing.
    pub fn try_reserve(
        &mut self,
        cfg: &BudgetConfig,
        id: &str,
        amount_usd: f64,
        now_ms: u64,
    ) -> Result<(), ReserveError> {
        self.roll(cfg, now_ms);
        if !valid_amount(amount_usd) {
            return Err(ReserveError::InvalidAmount { amount_usd });
        }
        let new = Reservation {
            amount_usd,
            created_ms: now_ms,
            period_start_ms: Some(self.period_start_ms),
        };
        // Insert tentatively so the check uses exactly the sum the
        // accessors will report afterwards.
        let old = self.put(id, new);
        let committed = self.spent_usd + self.reserved_usd();
        if committed <= cfg.limit_usd && cfg.limit_usd > 0.0 {
            return Ok(());
        }
        match old {
            Some(o) => {
                self.put(id, o);
            }
            None => {
                self.take(id);
            }
        }
        Err(ReserveError::Exhausted(self.exhausted(cfg)))
    }

    fn exhausted(&self, cfg: &BudgetConfig) -> Exhausted {
        Exhausted {
            spent_usd: self.spent_usd,
            reserved_usd: self.reserved_usd(),
            limit_usd: cfg.limit_usd,
            resets_at_ms: self.period_end_ms,
        }
    }

    /// Removes reservation `id` (if still live) and adds the actual cost to
    /// spent, reporting newly crossed alert thresholds and any overrun.
    ///
    /// Actual spend is money already spent, so it is recorded even past the
    /// limit, and also without a reservation (expired, released, or made in
    /// an earlier period). An invalid `actual_usd` (non-finite, negative,
    /// above [`MAX_AMOUNT_USD`]) is replaced by the reserved estimate, or 0
    /// without a reservation; [`Settlement::recorded_usd`] tells which.
    pub fn settle(
        &mut self,
        cfg: &BudgetConfig,
        id: &str,
        actual_usd: f64,
        now_ms: u64,
    ) -> Settlement {
        self.roll(cfg, now_ms);
        self.changed.0 = true;
        let limit = cfg.limit_usd;
        let over_before = (self.spent_usd + self.reserved_usd() - limit).max(0.0);
        let reservation = self.take(id);
        let reserved = reservation.map(|r| r.amount_usd);
        let recorded = if valid_amount(actual_usd) {
            actual_usd
        } else {
            reserved.unwrap_or(0.0)
        };
        if let Some(start) = reservation
            .and_then(|r| r.period_start_ms)
            .filter(|&s| s != self.period_start_ms)
        {
            let over = self.charge_closed(start, recorded, limit);
            return Settlement {
                crossed: Vec::new(),
                overrun_usd: over,
                recorded_usd: recorded,
            };
        }
        self.spent_usd += recorded;
        let over_after = (self.spent_usd + self.reserved_usd() - limit).max(0.0);
        let overrun_usd = (over_after - over_before).max(0.0);

        let mut crossed = Vec::new();
        if limit.is_finite() && limit > 0.0 {
            for t in cfg.sorted_thresholds() {
                if self.spent_usd >= t * limit && !self.alerted.contains(&t) {
                    self.alerted.push(t);
                    crossed.push(t);
                }
            }
        }
        Settlement {
            crossed,
            overrun_usd,
            recorded_usd: recorded,
        }
    }

    /// Drops reservation `id` without spend (the request was never made);
    /// returns whether it was live.
    pub fn release(&mut self, cfg: &BudgetConfig, id: &str, now_ms: u64) -> bool {
        self.roll(cfg, now_ms);
        self.take(id).is_some()
    }

    /// Drops reservations older than `cfg.reservation_ttl_secs` (age strictly
    /// greater than the TTL); returns how many were dropped. A non-finite TTL
    /// expires nothing.
    pub fn expire(&mut self, cfg: &BudgetConfig, now_ms: u64) -> usize {
        self.roll(cfg, now_ms);
        let ttl_ms = cfg.reservation_ttl_secs * 1000.0;
        if ttl_ms.is_nan() {
            return 0;
        }
        // u64 -> f64 loses precision only past 2^53 ms (year 287396).
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| (now_ms.saturating_sub(r.created_ms) as f64) > ttl_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.take(id);
        }
        expired.len()
    }

    /// Budget condition at `now_ms`: [`BudgetState::Exhausted`] if spent +
    /// reserved reached the limit or the remainder is below
    /// [`EXHAUSTED_EPSILON_USD`] (also for a non-finite or non-positive
    /// limit), else [`BudgetState::Pacing`] if the pacing multiplier is above
    /// 1, else [`BudgetState::Ok`]. Pure, like
    /// [`Ledger::pacing_multiplier`].
    pub fn state(&self, cfg: &BudgetConfig, now_ms: u64) -> BudgetState {
        let limit = cfg.limit_usd;
        if !(limit.is_finite() && limit > 0.0) {
            return BudgetState::Exhausted;
        }
        let (committed, _) = self.view(cfg, now_ms);
        if committed >= limit || limit - committed < EXHAUSTED_EPSILON_USD {
            BudgetState::Exhausted
        } else if self.pacing_multiplier(cfg, now_ms) > 1.0 {
            BudgetState::Pacing
        } else {
            BudgetState::Ok
        }
    }

    /// Settled spend of the current period, USD (as of the last mutating
    /// call; call [`Ledger::roll`] first for an up-to-date period).
    pub fn spent_usd(&self) -> f64 {
        self.spent_usd
    }

    /// Sum of live reservations made in the current period, USD.
    pub fn reserved_usd(&self) -> f64 {
        let sum = if self.reserved_pico < 0 {
            self.walked_sum()
        } else {
            self.reserved_pico
        };
        sum as f64 / 1e12
    }

    /// Adds `usd` to the spend of the closed period that started at `start_ms` (kept in
    /// [`Ledger::history`]); returns how far it pushed that period past `limit` (the overrun).
    fn charge_closed(&mut self, start_ms: u64, usd: f64, limit: f64) -> f64 {
        let Some(p) = self.history.iter_mut().find(|p| p.start_ms == start_ms) else {
            return 0.0; // older than the history: nothing left to charge
        };
        self.changed.0 = true;
        let before = (p.spent_usd - limit).max(0.0);
        p.spent_usd += usd;
        let over = (p.spent_usd - limit).max(0.0) - before;
        if p.end_ms == self.period_start_ms {
            self.previous_period_spent_usd = p.spent_usd;
        }
        over.max(0.0)
    }

    /// Turns reservation `id` into a [`Tombstone`] (its decision expired or was evicted before
    /// its Feedback): the headroom is released now, and a late Feedback still charges the spend
    /// by [`Ledger::settle_late`]. Without a live reservation nothing is kept. Drops tombstones
    /// past `limits`, oldest first.
    pub fn bury(
        &mut self,
        cfg: &BudgetConfig,
        id: &str,
        task_class: &str,
        models: Vec<String>,
        limits: TombstoneLimits,
        now_ms: u64,
    ) {
        self.roll(cfg, now_ms);
        if let Some(r) = self.take(id) {
            self.tombstones.insert(
                id.to_string(),
                Tombstone {
                    task_class: task_class.to_string(),
                    models,
                    reserved_usd: r.amount_usd,
                    period_start_ms: r.period_start_ms.unwrap_or(self.period_start_ms),
                    buried_ms: now_ms,
                    tenant: None,
                    tags: BTreeMap::new(),
                },
            );
        }
        self.trim_tombstones(limits, now_ms);
    }

    /// Drops tombstones older than `limits.ttl_ms`, then the oldest beyond `limits.max`.
    pub fn trim_tombstones(&mut self, limits: TombstoneLimits, now_ms: u64) {
        let before = self.tombstones.len();
        self.tombstones
            .retain(|_, t| now_ms.saturating_sub(t.buried_ms) <= limits.ttl_ms);
        if self.tombstones.len() != before {
            self.changed.0 = true;
        }
        if self.tombstones.len() > limits.max {
            let mut by_age: Vec<(u64, String)> = self
                .tombstones
                .iter()
                .map(|(id, t)| (t.buried_ms, id.clone()))
                .collect();
            by_age.sort();
            let excess = self.tombstones.len() - limits.max;
            self.changed.0 = true;
            for (_, id) in by_age.into_iter().take(excess) {
                self.tombstones.remove(&id);
            }
        }
    }

    /// The tombstone of decision `id`, if kept.
    pub fn tombstone(&self, id: &str) -> Option<&Tombstone> {
        self.tombstones.get(id)
    }

    /// Records whose decision tombstone `id` was (no-op without one).
    pub fn set_tombstone_tenant(&mut self, id: &str, tenant: Option<String>) {
        if let Some(t) = self.tombstones.get_mut(id) {
            t.tenant = Some(tenant);
            self.changed.0 = true;
        }
    }

    /// Records the tags of buried decision `id` (no-op without its tombstone).
    pub fn set_tombstone_tags(&mut self, id: &str, tags: &BTreeMap<String, String>) {
        if let Some(t) = self.tombstones.get_mut(id) {
            t.tags.clone_from(tags);
            self.changed.0 = true;
        }
    }

    /// Number of tombstones kept.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Charges a late Feedback of buried decision `id`: `actual_usd` (the reserved amount when
    /// invalid) goes to the period the reservation was made in, and the tombstone is consumed.
    /// `None` when no tombstone is kept for `id`.
    pub fn settle_late(
        &mut self,
        cfg: &BudgetConfig,
        id: &str,
        actual_usd: Option<f64>,
        now_ms: u64,
    ) -> Option<LateSettlement> {
        self.roll(cfg, now_ms);
        let tombstone = self.tombstones.remove(id)?;
        self.changed.0 = true;
        let recorded = actual_usd
            .filter(|&a| valid_amount(a))
            .unwrap_or(tombstone.reserved_usd);
        let settlement = if tombstone.period_start_ms == self.period_start_ms {
            // Its headroom was released at burial, so what it pushes past the limit counts as
            // overrun; alerts fire as for any settlement.
            self.settle(cfg, id, recorded, now_ms)
        } else {
            let over = self.charge_closed(tombstone.period_start_ms, recorded, cfg.limit_usd);
            Settlement {
                crossed: Vec::new(),
                overrun_usd: over,
                recorded_usd: recorded,
            }
        };
        Some(LateSettlement {
            tombstone,
            settlement,
        })
    }

    /// Amount reserved under `id`, if live.
    pub fn reservation_usd(&self, id: &str) -> Option<f64> {
        self.reservations.get(id).map(|r| r.amount_usd)
    }

    /// Number of live reservations.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Limit minus spent minus reserved, floored at 0, USD.
    pub fn remaining_usd(&self, cfg: &BudgetConfig) -> f64 {
        let r = cfg.limit_usd - self.spent_usd - self.reserved_usd();
        if r.is_nan() {
            0.0
        } else {
            r.max(0.0)
        }
    }

    /// Start (inclusive) of the current period, Unix ms.
    pub fn period_start_ms(&self) -> u64 {
        self.period_start_ms
    }

    /// End (exclusive) of the current period, when spend resets, Unix ms.
    pub fn period_end_ms(&self) -> u64 {
        self.period_end_ms
    }

    /// Settled spend of the period just before the current one, USD (0 if
    /// none was tracked).
    pub fn previous_period_spent_usd(&self) -> f64 {
        self.previous_period_spent_usd
    }

    /// Alert thresholds already fired this period, ascending.
    pub fn alerted_thresholds(&self) -> Vec<f64> {
        let mut v = self.alerted.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The last closed periods (at most [`HISTORY_LEN`]), oldest first.
    pub fn history(&self) -> &[ClosedPeriod] {
        &self.history
    }
}
