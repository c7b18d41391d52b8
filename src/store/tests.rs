//! The store's own tests: restore equivalence, schema refusal, log trimming and migration.

use super::*;
use crate::config::Config;
use crate::engine::{Engine, FeedbackInput, RouteInput};
use crate::policy::Outcome;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Routes one request of class "qa" at `t`; returns the decision id.
pub(super) fn route(engine: &mut Engine, rng: &mut SmallRng, t: u64) -> String {
    let input = RouteInput {
        task_class: "qa".into(),
        ..Default::default()
    };
    engine.route(&input, t, rng).unwrap().id
}

/// An engine on the built-in config that logs its decisions, as the server's does.
pub(super) fn logging_engine() -> Engine {
    let mut engine = Engine::new(Config::builtin().unwrap(), 0);
    engine.log_events();
    engine
}

/// Reports decision `id` a success of 100 ms at `t`.
pub(super) fn feedback(engine: &mut Engine, id: &str, t: u64) {
    let fb = FeedbackInput {
        decision_id: id.to_string(),
        outcome: Some(Outcome::Success),
        latency_ms: Some(100.0),
        ..Default::default()
    };
    engine.feedback(&fb, t).unwrap();
}

/// Reopens after a drop: sled's flusher thread lets go of the lock shortly after.
fn reopen(dir: &Path) -> Store {
    for _ in 0..200 {
        match Store::open_with(dir, 8) {
            Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}

fn state(e: &Engine) -> serde_json::Value {
    let mut arms = Vec::new();
    for class in e.config().task_classes.keys() {
        for (m, a) in e.class_arms(class) {
            arms.push((
                class.clone(),
                m.to_string(),
                serde_json::to_value(a).unwrap(),
            ));
        }
    }
    let mut pending: Vec<_> = e.pending_decisions().collect();
    pending.sort_by(|a, b| a.decision.id.cmp(&b.decision.id));
    serde_json::json!({
        "arms": arms,
        "pending": serde_json::to_value(pending).unwrap(),
        "breakers": serde_json::to_value(e.breakers()).unwrap(),
        "ledgers": serde_json::to_value(e.ledgers()).unwrap(),
    })
}

/// Model-based test: random Route / Feedback / Expire / Reset / Restart, applied to an engine
/// persisted through the store and to an in-memory reference engine that never restarts.
/// After each Restart the restored engine must equal the reference exactly. Writes come after a
/// random number of steps, as the writer's cycles do, so decisions land in segments of several
/// and Feedback rewrites them, before and after restarts.
#[test]
fn restored_engine_matches_an_engine_that_never_restarted() {
    for seed in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::builtin().unwrap();
        let classes: Vec<String> = config.task_classes.keys().cloned().collect();
        let mut now = 1_700_000_000_000u64;
        let mut reference = Engine::new(config.clone(), now);
        let mut real = Engine::new(config.clone(), now);
        // As the server does: decisions and reports go to the log.
        real.log_events();
        let mut store = Store::open_with(dir.path(), 8).unwrap();
        // Persist the initial state (breakers, ledgers) like the server does.
        store.write(real.take_changes()).unwrap();
        let mut ops = SmallRng::seed_from_u64(seed);
        let mut rng_ref = SmallRng::seed_from_u64(seed + 100);
        let mut rng_real = rng_ref.clone();
        let mut ids: Vec<String> = Vec::new();
        let mut fed = std::collections::HashSet::new();
        for step in 0..300 {
            now += ops.random_range(0..5_000);
            match ops.random_range(0..10) {
                0..=4 => {
                    let input = RouteInput {
                        task_class: classes[ops.random_range(0..classes.len())].clone(),
                        ..Default::default()
                    };
                    let a = reference.route(&input, now, &mut rng_ref).map(|d| d.id);
                    let b = real.route(&input, now, &mut rng_real).map(|d| d.id);
                    assert_eq!(a, b, "seed {seed} step {step}");
                    if let Ok(id) = a {
                        ids.push(id);
                    }
                }
                5..=7 if !ids.is_empty() => {
                    let id = ids[ops.random_range(0..ids.len())].clone();
                    let input = FeedbackInput {
                        decision_id: id,
                        outcome: Some(if ops.random_bool(0.8) {
                            Outcome::Success
                        } else {
                            Outcome::Error
                        }),
                        latency_ms: Some(ops.random_range(100.0..2000.0)),
                        quality: Some(ops.random_range(0.0..1.0)),
                        ..Default::default()
                    };
                    let a = reference.feedback(&input, now).map(|r| r.duplicate);
                    let b = real.feedback(&input, now);
                    assert_eq!(a.is_ok(), b.is_ok(), "seed {seed} step {step}");
                    // A late report (after expiry) settles money only: not logged.
                    if b.is_ok_and(|r| !r.late) {
                        fed.insert(input.decision_id.clone());
                    }
                }
                8 => {
                    now += 600_000;
                    reference.expire(now);
                    real.expire(now);
                }
                _ => {
                    store.write(real.take_changes()).unwrap();
                    drop(store);
                    store = reopen(dir.path());
                    let (restored, warnings) =
                        Engine::restore(config.clone(), store.load(now, usize::MAX).unwrap(), now);
                    assert!(warnings.is_empty(), "{warnings:?}");
                    real = restored;
                    real.log_events();
                    // Thompson's draw pools are derived state, redrawn after a restart: the
                    // reference drops its own at the same moment so both draw alike.
                    reference.drop_draw_pools();
                    reference.expire(now);
                    reference.discard_changes();
                    assert_eq!(state(&real), state(&reference), "seed {seed} step {step}");
                }
            }
            if ops.random_bool(0.3) {
                store.write(real.take_changes()).unwrap();
            }
        }
        store.write(real.take_changes()).unwrap();
        // Every decision is in the log once, in segments and under keys of its own.
        let logged = store.export(0, u64::MAX).unwrap();
        let mut got: Vec<&str> = logged.iter().map(|r| r.decision_id.as_str()).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(got, want, "seed {seed}");
        for r in &logged {
            let reported = r.outcome.is_some();
            assert_eq!(reported, fed.contains(&r.decision_id), "seed {seed}: {r:?}");
        }
        assert_eq!(store.summary(now).unwrap().decisions, ids.len() as u64);
        let segments = store
            .decisions
            .iter()
            .keys()
            .filter(|k| segment::is_segment(k.as_ref().unwrap()))
            .count();
        assert!(segments > 10, "seed {seed}: {segments} segments");
    }
}

#[test]
fn a_newer_schema_is_refused_with_found_and_expected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), 8).unwrap();
        let meta = store.db.open_tree("meta").unwrap();
        meta.insert("schema", &7u32.to_be_bytes()).unwrap();
        store.flush().unwrap();
    }
    let mut err = String::new();
    for _ in 0..200 {
        match Store::open(dir.path()) {
            Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => {
                err = e.to_string();
                break;
            }
            Ok(_) => panic!("schema 7 accepted"),
        }
    }
    assert!(err.contains("schema version 7"), "{err}");
    assert!(err.contains(&format!("expects {SCHEMA_VERSION}")), "{err}");
}

