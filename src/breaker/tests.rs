use super::*;
use crate::validation::FieldError;
use BreakerState::{Closed, HalfOpen, Open};
use CallOutcome::{Error, RateLimited, SoftFailure, Success, Timeout};

fn cfg() -> BreakerConfig {
    BreakerConfig::default()
}

/// Config where only the failure rate can trip.
fn rate_cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 1000.0,
        ..cfg()
    }
}

fn tr(from: BreakerState, to: BreakerState, at_ms: u64, cause: TransitionCause) -> Transition {
    Transition {
        from,
        to,
        at_ms,
        cause,
    }
}

/// Trips a fresh breaker by 5 errors at `t`; returns it open until t+5000.
fn tripped(t: u64) -> Breaker {
    let c = cfg();
    let mut b = Breaker::new();
    for _ in 0..4 {
        assert_eq!(b.record(Error, t, &c), None);
    }
    assert_eq!(
        b.record(Error, t, &c),
        Some(tr(Closed, Open, t, TransitionCause::ConsecutiveFailures))
    );
    b
}

/// Drives a breaker that is half-open at `t` to closed at `t`.
fn close_at(b: &mut Breaker, t: u64) {
    let c = cfg();
    assert_eq!(b.admit(t, &c), Admission::Probe);
    assert_eq!(b.admit(t, &c), Admission::Probe);
    assert_eq!(b.record(Success, t, &c), None);
    let closed = b.record(Success, t, &c).expect("closes");
    assert_eq!(closed.to, Closed);
}

#[test]
fn new_breaker_is_closed_and_allows() {
    let mut b = Breaker::new();
    assert_eq!(b, Breaker::default());
    assert_eq!(b.state(0), Closed);
    assert_eq!(b.admit(1_000, &cfg()), Admission::Allowed);
    assert!(b.would_admit(1_000, &cfg()));
    assert_eq!(b.since_ms(), 0);
    assert_eq!(b.open_until_ms(1_000), None);
    assert_eq!(b.recent_failure_rate(1_000, &cfg()), 0.0);
    assert_eq!(b.total_opens(), 0);
}

#[test]
fn consecutive_errors_trip_at_threshold() {
    let c = cfg();
    let mut b = Breaker::new();
    for i in 0..4 {
        assert_eq!(b.record(Error, 1_000 + i, &c), None);
        assert_eq!(b.state(1_000 + i), Closed);
    }
    assert_eq!(b.consecutive_failure_score(), 4.0);
    let t = b.record(Timeout, 1_004, &c);
    assert_eq!(
        t,
        Some(tr(
            Closed,
            Open,
            1_004,
            TransitionCause::ConsecutiveFailures
        ))
    );
    assert!(t.is_some_and(|t| t.is_open() && !t.is_recovery()));
    assert_eq!(b.state(1_004), Open);
    assert_eq!(b.open_until_ms(1_004), Some(6_004));
    assert_eq!(b.since_ms(), 1_004);
    assert_eq!(b.total_opens(), 1);
    assert_eq!(b.reopen_count(1_004, &c), 1);
}

#[test]
fn rate_limited_counts_half() {
    let c = cfg();
    let mut b = Breaker::new();
    for i in 0..9 {
        assert_eq!(b.record(RateLimited, i, &c), None);
    }
    assert_eq!(b.consecutive_failure_score(), 4.5);
    assert_eq!(b.state(9), Closed);
    assert_eq!(
        b.record(RateLimited, 9, &c),
        Some(tr(Closed, Open, 9, TransitionCause::ConsecutiveFailures))
    );
}

#[test]
fn soft_failures_and_mixed_weights_sum() {
    let c = cfg();
    let mut b = Breaker::new();
    // 1 + 0.5 + 1 + 0.5 + 1 = 4.0, then +0.5 = 4.5, then +0.5 = 5.0.
    for o in [Error, SoftFailure, Timeout, RateLimited, Error, SoftFailure] {
        assert_eq!(b.record(o, 0, &c), None);
    }
    assert_eq!(b.consecutive_failure_score(), 4.5);
    assert_eq!(
        b.record(SoftFailure, 7, &c),
        Some(tr(Closed, Open, 7, TransitionCause::ConsecutiveFailures))
    );
}

