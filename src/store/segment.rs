//! Segments of the decision log: the decisions one writer cycle made, several to one sled value.
//!
//! Why: sled's cost is per key. Under closed-loop `sync` Route, inserting one key per decision
//! (`insert_inner` and its leaf splits) was four fifths of the writer's CPU, and the writer shares
//! the two cores with the request handlers (docs/performance-history.md). A cycle's new decisions
//! are written in key order as segments of up to [`SEGMENT_MAX`] records, one key each.
//!
//! A decision still has exactly one record in the log: a Feedback rewrites the segment that holds
//! it (a cycle's Feedbacks on one segment share that rewrite), never a copy elsewhere, so a reader
//! needs no merge. A cycle that makes one decision writes it under its own 24-byte key
//! ([`super::records::DecisionKey`]), as logs written before segments hold every decision.
//!
//! Key of a segment (33 bytes): its first record's 24-byte key (creation ms, id), its last
//! record's creation ms (big-endian u64) and its record count (u8). So the log still sorts and
//! trims by creation time, and counting, trimming and the age bound decide from keys without
//! decoding a segment. Value: the bytes of the prost message `Segment` (defined for the tests;
//! [`encode`] and [`spans`] write and read it field by field).

use prost::Message;

use super::records::{DecisionKey, StoredDecision};

/// The most records one segment holds. A Feedback decodes and re-encodes the segment of its
/// decision, so a segment is kept small (32 x ~115 bytes); larger ones save few more keys.
pub const SEGMENT_MAX: usize = 32;

/// Length of a segment's key.
pub const SEGMENT_KEY_LEN: usize = 33;

pub type SegmentKey = [u8; SEGMENT_KEY_LEN];

/// Several decision records, in key order: the format of a segment's value, as prost defines it.
/// [`encode`] and [`spans`] write and read it field by field (a test checks that the bytes are
/// prost's), so that no record is copied into an owned message and a rewrite decodes only the
/// records it changes.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Segment {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
}

/// One decision in a segment: its 24-byte key and its record.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub record: Option<StoredDecision>,
}

/// The key of a segment holding `n` records from `first` to a record made at `last_ms`.
pub fn segment_key(first: &DecisionKey, last_ms: u64, n: usize) -> SegmentKey {
    let mut k = [0u8; SEGMENT_KEY_LEN];
    k[..24].copy_from_slice(first);
    k[24..32].copy_from_slice(&last_ms.to_be_bytes());
    k[32] = u8::try_from(n).unwrap_or(u8::MAX);
    k
}

/// Whether a key of the decisions tree is a segment's.
pub fn is_segment(k: &[u8]) -> bool {
    k.len() == SEGMENT_KEY_LEN
}

/// How many decisions a key of the decisions tree holds (1 for a decision's own key).
pub fn key_count(k: &[u8]) -> u64 {
    if is_segment(k) {
        u64::from(k[32])
    } else {
        1
    }
}

/// Creation ms of the newest decision a key holds.
pub fn key_last_ms(k: &[u8]) -> u64 {
    match k.get(24..32) {
        Some(b) if is_segment(k) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        }
        _ => super::records::key_ms(k),
    }
}

/// The decisions a key and value of the decisions tree hold, in key order: one for a decision's
/// own key, each entry of a segment otherwise. A segment whose entries disagree with its key
/// (count, first key, last time, order) is refused.
pub fn decode_all(k: &[u8], v: &[u8]) -> Result<Vec<(DecisionKey, StoredDecision)>, String> {
    if k.len() == 24 {
        let mut key = [0u8; 24];
        key.copy_from_slice(k);
        let r = StoredDecision::decode(v).map_err(|e| e.to_string())?;
        return Ok(vec![(key, r)]);
    }
    if !is_segment(k) {
        return Err(format!(
            "key of {} bytes: a decision's is 24 bytes and a segment's {SEGMENT_KEY_LEN}",
            k.len()
        ));
    }
    spans(k, v)?
        .into_iter()
        .map(|s| {
            let bytes = v.get(s.record).unwrap_or_default();
            let r = StoredDecision::decode(bytes).map_err(|e| format!("segment record: {e}"))?;
            Ok((s.key, r))
        })
        .collect()
}