/// A log of 100 decisions, one a second, each with an outcome.
fn logged_engine(store: &Store) -> Engine {
    let mut engine = logging_engine();
    let mut rng = SmallRng::seed_from_u64(7);
    for i in 0..100u64 {
        let input = RouteInput {
            task_class: "qa".into(),
            ..Default::default()
        };
        let d = engine.route(&input, 1_000 * i, &mut rng).unwrap();
        let fb = FeedbackInput {
            decision_id: d.id,
            outcome: Some(Outcome::Success),
            latency_ms: Some(100.0 + i as f64),
            quality: Some(0.5),
            ..Default::default()
        };
        engine.feedback(&fb, 1_000 * i + 10).unwrap();
        store.write(engine.take_changes()).unwrap();
    }
    engine
}

#[test]
fn one_record_per_decision_trimmed_by_age_count_and_bytes_and_exported_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 8).unwrap();
    logged_engine(&store);
    let s = store.summary(0).unwrap();
    assert_eq!(s.decisions, 100);
    let per = s.decision_bytes / 100;
    assert!((60..250).contains(&per), "{per} bytes per decision");
    let part = store.export(10_000, 20_000).unwrap();
    assert_eq!(part.len(), 10);
    assert!(part.iter().all(|r| r.outcome == Some(Outcome::Success)));
    assert_eq!(part[0].latency_ms, Some(110.0));
    assert_eq!(part[0].quality, Some(0.5));
    let bounds = |max_age_ms, max_count, max_bytes| LogBounds {
        max_age_ms,
        max_count,
        max_bytes,
        keep_pending: 0,
        pending_ttl_ms: 0,
    };
    // Age: older than 50 s before t = 99 s goes.
    assert_eq!(
        store
            .trim_events(99_000, &bounds(50_000, 1_000, u64::MAX))
            .unwrap(),
        49
    );
    // Count: keep the newest 20.
    assert_eq!(
        store
            .trim_events(99_000, &bounds(50_000, 20, u64::MAX))
            .unwrap(),
        31
    );
    let s = store.summary(u64::MAX).unwrap();
    assert_eq!((s.decisions, s.first_event_ms), (20, Some(80_000)));
    // Bytes: keep at most 10 records' worth.
    let dropped = store
        .trim_events(99_000, &bounds(50_000, 20, s.decision_bytes / 2))
        .unwrap();
    assert_eq!(dropped, 10);
    // Pending decisions are kept whatever the bounds say.
    let keep = LogBounds {
        keep_pending: 5,
        pending_ttl_ms: 3_600_000,
        ..bounds(0, 0, 0)
    };
    assert_eq!(store.trim_events(99_000, &keep).unwrap(), 5);
    assert_eq!(store.summary(99_000).unwrap().pending, 5);
}

