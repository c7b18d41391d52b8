//! What a pending decision costs in memory, and that its compact form gives back the decision
//! it was made from.
use super::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Resident bytes of this process (Linux `/proc/self/statm`); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A measurement, not a check (run alone: `cargo test --lib pending_memory -- --ignored
/// --nocapture`): resident bytes per pending decision over 100 000 Routes of the built-in
/// config, each with a request id and a budget key as the service's Routes carry.
#[test]
#[ignore]
fn pending_memory_per_decision() {
    let n = 100_000u64;
    let mut cfg = crate::config::Config::builtin().unwrap();
    cfg.limits.max_pending = n as usize;
    cfg.limits.pending_ttl_secs = 3600.0;
    let mut e = Engine::new(cfg, 0);
    let mut rng = SmallRng::seed_from_u64(7);
    let classes = ["qa", "code"];
    let before = rss_bytes().unwrap_or(0);
    for i in 0..n {
        e.route(
            &RouteInput {
                task_class: classes[(i % 2) as usize].into(),
                request_id: format!("req-{i:08}"),
                ..Default::default()
            },
            1_000 + i,
            &mut rng,
        )
        .unwrap();
    }
    e.discard_changes();
    let after = rss_bytes().unwrap_or(0);
    assert_eq!(e.pending_len(), n as usize);
    println!(
        "pending decisions: {n}, resident growth {} bytes, {} bytes per decision (inline: \
         PendingDecision {} bytes, CompactPending {} bytes)",
        after.saturating_sub(before),
        after.saturating_sub(before) / n,
        std::mem::size_of::<PendingDecision>(),
        std::mem::size_of::<CompactPending>(),
    );
}

fn full_decision(id: &str) -> PendingDecision {
    let model = |m: &str, p: &str| ModelRef {
        model: m.into(),
        provider: p.into(),
    };
    PendingDecision {
        decision: Decision {
            id: id.into(),
            task_class: "qa".into(),
            model: "gpt-x".into(),
            provider: "openai".into(),
            fallbacks: vec![model("claude-y", "anthropic"), model("mini", "openai")],
            propensity: 0.25,
            expected: Expected {
                cost_usd: 0.01,
                latency_ms: 800.0,
                quality: 0.9,
                success_rate: 0.99,
                latency_p95_ms: 1500.0,
            },
            reason: Reason::Sampled,
            policy: "thompson".into(),
            eligible: vec!["gpt-x".into(), "claude-y".into(), "mini".into()],
            created_ms: 5,
            expires_ms: 6,
            budget_key: Some("team-a".into()),
            input_tokens: 100,
            output_tokens: 200,
            replayed: true,
            quality_target: Some(0.9),
            max_output_tokens: Some(512),
            classified_by: Some("rule-1".into()),
            tags: [("team".to_string(), "x".to_string())].into(),
            shadow: Some(model("mini", "openai")),
            experiment_group: Some(ExperimentGroup::Router),
            cache_hit: Some(crate::cache::Hit {
                response: "stored".into(),
                tenant: "t".into(),
                model: "gpt-x".into(),
                provider: "openai".into(),
                age_ms: 3,
                source_decision_id: "s".into(),
                similarity: 1.0,
                saved_cost_usd: 0.5,
                saved_latency_ms: 9.0,
            }),
        },
        request_id: Some("req-1".into()),
        outcomes: vec!["gpt-x".into(), "claude-y".into()],
        failed: vec!["claude-y".into()],
        qualities: vec!["gpt-x".into()],
        tenant: Some("acme".into()),
        sides: PairSides {
            primary: Side {
                outcome: Some(crate::policy::Outcome::Success),
                latency_ms: Some(1.0),
                cost_usd: Some(2.0),
                quality: Some(0.5),
            },
            shadow: Side::default(),
        },
    }
}

