//! New decisions held back by the writer for a moment, so that a decision and its Feedback are
//! written as one record.
//!
//! Why: a decision is written when made and rewritten when its Feedback arrives, usually a few
//! milliseconds later (the caller reports as soon as the model answers). Each write is a sled
//! insert, an encoding and, for the Feedback, a read of the record back: two thirds of the
//! writer's instructions per Route+Feedback pair. A decision nothing has reported on is held for
//! [`DEFER`]; if its Feedback comes meanwhile, the Feedback's cycle writes the decision once,
//! outcome included (and reads nothing back).
//!
//! What it costs: Route never waited for the disk, and still does not; a SIGKILL now loses the
//! decisions made in the last [`DEFER`] rather than the last cycle's (a later Feedback for one is
//! answered NOT_FOUND, as for any decision the data dir does not hold). A Feedback's own decision
//! is never held: a sync Feedback's cycle writes it with the outcome, so no acknowledged Feedback
//! is lost. A graceful stop writes everything held. Nothing here is persisted; it lives in the
//! writer thread and is per replica.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Changes, DecisionKey, Logged, SharedPending};
use crate::record::Event;
use crate::store::records::BuildNameHasher as Fast;

/// How long a new decision is held for its Feedback.
pub const DEFER: Duration = Duration::from_millis(100);

/// The decisions held, oldest first.
#[derive(Default)]
pub struct Deferred {
    /// How long to hold (zero: hold nothing, release everything held).
    pub hold: Duration,
    /// When each was held, in order; an entry whose decision was released early stays until it
    /// reaches the front (it is then no longer in `held`, or another record is).
    queue: VecDeque<(Instant, SharedPending)>,
    held: HashMap<DecisionKey, SharedPending, Fast>,
}

type Ptr = *const crate::engine::CompactPending;