/// Encodes records (in key order, at least two) as a segment value into `buf`: the bytes of a
/// `Segment`, written field by field so that no record is copied into an owned message first.
pub fn encode<'a>(
    records: impl IntoIterator<Item = (&'a DecisionKey, &'a StoredDecision)>,
    buf: &mut Vec<u8>,
) {
    buf.clear();
    for (k, r) in records {
        encode_entry(k, r, buf);
    }
}

/// Appends one `Entry` of a segment (field 1 of `Segment`) to `buf`.
pub fn encode_entry(k: &DecisionKey, r: &StoredDecision, buf: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let rlen = r.encoded_len();
    // Field 1 (key: tag, length, 24 bytes), field 2 (tag, length, record).
    let entry_len = 2 + k.len() + 1 + encoded_len_varint(rlen as u64) + rlen;
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(entry_len as u64, buf);
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(k.len() as u64, buf);
    buf.extend_from_slice(k);
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(rlen as u64, buf);
    r.encode_raw(buf);
}

/// Where one entry of a segment value is: its key, the bytes of the whole entry (tag and length
/// included) and of its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub key: DecisionKey,
    pub entry: std::ops::Range<usize>,
    pub record: std::ops::Range<usize>,
}

/// The entries of a segment value, found without decoding their records: a Feedback rewrites a
/// segment by decoding and encoding only its own decision's record and copying the others' bytes.
/// Checked as [`decode_all`] checks a segment (count, order, first key, last time); the records
/// themselves are checked when decoded.
pub fn spans(k: &[u8], v: &[u8]) -> Result<Vec<Span>, String> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    if !is_segment(k) {
        return Err(format!("key of {} bytes is not a segment's", k.len()));
    }
    let err = |e: prost::DecodeError| format!("segment: {e}");
    // Reads a length-delimited field's length at `buf` and returns its range in `v`.
    let delimited = |buf: &mut &[u8]| -> Result<std::ops::Range<usize>, String> {
        let len = usize::try_from(decode_varint(buf).map_err(err)?).unwrap_or(usize::MAX);
        // `buf` is a tail of a part of `v`: its offset in `v`.
        let start = (buf.as_ptr() as usize).saturating_sub(v.as_ptr() as usize);
        if len > buf.len() {
            return Err("segment: a field runs past the value's end".into());
        }
        *buf = &buf[len..];
        Ok(start..start + len)
    };
    let mut out: Vec<Span> = Vec::new();
    let mut buf = v;
    while !buf.is_empty() {
        let at = v.len() - buf.len();
        let (tag, wire) = decode_key(&mut buf).map_err(err)?;
        if wire != WireType::LengthDelimited {
            skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(err)?;
            continue;
        }
        let body = delimited(&mut buf)?;
        if tag != 1 {
            continue;
        }
        let (mut key, mut record) = (None, None);
        let mut inner = &v[body.clone()];
        while !inner.is_empty() {
            let (t, w) = decode_key(&mut inner).map_err(err)?;
            if w != WireType::LengthDelimited {
                skip_field(w, t, &mut inner, DecodeContext::default()).map_err(err)?;
                continue;
            }
            let r = delimited(&mut inner)?;
            match t {
                1 => key = Some(r),
                2 => record = Some(r),
                _ => {}
            }
        }
        let key = key
            .and_then(|r| DecisionKey::try_from(&v[r]).ok())
            .ok_or_else(|| "segment entry without a 24-byte key".to_string())?;
        let record = record.ok_or_else(|| "segment entry without a record".to_string())?;
        if out.last().is_some_and(|prev| prev.key >= key) {
            return Err("segment entries out of key order".into());
        }
        out.push(Span {
            key,
            entry: at..body.end,
            record,
        });
    }
    let n = out.len();
    if n as u64 != key_count(k) || n < 2 {
        return Err(format!(
            "segment holds {n} records, its key says {}",
            key_count(k)
        ));
    }
    let first_ok = out.first().is_some_and(|f| f.key[..] == k[..24]);
    let last_ok = out
        .last()
        .is_some_and(|l| super::records::key_ms(&l.key) == key_last_ms(k));
    if !first_ok || !last_ok {
        return Err("segment's first key or last time differs from its key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ms: u64, id: u8) -> DecisionKey {
        let mut k = [0u8; 24];
        k[..8].copy_from_slice(&ms.to_be_bytes());
        k[23] = id;
        k
    }

    fn rec(ttl: u64) -> StoredDecision {
        StoredDecision {
            ttl_ms: ttl,
            ..StoredDecision::default()
        }
    }

    #[test]
    fn a_segment_round_trips_and_its_key_says_what_it_holds() {
        let (a, b, c) = (rec(1), rec(2), rec(3));
        let recs = [(key(10, 1), &a), (key(10, 2), &b), (key(12, 0), &c)];
        let mut buf = Vec::new();
        encode(recs.iter().map(|(k, r)| (k, *r)), &mut buf);
        let k = segment_key(&key(10, 1), 12, 3);
        assert!(is_segment(&k));
        assert_eq!(key_count(&k), 3);
        assert_eq!(key_last_ms(&k), 12);
        assert_eq!(super::super::records::key_ms(&k), 10);
        // The same bytes prost gives the owned message.
        let owned = Segment {
            entries: recs
                .iter()
                .map(|(k, r)| Entry {
                    key: k.to_vec(),
                    record: Some((*r).clone()),
                })
                .collect(),
        };
        assert_eq!(buf, owned.encode_to_vec());
        let back = decode_all(&k, &buf).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2], (key(12, 0), c.clone()));
        // A decision's own key.
        let mut one = Vec::new();
        a.encode(&mut one).unwrap();
        assert_eq!(decode_all(&key(5, 5), &one).unwrap(), vec![(key(5, 5), a)]);
        assert_eq!((key_count(&key(5, 5)), key_last_ms(&key(5, 5))), (1, 5));
    }

    /// A segment rewritten from its spans, one record re-encoded and the others' bytes copied, is
    /// the segment encoded whole with that record changed; spans refuse what `decode_all` does.
    #[test]
    fn spans_locate_each_entry_and_a_rewrite_from_them_equals_a_whole_encoding() {
        let recs: Vec<StoredDecision> = (0..5).map(|i| rec(100 * i + 7)).collect();
        let keys: Vec<DecisionKey> = (0..5).map(|i| key(10 + i, i as u8)).collect();
        let all: Vec<_> = keys.iter().copied().zip(recs.iter()).collect();
        let mut buf = Vec::new();
        encode(all.iter().map(|(k, r)| (k, *r)), &mut buf);
        let k = segment_key(&keys[0], 14, 5);
        let spans = spans(&k, &buf).unwrap();
        assert_eq!(spans.len(), 5);
        for (s, (key, r)) in spans.iter().zip(&all) {
            assert_eq!(s.key, *key);
            assert_eq!(StoredDecision::decode(&buf[s.record.clone()]).unwrap(), **r);
        }
        let changed = StoredDecision {
            ttl_ms: 1 << 40,
            fallback_models: vec![3, 4],
            ..rec(0)
        };
        let mut rewritten = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            if i == 2 {
                encode_entry(&s.key, &changed, &mut rewritten);
            } else {
                rewritten.extend_from_slice(&buf[s.entry.clone()]);
            }
        }
        let mut whole = Vec::new();
        let mut expect = all.clone();
        expect[2].1 = &changed;
        encode(expect.iter().map(|(k, r)| (k, *r)), &mut whole);
        assert_eq!(rewritten, whole);
        assert!(super::spans(&segment_key(&keys[0], 14, 4), &buf).is_err());
        assert!(super::spans(&segment_key(&keys[0], 13, 5), &buf).is_err());
        assert!(super::spans(&k, &buf[..buf.len() - 1]).is_err());
        assert!(super::spans(&keys[0], &buf).is_err());
    }

    #[test]
    fn a_segment_that_disagrees_with_its_key_is_refused() {
        let (a, b) = (rec(1), rec(2));
        let mut buf = Vec::new();
        encode([(&key(10, 1), &a), (&key(11, 2), &b)], &mut buf);
        let good = segment_key(&key(10, 1), 11, 2);
        assert!(decode_all(&good, &buf).is_ok());
        for bad in [
            segment_key(&key(10, 1), 11, 3),
            segment_key(&key(10, 2), 11, 2),
            segment_key(&key(10, 1), 12, 2),
        ] {
            assert!(decode_all(&bad, &buf).is_err());
        }
        encode([(&key(11, 2), &b), (&key(10, 1), &a)], &mut buf);
        let err = decode_all(&segment_key(&key(11, 2), 10, 2), &buf).unwrap_err();
        assert!(err.contains("order"), "{err}");
        assert!(decode_all(&good, b"\xff\xff\xff").is_err());
        assert!(decode_all(&[0u8; 30], b"")
            .unwrap_err()
            .contains("30 bytes"));
    }
}
