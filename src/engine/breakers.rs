//! The breakers, one per model, in model order with an index by name. Route reaches every
//! candidate's breaker; in a `BTreeMap` by name that was a linear walk of string comparisons per
//! model (about twenty `memcmp` calls a Route). Here Route goes by place (each class state keeps
//! its arms' places, [`Breakers::slot`]) and the rarer callers by name through one quick hash.
//! Iteration stays in name order, as the persisted records, metrics and transitions expect.

use std::collections::HashMap;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::breaker::Breaker;

/// Breakers by model name, iterated in name order.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    /// Sorted by name.
    list: Vec<(String, Breaker)>,
    /// Name -> position in `list`. FxHash: the names are the config's model ids.
    index: HashMap<String, usize, rustc_hash::FxBuildHasher>,
}

impl Breakers {
    pub fn get(&self, model: &str) -> Option<&Breaker> {
        self.list.get(self.slot(model)?).map(|(_, b)| b)
    }

    pub fn get_mut(&mut self, model: &str) -> Option<&mut Breaker> {
        self.at_mut(self.slot(model)?)
    }

    /// Where `model`'s breaker is, for [`Breakers::at_mut`]: places hold while the set of
    /// breakers does (it is fixed when made).
    pub fn slot(&self, model: &str) -> Option<usize> {
        self.index.get(model).copied()
    }

    /// The breaker at `slot` (from [`Breakers::slot`]).
    pub fn at_mut(&mut self, slot: usize) -> Option<&mut Breaker> {
        self.list.get_mut(slot).map(|(_, b)| b)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// (model, breaker) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Breaker)> {
        self.list.iter().map(|(m, b)| (m, b))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Breaker)> {
        self.list.iter_mut().map(|(m, b)| (&*m, b))
    }
}

impl FromIterator<(String, Breaker)> for Breakers {
    /// A later entry of the same name replaces an earlier one, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, Breaker)>>(iter: I) -> Self {
        let sorted: std::collections::BTreeMap<String, Breaker> = iter.into_iter().collect();
        let list: Vec<(String, Breaker)> = sorted.into_iter().collect();
        let index = list
            .iter()
            .enumerate()
            .map(|(i, (m, _))| (m.clone(), i))
            .collect();
        Breakers { list, index }
    }
}

impl IntoIterator for Breakers {
    type Item = (String, Breaker);
    type IntoIter = std::vec::IntoIter<(String, Breaker)>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

/// As a map from model to breaker (what `BTreeMap<String, Breaker>` gives).
impl Serialize for Breakers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.list.len()))?;
        for (m, b) in &self.list {
            map.serialize_entry(m, b)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_name_and_iterates_in_name_order() {
        let mut b: Breakers = ["m-c", "m-a", "m-b", "m-a"]
            .iter()
            .map(|m| (m.to_string(), Breaker::new()))
            .collect();
        assert_eq!(b.len(), 3);
        let names: Vec<&str> = b.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, ["m-a", "m-b", "m-c"]);
        for name in ["m-a", "m-b", "m-c"] {
            assert!(b.get(name).is_some(), "{name}");
            assert!(b.get_mut(name).is_some(), "{name}");
        }
        assert!(b.get("m-d").is_none());
        assert_eq!(b.slot("m-d"), None);
        for (i, name) in ["m-a", "m-b", "m-c"].iter().enumerate() {
            assert_eq!(b.slot(name), Some(i));
        }
        assert!(b.at_mut(3).is_none());
        assert!(b.get("").is_none());
        // Each name reaches its own breaker, and so does its slot: a change through one shows
        // only there.
        let slot = b.slot("m-b").expect("m-b");
        b.at_mut(slot).expect("slot of m-b").set_degraded(5_000);
        let degraded: Vec<&str> = b
            .iter()
            .filter(|(_, x)| x.degraded(1_000))
            .map(|(m, _)| m.as_str())
            .collect();
        assert_eq!(degraded, ["m-b"]);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(
            json.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["m-a".to_string(), "m-b".into(), "m-c".into()])
        );
        let back: Vec<String> = b.into_iter().map(|(m, _)| m).collect();
        assert_eq!(back, ["m-a", "m-b", "m-c"]);
    }
}
