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

use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Default time a reservation may stay unsettled before [`Ledger::expire`]
/// drops it: 10 minutes is well beyond the longest streamed LLM response, so
/// only reservations whose settle was lost (crash, dropped connection) expire.
pub const DEFAULT_RESERVATION_TTL_SECS: f64 = 600.0;

/// Default upper bound of the pacing multiplier: at 8x the cost weight
/// already pushes nearly all traffic to the cheapest models; a larger value
/// only makes routing jumpy without saving more.
pub const DEFAULT_PACING_MAX_MULTIPLIER: f64 = 8.0;

/// Default lower bound of the pacing multiplier: 1.0, so falling behind plan
/// never makes cost weigh less than the operator configured (an underspent
/// budget is not a reason to pick pricier models).
pub const DEFAULT_PACING_MIN_MULTIPLIER: f64 = 1.0;

/// Default pacing exponent: with 2, spending 1.5x the plan gives a 2.25x cost
/// weight, so the correction grows faster than the deviation and pulls spend
/// back to the line before the period runs out.
pub const DEFAULT_PACING_GAIN: f64 = 2.0;

/// Default warmup: no pacing in the first 2% of a period (about half an hour
/// of a day, 14 hours of a month), when a single request is a large fraction
/// of the straight line and the ratio would be meaningless.
pub const DEFAULT_PACING_WARMUP_FRACTION: f64 = 0.02;

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

/// Last instant [`period_bounds`] computes exactly: 9999-12-31T23:59:59.999Z.
/// Later instants fall into one open-ended period ending at `u64::MAX`.
pub const MAX_SUPPORTED_MS: u64 = 253_402_300_799_999;

/// Length of a budget period. Bounds are at local midnight in the budget's
/// time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One calendar day.
    Daily,
    /// One calendar week, starting Monday.
    Weekly,
    /// One calendar month, starting on the 1st.
    Monthly,
}

/// What the router does once the budget is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCap {
    /// Keep serving, but only the cheapest eligible model may be routed (the
    /// caller enforces this; the ledger just reports [`Exhausted`]).
    Cheapest,
    /// Reject requests until the period resets.
    Reject,
}

/// Budget settings of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// The key (tenant, API key, ...) this budget applies to.
    pub key: String,
    /// Length of a budget period.
    pub period: Period,
    /// Spend limit per period, USD; finite and > 0.
    pub limit_usd: f64,
    /// Time zone whose local midnights bound the periods.
    pub time_zone: Tz,
    /// Behaviour at the cap.
    pub on_cap: OnCap,
    /// Fractions of the limit whose crossing by settled spend raises an
    /// alert, each in (0, 1], any order, no duplicates.
    pub alert_thresholds: Vec<f64>,
    /// Seconds a reservation may stay unsettled before it expires.
    pub reservation_ttl_secs: f64,
    /// Upper bound of the pacing multiplier (>= 1).
    pub pacing_max_multiplier: f64,
    /// Lower bound of the pacing multiplier, in (0, 1].
    pub pacing_min_multiplier: f64,
    /// Exponent applied to the spend/time ratio (>= 0; 0 disables pacing).
    pub pacing_gain: f64,
    /// Leading fraction of the period without pacing, in [0, 1).
    pub pacing_warmup_fraction: f64,
}

impl BudgetConfig {
    /// A config with the given key, period and limit, UTC periods,
    /// [`OnCap::Cheapest`] and every other setting at its `DEFAULT_*` value.
    pub fn new(key: impl Into<String>, period: Period, limit_usd: f64) -> Self {
        Self {
            key: key.into(),
            period,
            limit_usd,
            time_zone: Tz::UTC,
            on_cap: OnCap::Cheapest,
            alert_thresholds: DEFAULT_ALERT_THRESHOLDS.to_vec(),
            reservation_ttl_secs: DEFAULT_RESERVATION_TTL_SECS,
            pacing_max_multiplier: DEFAULT_PACING_MAX_MULTIPLIER,
            pacing_min_multiplier: DEFAULT_PACING_MIN_MULTIPLIER,
            pacing_gain: DEFAULT_PACING_GAIN,
            pacing_warmup_fraction: DEFAULT_PACING_WARMUP_FRACTION,
        }
    }