/// A data dir written in the previous release's encoding (schema 2: JSON pending records and
/// a JSON event log) opens migrated: the same restored engine and the same trace export.
#[test]
fn a_schema_2_data_dir_is_migrated_on_open() {
    let scratch = tempfile::tempdir().unwrap();
    let store = Store::open_with(scratch.path(), 8).unwrap();
    let mut engine = logging_engine();
    let mut rng = SmallRng::seed_from_u64(3);
    let mut all = engine.take_changes();
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let input = RouteInput {
            task_class: ["qa", "code"][i as usize % 2].into(),
            request_id: format!("r{i}"),
            ..Default::default()
        };
        ids.push(engine.route(&input, 1_000 * i, &mut rng).unwrap().id);
    }
    for (i, id) in ids.iter().enumerate().step_by(3) {
        let fb = FeedbackInput {
            decision_id: id.clone(),
            outcome: Some(if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Error
            }),
            latency_ms: Some(300.0),
            input_tokens: Some(100),
            output_tokens: Some(50),
            ..Default::default()
        };
        engine.feedback(&fb, 50_000).unwrap();
    }
    let c = engine.take_changes();
    all.pending = c.pending;
    all.events = c.events;
    all.arms.extend(c.arms);
    all.breakers = c.breakers;
    all.ledgers = c.ledgers;
    let events: Vec<Event> = all.events.iter().cloned().map(Logged::into_event).collect();
    let expected_export = crate::record::fold(events, u64::MAX);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    legacy::write_v2(dir.path(), all).unwrap();
    let store = reopen(dir.path());
    assert_eq!(store.summary(60_000).unwrap().schema, SCHEMA_VERSION);
    assert_eq!(store.export(0, u64::MAX).unwrap(), expected_export);
    let now = 60_000;
    let (restored, warnings) = Engine::restore(
        Config::builtin().unwrap(),
        store.load(now, usize::MAX).unwrap(),
        now,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    engine.drop_draw_pools();
    assert_eq!(state(&restored), state(&engine));
    assert!(!store
        .db
        .tree_names()
        .iter()
        .any(|t| t.as_ref() == b"events"));
}