#[test]
fn the_compact_form_gives_back_the_decision_it_was_made_from() {
    let ids = [
        "0123456789abcdef0000000000000001", // the engine's form: kept as 128 bits
        "0123456789ABCDEF0000000000000001", // upper case: kept as text, so it reads back as sent
        "d1",
        "not-hex-at-all-but-32-chars-long",
    ];
    let mut names = Names::default();
    for id in ids {
        let p = full_decision(id);
        let c = CompactPending::new(p.clone(), &mut names);
        assert_eq!(c.expand(), p, "{id}");
        assert_eq!(c.id(), id);
        assert_eq!(c.decision(), p.decision);
        let hex = matches!(DecisionKey::of(id), DecisionKey::Hex(_));
        assert_eq!(hex, id.starts_with("0123456789abcdef"), "{id}");
    }
    let mut bare = full_decision("e1");
    bare.decision.tags.clear();
    bare.decision.shadow = None;
    bare.decision.cache_hit = None;
    bare.decision.budget_key = None;
    bare.decision.replayed = false;
    bare.request_id = None;
    bare.tenant = None;
    bare.outcomes.clear();
    bare.qualities.clear();
    bare.failed.clear();
    bare.sides = PairSides::default();
    let c = CompactPending::new(bare.clone(), &mut names);
    assert_eq!(c.expand(), bare);
}

#[test]
fn decisions_share_their_names_and_lists() {
    let mut names = Names::default();
    let a = CompactPending::new(full_decision("a"), &mut names);
    let b = CompactPending::new(full_decision("b"), &mut names);
    assert!(a.shares_names_with(&b));
    // Changes in place keep the rest intact.
    let mut c = a.clone();
    c.mark_outcome("mini", true, &mut names);
    c.mark_quality("mini", &mut names);
    c.set_tenant(None, &mut names);
    let mut want = full_decision("a");
    want.outcomes.push("mini".into());
    want.failed.push("mini".into());
    want.qualities.push("mini".into());
    want.tenant = None;
    assert_eq!(c.expand(), want);
}

#[test]
fn feedback_changes_a_pending_decision_in_its_compact_form() {
    let mut e = Engine::new(crate::config::Config::builtin().unwrap(), 1_000);
    let mut rng = SmallRng::seed_from_u64(3);
    let d = e
        .route(
            &RouteInput {
                task_class: "qa".into(),
                request_id: "r-1".into(),
                tags: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            },
            2_000,
            &mut rng,
        )
        .unwrap();
    let held = e.pending(&d.id).unwrap();
    assert_eq!(held.decision, d);
    assert_eq!(held.request_id.as_deref(), Some("r-1"));
    e.feedback(
        &FeedbackInput {
            decision_id: d.id.clone(),
            model: d.model.clone(),
            outcome: Some(crate::policy::Outcome::Error),
            tags: [("env".to_string(), "prod".to_string())].into(),
            ..Default::default()
        },
        2_100,
    )
    .unwrap();
    let after = e.pending(&d.id).unwrap();
    assert_eq!(after.outcomes, vec![d.model.clone()]);
    assert_eq!(after.failed, vec![d.model.clone()]);
    assert_eq!(after.decision.tags.len(), 2);
    let changes = e.take_changes();
    let (id, p) = changes.pending.last().unwrap();
    assert_eq!(id.to_string(), d.id);
    assert_eq!(p.as_ref().map(|p| p.expand()), Some(after));
}