    /// Checks every setting; the error names the offending field and value.
    pub fn validate(&self) -> Result<(), String> {
        if self.key.trim().is_empty() {
            return Err(format!("budget key must not be empty (got {:?})", self.key));
        }
        let key = &self.key;
        if !(self.limit_usd.is_finite() && self.limit_usd > 0.0) {
            return Err(format!(
                "budget {key}: limit_usd must be finite and > 0 (got {})",
                self.limit_usd
            ));
        }
        for (i, &t) in self.alert_thresholds.iter().enumerate() {
            if !(t.is_finite() && t > 0.0 && t <= 1.0) {
                return Err(format!(
                    "budget {key}: alert_thresholds[{i}] must be in (0, 1] (got {t})"
                ));
            }
            if self.alert_thresholds[..i].contains(&t) {
                return Err(format!(
                    "budget {key}: alert_thresholds[{i}] duplicates value {t}"
                ));
            }
        }
        if !(self.reservation_ttl_secs.is_finite() && self.reservation_ttl_secs > 0.0) {
            return Err(format!(
                "budget {key}: reservation_ttl_secs must be finite and > 0 (got {})",
                self.reservation_ttl_secs
            ));
        }
        if !(self.pacing_max_multiplier.is_finite() && self.pacing_max_multiplier >= 1.0) {
            return Err(format!(
                "budget {key}: pacing_max_multiplier must be finite and >= 1 (got {})",
                self.pacing_max_multiplier
            ));
        }
        if !(self.pacing_min_multiplier > 0.0 && self.pacing_min_multiplier <= 1.0) {
            return Err(format!(
                "budget {key}: pacing_min_multiplier must be in (0, 1] (got {})",
                self.pacing_min_multiplier
            ));
        }
        if !(self.pacing_gain.is_finite() && self.pacing_gain >= 0.0) {
            return Err(format!(
                "budget {key}: pacing_gain must be finite and >= 0 (got {})",
                self.pacing_gain
            ));
        }
        if !(self.pacing_warmup_fraction >= 0.0 && self.pacing_warmup_fraction < 1.0) {
            return Err(format!(
                "budget {key}: pacing_warmup_fraction must be in [0, 1) (got {})",
                self.pacing_warmup_fraction
            ));
        }
        Ok(())
    }

    /// The valid alert thresholds, ascending and deduplicated.
    fn sorted_thresholds(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .alert_thresholds
            .iter()
            .copied()
            .filter(|t| t.is_finite() && *t > 0.0 && *t <= 1.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    }
}

/// Start (inclusive) and end (exclusive) of the period containing `now_ms`,
/// as Unix ms, with both bounds at local midnight in `tz`.
///
/// Correct across DST changes (a Berlin spring-forward day is 23 hours long).
/// A local midnight that falls in a DST gap maps to the earliest instant after
/// the gap; one that occurs twice (fall-back at 01:00 to 00:00) maps to its
/// first occurrence. Bounds before the Unix epoch saturate to 0; instants
/// after [`MAX_SUPPORTED_MS`] fall in one period ending at `u64::MAX`.
pub fn period_bounds(period: Period, tz: Tz, now_ms: u64) -> (u64, u64) {
    let clamped = now_ms.min(MAX_SUPPORTED_MS);
    // `clamped` fits in i64 and is a valid chrono instant.
    let now_i = i64::try_from(clamped).unwrap_or(i64::MAX);
    let Some(now_utc) = DateTime::<Utc>::from_timestamp_millis(now_i) else {
        return (0, u64::MAX);
    };
    let mut start_date = period_start_date(period, now_utc.with_timezone(&tz).date_naive());
    // The local date of `now` normally names its period, but a fall-back
    // across midnight can show the previous date after the period changed:
    // step to the neighbour period until it contains `now` (at most once).
    for _ in 0..4 {
        let start = local_midnight_ms(tz, start_date);
        let next = next_start_date(period, start_date);
        let end = next.map_or(i64::MAX, |d| local_midnight_ms(tz, d));
        if now_i < start {
            match prev_start_date(period, start_date) {
                Some(p) => start_date = p,
                None => return (0, to_u64(end)),
            }
        } else if now_i >= end {
            match next {
                Some(n) => start_date = n,
                None => return (to_u64(start), u64::MAX),
            }
        } else {
            let end = if now_ms > MAX_SUPPORTED_MS {
                u64::MAX
            } else {
                to_u64(end)
            };
            return (to_u64(start), end);
        }
    }
    // Unreachable with real tz data; an open-ended period is the safe answer.
    (to_u64(local_midnight_ms(tz, start_date)), u64::MAX)
}

fn to_u64(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn period_start_date(period: Period, d: NaiveDate) -> NaiveDate {
    match period {
        Period::Daily => d,
        Period::Weekly => d
            .checked_sub_days(Days::new(u64::from(d.weekday().num_days_from_monday())))
            .unwrap_or(d),
        Period::Monthly => d.with_day(1).unwrap_or(d),
    }
}

fn next_start_date(period: Period, start: NaiveDate) -> Option<NaiveDate> {
    match period {
        Period::Daily => start.checked_add_days(Days::new(1)),
        Period::Weekly => start.checked_add_days(Days::new(7)),
        Period::Monthly => start.checked_add_months(Months::new(1)),
    }
}

fn prev_start_date(period: Period, start: NaiveDate) -> Option<NaiveDate> {
    match period {
        Period::Daily => start.checked_sub_days(Days::new(1)),
        Period::Weekly => start.checked_sub_days(Days::new(7)),
        Period::Monthly => start.checked_sub_months(Months::new(1)),
    }
}

/// Unix ms of local midnight starting `date` in `tz` (see [`period_bounds`]
/// for gaps and repeats).
fn local_midnight_ms(tz: Tz, date: NaiveDate) -> i64 {
    let naive = date.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.timestamp_millis(),
        chrono::LocalResult::Ambiguous(a, b) => a.timestamp_millis().min(b.timestamp_millis()),
        chrono::LocalResult::None => first_instant_at_or_after(tz, naive).saturating_mul(1000),
    }
}

/// Smallest Unix second whose local time in `tz` is at or after `naive`
/// (transitions happen on whole seconds). UTC offsets lie within ±26 h, so
/// the answer lies within 30 h of `naive` read as UTC.
fn first_instant_at_or_after(tz: Tz, naive: NaiveDateTime) -> i64 {
    const WINDOW_SECS: i64 = 30 * 3600;
    let local_at = |secs: i64| {
        DateTime::<Utc>::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local())
    };
    let centre = naive.and_utc().timestamp();
    let (mut lo, mut hi) = (centre - WINDOW_SECS, centre + WINDOW_SECS);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match local_at(mid) {
            Some(local) if local >= naive => hi = mid,
            _ => lo = mid + 1,
        }
    }
    lo
}

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
    format_ms(*.resets_at_ms)
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