/// A batch carries the old versions it read at encoding, so that its commit does not read them
/// again; they are trusted only when nothing else wrote in between. The running digest must
/// equal a full scan after commits in the same cycle as their encoding, after a trim between
/// encoding and commit (which removed what the batch read), and after a batch distrusted for a
/// reopen. Unchanged breakers and arms are not written again.
#[test]
fn the_digest_follows_writes_whose_old_versions_were_read_at_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 8).unwrap();
    let mut engine = logging_engine();
    let mut rng = SmallRng::seed_from_u64(11);
    let scanned = |store: &Store| store.scan_digest().unwrap();
    let running = |store: &Store| lock(&store.digest).0;
    let first = store.prepare(&engine.take_changes()).unwrap();
    assert!(
        !first.breakers.writes.is_empty(),
        "the first cycle writes every breaker"
    );
    store.commit(&first).unwrap();
    let mut ids = Vec::new();
    for i in 0..20u64 {
        let id = route(&mut engine, &mut rng, 1_000 * i);
        if i % 2 == 0 {
            // Made and reported in one cycle.
            feedback(&mut engine, &id, 1_000 * i + 5);
        }
        ids.push(id);
        let batch = store.prepare(&engine.take_changes()).unwrap();
        if i % 2 == 1 {
            assert_eq!(
                batch.breakers.writes.len(),
                0,
                "unchanged breakers are not written"
            );
        }
        store.commit(&batch).unwrap();
        assert_eq!(running(&store), scanned(&store), "decision {i}");
    }
    // Reported in a later cycle: the record is read back and rewritten.
    for id in ids.iter().skip(1).step_by(2) {
        feedback(&mut engine, id, 20_000);
    }
    store.write(engine.take_changes()).unwrap();
    assert_eq!(running(&store), scanned(&store));
    assert_eq!(store.summary(0).unwrap().decisions, 20);
    let exported = store.export(0, u64::MAX).unwrap();
    assert!(exported.iter().all(|r| r.outcome == Some(Outcome::Success)));

    // A trim between a batch's encoding and its commit removes the record it read.
    let d = engine
        .route(
            &RouteInput {
                task_class: "qa".into(),
                ..Default::default()
            },
            21_000,
            &mut rng,
        )
        .unwrap();
    store.write(engine.take_changes()).unwrap();
    feedback(&mut engine, &d.id, 21_500);
    let batch = store.prepare(&engine.take_changes()).unwrap();
    let all = LogBounds {
        max_age_ms: 0,
        max_count: 0,
        max_bytes: 0,
        keep_pending: 0,
        pending_ttl_ms: 0,
    };
    assert_eq!(store.trim_events(30_000, &all).unwrap(), 21);
    store.commit(&batch).unwrap();
    assert_eq!(
        running(&store),
        scanned(&store),
        "after a trim between encoding and commit"
    );

    // Distrusted (committed again after a reopen): the old versions are read at commit.
    feedback(&mut engine, &ids[0], 22_000);
    let d = engine
        .route(
            &RouteInput {
                task_class: "qa".into(),
                ..Default::default()
            },
            22_000,
            &mut rng,
        )
        .unwrap();
    feedback(&mut engine, &d.id, 22_100);
    let mut batch = store.prepare(&engine.take_changes()).unwrap();
    batch.distrust();
    store.commit(&batch).unwrap();
    store.commit(&batch).unwrap();
    assert_eq!(
        running(&store),
        scanned(&store),
        "after a batch committed twice"
    );
}