#[test]
fn fractional_weights_reach_threshold_despite_rounding() {
    let c = BreakerConfig {
        consecutive_failures: 1.0,
        error_weight: 0.1,
        ..cfg()
    };
    let mut b = Breaker::new();
    for _ in 0..9 {
        assert_eq!(b.record(Error, 0, &c), None);
    }
    assert!(b.record(Error, 0, &c).is_some());
}

#[test]
fn success_resets_consecutive_score() {
    let c = cfg();
    let mut b = Breaker::new();
    for _ in 0..4 {
        assert_eq!(b.record(Error, 0, &c), None);
    }
    assert_eq!(b.record(Success, 1, &c), None);
    assert_eq!(b.consecutive_failure_score(), 0.0);
    for _ in 0..4 {
        assert_eq!(b.record(Error, 2, &c), None);
    }
    assert_eq!(b.state(2), Closed);
    assert!(b.record(Error, 3, &c).is_some());
}

#[test]
fn zero_weight_outcome_neither_fails_nor_resets() {
    let c = BreakerConfig {
        rate_limited_weight: 0.0,
        ..cfg()
    };
    let mut b = Breaker::new();
    for _ in 0..4 {
        b.record(Error, 0, &c);
    }
    for _ in 0..10 {
        assert_eq!(b.record(RateLimited, 0, &c), None);
    }
    assert_eq!(b.consecutive_failure_score(), 4.0);
    assert_eq!(b.recent_calls(0, &c), 14);
    assert!(b.record(Error, 0, &c).is_some());
}

#[test]
fn failure_rate_trips_only_after_min_requests() {
    let c = rate_cfg();
    let mut b = Breaker::new();
    // S, F, S, F, ...: 19 calls hold 9 failures; the 20th (a failure)
    // makes 10/20 = 0.5 with min_requests reached.
    for i in 0..19u64 {
        let o = if i % 2 == 0 { Success } else { Error };
        assert_eq!(b.record(o, 1_000 + i, &c), None, "call {i}");
    }
    assert_eq!(b.recent_calls(1_018, &c), 19);
    assert_eq!(b.state(1_018), Closed);
    assert_eq!(
        b.record(Error, 1_019, &c),
        Some(tr(Closed, Open, 1_019, TransitionCause::FailureRate))
    );
    assert_eq!(b.recent_failure_rate(1_019, &c), 0.5);
    assert_eq!(b.open_until_ms(1_019), Some(6_019));
}

#[test]
fn high_rate_below_min_requests_does_not_trip() {
    let c = BreakerConfig {
        consecutive_failures: 1000.0,
        min_requests: 20,
        ..cfg()
    };
    let mut b = Breaker::new();
    for _ in 0..19 {
        assert_eq!(b.record(Error, 0, &c), None);
    }
    assert_eq!(b.recent_failure_rate(0, &c), 1.0);
    assert_eq!(b.state(0), Closed);
    assert!(b.record(Error, 0, &c).is_some());
}

#[test]
fn success_never_trips_by_rate() {
    let c = rate_cfg();
    let mut b = Breaker::new();
    for _ in 0..19 {
        b.record(Error, 0, &c);
    }
    // 20 calls, 19 failures, but the 20th is a success: no trip on it.
    assert_eq!(b.record(Success, 0, &c), None);
    assert_eq!(b.state(0), Closed);
}

fn ten_failures_then(t2: u64) -> (Breaker, Option<Transition>) {
    let c = rate_cfg();
    let mut b = Breaker::new();
    for _ in 0..10 {
        assert_eq!(b.record(Error, 0, &c), None);
    }
    for _ in 0..10 {
        assert_eq!(b.record(Success, t2, &c), None);
    }
    let t = b.record(Error, t2, &c);
    (b, t)
}

