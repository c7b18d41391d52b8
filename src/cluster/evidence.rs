//! Shared learning: every `cluster.sync_interval_ms` a replica publishes what its arms learned
//! since its last sync as additive deltas in forward-decay units, merged into shared totals with
//! `HINCRBYFLOAT`, and takes the totals back (the maths: `crate::policy::merge`). One script call
//! per sync carries every arm, so a sync is one round trip; the decision path never waits on it.
//!
//! Evidence a replica gathers while the script runs is kept: the arm becomes the shared total
//! plus whatever arrived locally since the snapshot, and the next delta carries it.

use std::collections::HashMap;

use super::*;
use crate::engine::Engine;
use crate::policy::merge::{Evidence, FIELD_NAMES, REBASE_AFTER_HALF_LIVES};

/// KEYS: origin, arm set, the hashes of the arms with deltas, then (for a rebase) the other
/// hashes of the arm set. ARGV: origin the deltas were computed with, half-life ms (0 = no
/// decay), now ms, first sync ('1': a hash that exists already ignores the delta), rebase after
/// this many half-lives, the number of arms with deltas, then 14 deltas per arm. Returns the
/// origin, then the 14 totals of each arm with deltas; or, when a rebase is due and the arm set
/// holds hashes not in KEYS, `keys` and those hashes, having written nothing (the caller runs it
/// again declaring them: a script touches only the keys it is given).
pub const MERGE: &str = r#"
local fields = {'ss','sf','qs','qf','lw','lx','lx2','cw','cx','cx2','pulls','succ','fail','qrep'}
local hl = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local n = tonumber(ARGV[6])
local stored = redis.call('GET', KEYS[1])
local origin = tonumber(stored or ARGV[1])
if hl > 0 and (now - origin) > tonumber(ARGV[5]) * hl then
  local members = redis.call('SMEMBERS', KEYS[2])
  local declared, missing = {}, {'keys'}
  for i = 3, #KEYS do declared[KEYS[i]] = true end
  for _, key in ipairs(members) do
    if not declared[key] then missing[#missing + 1] = key end
  end
  if #missing > 1 then return missing end
  local k = math.floor((now - origin) / hl) - 1
  local f = 2 ^ (-k)
  for _, key in ipairs(members) do
    for i = 1, 10 do
      local v = redis.call('HGET', key, fields[i])
      if v then redis.call('HSET', key, fields[i], string.format('%.17g', tonumber(v) * f)) end
    end
  end
  origin = origin + k * hl
  stored = false
end
if not stored then redis.call('SET', KEYS[1], string.format('%d', origin)) end
local adj = 1
if hl > 0 then adj = 2 ^ ((tonumber(ARGV[1]) - origin) / hl) end
local out = {string.format('%d', origin)}
for a = 1, n do
  local key = KEYS[a + 2]
  local exists = redis.call('EXISTS', key) == 1
  redis.call('SADD', KEYS[2], key)
  if not (ARGV[4] == '1' and exists) then
    for i = 1, 14 do
      local d = tonumber(ARGV[6 + (a - 1) * 14 + i])
      if d ~= 0 then
        if i <= 10 then d = d * adj end
        redis.call('HINCRBYFLOAT', key, fields[i], string.format('%.17g', d))
      end
    end
  end
  local vals = redis.call('HMGET', key, unpack(fields))
  for i = 1, 14 do out[#out + 1] = vals[i] or '0' end
end
return out
"#;

/// Runs a closure on the replica's engine under its lock.
pub type WithEngine<'a> = dyn Fn(&mut dyn FnMut(&mut Engine)) + Send + Sync + 'a;

/// What a replica remembers between syncs.
#[derive(Debug, Default)]
pub struct EvidenceSync {
    /// The shared totals last taken back, per (class, model), decayed as of `base_ms`.
    base: HashMap<(String, String), Evidence>,
    base_ms: u64,
    origin_ms: Option<u64>,
    initialized: bool,
}

impl Cluster {
    /// One sync of every arm with the shared totals.
    pub async fn sync_evidence(
        &self,
        sync: &mut EvidenceSync,
        with_engine: &WithEngine<'_>,
    ) -> Result<(), ClusterError> {
        let now = crate::time::now_ms();
        let mut half_life = None;
        let mut snapshot = Vec::new();
        with_engine(&mut |e: &mut Engine| {
            half_life = e.config().policy.half_life_secs;
            snapshot = e.arm_evidence(now);
        });
        let origin_used = sync.origin_ms.unwrap_or(now);
        let hl_ms = half_life.map_or(0.0, |h| (h * 1000.0).round());
        let mut deltas = Vec::with_capacity(snapshot.len() * FIELD_NAMES.len());
        for (c, m, ev) in &snapshot {
            let delta = match (sync.initialized, sync.base.get(&(c.clone(), m.clone()))) {
                (true, Some(b)) => ev.minus(&b.decayed(sync.base_ms, now, half_life)),
                _ => *ev,
            };
            for f in delta.to_forward(now, origin_used, half_life).fields() {
                deltas.push(format!("{f:.17e}"));
            }
        }
        // Other replicas' arms (another config during a rolling reload) are declared only when a
        // rebase needs them: the script names them and is run again.
        let mut others: Vec<String> = Vec::new();
        let mut runs = 0;
        let reply = loop {
            runs += 1;
            let mut inv = self.scripts.merge.prepare_invoke();
            inv.key(self.key(&["arm_origin"])).key(self.key(&["arms"]));
            for (c, m, _) in &snapshot {
                inv.key(self.key(&["arm", c, m]));
            }
            for k in &others {
                inv.key(k);
            }
            inv.arg(origin_used)
                .arg(hl_ms)
                .arg(now)
                .arg(if sync.initialized { "0" } else { "1" })
                .arg(REBASE_AFTER_HALF_LIVES)
                .arg(snapshot.len());
            for d in &deltas {
                inv.arg(d);
            }
            let reply: Vec<String> = self
                .call(|mut con| async move { Ok(inv.invoke_async(&mut con).await?) })
                .await?;
            match reply.split_first() {
                Some((tag, missing)) if tag == "keys" && runs < 3 => {
                    others.extend(missing.iter().cloned());
                }
                _ => break reply,
            }
        };
        let width = FIELD_NAMES.len();
        if reply.len() != 1 + width * snapshot.len() {
            return Err(ClusterError::Protocol(format!(
                "merge script answered {} values for {} arms",
                reply.len(),
                snapshot.len()
            )));
        }
        let origin = num(&reply[0])? as u64;
        let mut totals = Vec::with_capacity(snapshot.len());
        for (i, (c, m, sent)) in snapshot.into_iter().enumerate() {
            let mut f = [0.0; 14];
            for (j, slot) in f.iter_mut().enumerate() {
                *slot = num(&reply[1 + i * width + j])?;
            }
            let total = Evidence::from_fields(&f).from_forward(now, origin, half_life);
            totals.push((c, m, sent, total));
        }
        let mut base = HashMap::new();
        let mut then = now;
        with_engine(&mut |e: &mut Engine| {
            then = crate::time::now_ms().max(now);
            let current: HashMap<(String, String), Evidence> = e
                .arm_evidence(then)
                .into_iter()
                .map(|(c, m, ev)| ((c, m), ev))
                .collect();
            for (c, m, sent, total) in &totals {
                let key = (c.clone(), m.clone());
                let total_then = total.decayed(now, then, half_life);
                let arrived = current
                    .get(&key)
                    .map(|cur| cur.minus(&sent.decayed(now, then, half_life)))
                    .unwrap_or_default();
                e.set_arm_evidence(c, m, &total_then.plus(&arrived), then);
                base.insert(key, total_then);
            }
        });
        sync.base = base;
        sync.base_ms = then;
        sync.origin_ms = Some(origin);
        sync.initialized = true;
        self.state().synced_ms = then;
        self.counters.evidence_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