/// A trim of more keys than one batch holds drops them all, batch by batch, and leaves a data dir
/// whose manifest still verifies (each batch is a write of its own). Segments go whole, so the
/// count bound is kept to within one segment below it.
#[test]
fn a_trim_larger_than_one_batch_drops_everything_beyond_the_bounds_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), 8).unwrap();
        let mut engine = logging_engine();
        let mut rng = SmallRng::seed_from_u64(11);
        let total = 3 * TRIM_BATCH as u64 + 40;
        // Cycles of two decisions (one segment each), and one of 100 (four segments).
        for i in 0..total {
            route(&mut engine, &mut rng, 10 * i);
            if i % 2 == 1 && !(1_000..1_099).contains(&i) {
                store.write(engine.take_changes()).unwrap();
            }
        }
        store.write(engine.take_changes()).unwrap();
        assert_eq!(store.summary(0).unwrap().decisions, total);
        assert_eq!(store.decisions.len() as u64, (total - 100) / 2 + 4);
        let bounds = LogBounds {
            max_age_ms: u64::MAX,
            max_count: 100,
            max_bytes: u64::MAX,
            keep_pending: 0,
            pending_ttl_ms: 0,
        };
        assert_eq!(store.trim_events(10 * total, &bounds).unwrap(), total - 100);
        let s = store.summary(u64::MAX).unwrap();
        assert_eq!(
            (s.decisions, s.first_event_ms),
            (100, Some(10 * (total - 100)))
        );
        // Past the count bound by one decision: the oldest segment (of two) goes.
        let tighter = LogBounds {
            max_count: 99,
            ..bounds
        };
        assert_eq!(store.trim_events(10 * total, &tighter).unwrap(), 2);
        assert_eq!(store.summary(u64::MAX).unwrap().decisions, 98);
        store.flush().unwrap();
    }
    // Every open verifies the data dir against its manifest in full.
    reopen(dir.path());
}

/// A db that stopped inside a commit (its intent and a record written, its counters not) opens
/// with the decision log's counters recounted from the records.
#[test]
fn counters_are_recounted_when_the_db_stopped_inside_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), 8).unwrap();
        let mut engine = logging_engine();
        let mut rng = SmallRng::seed_from_u64(5);
        // A segment of nine, and one decision under its own key (copied below).
        for i in 0..10 {
            route(&mut engine, &mut rng, 1_000 * i);
            if i == 8 {
                store.write(engine.take_changes()).unwrap();
            }
        }
        store.write(engine.take_changes()).unwrap();
        store.flush().unwrap();
        assert_eq!(store.summary(0).unwrap().decisions, 10);
        assert_eq!(store.decisions.len(), 2);
        // What a kill inside the next commit leaves: its intent and one record, no counters.
        let generation = store.generation.load(Ordering::Relaxed) + 1;
        store
            .meta
            .insert("intent", &generation.to_be_bytes())
            .unwrap();
        let (k, v) = store.decisions.last().unwrap().unwrap();
        let mut key = k.to_vec();
        key[0..8].copy_from_slice(&20_000u64.to_be_bytes());
        store.decisions.insert(key, v).unwrap();
        store.db.flush().unwrap();
    }
    let store = reopen(dir.path());
    let s = store.summary(0).unwrap();
    assert_eq!((s.decisions, s.last_event_ms), (11, Some(20_000)));
    let bytes: u64 = store
        .decisions
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.len() + v.len()) as u64).unwrap())
        .sum();
    assert_eq!(s.decision_bytes, bytes);
}

/// The writer's per-cycle map is kept between cycles, but a burst's capacity is not: past four
/// times what a cycle needs (at least 1 024 records' worth) it is freed and sized anew.
#[test]
fn the_cycle_scratch_keeps_its_room_but_not_a_bursts() {
    let mut s = Scratch::default();
    s.ready_for(600);
    let room = s.touched.capacity();
    assert!(room >= 600, "{room}");
    s.touched.insert([1; 24], untouched());
    s.order.push([2; 24]);
    s.ready_for(500);
    assert!(s.touched.is_empty() && s.order.is_empty());
    assert_eq!(s.touched.capacity(), room, "kept, not freed");
    s.ready_for(50_000);
    assert!(s.touched.capacity() >= 50_000);
    s.ready_for(600);
    assert!(s.touched.capacity() < 50_000 && s.touched.capacity() >= 600);
    s.order.reserve(20_000);
    s.ready_for(600);
    assert!(s.order.capacity() < 20_000, "the list is bounded too");
}