#[test]
fn old_buckets_leave_the_window() {
    let c = rate_cfg();
    // Window 60 s = 10 buckets of 6 s. At 59_999 (bucket 9) bucket 0 is
    // still inside: 21 calls, 11 failures -> rate 0.524 trips.
    let (b, t) = ten_failures_then(59_999);
    assert_eq!(
        t,
        Some(tr(Closed, Open, 59_999, TransitionCause::FailureRate))
    );
    assert_eq!(b.recent_calls(59_999, &c), 21);
    // At 60_000 (bucket 10) bucket 0 has left: 11 calls, no trip.
    let (b, t) = ten_failures_then(60_000);
    assert_eq!(t, None);
    assert_eq!(b.state(60_000), Closed);
    assert_eq!(b.recent_calls(60_000, &c), 11);
    assert_eq!(b.recent_failure_rate(60_000, &c), 1.0 / 11.0);
    // Everything has left by bucket 20.
    assert_eq!(b.recent_calls(120_000, &c), 0);
    assert_eq!(b.recent_failure_rate(120_000, &c), 0.0);
}

#[test]
fn failure_rate_is_weighted() {
    let c = rate_cfg();
    let mut b = Breaker::new();
    b.record(RateLimited, 0, &c);
    b.record(SoftFailure, 0, &c);
    b.record(Error, 0, &c);
    b.record(Success, 0, &c);
    assert_eq!(b.recent_calls(0, &c), 4);
    assert_eq!(b.recent_failure_rate(0, &c), 2.0 / 4.0);
}

#[test]
fn time_going_backwards_counts_into_latest_bucket() {
    let c = rate_cfg();
    let mut b = Breaker::new();
    b.record(Error, 100_000, &c);
    b.record(Error, 10, &c);
    assert_eq!(b.recent_calls(100_000, &c), 2);
    assert_eq!(b.recent_calls(0, &c), 2);
}

#[test]
fn window_length_change_restarts_window() {
    let c = rate_cfg();
    let mut b = Breaker::new();
    b.record(Error, 0, &c);
    let c2 = BreakerConfig {
        window_secs: 30.0,
        ..rate_cfg()
    };
    assert_eq!(b.recent_calls(0, &c2), 0);
    b.record(Success, 0, &c2);
    assert_eq!(b.recent_calls(0, &c2), 1);
    assert_eq!(b.recent_failure_rate(0, &c2), 0.0);
}

#[test]
fn open_rejects_until_cooldown_then_half_opens() {
    let c = cfg();
    let mut b = tripped(10_000);
    for now in [10_000, 12_000, 14_999] {
        assert_eq!(
            b.admit(now, &c),
            Admission::Rejected {
                retry_at_ms: 15_000
            }
        );
        assert!(!b.would_admit(now, &c));
        assert_eq!(b.state(now), Open);
    }
    assert_eq!(b.poll(14_999), None);
    // Lazily half-open at exactly open_until.
    assert_eq!(b.state(15_000), HalfOpen);
    assert_eq!(b.open_until_ms(15_000), None);
    assert!(b.would_admit(15_000, &c));
    assert_eq!(b.since_ms(), 10_000);
    assert_eq!(
        b.poll(15_500),
        Some(tr(Open, HalfOpen, 15_000, TransitionCause::CooldownElapsed))
    );
    assert_eq!(b.since_ms(), 15_000);
    assert_eq!(b.poll(15_500), None);
}

#[test]
fn outcomes_while_open_do_not_close() {
    let c = cfg();
    let mut b = tripped(0);
    for _ in 0..10 {
        assert_eq!(b.record(Success, 1_000, &c), None);
    }
    assert_eq!(b.record(Error, 1_000, &c), None);
    assert_eq!(b.state(4_999), Open);
    assert_eq!(b.open_until_ms(4_999), Some(5_000));
}

#[test]
fn half_open_admits_exactly_n_probes() {
    let c = cfg();
    let mut b = tripped(0);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.admit(5_100, &c), Admission::Probe);
    assert!(b.would_admit(5_150, &c));
    assert_eq!(b.admit(5_200, &c), Admission::Probe);
    assert_eq!(b.probes_in_flight(5_200, &c), 3);
    assert!(!b.would_admit(5_300, &c));
    // Retry when the oldest probe times out (5_000 + 30_000).
    assert_eq!(
        b.admit(5_300, &c),
        Admission::Rejected {
            retry_at_ms: 35_000
        }
    );
    assert_eq!(b.state(5_300), HalfOpen);
}