impl Deferred {
    pub fn new(hold: Duration) -> Deferred {
        Deferred {
            hold,
            ..Deferred::default()
        }
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The change set to write now, from the engine's change set `c`: held decisions that `c`
    /// mentions or that were held long enough go in (as logged decisions: never written, so the
    /// store knows their keys hold nothing); new decisions `c` has nothing else about come out
    /// and are held.
    pub fn settle(&mut self, mut c: Changes, now: Instant) -> Changes {
        if self.hold.is_zero() && self.held.is_empty() {
            return c;
        }
        // What `c` says about decisions other than their making: Feedback (pending changes with
        // a new record, removals, outcome and quality events).
        let made: HashSet<Ptr, Fast> = c
            .events
            .iter()
            .filter_map(|l| match l {
                Logged::Decision(p) => Some(Arc::as_ptr(p)),
                Logged::Event(_) => None,
            })
            .collect();
        let mut mentioned: HashMap<DecisionKey, Option<SharedPending>, Fast> = HashMap::default();
        for (key, p) in &c.pending {
            match p {
                Some(p) if made.contains(&Arc::as_ptr(p)) => {}
                Some(p) => {
                    mentioned.insert(p.key().clone(), Some(Arc::clone(p)));
                }
                None => {
                    mentioned.insert(key.clone(), None);
                }
            }
        }
        if !self.held.is_empty() {
            // (A Feedback also changes its pending record, so this finds nothing more; it keeps
            // an outcome from ever reaching the store before its decision.)
            for l in &c.events {
                let id = match l {
                    Logged::Event(Event::Outcome(o)) => &o.decision_id,
                    Logged::Event(Event::Quality(q)) => &q.decision_id,
                    _ => continue,
                };
                mentioned.entry(DecisionKey::of(id)).or_insert(None);
            }
        }
        let mut release = Vec::new();
        if !self.held.is_empty() {
            for (key, newer) in &mentioned {
                if let Some(snapshot) = self.held.remove(key) {
                    // A newer record holds every pending field; else the snapshot is the record.
                    release.push(newer.clone().unwrap_or(snapshot));
                }
            }
            let hold = self.hold;
            while let Some((at, p)) = self.queue.front() {
                let current = self.held.get(p.key()).is_some_and(|h| Arc::ptr_eq(h, p));
                if current && now.saturating_duration_since(*at) < hold {
                    break;
                }
                if current {
                    self.held.remove(p.key());
                    release.push(Arc::clone(p));
                }
                self.queue.pop_front();
            }
        }
        if !self.hold.is_zero() {
            // New decisions `c` says nothing else about: held, out of the change set.
            let unchanged: HashSet<Ptr, Fast> = c
                .pending
                .iter()
                .filter_map(|(_, p)| p.as_ref().map(Arc::as_ptr))
                .collect();
            let mut taken: HashSet<Ptr, Fast> = HashSet::default();
            c.events.retain_mut(|l| match l {
                Logged::Decision(p)
                    if unchanged.contains(&Arc::as_ptr(p)) && !mentioned.contains_key(p.key()) =>
                {
                    taken.insert(Arc::as_ptr(p));
                    self.held.insert(p.key().clone(), Arc::clone(p));
                    self.queue.push_back((now, Arc::clone(p)));
                    false
                }
                // Made and changed since: the newer record is the one to write (encoded once,
                // as the pending change holds the same).
                Logged::Decision(p) => {
                    if let Some(Some(newer)) = mentioned.get(p.key()) {
                        *p = Arc::clone(newer);
                    }
                    true
                }
                _ => true,
            });
            if !taken.is_empty() {
                c.pending
                    .retain(|(_, p)| p.as_ref().is_none_or(|p| !taken.contains(&Arc::as_ptr(p))));
            }
        }
        if !release.is_empty() {
            // Released decisions first: logged before any event about them.
            let mut events: Vec<Logged> = release.into_iter().map(Logged::Decision).collect();
            events.append(&mut c.events);
            c.events = events;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{Engine, FeedbackInput, RouteInput};
    use crate::policy::Outcome;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn logged(c: &Changes) -> Vec<String> {
        c.events
            .iter()
            .filter_map(|l| match l {
                Logged::Decision(p) => Some(p.id()),
                Logged::Event(_) => None,
            })
            .collect()
    }

    fn pending_ids(c: &Changes) -> Vec<String> {
        c.pending.iter().map(|(k, _)| k.to_string()).collect()
    }

    /// A new decision is held out of the change set; its Feedback's change set writes it once
    /// with the outcome (the newer record); one never reported on is written once held long
    /// enough; a stop (hold zero) writes everything held.
    #[test]
    fn decisions_are_held_until_their_feedback_or_the_hold_ends() {
        let config = Config::builtin().unwrap();
        let class = config.task_classes.keys().next().unwrap().clone();
        let now = 1_700_000_000_000u64;
        let mut engine = Engine::new(config, now);
        engine.log_events();
        let mut rng = SmallRng::seed_from_u64(11);
        let mut route = |engine: &mut Engine| {
            let input = RouteInput {
                task_class: class.clone(),
                ..Default::default()
            };
            engine.route(&input, now, &mut rng).unwrap().id
        };
        let t0 = Instant::now();
        let mut d = Deferred::new(Duration::from_secs(3600));
        let (a, b, c) = (route(&mut engine), route(&mut engine), route(&mut engine));
        let first = d.settle(engine.take_changes(), t0);
        assert!(logged(&first).is_empty(), "{:?}", logged(&first));
        assert!(pending_ids(&first).is_empty(), "{:?}", pending_ids(&first));
        assert_eq!(d.len(), 3);

        let feedback = FeedbackInput {
            decision_id: b.clone(),
            outcome: Some(Outcome::Success),
            ..Default::default()
        };
        engine.feedback(&feedback, now + 5).unwrap();
        let second = d.settle(engine.take_changes(), t0);
        assert_eq!(logged(&second), vec![b.clone()]);
        let written = second
            .events
            .iter()
            .find_map(|l| match l {
                Logged::Decision(p) => Some(p),
                Logged::Event(_) => None,
            })
            .unwrap();
        assert_eq!(written.outcomes().len(), 1, "the record with the outcome");
        assert_eq!(d.len(), 2);

        // Held long enough: written, each once.
        let third = d.settle(engine.take_changes(), t0 + Duration::from_secs(3600));
        let mut ids = logged(&third);
        ids.sort();
        let mut want = vec![a.clone(), c.clone()];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(d.len(), 0);

        // A stop: nothing is held, everything held is written.
        let e = route(&mut engine);
        assert!(logged(&d.settle(engine.take_changes(), t0)).is_empty());
        d.hold = Duration::ZERO;
        assert_eq!(logged(&d.settle(engine.take_changes(), t0)), vec![e]);
        let f = route(&mut engine);
        assert_eq!(logged(&d.settle(engine.take_changes(), t0)), vec![f]);
        assert_eq!(d.len(), 0);
    }
}