/// RFC 3339 UTC rendering of a Unix ms instant (`u64::MAX` reads "never").
fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(
            || "never".to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
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
        }
    }

    /// Starts the period containing `now_ms` if the current one has ended,
    /// returning the closed period.
    ///
    /// The new period starts with nothing spent, no reservations (a request
    /// settled later is charged to the period it settles in) and no fired
    /// alerts. The closed period goes into [`Ledger::history`]; its spend
    /// becomes [`Ledger::previous_period_spent_usd`] if it immediately
    /// precedes the new period (0 if whole periods passed without activity).
    /// A change of `cfg.period` or `cfg.time_zone` takes effect at the next
    /// rollover; a clock going backwards never reopens an old period.
    pub fn roll(&mut self, cfg: &BudgetConfig, now_ms: u64) -> Option<ClosedPeriod> {
        if now_ms < self.period_end_ms {
            return None;
        }
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
        self.reservations.clear();
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
        };
        // Insert tentatively so the check uses exactly the sum the
        // accessors will report afterwards.
        let old = self.reservations.insert(id.to_string(), new);
        let committed = self.spent_usd + self.reserved_usd();
        if committed <= cfg.limit_usd && cfg.limit_usd > 0.0 {
            return Ok(());
        }
        match old {
            Some(o) => {
                self.reservations.insert(id.to_string(), o);
            }
            None => {
                self.reservations.remove(id);
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
        let limit = cfg.limit_usd;
        let over_before = (self.spent_usd + self.reserved_usd() - limit).max(0.0);
        let reserved = self.reservations.remove(id).map(|r| r.amount_usd);
        let recorded = if valid_amount(actual_usd) {
            actual_usd
        } else {
            reserved.unwrap_or(0.0)
        };
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
        self.reservations.remove(id).is_some()
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
        let before = self.reservations.len();
        // u64 -> f64 loses precision only past 2^53 ms (year 287396).
        self.reservations
            .retain(|_, r| (now_ms.saturating_sub(r.created_ms) as f64) <= ttl_ms);
        before - self.reservations.len()
    }

    /// Committed spend (spent + reserved, USD) and elapsed fraction of the
    /// period as of `now_ms`, seeing a period that has ended as the fresh, empty one
    /// that the next mutating call will open.
    fn view(&self, cfg: &BudgetConfig, now_ms: u64) -> (f64, f64) {
        let (start, end, committed) = if now_ms >= self.period_end_ms {
            let (s, e) = period_bounds(cfg.period, cfg.time_zone, now_ms);
            (s, e, 0.0)
        } else {
            (
                self.period_start_ms,
                self.period_end_ms,
                self.spent_usd + self.reserved_usd(),
            )
        };
        let elapsed = now_ms.saturating_sub(start) as f64;
        let length = end.saturating_sub(start).max(1) as f64;
        (committed, elapsed / length)
    }

    /// Factor by which the router should multiply the cost weight:
    /// `clamp(max(s / t, (1 - t) / (1 - s)) ^ gain, min, max)`, where
    /// s = (spent + reserved) / limit and t = elapsed / period length.
    /// Both ratios are 1 on the straight line to the period end. The first
    /// (spend ahead of time) leads early in the period; the second (time left
    /// per budget left) grows without bound as the budget nears its cap with
    /// time still to go, so a proportional rule's steady lag ahead of the line
    /// cannot carry spend into the cap late in the period. Above 1 when spend
    /// runs ahead, `pacing_min_multiplier` (1 by default) when it is behind,
    /// exactly 1 during the warmup fraction of the period. Pure: a period that
    /// has ended counts as the new, empty one. Invalid settings yield 1.
    pub fn pacing_multiplier(&self, cfg: &BudgetConfig, now_ms: u64) -> f64 {
        let (committed, time_fraction) = self.view(cfg, now_ms);
        // False for a NaN warmup setting, which then disables pacing.
        let past_warmup = time_fraction >= cfg.pacing_warmup_fraction;
        if !past_warmup || time_fraction <= 0.0 {
            return 1.0;
        }
        let spend_fraction = committed / cfg.limit_usd;
        let ahead = spend_fraction / time_fraction;
        let left = if spend_fraction < 1.0 {
            (1.0 - time_fraction).max(0.0) / (1.0 - spend_fraction)
        } else {
            f64::INFINITY
        };
        let m = ahead.max(left).powf(cfg.pacing_gain);
        let m = m
            .max(cfg.pacing_min_multiplier)
            .min(cfg.pacing_max_multiplier);
        if m.is_finite() && m > 0.0 {
            m
        } else {
            1.0
        }
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

    /// Sum of live reservations, USD.
    pub fn reserved_usd(&self) -> f64 {
        self.reservations
            .values()
            .fold(0.0, |acc, r| acc + r.amount_usd)
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    /// 2026-03-15T12:00:00Z, a Sunday.
    const T0: u64 = 1_773_576_000_000;
    /// 2026-03-15T00:00:00Z.
    const UTC_DAY_START: u64 = T0 - 12 * HOUR;

    fn cfg(limit: f64) -> BudgetConfig {
        BudgetConfig::new("k", Period::Daily, limit)
    }

    fn exhausted(r: Result<(), ReserveError>) -> Exhausted {
        match r {
            Err(ReserveError::Exhausted(e)) => e,
            other => panic!("expected Exhausted, got {other:?}"),
        }
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = cfg(10.0);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.reservation_ttl_secs, 600.0);
        assert_eq!(c.pacing_max_multiplier, 8.0);
        assert_eq!(c.pacing_min_multiplier, 1.0);
        assert_eq!(c.pacing_gain, 2.0);
        assert_eq!(c.pacing_warmup_fraction, 0.02);

        let mut bad = cfg(f64::NAN);
        assert_eq!(
            bad.validate(),
            Err("budget k: limit_usd must be finite and > 0 (got NaN)".to_string())
        );
        bad.limit_usd = 0.0;
        assert!(bad.validate().unwrap_err().contains("limit_usd"));
        let mut bad = cfg(1.0);
        bad.alert_thresholds = vec![0.9, 0.5, 1.5];
        assert_eq!(
            bad.validate(),
            Err("budget k: alert_thresholds[2] must be in (0, 1] (got 1.5)".to_string())
        );
        bad.alert_thresholds = vec![0.9, 0.5];
        assert_eq!(bad.validate(), Ok(()), "unsorted thresholds are sortable");
        bad.alert_thresholds = vec![0.5, 0.5];
        assert!(bad.validate().unwrap_err().contains("duplicates"));
        let mut bad = cfg(1.0);
        bad.reservation_ttl_secs = -1.0;
        assert!(bad.validate().unwrap_err().contains("reservation_ttl_secs"));
        let mut bad = cfg(1.0);
        bad.pacing_max_multiplier = 0.5;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("pacing_max_multiplier"));
        let mut bad = cfg(1.0);
        bad.pacing_min_multiplier = 2.0;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("pacing_min_multiplier"));
        let mut bad = cfg(1.0);
        bad.pacing_gain = f64::INFINITY;
        assert!(bad.validate().unwrap_err().contains("pacing_gain"));
        let mut bad = cfg(1.0);
        bad.pacing_warmup_fraction = 1.0;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("pacing_warmup_fraction"));
        let mut bad = cfg(1.0);
        bad.key = " ".into();
        assert!(bad.validate().unwrap_err().contains("key"));
    }

    #[test]
    fn reserve_admits_up_to_exactly_the_limit() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, T0);
        assert_eq!(l.try_reserve(&c, "a", 4.0, T0), Ok(()));
        let s = l.settle(&c, "a", 4.0, T0);
        assert_eq!(s.overrun_usd, 0.0);
        assert_eq!(l.try_reserve(&c, "b", 5.75, T0), Ok(()));
        assert_eq!(l.try_reserve(&c, "c", 0.25, T0), Ok(()));
        assert_eq!(l.remaining_usd(&c), 0.0);
        assert_eq!(l.state(&c, T0), BudgetState::Exhausted);
        let e = exhausted(l.try_reserve(&c, "d", 0.01, T0));
        assert_eq!(
            e,
            Exhausted {
                spent_usd: 4.0,
                reserved_usd: 6.0,
                limit_usd: 10.0,
                resets_at_ms: UTC_DAY_START + DAY,
            }
        );
        assert_eq!(
            e.to_string(),
            "budget exhausted: spent $4.0000 + reserved $6.0000 of $10.0000 limit; \
             resets at 2026-03-16T00:00:00Z"
        );
        assert_eq!(l.reservation_count(), 2);
        assert_eq!(l.reserved_usd(), 6.0);
    }

    #[test]
    fn replacing_a_reservation_and_refused_replacement_keeps_old() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, T0);
        l.try_reserve(&c, "a", 5.0, T0).unwrap();
        l.try_reserve(&c, "a", 3.0, T0).unwrap();
        assert_eq!(l.reservation_count(), 1);
        assert_eq!(l.reserved_usd(), 3.0);
        l.try_reserve(&c, "b", 6.0, T0).unwrap();
        // a: 3 -> 5 would make 11 > 10.
        let e = exhausted(l.try_reserve(&c, "a", 5.0, T0));
        assert_eq!(e.reserved_usd, 9.0);
        assert_eq!(l.reservation_usd("a"), Some(3.0));
        // a: 3 -> 4 makes exactly 10.
        l.try_reserve(&c, "a", 4.0, T0).unwrap();
        assert_eq!(l.reserved_usd(), 10.0);
    }

    #[test]
    fn invalid_amounts_never_enter_the_ledger() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, T0);
        for bad in [f64::NAN, f64::INFINITY, -1.0, 2e12] {
            let r = l.try_reserve(&c, "x", bad, T0);
            assert!(
                matches!(r, Err(ReserveError::InvalidAmount { .. })),
                "{bad}"
            );
        }
        assert_eq!(l.reservation_count(), 0);
        l.try_reserve(&c, "a", 2.0, T0).unwrap();
        let s = l.settle(&c, "a", f64::NAN, T0);
        assert_eq!(s.recorded_usd, 2.0, "falls back to the estimate");
        let s = l.settle(&c, "gone", -5.0, T0);
        assert_eq!(s.recorded_usd, 0.0);
        assert_eq!(l.spent_usd(), 2.0);
        assert_eq!(l.reserved_usd(), 0.0);
        // A broken limit admits nothing and reads as exhausted.
        let nan = cfg(f64::NAN);
        assert!(l.try_reserve(&nan, "b", 0.0, T0).is_err());
        assert_eq!(l.state(&nan, T0), BudgetState::Exhausted);
        assert_eq!(l.remaining_usd(&nan), 0.0);
    }

    #[test]
    fn settle_replaces_reservation_by_actual() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, T0);
        l.try_reserve(&c, "a", 4.0, T0).unwrap();
        l.try_reserve(&c, "b", 4.0, T0).unwrap();
        // Less than reserved.
        let s = l.settle(&c, "a", 1.5, T0);
        assert_eq!(s.overrun_usd, 0.0);
        assert_eq!(s.recorded_usd, 1.5);
        assert_eq!((l.spent_usd(), l.reserved_usd()), (1.5, 4.0));
        // Committed exactly 10.
        l.try_reserve(&c, "c", 4.5, T0).unwrap();
        // More than reserved with no headroom: 1.5 + 7 + 4.5 = 13.
        let s = l.settle(&c, "b", 7.0, T0);
        assert_eq!(s.overrun_usd, 3.0);
        assert_eq!((l.spent_usd(), l.reserved_usd()), (8.5, 4.5));
        // More than reserved while headroom absorbs part of it.
        let mut l = Ledger::new(&c, T0);
        l.try_reserve(&c, "a", 2.0, T0).unwrap();
        l.settle(&c, "x", 6.0, T0); // unreserved spend, committed 8
        let s = l.settle(&c, "a", 5.0, T0); // spent 11
        assert_eq!(s.overrun_usd, 1.0);
        assert_eq!(l.spent_usd(), 11.0);
        assert_eq!(l.remaining_usd(&c), 0.0);
        // Settling a second time for the same id records again (no reservation).
        let s = l.settle(&c, "a", 0.5, T0);
        assert_eq!(s.overrun_usd, 0.5);
        assert_eq!(l.spent_usd(), 11.5);
    }

    #[test]
    fn release_drops_without_spend() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, T0);
        l.try_reserve(&c, "a", 10.0, T0).unwrap();
        assert!(l.try_reserve(&c, "b", 1.0, T0).is_err());
        assert!(l.release(&c, "a", T0));
        assert!(!l.release(&c, "a", T0));
        assert_eq!((l.spent_usd(), l.reserved_usd()), (0.0, 0.0));
        assert_eq!(l.try_reserve(&c, "b", 1.0, T0), Ok(()));
    }

    #[test]
    fn expiry_by_ttl() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, T0);
        l.try_reserve(&c, "a", 1.0, T0).unwrap();
        l.try_reserve(&c, "b", 2.0, T0 + 300_000).unwrap();
        assert_eq!(l.expire(&c, T0 + 600_000), 0, "age == ttl is not older");
        assert_eq!(l.expire(&c, T0 + 600_001), 1);
        assert_eq!(l.reservation_usd("a"), None);
        assert_eq!(l.reserved_usd(), 2.0);
        // Re-reserving restarts the TTL.
        l.try_reserve(&c, "b", 2.0, T0 + 800_000).unwrap();
        assert_eq!(l.expire(&c, T0 + 900_001), 0);
        assert_eq!(l.expire(&c, T0 + 1_400_001), 1);
        assert_eq!(l.reservation_count(), 0);
        // An expired reservation's late settle is still recorded.
        let s = l.settle(&c, "a", 0.75, T0 + 1_400_001);
        assert_eq!(s.recorded_usd, 0.75);
        assert_eq!(l.spent_usd(), 0.75);
    }

    #[test]
    fn thresholds_fire_once_per_period() {
        let mut c = cfg(10.0);
        c.alert_thresholds = vec![1.0, 0.5, 0.8];
        let mut l = Ledger::new(&c, T0);
        assert_eq!(l.settle(&c, "1", 4.0, T0).crossed, Vec::<f64>::new());
        assert_eq!(l.settle(&c, "2", 1.0, T0).crossed, vec![0.5]);
        assert_eq!(l.settle(&c, "3", 0.5, T0).crossed, Vec::<f64>::new());
        assert_eq!(l.settle(&c, "4", 3.0, T0).crossed, vec![0.8]);
        let s = l.settle(&c, "5", 2.0, T0);
        assert_eq!(s.crossed, vec![1.0]);
        assert_eq!(s.overrun_usd, 0.5);
        assert_eq!(l.settle(&c, "6", 2.0, T0).crossed, Vec::<f64>::new());
        // Next period: fire again, several at once.
        let next = UTC_DAY_START + DAY;
        assert_eq!(l.settle(&c, "7", 9.0, next).crossed, vec![0.5, 0.8]);
        assert_eq!(l.settle(&c, "8", 1.0, next).crossed, vec![1.0]);
        assert_eq!(l.previous_period_spent_usd(), 12.5);
    }

    #[test]
    fn new_york_monthly_bounds_and_rollover() {
        let mut c = cfg(100.0);
        c.period = Period::Monthly;
        c.time_zone = chrono_tz::America::New_York;
        // 2026-03-01T00:00-05:00 .. 2026-04-01T00:00-04:00
        let (start, end) = (1_772_341_200_000, 1_775_016_000_000);
        assert_eq!(period_bounds(c.period, c.time_zone, T0), (start, end));
        assert_eq!(period_bounds(c.period, c.time_zone, start), (start, end));
        assert_eq!(period_bounds(c.period, c.time_zone, end - 1), (start, end));
        assert_eq!(period_bounds(c.period, c.time_zone, end).0, end);
        // 31 days minus the hour lost on 2026-03-08.
        assert_eq!(end - start, 31 * DAY - HOUR);

        let mut l = Ledger::new(&c, T0);
        assert_eq!((l.period_start_ms(), l.period_end_ms()), (start, end));
        l.settle(&c, "a", 30.0, T0);
        l.try_reserve(&c, "b", 5.0, T0).unwrap();
        assert_eq!(l.roll(&c, end - 1), None);
        assert_eq!(l.spent_usd(), 30.0);
        // Period is stale for pure queries at `end`: fresh, empty period.
        assert_eq!(l.pacing_multiplier(&c, end), 1.0);
        assert_eq!(l.state(&c, end), BudgetState::Ok);
        let closed = l.roll(&c, end).unwrap();
        assert_eq!(
            closed,
            ClosedPeriod {
                start_ms: start,
                end_ms: end,
                spent_usd: 30.0
            }
        );
        assert_eq!(l.period_start_ms(), end);
        // 2026-05-01T00:00-04:00
        assert_eq!(l.period_end_ms(), end + 30 * DAY);
        assert_eq!((l.spent_usd(), l.reserved_usd()), (0.0, 0.0));
        assert_eq!(l.reservation_count(), 0);
        assert_eq!(l.previous_period_spent_usd(), 30.0);
        assert_eq!(l.history(), &[closed]);
        // The old reservation's late settle lands in the new period.
        l.settle(&c, "b", 4.0, end + 1);
        assert_eq!(l.spent_usd(), 4.0);
        // Skipping a whole month: previous period (May) had nothing.
        let june = end + 30 * DAY + 31 * DAY + 1;
        assert_eq!(l.roll(&c, june).map(|p| p.spent_usd), Some(4.0));
        assert_eq!(l.previous_period_spent_usd(), 0.0);
        assert_eq!(l.history().len(), 2);
    }

    #[test]
    fn berlin_daily_across_spring_forward_is_23_hours() {
        let tz = chrono_tz::Europe::Berlin;
        // 2026-03-29: 00:00 CET = 2026-03-28T23:00Z .. 00:00 CEST = 2026-03-29T22:00Z
        let (start, end) = (1_774_738_800_000, 1_774_821_600_000);
        assert_eq!(
            period_bounds(Period::Daily, tz, 1_774_785_600_000),
            (start, end)
        );
        assert_eq!(end - start, 23 * HOUR);
        assert_eq!(period_bounds(Period::Daily, tz, start - 1).1, start);
        assert_eq!(period_bounds(Period::Daily, tz, end), (end, end + DAY));
        // Autumn: 2026-10-25 is 25 hours.
        let (s, e) = period_bounds(Period::Daily, tz, 1_792_929_600_000);
        assert_eq!(e - s, 25 * HOUR);

        let mut c = cfg(10.0);
        c.time_zone = tz;
        let mut l = Ledger::new(&c, start);
        l.settle(&c, "a", 3.0, end - 1);
        assert_eq!(l.spent_usd(), 3.0);
        l.settle(&c, "b", 1.0, end);
        assert_eq!(l.spent_usd(), 1.0);
        assert_eq!(l.previous_period_spent_usd(), 3.0);
    }

    #[test]
    fn weekly_starts_monday() {
        let tz = chrono_tz::Asia::Tokyo;
        // Sunday 2026-03-15T12:00Z is Sunday 21:00 JST: week of Monday 2026-03-09.
        let (start, end) = (1_772_982_000_000, 1_773_586_800_000);
        assert_eq!(period_bounds(Period::Weekly, tz, T0), (start, end));
        assert_eq!(end - start, 7 * DAY);
        // 2026-03-15T14:59:59.999Z is the last ms of Sunday in Tokyo.
        assert_eq!(
            period_bounds(Period::Weekly, tz, 1_773_586_799_999),
            (start, end)
        );
        assert_eq!(period_bounds(Period::Weekly, tz, end), (end, end + 7 * DAY));
        // UTC: the same instant is still Sunday, week of Monday 2026-03-09 00:00Z.
        let utc = period_bounds(Period::Weekly, Tz::UTC, T0);
        assert_eq!(utc, (UTC_DAY_START - 6 * DAY, UTC_DAY_START + DAY));
        // New York week containing the spring-forward Sunday 2026-03-08 is 1 h short.
        let (s, e) = period_bounds(Period::Weekly, chrono_tz::America::New_York, T0 - 8 * DAY);
        assert_eq!(e - s, 7 * DAY - HOUR);
    }

    #[test]
    fn midnight_in_dst_gap_or_repeated() {
        let santiago = chrono_tz::America::Santiago;
        // 2024-09-08: 00:00 -04 skips to 01:00 -03 at 04:00Z.
        let (s, e) = period_bounds(Period::Daily, santiago, 1_725_768_000_000 + HOUR);
        assert_eq!((s, e), (1_725_768_000_000, 1_725_850_800_000));
        assert_eq!(period_bounds(Period::Daily, santiago, s - 1).1, s);
        // 2024-04-06 lasts 25 h: 23:00-24:00 repeats after 03:00Z.
        let (s, e) = period_bounds(Period::Daily, santiago, 1_712_460_600_000);
        assert_eq!((s, e), (1_712_372_400_000, 1_712_462_400_000));
        let havana = chrono_tz::America::Havana;
        // 2024-11-03: 00:00-01:00 happens twice; the day starts at the first (04:00Z).
        let (s, e) = period_bounds(Period::Daily, havana, 1_730_611_800_000);
        assert_eq!((s, e), (1_730_606_400_000, 1_730_696_400_000));
        // 2024-03-10: midnight skipped, day starts at 01:00 CDT = 05:00Z.
        let (s, e) = period_bounds(Period::Daily, havana, 1_710_046_800_000 + HOUR);
        assert_eq!((s, e), (1_710_046_800_000, 1_710_129_600_000));
        assert_eq!(period_bounds(Period::Daily, havana, s - 1).1, s);
    }

    #[test]
    fn extreme_instants() {
        assert_eq!(period_bounds(Period::Daily, Tz::UTC, 0), (0, DAY));
        // Tokyo's day containing the epoch started before it: saturates to 0.
        assert_eq!(
            period_bounds(Period::Daily, chrono_tz::Asia::Tokyo, 0),
            (0, 15 * HOUR)
        );
        let (s, e) = period_bounds(Period::Monthly, Tz::UTC, u64::MAX);
        assert!(s < MAX_SUPPORTED_MS);
        assert_eq!(e, u64::MAX);
        let c = cfg(1.0);
        let mut l = Ledger::new(&c, u64::MAX);
        assert_eq!(l.roll(&c, u64::MAX - 1), None);
    }

    #[test]
    fn pacing_direction_clamp_and_warmup() {
        let c = cfg(100.0);
        let mid = UTC_DAY_START + 12 * HOUR; // time fraction 0.5
        let mut l = Ledger::new(&c, mid);
        // Ahead of plan: 75% spent at half time -> max(0.75/0.5, 0.5/0.25)^2 = 2^2.
        l.settle(&c, "a", 50.0, mid);
        l.try_reserve(&c, "b", 25.0, mid).unwrap();
        assert!((l.pacing_multiplier(&c, mid) - 4.0).abs() < 1e-12);
        assert_eq!(l.state(&c, mid), BudgetState::Pacing);
        // Exactly on plan.
        l.release(&c, "b", mid);
        assert_eq!(l.pacing_multiplier(&c, mid), 1.0);
        assert_eq!(l.state(&c, mid), BudgetState::Ok);
        // Behind plan: floored at the min multiplier.
        let late = UTC_DAY_START + 18 * HOUR; // 50% spent at 75% time
        assert_eq!(l.pacing_multiplier(&c, late), 1.0);
        let mut low = c.clone();
        low.pacing_min_multiplier = 0.4;
        let m = l.pacing_multiplier(&low, late); // (2/3)^2
        assert!((m - 4.0 / 9.0).abs() < 1e-12, "{m}");
        let m = l.pacing_multiplier(&low, UTC_DAY_START + 20 * HOUR); // 0.6^2 = 0.36
        assert_eq!(m, 0.4);
        // Clamped at max: 50% spent at 5% time -> 10^2 = 100 -> 8.
        let early = UTC_DAY_START + 72 * 60_000;
        assert_eq!(l.pacing_multiplier(&c, early), 8.0);
        // Late and near the cap, slightly ahead of the line: the time-left-per-budget-left term
        // leads. 95% spent at 90% time: max(1.056, 0.1/0.05 = 2)^2 = 4.
        let mut near = Ledger::new(&c, UTC_DAY_START);
        near.settle(&c, "n", 95.0, UTC_DAY_START);
        let m = near.pacing_multiplier(&c, UTC_DAY_START + 21 * HOUR + 36 * 60_000);
        assert!((m - 4.0).abs() < 1e-9, "{m}");
        // Warmup: 1% of the day -> no pacing.
        let warm = UTC_DAY_START + 864_000;
        assert_eq!(l.pacing_multiplier(&c, warm), 1.0);
        assert_eq!(l.state(&c, warm), BudgetState::Ok);
        // Gain 0 disables pacing.
        let mut flat = c.clone();
        flat.pacing_gain = 0.0;
        assert_eq!(l.pacing_multiplier(&flat, early), 1.0);
        // Fully spent with half the period left: exhausted, multiplier at max.
        l.settle(&c, "c", 50.0, mid);
        assert_eq!(l.state(&c, mid), BudgetState::Exhausted);
        assert_eq!(l.pacing_multiplier(&c, mid), 8.0);
        // Remainder below epsilon counts as exhausted.
        let mut l = Ledger::new(&c, mid);
        l.settle(&c, "a", 100.0 - 1e-7, mid);
        assert_eq!(l.state(&c, mid), BudgetState::Exhausted);
    }

    #[test]
    fn history_is_bounded() {
        let c = cfg(10.0);
        let mut l = Ledger::new(&c, UTC_DAY_START);
        for d in 1..=20u64 {
            l.settle(&c, "x", d as f64 / 4.0, UTC_DAY_START + (d - 1) * DAY);
            let closed = l.roll(&c, UTC_DAY_START + d * DAY).unwrap();
            assert_eq!(closed.spent_usd, d as f64 / 4.0);
        }
        assert_eq!(l.history().len(), HISTORY_LEN);
        assert_eq!(l.history()[0].spent_usd, 9.0 / 4.0);
        assert_eq!(l.history()[0].start_ms, UTC_DAY_START + 8 * DAY);
        assert_eq!(l.history()[11].spent_usd, 5.0);
        assert_eq!(l.previous_period_spent_usd(), 5.0);
    }

    /// xorshift64*, enough for a reproducible operation mix.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Multiple of 1/1024 USD in [0, max_units/1024], exact in f64.
        fn usd(&mut self, max_units: u64) -> f64 {
            self.below(max_units + 1) as f64 / 1024.0
        }
    }

    #[test]
    fn random_operations_keep_invariants() {
        let mut c = cfg(100.0);
        c.time_zone = chrono_tz::Europe::Berlin;
        c.reservation_ttl_secs = 900.0;
        let ttl_ms = 900_000;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut now = T0;
        let mut l = Ledger::new(&c, now);
        // Independent model of the ledger.
        let mut model: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        let mut spent = 0.0f64;
        let mut overrun = 0.0f64;
        let (mut admitted, mut refused, mut rolls, mut overruns) = (0, 0, 0, 0);
        for step in 0..20_000 {
            now += match rng.below(100) {
                0 => 6 * HOUR,
                1..=30 => rng.below(120_000),
                _ => 0,
            };
            if now >= l.period_end_ms() {
                model.clear();
                spent = 0.0;
                overrun = 0.0;
                rolls += 1;
            }
            let id = format!("r{}", rng.below(24));
            match rng.below(10) {
                0..=3 => {
                    let amount = if rng.below(50) == 0 {
                        f64::NAN
                    } else {
                        rng.usd(8 * 1024)
                    };
                    let old = model.get(&id).map_or(0.0, |r| r.0);
                    let others: f64 = model.values().map(|r| r.0).sum::<f64>() - old;
                    let r = l.try_reserve(&c, &id, amount, now);
                    if amount.is_nan() {
                        assert!(matches!(r, Err(ReserveError::InvalidAmount { .. })));
                    } else if spent + others + amount <= c.limit_usd {
                        assert_eq!(r, Ok(()), "step {step}");
                        model.insert(id, (amount, now));
                        admitted += 1;
                    } else {
                        let e = exhausted(r);
                        assert_eq!(e.spent_usd, spent);
                        assert_eq!(e.reserved_usd, others + old);
                        assert_eq!(e.resets_at_ms, l.period_end_ms());
                        refused += 1;
                    }
                }
                4..=6 => {
                    // Mostly near the reserved estimate, sometimes unreserved.
                    let actual = match model.get(&id) {
                        Some(r) => rng.usd((r.0 * 1536.0) as u64),
                        None => rng.usd(1024),
                    };
                    let s = l.settle(&c, &id, actual, now);
                    model.remove(&id);
                    spent += actual;
                    assert_eq!(s.recorded_usd, actual);
                    assert!(s.overrun_usd >= 0.0);
                    overrun += s.overrun_usd;
                    overruns += usize::from(s.overrun_usd > 0.0);
                }
                7 => {
                    assert_eq!(l.release(&c, &id, now), model.remove(&id).is_some());
                }
                _ => {
                    let before = model.len();
                    model.retain(|_, r| now - r.1 <= ttl_ms);
                    assert_eq!(l.expire(&c, now), before - model.len(), "step {step}");
                }
            }
            let reserved: f64 = model.values().map(|r| r.0).sum();
            assert_eq!(l.spent_usd(), spent, "step {step}");
            assert_eq!(l.reserved_usd(), reserved, "step {step}");
            assert_eq!(l.reservation_count(), model.len());
            assert!(
                l.spent_usd() + l.reserved_usd() <= c.limit_usd + overrun,
                "step {step}: {} + {} > {} + {overrun}",
                l.spent_usd(),
                l.reserved_usd(),
                c.limit_usd
            );
            assert!(l.pacing_multiplier(&c, now) >= 1.0);
            assert!(l.pacing_multiplier(&c, now) <= 8.0);
        }
        // The mix really exercised every path.
        assert!(
            admitted > 1000 && refused > 100 && rolls > 10 && overruns > 100,
            "{admitted} {refused} {rolls} {overruns}"
        );
    }
}