#[test]
fn would_admit_takes_no_slot() {
    let c = cfg();
    let mut b = tripped(0);
    for _ in 0..10 {
        assert!(b.would_admit(5_000, &c));
    }
    for _ in 0..3 {
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
    }
    assert!(!b.would_admit(5_000, &c));
}

#[test]
fn probe_timeouts_free_slots() {
    let c = cfg();
    let mut b = tripped(0);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.admit(6_000, &c), Admission::Probe);
    assert_eq!(b.admit(7_000, &c), Admission::Probe);
    assert_eq!(
        b.admit(34_999, &c),
        Admission::Rejected {
            retry_at_ms: 35_000
        }
    );
    assert_eq!(b.probes_in_flight(35_000, &c), 2);
    assert!(b.would_admit(35_000, &c));
    assert_eq!(b.admit(35_000, &c), Admission::Probe);
    assert_eq!(
        b.admit(35_000, &c),
        Admission::Rejected {
            retry_at_ms: 36_000
        }
    );
    // Once every probe has timed out, late reports move nothing.
    assert_eq!(b.probes_in_flight(65_000, &c), 0);
    assert_eq!(b.record(Error, 65_000, &c), None);
    assert_eq!(b.state(65_000), HalfOpen);
}

#[test]
fn successes_to_close_close_it() {
    let c = cfg();
    let mut b = tripped(0);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.record(Success, 5_400, &c), None);
    assert_eq!(b.state(5_400), HalfOpen);
    assert_eq!(b.probes_in_flight(5_400, &c), 2);
    let t = b.record(Success, 5_500, &c);
    assert_eq!(
        t,
        Some(tr(
            HalfOpen,
            Closed,
            5_500,
            TransitionCause::ProbesSucceeded
        ))
    );
    assert!(t.is_some_and(|t| t.is_recovery()));
    assert_eq!(b.state(5_500), Closed);
    assert_eq!(b.since_ms(), 5_500);
    assert_eq!(b.admit(5_500, &c), Admission::Allowed);
    // Old failures were dropped from the window on close.
    assert_eq!(b.recent_calls(5_500, &c), 0);
    assert_eq!(b.consecutive_failure_score(), 0.0);
    // The third probe reporting late counts as a normal closed call.
    assert_eq!(b.record(Error, 5_600, &c), None);
    assert_eq!(b.consecutive_failure_score(), 1.0);
}

#[test]
fn outcomes_without_outstanding_probe_move_nothing() {
    let c = cfg();
    let mut b = tripped(0);
    // Half-open, but nothing admitted: late reports from pre-trip calls.
    assert_eq!(b.record(Success, 5_000, &c), None);
    assert_eq!(b.record(Success, 5_000, &c), None);
    assert_eq!(b.record(Error, 5_000, &c), None);
    assert_eq!(b.state(5_000), HalfOpen);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.record(Success, 5_000, &c), None);
    assert_eq!(b.record(Success, 5_000, &c), None);
    assert_eq!(b.state(5_000), HalfOpen);
}

#[test]
fn probe_failure_reopens_with_doubling_cooldown_capped() {
    let c = cfg();
    let mut b = tripped(0);
    let mut now = 5_000;
    let expected_secs = [10, 20, 40, 80, 160, 300, 300];
    for (n, secs) in expected_secs.iter().enumerate() {
        assert_eq!(b.state(now), HalfOpen);
        assert_eq!(b.admit(now, &c), Admission::Probe);
        let t = b.record(Error, now + 1, &c);
        assert_eq!(
            t,
            Some(tr(HalfOpen, Open, now + 1, TransitionCause::ProbeFailed))
        );
        let until = now + 1 + secs * 1_000;
        assert_eq!(b.open_until_ms(now + 1), Some(until), "re-open {n}");
        assert_eq!(b.state(until - 1), Open);
        assert_eq!(b.reopen_count(now + 1, &c), n as u32 + 2);
        now = until;
    }
    assert_eq!(b.total_opens(), 8);
}

