//! Prompt normalisation and the built-in lexical embedding.
//!
//! The lexical embedding is a feature-hashed bag of character trigrams (Weinberger et al.,
//! "Feature hashing for large scale multitask learning", 2009: each feature adds ±1 to one of
//! [`LEXICAL_DIM`] buckets, the sign from a second hash, so collisions cancel on average) of the
//! prompt normalised to lower-case words: case, whitespace and punctuation vanish before hashing,
//! and one typo in a sentence changes only the two or three trigrams that span it.
//!
//! Trigrams alone see "disable 2FA on my account" as a near copy of "enable 2FA on my account",
//! the known failure of semantic caches. So a second block, of equal weight, holds the *key
//! tokens*: negation cues (`not`, `no`, `never`, `without`, the `n't` contractions, and words that
//! open with `dis`, `un` or `non`, as in disable, unsubscribe, nonexistent) and every token with a
//! digit (numbers, versions, "2fa"). Two prompts whose key tokens differ lose at least a quarter
//! of their similarity whatever their length: a negation added or dropped caps the cosine near
//! 0.71, a changed number in a prompt of a few numbers brings it below 0.9, so neither reaches
//! the default threshold of 0.95. Antonyms that are not negations ("increase" / "decrease") are
//! beyond a lexical model: send embeddings of a real model for those.

/// Dimension of the built-in lexical embedding.
pub const LEXICAL_DIM: usize = 256;

/// Buckets of the trigram block; the rest hold the key tokens.
const TRIGRAM_DIM: usize = 224;

/// Words that negate what follows (apostrophes are dropped before matching: "don't" -> "dont").
const NEGATIONS: [&str; 23] = [
    "not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "cannot",
    "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt",
    "shouldnt", "couldnt", "stop",
];

/// Prefixes that negate the word they open (disable, unsubscribe, nonexistent), for words long
/// enough that the rest is a word of its own.
const NEGATING_PREFIXES: [&str; 3] = ["dis", "un", "non"];

/// The prompt as lower-case words separated by single spaces: punctuation (apostrophes dropped,
/// anything else not alphanumeric a separator), case and runs of whitespace removed.
pub fn words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c == '\'' || c == '\u{2019}' {
            continue;
        }
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// The prompt with runs of whitespace collapsed to one space and trimmed, case kept (what the
/// exact mode hashes: case can matter, in code or in acronyms).
pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// FNV-1a (64 bit) of `bytes` after `seed`: a fixed, fast hash for feature buckets (the std
/// hasher's algorithm may change between releases).
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Adds ±1 for `feature` to one bucket of `block`.
fn hash_into(block: &mut [f32], feature: &[u8]) {
    let h = fnv1a(0, feature);
    let bucket = (h % block.len() as u64) as usize;
    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
    block[bucket] += sign;
}

/// Whether `word` (normalised) negates or carries a number.
fn key_token(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit())
        || NEGATIONS.contains(&word)
        || NEGATING_PREFIXES
            .iter()
            .any(|p| word.len() >= p.len() + 4 && word.starts_with(p))
}

/// The lexical embedding of `text`: unit length, or all zeros for a text without a letter or digit.
pub fn lexical(text: &str) -> Vec<f32> {
    let norm = words(text);
    let mut v = vec![0.0_f32; LEXICAL_DIM];
    let (trigrams, keys) = v.split_at_mut(TRIGRAM_DIM);
    let padded: Vec<char> = std::iter::once(' ')
        .chain(norm.chars())
        .chain(std::iter::once(' '))
        .collect();
    let mut buf = [0_u8; 12];
    for w in padded.windows(3) {
        let mut n = 0;
        for c in w {
            n += c.encode_utf8(&mut buf[n..]).len();
        }
        hash_into(trigrams, &buf[..n]);
    }
    for word in norm.split(' ').filter(|w| key_token(w)) {
        // Negating prefixes count as their prefix, so a typo elsewhere in the word keeps it.
        let feature = NEGATING_PREFIXES
            .iter()
            .find(|p| {
                !NEGATIONS.contains(&word)
                    && word.starts_with(*p)
                    && !word.contains(char::is_numeric)
            })
            .map_or(word, |p| p);
        hash_into(keys, feature.as_bytes());
    }
    // Each block to unit length, so the key tokens weigh as much as all the trigrams together.
    normalise(trigrams);
    normalise(keys);
    normalise(&mut v);
    v
}

/// Scales `v` to unit length (leaves a zero vector alone).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Dot product of two equally long vectors (the cosine of unit vectors), written in chunks of 8 so
/// the compiler vectorises it. Always inlined, so the index's scans compile it with the CPU features
/// they dispatch on.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0_f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &str, b: &str) -> f32 {
        dot(&lexical(a), &lexical(b))
    }

    #[test]
    fn normalisation_drops_case_whitespace_and_punctuation() {
        assert_eq!(
            words("  What's the  CAPITAL, of France?! "),
            "whats the capital of france"
        );
        assert_eq!(collapse_whitespace(" a \n\t b  "), "a b");
        let c = cos(
            "What is the capital of France?",
            "what is the capital of france",
        );
        assert!((c - 1.0).abs() < 1e-5, "{c}");
    }

    #[test]
    fn near_identical_prompts_reach_the_default_threshold() {
        for (a, b) in [
            (
                "How do I reset my password from the account settings page?",
                "how do i reset my pasword from the account settings page",
            ),
            (
                "Summarise the following article about the history of the printing press",
                "Please summarise the following article about the history of the printing press.",
            ),
            (
                "Explain the difference between a process and a thread in an operating system",
                "Explain the difference between a process and a thread in an operating-system!",
            ),
        ] {
            let c = cos(a, b);
            assert!(c >= 0.95, "{a:?} / {b:?}: {c}");
        }
    }

    #[test]
    fn negations_and_different_facts_stay_below_the_default_threshold() {
        for (a, b) in [
            ("enable 2FA", "disable 2FA"),
            (
                "How do I enable 2FA on my GitHub account from the security settings page?",
                "How do I disable 2FA on my GitHub account from the security settings page?",
            ),
            (
                "Should I restart the database server after changing the configuration file?",
                "Should I not restart the database server after changing the configuration file?",
            ),
            (
                "What is the capital of France?",
                "What is the capital of Spain?",
            ),
            (
                "Convert 100 US dollars to euros at today's exchange rate please",
                "Convert 250 US dollars to euros at today's exchange rate please",
            ),
        ] {
            let c = cos(a, b);
            assert!(c < 0.95, "{a:?} / {b:?}: {c}");
        }
    }

    #[test]
    fn unrelated_prompts_are_far_apart_and_empty_text_is_zero() {
        let c = cos(
            "Write a haiku about autumn leaves",
            "Fix the segfault in my C parser",
        );
        assert!(c < 0.5, "{c}");
        assert!(lexical("?!").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 3.0 - i as f32).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