fn untouched() -> Touched {
    Touched {
        record: StoredDecision::default(),
        old_size: 0,
        old: Old::Absent,
        set_from: None,
        segment: None,
    }
}

/// Two decisions drawn from seed 3 (at 1 s and 2 s) and written in one cycle, so as one segment;
/// returns the engine and their ids.
fn two_in_one_segment(store: &Store) -> (Engine, String, String) {
    let mut engine = logging_engine();
    let mut rng = SmallRng::seed_from_u64(3);
    let a = route(&mut engine, &mut rng, 1_000);
    let b = route(&mut engine, &mut rng, 2_000);
    store.write(engine.take_changes()).unwrap();
    assert_eq!(store.decisions.len(), 1, "one segment");
    (engine, a, b)
}

/// A Feedback on a decision in a segment rewrites that segment: the outcome is in the log, once.
#[test]
fn feedback_on_a_decision_in_a_segment_rewrites_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 8).unwrap();
    let (mut engine, a, b) = two_in_one_segment(&store);
    feedback(&mut engine, &a, 3_000);
    store.write(engine.take_changes()).unwrap();
    assert_eq!(store.decisions.len(), 1, "rewritten in place");
    let logged = store.export(0, u64::MAX).unwrap();
    let ids: Vec<_> = logged.iter().map(|r| r.decision_id.clone()).collect();
    assert_eq!(ids, vec![a, b]);
    assert_eq!(logged[0].outcome, Some(Outcome::Success));
    assert_eq!(logged[1].outcome, None);
}

/// A new decision whose id a logged one already has (ids drawn again from the same seed after a
/// restart, before ids were salted; or a 1-in-2^128 repeat) is a different decision: it is
/// logged under its own key and its Feedback lands on it. Before, the log looked the new decision
/// up in the old one's segment, found no such key, and called the data dir corrupt: every later
/// write cycle failed.
#[test]
fn a_new_decision_with_a_logged_decisions_id_is_logged_as_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 8).unwrap();
    let (_, a, b) = two_in_one_segment(&store);
    // The same draws again, later: the same ids for other decisions.
    let mut again = logging_engine();
    let mut rng = SmallRng::seed_from_u64(3);
    assert_eq!(route(&mut again, &mut rng, 5_000), a);
    assert_eq!(route(&mut again, &mut rng, 6_000), b);
    store.write(again.take_changes()).unwrap();
    feedback(&mut again, &a, 7_000);
    store.write(again.take_changes()).unwrap();
    let logged = store.export(0, u64::MAX).unwrap();
    let seen: Vec<_> = logged
        .iter()
        .map(|r| (r.decision_id.clone(), r.t_ms, r.outcome))
        .collect();
    assert_eq!(
        seen,
        vec![
            (a.clone(), 1_000, None),
            (b.clone(), 2_000, None),
            (a.clone(), 5_000, Some(Outcome::Success)),
            (b.clone(), 6_000, None),
        ]
    );
    // After a restart the id names the newer decision too: one pending decision per id, and
    // Feedback lands on the newer.
    drop(store);
    let store = reopen(dir.path());
    let (mut restored, _) = Engine::restore(
        Config::builtin().unwrap(),
        store.load(8_000, usize::MAX).unwrap(),
        8_000,
    );
    restored.log_events();
    let pending = restored.pending(&b).map(|p| p.decision.created_ms);
    assert_eq!(pending, Some(6_000));
    feedback(&mut restored, &b, 9_000);
    store.write(restored.take_changes()).unwrap();
    let outcomes: Vec<_> = store
        .export(0, u64::MAX)
        .unwrap()
        .iter()
        .map(|r| (r.t_ms, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1_000, None),
            (2_000, None),
            (5_000, Some(Outcome::Success)),
            (6_000, Some(Outcome::Success)),
        ]
    );
}