#[test]
fn soft_failure_probe_reopens() {
    let c = cfg();
    let mut b = tripped(0);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.record(Success, 5_100, &c), None);
    assert_eq!(
        b.record(SoftFailure, 5_200, &c),
        Some(tr(HalfOpen, Open, 5_200, TransitionCause::ProbeFailed))
    );
    assert_eq!(b.open_until_ms(5_200), Some(15_200));
}

#[test]
fn tripping_soon_after_closing_grows_backoff() {
    let c = cfg();
    let mut b = tripped(0);
    close_at(&mut b, 5_000);
    assert_eq!(b.reopen_count(5_000, &c), 1);
    // Trip again 299.999 s after closing: still within the streak.
    let t = 5_000 + 299_999;
    for _ in 0..5 {
        b.record(Error, t, &c);
    }
    assert_eq!(b.open_until_ms(t), Some(t + 10_000));
    assert_eq!(b.reopen_count(t, &c), 2);
}

#[test]
fn backoff_resets_after_clean_period() {
    let c = cfg();
    let mut b = tripped(0);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    b.record(Error, 5_000, &c); // re-open for 10 s, level 2
    close_at(&mut b, 15_000);
    assert_eq!(b.reopen_count(15_000 + 299_999, &c), 2);
    assert_eq!(b.next_cooldown_ms(15_000 + 299_999, &c), 20_000);
    let t = 15_000 + 300_000;
    assert_eq!(b.reopen_count(t, &c), 0);
    assert_eq!(b.next_cooldown_ms(t, &c), 5_000);
    for _ in 0..5 {
        b.record(Error, t, &c);
    }
    assert_eq!(b.open_until_ms(t), Some(t + 5_000));
    assert_eq!(b.reopen_count(t, &c), 1);
}

#[test]
fn force_down_holds_until_ttl_and_ignores_successes() {
    let c = cfg();
    let mut b = Breaker::new();
    assert_eq!(
        b.force_down(60_000, 1_000),
        Some(tr(Closed, Open, 1_000, TransitionCause::ForcedDown))
    );
    assert!(b.forced_down(1_000));
    for now in [1_000, 30_000, 59_999] {
        assert_eq!(b.record(Success, now, &c), None);
        assert_eq!(b.state(now), Open);
        assert_eq!(
            b.admit(now, &c),
            Admission::Rejected {
                retry_at_ms: 60_000
            }
        );
    }
    assert_eq!(b.open_until_ms(59_999), Some(60_000));
    assert_eq!(b.state(60_000), HalfOpen);
    assert!(!b.forced_down(60_000));
    assert_eq!(
        b.poll(60_000),
        Some(tr(Open, HalfOpen, 60_000, TransitionCause::ForcedExpired))
    );
    // Forcing did not grow the backoff: a failed probe opens for 5 s.
    assert_eq!(b.reopen_count(60_000, &c), 0);
    assert_eq!(b.admit(60_000, &c), Admission::Probe);
    b.record(Timeout, 60_001, &c);
    assert_eq!(b.open_until_ms(60_001), Some(65_001));
}

#[test]
fn forced_episode_keeps_backoff_streak_or_clean_reset() {
    let c = cfg();
    // Forced down 1 s after closing: the streak (level 1) carries over.
    let mut b = tripped(0);
    close_at(&mut b, 5_000);
    b.force_down(70_000, 6_000);
    assert_eq!(b.reopen_count(70_000, &c), 1);
    assert_eq!(b.admit(70_000, &c), Admission::Probe);
    b.record(Error, 70_000, &c);
    assert_eq!(b.open_until_ms(70_000), Some(80_000));
    // Forced down after 300 s closed cleanly: the backoff has reset.
    let mut b = tripped(0);
    close_at(&mut b, 5_000);
    b.force_down(400_000, 305_000);
    assert_eq!(b.reopen_count(400_000, &c), 0);
    assert_eq!(b.admit(400_000, &c), Admission::Probe);
    b.record(Error, 400_000, &c);
    assert_eq!(b.open_until_ms(400_000), Some(405_000));
    // ... and the next failed probe doubles again.
    assert_eq!(b.admit(405_000, &c), Admission::Probe);
    b.record(Error, 405_000, &c);
    assert_eq!(b.open_until_ms(405_000), Some(415_000));
}

