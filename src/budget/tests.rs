use super::*;
use chrono_tz::Tz;

use crate::validation::FieldError;

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
    assert_eq!(c.reservation_ttl_secs, DEFAULT_RESERVATION_TTL_SECS);
    assert_eq!(c.pacing_max_multiplier, 8.0);
    assert_eq!(c.pacing_min_multiplier, 1.0);
    assert_eq!(c.pacing_gain, 2.0);
    assert_eq!(c.pacing_warmup_fraction, 0.02);

    let mut bad = cfg(f64::NAN);
    assert_eq!(
        bad.validate(),
        Err(FieldError::new(
            "limit_usd",
            "must be finite and > 0 (got NaN)"
        ))
    );
    bad.limit_usd = 0.0;
    assert_eq!(bad.validate().unwrap_err().field, "limit_usd");
    let mut bad = cfg(1.0);
    bad.alert_thresholds = vec![0.9, 0.5, 1.5];
    assert_eq!(
        bad.validate(),
        Err(FieldError::new(
            "alert_thresholds[2]",
            "must be in (0, 1] (got 1.5)"
        ))
    );
    bad.alert_thresholds = vec![0.9, 0.5];
    assert_eq!(bad.validate(), Ok(()), "unsorted thresholds are sortable");
    bad.alert_thresholds = vec![0.5, 0.5];
    assert!(bad.validate().unwrap_err().message.contains("duplicates"));
    let mut bad = cfg(1.0);
    bad.reservation_ttl_secs = -1.0;
    assert_eq!(bad.validate().unwrap_err().field, "reservation_ttl_secs");
    let mut bad = cfg(1.0);
    bad.pacing_max_multiplier = 0.5;
    assert_eq!(bad.validate().unwrap_err().field, "pacing_max_multiplier");
    let mut bad = cfg(1.0);
    bad.pacing_min_multiplier = 2.0;
    assert_eq!(bad.validate().unwrap_err().field, "pacing_min_multiplier");
    let mut bad = cfg(1.0);
    bad.pacing_gain = f64::INFINITY;
    assert_eq!(bad.validate().unwrap_err().field, "pacing_gain");
    let mut bad = cfg(1.0);
    bad.pacing_warmup_fraction = 1.0;
    assert_eq!(bad.validate().unwrap_err().field, "pacing_warmup_fraction");
    let mut bad = cfg(1.0);
    bad.key = " ".into();
    assert_eq!(bad.validate().unwrap_err().field, "key");
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
    let mut c = cfg(10.0);
    c.reservation_ttl_secs = 600.0;
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
    // The old reservation stays live, pinned to the closed period: no headroom of the new one.
    assert_eq!((l.spent_usd(), l.reserved_usd()), (0.0, 0.0));
    assert_eq!(l.reservation_count(), 1);
    assert_eq!(l.previous_period_spent_usd(), 30.0);
    assert_eq!(l.history(), &[closed]);
    // Its late settle lands in the period it was made in (April), not the new one.
    l.settle(&c, "b", 4.0, end + 1);
    assert_eq!(l.spent_usd(), 0.0);
    assert_eq!(l.reservation_count(), 0);
    assert_eq!(l.previous_period_spent_usd(), 34.0);
    assert_eq!(l.history()[0].spent_usd, 34.0);
    // An unreserved settle lands in the current period.
    l.settle(&c, "c", 4.0, end + 2);
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
    // Reservations of closed periods: live until settled, released or expired, but they take no
    // headroom of the current period and settle into their own.
    let mut pinned: BTreeMap<String, (f64, u64)> = BTreeMap::new();
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
            pinned.append(&mut model);
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
                    pinned.remove(&id);
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
                let reserved_before: f64 = model.values().map(|r| r.0).sum();
                let over_before = (spent + reserved_before - c.limit_usd).max(0.0);
                let s = l.settle(&c, &id, actual, now);
                assert_eq!(s.recorded_usd, actual);
                if pinned.remove(&id).is_some() {
                    // Charged to the closed period it was reserved in, not this one.
                    assert!(s.crossed.is_empty(), "step {step}");
                } else {
                    model.remove(&id);
                    spent += actual;
                    let reserved_after: f64 = model.values().map(|r| r.0).sum();
                    let over_after = (spent + reserved_after - c.limit_usd).max(0.0);
                    let expected = (over_after - over_before).max(0.0);
                    assert!(
                        (s.overrun_usd - expected).abs() < 1e-9,
                        "step {step}: overrun {} != {expected}",
                        s.overrun_usd
                    );
                    overrun += s.overrun_usd;
                }
                overruns += usize::from(s.overrun_usd > 0.0);
            }
            7 => {
                let live = model.remove(&id).is_some() | pinned.remove(&id).is_some();
                assert_eq!(l.release(&c, &id, now), live);
            }
            _ => {
                let before = model.len() + pinned.len();
                model.retain(|_, r| now - r.1 <= ttl_ms);
                pinned.retain(|_, r| now - r.1 <= ttl_ms);
                let after = model.len() + pinned.len();
                assert_eq!(l.expire(&c, now), before - after, "step {step}");
            }
        }
        let reserved: f64 = model.values().map(|r| r.0).sum();
        assert_eq!(l.spent_usd(), spent, "step {step}");
        assert_eq!(l.reserved_usd(), reserved, "step {step}");
        assert_eq!(l.reservation_count(), model.len() + pinned.len());
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
