//! Calendar maths: where a daily, weekly or monthly period starts and ends in a time zone,
//! correct across DST changes. Pure functions of the instant, kept apart from the ledger.

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

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