#[test]
fn force_down_while_open_or_half_open() {
    let c = cfg();
    // Over a failure-driven open: no transition, the later end wins.
    let mut b = tripped(0);
    assert_eq!(b.force_down(3_000, 1_000), None);
    assert_eq!(b.open_until_ms(1_000), Some(5_000));
    assert_eq!(b.force_down(20_000, 1_000), None);
    assert_eq!(b.open_until_ms(1_000), Some(20_000));
    assert!(b.forced_down(1_000));
    assert_eq!(b.reopen_count(1_000, &c), 1);
    assert_eq!(b.total_opens(), 1);
    // From half-open: outstanding probes are dropped.
    let mut b = tripped(0);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(
        b.force_down(9_000, 6_000),
        Some(tr(HalfOpen, Open, 6_000, TransitionCause::ForcedDown))
    );
    assert_eq!(b.record(Success, 6_500, &c), None);
    assert_eq!(b.state(8_999), Open);
    // A ttl already past is ignored.
    let mut b = Breaker::new();
    assert_eq!(b.force_down(1_000, 1_000), None);
    assert_eq!(b.state(1_000), Closed);
}

#[test]
fn clear_forced_goes_half_open() {
    let c = cfg();
    let mut b = Breaker::new();
    b.set_degraded(100_000);
    b.force_down(60_000, 1_000);
    assert_eq!(
        b.clear_forced(2_000),
        Some(tr(Open, HalfOpen, 2_000, TransitionCause::ForcedClear))
    );
    assert_eq!(b.state(2_000), HalfOpen);
    assert!(!b.degraded(2_000));
    assert_eq!(b.since_ms(), 2_000);
    assert_eq!(b.admit(2_000, &c), Admission::Probe);
    assert_eq!(b.admit(2_000, &c), Admission::Probe);
    b.record(Success, 2_100, &c);
    assert_eq!(
        b.record(Success, 2_200, &c),
        Some(tr(
            HalfOpen,
            Closed,
            2_200,
            TransitionCause::ProbesSucceeded
        ))
    );
    // Nothing forced: no transition, failure-driven open keeps running.
    assert_eq!(b.clear_forced(3_000), None);
    let mut b = tripped(0);
    assert_eq!(b.clear_forced(1_000), None);
    assert_eq!(b.open_until_ms(1_000), Some(5_000));
    // Forced ttl already over: already half-open, nothing to clear.
    let mut b = Breaker::new();
    b.force_down(5_000, 0);
    assert_eq!(b.clear_forced(5_000), None);
    assert_eq!(b.state(5_000), HalfOpen);
}

#[test]
fn degraded_expires() {
    let mut b = Breaker::new();
    assert!(!b.degraded(0));
    b.set_degraded(10_000);
    assert!(b.degraded(9_999));
    assert_eq!(b.degraded_until_ms(9_999), Some(10_000));
    assert!(!b.degraded(10_000));
    assert_eq!(b.degraded_until_ms(10_000), None);
    assert_eq!(b.state(5_000), Closed);
    b.set_degraded(0);
    assert!(!b.degraded(5_000));
}

#[test]
fn validate_accepts_defaults() {
    assert_eq!(BreakerConfig::default().validate(), Ok(()));
}