#[test]
fn a_known_shape_is_found_again_and_any_difference_makes_another() {
    let mut names = Names::default();
    let a = CompactPending::new(full_decision("a"), &mut names);
    let b = CompactPending::new(full_decision("b"), &mut names);
    assert!(a.shares_names_with(&b));
    // Each part of the shape, changed alone, gives a shape of its own that reads back as made.
    type Change = fn(&mut PendingDecision);
    let changes: [(&str, Change); 11] = [
        ("class", |p| p.decision.task_class = "qa2".into()),
        ("model", |p| p.decision.model = "mini".into()),
        ("provider", |p| p.decision.provider = "other".into()),
        ("policy", |p| p.decision.policy = "ucb".into()),
        ("no budget", |p| p.decision.budget_key = None),
        ("other tenant", |p| p.tenant = Some("other".into())),
        ("no tenant", |p| p.tenant = None),
        ("fallback order", |p| p.decision.fallbacks.reverse()),
        ("one fallback", |p| p.decision.fallbacks.truncate(1)),
        ("eligible order", |p| p.decision.eligible.swap(0, 1)),
        ("more eligible", |p| p.decision.eligible.push("x".into())),
    ];
    let mut made: Vec<CompactPending> = Vec::new();
    for (what, change) in changes {
        let mut p = full_decision("c");
        change(&mut p);
        let c = CompactPending::new(p.clone(), &mut names);
        assert!(!c.shares_names_with(&a), "{what}");
        assert!(made.iter().all(|m| !c.shares_names_with(m)), "{what}");
        assert_eq!(c.expand(), p, "{what}");
        let again = CompactPending::new(p, &mut names);
        assert!(again.shares_names_with(&c), "{what}");
        made.push(c);
    }
}

#[test]
fn taken_changes_hold_each_decision_as_it_was_when_taken() {
    let mut e = Engine::new(crate::config::Config::builtin().unwrap(), 1_000);
    let mut rng = SmallRng::seed_from_u64(4);
    let input = RouteInput {
        task_class: "qa".into(),
        ..Default::default()
    };
    let d = e.route(&input, 2_000, &mut rng).unwrap();
    let other = e.route(&input, 2_001, &mut rng).unwrap();
    let held = |c: &Changes, id: &str| {
        let found = c.pending.iter().find(|(k, _)| k.to_string() == id);
        found.map(|(_, p)| p.as_ref().map(|p| p.expand()))
    };
    let first = e.take_changes();
    assert_eq!(first.pending.len(), 2);
    let before = first
        .pending
        .iter()
        .find(|(k, _)| k.to_string() == d.id)
        .and_then(|(_, p)| p.clone())
        .unwrap();
    let report = |model: &str| FeedbackInput {
        decision_id: d.id.clone(),
        model: model.to_string(),
        outcome: Some(crate::policy::Outcome::Success),
        ..Default::default()
    };
    e.feedback(&report(&d.model), 2_100).unwrap();
    e.feedback(
        &FeedbackInput {
            quality: Some(0.5),
            outcome: None,
            ..report(&d.model)
        },
        2_101,
    )
    .unwrap();
    // What was taken stays as it was; the next take has both changes, once, and nothing of
    // the decision that did not change.
    assert!(before.expand().outcomes.is_empty());
    let second = e.take_changes();
    assert_eq!(second.pending.len(), 1);
    let now = held(&second, &d.id).flatten().unwrap();
    assert_eq!(now.outcomes, vec![d.model.clone()]);
    assert_eq!(now.qualities, vec![d.model.clone()]);
    assert_eq!(Some(now), e.pending(&d.id));
    assert_eq!(held(&second, &other.id), None);
    // A decision that expires is taken as gone.
    e.expire(2_000 + 3_600_000 * 2);
    let third = e.take_changes();
    assert_eq!(held(&third, &d.id), Some(None));
    assert_eq!(held(&third, &other.id), Some(None));
}

