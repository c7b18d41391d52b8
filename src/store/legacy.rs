//! Schema 1 and 2 data dirs (JSON pending records in tree `pending`, a JSON event log in tree
//! `events`) and their migration to schema 3's one record per decision. Arms, breakers and
//! ledgers kept their trees and encoding, so only the decisions move.

use std::path::Path;

use prost::Message;

use super::records::{decision_key, key_ms, Names, StoredDecision};
use super::{StoreError, SCHEMA_VERSION};
use crate::engine::PendingDecision;
use crate::record::Event;

/// Rewrites the old trees of `db` as schema 3, in one pass, then drops them and stamps the
/// schema. A record that cannot be read names its tree and key.
pub(super) fn migrate(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    let path = dir.display().to_string();
    let io = |e: sled::Error| StoreError::Io {
        path: path.clone(),
        detail: e.to_string(),
    };
    let corrupt = |tree: &str, k: &[u8], e: String| StoreError::Corrupt {
        path: path.clone(),
        file: dir.join("db").display().to_string(),
        detail: format!("tree {tree}, key {:?}: {e}", String::from_utf8_lossy(k)),
    };
    let events = db.open_tree("events").map_err(io)?;
    let pending = db.open_tree("pending").map_err(io)?;
    let mut log = Vec::new();
    for kv in events.iter() {
        let (k, v) = kv.map_err(io)?;
        log.push(
            serde_json::from_slice::<Event>(&v)
                .map_err(|e| corrupt("events", &k, e.to_string()))?,
        );
    }
    let mut names = Names::default();
    let mut records = std::collections::BTreeMap::new();
    // Every decision still in the event log, with its outcome and quality folded in.
    let mut created = std::collections::HashMap::new();
    for r in crate::record::fold(log, u64::MAX) {
        let s = StoredDecision::from_record(&r, &mut names)
            .map_err(|e| corrupt("events", r.decision_id.as_bytes(), e))?;
        created.insert(r.decision_id.clone(), r.t_ms);
        records.insert(decision_key(r.t_ms, &r.decision_id), s);
    }
    // Pending decisions add what feedback needs after a restart.
    for kv in pending.iter() {
        let (k, v) = kv.map_err(io)?;
        let p: PendingDecision =
            serde_json::from_slice(&v).map_err(|e| corrupt("pending", &k, e.to_string()))?;
        let key = decision_key(p.decision.created_ms, &p.decision.id);
        let r = records.entry(key).or_default();
        r.set_pending(&p, &mut names)
            .map_err(|e| corrupt("pending", &k, e))?;
    }
    let decisions = db.open_tree("decisions").map_err(io)?;
    let names_tree = db.open_tree("names").map_err(io)?;
    let mut nb = sled::Batch::default();
    for (id, name) in std::mem::take(&mut names.fresh) {
        nb.insert(id.to_be_bytes().as_slice(), name.as_bytes());
    }
    names_tree.apply_batch(nb).map_err(io)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut batch = sled::Batch::default();
    for (k, r) in &records {
        let v = r.encode_to_vec();
        count += 1;
        bytes += (k.len() + v.len()) as u64;
        batch.insert(k.as_slice(), v);
    }
    decisions.apply_batch(batch).map_err(io)?;
    let meta = db.open_tree("meta").map_err(io)?;
    let mut m = sled::Batch::default();
    m.insert("log_count", &count.to_be_bytes());
    m.insert("log_bytes", &bytes.to_be_bytes());
    m.insert("schema", &SCHEMA_VERSION.to_be_bytes());
    meta.apply_batch(m).map_err(io)?;
    db.flush().map_err(io)?;
    db.drop_tree("events").map_err(io)?;
    db.drop_tree("pending").map_err(io)?;
    db.flush().map_err(io)?;
    tracing::info!(
        decisions = count,
        first_ms = records.keys().next().map(|k| key_ms(k)),
        "migrated the decision log"
    );
    Ok(())
}

/// Writes a data dir as schema 2 did (the previous release's encoding), for the migration test.
#[cfg(test)]
pub(super) fn write_v2(
    dir: &Path,
    changes: crate::engine::Changes,
) -> Result<(), Box<dyn std::error::Error>> {
    let db = sled::Config::new().path(dir).open()?;
    db.open_tree("meta")?
        .insert("schema", &2u32.to_be_bytes())?;
    let arms = db.open_tree("arms")?;
    for (class, model, arm) in &changes.arms {
        arms.insert(super::arm_key(class, model), serde_json::to_vec(arm)?)?;
    }
    let breakers = db.open_tree("breakers")?;
    for (model, b) in &changes.breakers {
        breakers.insert(model.as_bytes(), serde_json::to_vec(b)?)?;
    }
    let ledgers = db.open_tree("ledgers")?;
    for (key, l) in &changes.ledgers {
        ledgers.insert(key.as_bytes(), serde_json::to_vec(l)?)?;
    }
    let pending = db.open_tree("pending")?;
    for (id, p) in &changes.pending {
        if let Some(p) = p {
            pending.insert(id.to_string().as_bytes(), serde_json::to_vec(&p.expand())?)?;
        }
    }
    let events = db.open_tree("events")?;
    for (seq, ev) in changes
        .events
        .into_iter()
        .map(|l| l.into_event())
        .enumerate()
    {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&ev.t_ms().to_be_bytes());
        k[8..].copy_from_slice(&(seq as u64).to_be_bytes());
        events.insert(k, serde_json::to_vec(&ev)?)?;
    }
    db.flush()?;
    Ok(())
}