#[test]
fn validate_messages() {
    let cases: Vec<(BreakerConfig, (&str, &str))> = vec![
        (
            BreakerConfig {
                successes_to_close: 5,
                ..cfg()
            },
            (
                "successes_to_close",
                "must be <= half_open_probes (got 5 > 3)",
            ),
        ),
        (
            BreakerConfig {
                cooldown_secs: f64::NAN,
                ..cfg()
            },
            ("cooldown_secs", "must be a finite number (got NaN)"),
        ),
        (
            BreakerConfig {
                window_secs: f64::INFINITY,
                ..cfg()
            },
            ("window_secs", "must be a finite number (got inf)"),
        ),
        (
            BreakerConfig {
                rate_limited_weight: -0.5,
                ..cfg()
            },
            ("rate_limited_weight", "must be >= 0 (got -0.5)"),
        ),
        (
            BreakerConfig {
                consecutive_failures: 0.0,
                ..cfg()
            },
            ("consecutive_failures", "must be > 0 (got 0)"),
        ),
        (
            BreakerConfig {
                probe_timeout_secs: 0.0,
                ..cfg()
            },
            ("probe_timeout_secs", "must be > 0 (got 0)"),
        ),
        (
            BreakerConfig {
                failure_rate_threshold: 1.5,
                ..cfg()
            },
            ("failure_rate_threshold", "must be in (0, 1] (got 1.5)"),
        ),
        (
            BreakerConfig {
                window_secs: 0.005,
                ..cfg()
            },
            (
                "window_secs",
                "must be >= 0.01 (one millisecond per bucket) (got 0.005)",
            ),
        ),
        (
            BreakerConfig {
                cooldown_multiplier: 0.5,
                ..cfg()
            },
            ("cooldown_multiplier", "must be >= 1 (got 0.5)"),
        ),
        (
            BreakerConfig {
                max_cooldown_secs: 1.0,
                ..cfg()
            },
            ("max_cooldown_secs", "must be >= cooldown_secs (got 1 < 5)"),
        ),
        (
            BreakerConfig {
                min_requests: 0,
                ..cfg()
            },
            ("min_requests", "must be >= 1 (got 0)"),
        ),
        (
            BreakerConfig {
                half_open_probes: 0,
                ..cfg()
            },
            ("half_open_probes", "must be >= 1 (got 0)"),
        ),
        (
            BreakerConfig {
                successes_to_close: 0,
                ..cfg()
            },
            ("successes_to_close", "must be >= 1 (got 0)"),
        ),
    ];
    for (c, (field, message)) in cases {
        assert_eq!(c.validate(), Err(FieldError::new(field, message)));
    }
}

#[test]
fn cooldown_ms_grows_and_caps() {
    let c = cfg();
    assert_eq!(c.cooldown_ms(0), 5_000);
    assert_eq!(c.cooldown_ms(1), 10_000);
    assert_eq!(c.cooldown_ms(5), 160_000);
    assert_eq!(c.cooldown_ms(6), 300_000);
    assert_eq!(c.cooldown_ms(u32::MAX), 300_000);
}

#[test]
fn serde_round_trip_keeps_behaviour() {
    let c = cfg();
    let mut b = tripped(0);
    b.set_degraded(50_000);
    assert_eq!(b.admit(5_000, &c), Admission::Probe);
    assert_eq!(b.record(Success, 5_100, &c), None);
    assert_eq!(b.admit(5_200, &c), Admission::Probe);
    let json = serde_json::to_string(&b).expect("serialize");
    let mut back: Breaker = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, b);
    assert!(back.degraded(5_300));
    assert_eq!(
        back.record(Success, 5_300, &c),
        Some(tr(
            HalfOpen,
            Closed,
            5_300,
            TransitionCause::ProbesSucceeded
        ))
    );

    let json = serde_json::to_string(&c).expect("serialize");
    let back: BreakerConfig = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, c);

    let t = tr(Closed, Open, 7, TransitionCause::FailureRate);
    let json = serde_json::to_string(&t).expect("serialize");
    assert_eq!(serde_json::from_str::<Transition>(&json).ok(), Some(t));
}

#[test]
fn config_defaults_missing_fields_and_rejects_unknown() {
    let c: BreakerConfig =
        serde_json::from_str(r#"{"cooldown_secs": 1.5}"#).expect("partial config");
    assert_eq!(
        c,
        BreakerConfig {
            cooldown_secs: 1.5,
            ..cfg()
        }
    );
    assert!(serde_json::from_str::<BreakerConfig>(r#"{"cooldwn_secs": 1}"#).is_err());
}