/// The writer allocates the change set's buffers before it takes the engine lock:
/// `take_changes_into` fills the caller's pending buffer (emptying it first) and keeps the caller's
/// event buffer as the next cycle's log, so nothing it hands out was allocated under the lock.
#[test]
fn changes_are_taken_into_the_callers_buffers() {
    let mut e = Engine::new(crate::config::Config::builtin().unwrap(), 1_000);
    e.log_events();
    let mut rng = SmallRng::seed_from_u64(6);
    let input = RouteInput {
        task_class: "qa".into(),
        ..Default::default()
    };
    let route = |e: &mut Engine, rng: &mut SmallRng, at: u64| e.route(&input, at, rng).unwrap();
    let first: Vec<String> = (0..3)
        .map(|i| route(&mut e, &mut rng, 2_000 + i).id)
        .collect();
    let mut stale = Vec::with_capacity(64);
    stale.push((DecisionKey::of("not-a-change"), None));
    let pending_at = stale.as_ptr();
    let next_log = Vec::<Logged>::with_capacity(40);
    let next_log_at = next_log.as_ptr();
    let taken = e.take_changes_into(ChangeBuffers {
        events: next_log,
        pending: stale,
    });
    // The pending buffer is the caller's, emptied and then filled with the three decisions.
    assert_eq!(taken.pending.as_ptr(), pending_at);
    assert!(taken.pending.capacity() >= 64);
    let mut ids: Vec<String> = taken.pending.iter().map(|(k, _)| k.to_string()).collect();
    ids.sort();
    let mut want = first.clone();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(taken.events.len(), 3);
    // The caller's event buffer is now the log: the next decisions go into it, up to its
    // capacity without growing.
    let second: Vec<String> = (0..5)
        .map(|i| route(&mut e, &mut rng, 3_000 + i).id)
        .collect();
    let again = e.take_changes_into(ChangeBuffers::default());
    assert_eq!(again.events.as_ptr(), next_log_at);
    assert_eq!(again.events.len(), 5);
    assert_eq!(again.events.capacity(), 40);
    assert_eq!(again.pending.len(), second.len());
    // Nothing changed since: nothing is taken, whatever the buffers.
    let none = e.take_changes_into(ChangeBuffers {
        events: Vec::with_capacity(8),
        pending: Vec::with_capacity(8),
    });
    assert!(none.is_empty());
}

#[test]
fn an_untracked_engine_routes_the_same_and_notes_no_changes() {
    let config = crate::config::Config::builtin().unwrap();
    let mut tracked = Engine::new(config.clone(), 1_000);
    let mut untracked = Engine::new(config, 1_000);
    untracked.untracked();
    tracked.take_changes();
    let (mut r1, mut r2) = (SmallRng::seed_from_u64(5), SmallRng::seed_from_u64(5));
    let input = RouteInput {
        task_class: "qa".into(),
        ..Default::default()
    };
    for i in 0..20 {
        let a = tracked.route(&input, 2_000 + i, &mut r1).unwrap();
        let b = untracked.route(&input, 2_000 + i, &mut r2).unwrap();
        assert_eq!(a, b);
        let report = FeedbackInput {
            decision_id: a.id.clone(),
            model: a.model.clone(),
            outcome: Some(crate::policy::Outcome::Success),
            quality: Some(0.8),
            ..Default::default()
        };
        tracked.feedback(&report, 2_100 + i).unwrap();
        untracked.feedback(&report, 2_100 + i).unwrap();
        assert_eq!(tracked.pending(&a.id), untracked.pending(&b.id));
        assert!(!untracked.pending.has_changes());
        assert!(untracked.dirty_classes.is_empty());
    }
    let changes = tracked.take_changes();
    assert_eq!(changes.pending.len(), 20);
    assert!(!changes.arms.is_empty());
    assert!(untracked.take_changes().is_empty());
}

/// A restart reads pending decisions back newest first, compacted as they are read: the engine
/// puts them in creation order, keeps the newest within `limits.max_pending`, drops (with a
/// warning) those of a class the config no longer has, and notes as changes only the decisions it
/// evicted (what it kept is already on disk).
#[test]
fn a_restore_keeps_the_newest_within_the_bound_and_notes_only_evictions() {
    let mut cfg = crate::config::Config::builtin().unwrap();
    cfg.limits.pending_ttl_secs = 3600.0;
    let mut e = Engine::new(cfg.clone(), 0);
    let mut rng = SmallRng::seed_from_u64(5);
    let made: Vec<Decision> = (0..12u64)
        .map(|i| {
            let class = ["qa", "code"][(i % 2) as usize];
            let input = RouteInput {
                task_class: class.into(),
                request_id: format!("req-{i}"),
                ..Default::default()
            };
            e.route(&input, 1_000 + i, &mut rng).unwrap()
        })
        .collect();
    let mut read = RestoredPending::default();
    for d in made.iter().rev() {
        read.push(e.pending.full(&d.id).unwrap());
    }
    assert_eq!(read.len(), 12);

    cfg.task_classes.remove("code");
    cfg.limits.max_pending = 4;
    let parts = Restored {
        pending: read,
        ..Default::default()
    };
    let (mut r, warnings) = Engine::restore(cfg, parts, 2_000);
    // Sized as the service sizes a new engine (`presize_pending`), so starting it needs no
    // second sizing that moves what was read back.
    let (map, order) = r.pending.capacity();
    assert!(map >= 10 && order >= 5, "{map} {order}");
    let code: Vec<&Decision> = made.iter().filter(|d| d.task_class == "code").collect();
    assert_eq!(warnings.len(), code.len(), "{warnings:?}");
    for d in &code {
        let want = format!(
            "dropped pending decision {}: task class code no longer in the config",
            d.id
        );
        assert!(warnings.contains(&want), "{want} not in {warnings:?}");
    }
    // The qa decisions were made at 1 000, 1 002, ..., 1 010 ms: the four newest are kept, as
    // they were, and found by their request ids.
    let qa: Vec<&Decision> = made.iter().filter(|d| d.task_class == "qa").collect();
    assert_eq!(r.pending_len(), 4);
    for d in &qa[2..] {
        assert_eq!(r.pending.full(&d.id), e.pending.full(&d.id), "{}", d.id);
        let request_id = e.pending.full(&d.id).and_then(|p| p.request_id).unwrap();
        let held = r.pending.by_request(&request_id).map(|p| p.key().clone());
        assert_eq!(held, Some(DecisionKey::of(&d.id)));
    }
    for d in &qa[..2] {
        assert_eq!(r.pending.full(&d.id), None, "{}", d.id);
    }
    let changes = r.take_changes();
    let mut gone: Vec<String> = changes
        .pending
        .iter()
        .map(|(k, p)| {
            assert!(p.is_none(), "{k} noted as changed, not removed");
            k.to_string()
        })
        .collect();
    gone.sort();
    let mut evicted: Vec<String> = qa[..2].iter().map(|d| d.id.clone()).collect();
    evicted.sort();
    assert_eq!(gone, evicted);
}

#[test]
fn a_presized_engine_routes_up_to_max_pending_without_growing_its_maps() {
    let mut cfg = crate::config::Config::builtin().unwrap();
    cfg.limits.max_pending = 5_000;
    let mut e = Engine::new(cfg.clone(), 0);
    e.presize_pending();
    let (map, order) = e.pending.capacity();
    assert!(map >= 10_000 && order >= 5_001, "{map} {order}");
    let mut rng = SmallRng::seed_from_u64(9);
    for i in 0..6_000u64 {
        let input = RouteInput {
            task_class: "qa".into(),
            ..Default::default()
        };
        e.route(&input, 1_000 + i, &mut rng).unwrap();
    }
    assert_eq!(e.pending_len(), 5_000);
    // Filled to the bound and past it (evicting): never grown (the map's free slots only shrink
    // by the few that removals leave marked, until it rehashes in place).
    let (map_now, order_now) = e.pending.capacity();
    assert!(map_now <= map && map_now > map - 100, "{map_now} vs {map}");
    assert_eq!(order_now, order);
    // A bound past PRESIZED_PENDING is sized to it (the rest grows as before); a restored engine
    // is sized for what it may still take.
    cfg.limits.max_pending = 10_000_000;
    let mut big = Engine::new(cfg, 0);
    big.presize_pending();
    let (big_map, big_order) = big.pending.capacity();
    assert!(
        (2 * PRESIZED_PENDING..4 * PRESIZED_PENDING).contains(&big_map),
        "{big_map}"
    );
    assert!(
        (PRESIZED_PENDING..2 * PRESIZED_PENDING).contains(&big_order),
        "{big_order}"
    );
    e.presize_pending();
    assert_eq!(e.pending.capacity(), (map_now, order));
}
