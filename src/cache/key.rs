//! What a Route request is looked up (and later stored) under: an exact key, or an embedding in a
//! scope.
//!
//! Both carry the tenant, the task class, the system prompt and the request parameters that shape
//! the answer (`max_output_tokens` and the candidate models), so a different system prompt, a
//! tighter output cap or another tenant never hits. Other parameters (budget, weights, latency and
//! cost caps, request_id) only steer which model is called; a stored answer is free and instant,
//! so it meets any of them.

use ring::digest;

use super::embed::{self, fnv1a};
use crate::config::{CacheConfig, CacheMode};
use crate::engine::{EngineError, RouteInput};

/// Characters of the normalised prompt kept with an entry, for invalidation by prefix.
pub const PREVIEW_CHARS: usize = 256;

/// A request's cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub class: String,
    /// The caller's tenant; empty without one.
    pub tenant: String,
    pub key: QueryKey,
    /// The start of the normalised prompt ([`embed::words`]), for invalidation by prefix.
    pub preview: String,
}

/// Which embedding space a vector lives in (they never compare with each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// The built-in lexical embedding.
    Lexical,
    /// Embeddings the caller sends (`cache.dimensions` wide).
    Caller,
}

/// How the request is matched.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryKey {
    /// SHA-256 of everything that must be equal.
    Exact([u8; 32]),
    /// A unit vector, matched only against entries of the same scope.
    Vector {
        space: Space,
        scope: u64,
        vector: Vec<f32>,
    },
}

/// The cache key of `input` for task class `class` (whose cache settings are `cache`), sent by
/// `tenant`; `None` when the class has no cache or the request has no prompt. Refuses an
/// embedding the class cannot use.
pub fn query(
    class: &str,
    cache: Option<&CacheConfig>,
    input: &RouteInput,
    tenant: &str,
) -> Result<Option<Query>, EngineError> {
    let bad_embedding = |message: String| EngineError::InvalidArgument {
        field: "embedding".to_string(),
        message,
    };
    let Some(cache) = cache else {
        if !input.embedding.is_empty() {
            return Err(bad_embedding(format!(
                "task class {class:?} has no response cache; send an embedding only to a class \
                 with cache = {{ mode = \"semantic\", dimensions = N }}"
            )));
        }
        return Ok(None);
    };
    let has_prompt = !input.prompt.trim().is_empty()
        || input.messages.iter().any(|m| !m.content.trim().is_empty());
    if !has_prompt {
        if !input.embedding.is_empty() {
            return Err(bad_embedding(
                "needs the prompt beside it (prompt or messages): the cache stores the response \
                 of a prompt"
                    .to_string(),
            ));
        }
        return Ok(None);
    }
    let (user_text, system_text) = texts(input);
    let preview: String = embed::words(&format!("{system_text}\n{user_text}"))
        .chars()
        .take(PREVIEW_CHARS)
        .collect();
    let key = match cache.mode {
        CacheMode::Exact => {
            if !input.embedding.is_empty() {
                return Err(bad_embedding(format!(
                    "task class {class:?} caches by exact prompt; an embedding is used only by \
                     mode = \"semantic\" with cache.dimensions set"
                )));
            }
            QueryKey::Exact(exact_key(class, input, tenant))
        }
        CacheMode::Semantic => {
            let scope = scope(class, input, tenant, &system_text);
            if input.embedding.is_empty() {
                let vector = embed::lexical(&user_text);
                if vector.iter().all(|x| *x == 0.0) {
                    return Ok(None); // nothing to compare: no letter or digit
                }
                QueryKey::Vector {
                    space: Space::Lexical,
                    scope,
                    vector,
                }
            } else {
                QueryKey::Vector {
                    space: Space::Caller,
                    scope,
                    vector: caller_vector(class, cache.dimensions, &input.embedding)
                        .map_err(bad_embedding)?,
                }
            }
        }
    };
    Ok(Some(Query {
        class: class.to_string(),
        tenant: tenant.to_string(),
        key,
        preview,
    }))
}

/// The prompt's user-facing text (the prompt and every non-system message) and its system text.
fn texts(input: &RouteInput) -> (String, String) {
    let mut user = vec![input.prompt.as_str()];
    let mut system = Vec::new();
    for m in &input.messages {
        if m.role.eq_ignore_ascii_case("system") {
            system.push(m.content.as_str());
        } else {
            user.push(m.content.as_str());
        }
    }
    (user.join("\n"), system.join("\n"))
}

/// A caller's embedding checked against the class's dimension and scaled to unit length.
fn caller_vector(class: &str, dimensions: Option<u64>, e: &[f32]) -> Result<Vec<f32>, String> {
    let Some(dim) = dimensions else {
        return Err(format!(
            "task class {class:?} uses the built-in lexical embedding; set \
             cache.dimensions to the width of your embeddings to send them, or omit embedding"
        ));
    };
    if e.len() as u64 != dim {
        return Err(format!(
            "has {} values; task class {class:?} takes embeddings of exactly {dim} values \
             (cache.dimensions)",
            e.len()
        ));
    }
    if let Some(i) = e.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "value [{i}] is {}; every value must be finite",
            e[i]
        ));
    }
    let mut v = e.to_vec();
    embed::normalise(&mut v);
    if v.iter().all(|x| *x == 0.0) {
        return Err("is all zeros; a cosine needs a non-zero vector".to_string());
    }
    Ok(v)
}

/// The parts every key shares, length-prefixed so no two different requests write the same bytes.
fn common_parts(class: &str, input: &RouteInput, tenant: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut part = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    part(tenant.as_bytes());
    part(class.as_bytes());
    part(&input.max_output_tokens.to_le_bytes());
    let mut candidates: Vec<&str> = input.candidates.iter().map(String::as_str).collect();
    candidates.sort_unstable();
    candidates.dedup();
    part(candidates.join("\n").as_bytes());
    out
}

/// SHA-256 of the tenant, class, parameters and the whitespace-collapsed prompt and messages.
fn exact_key(class: &str, input: &RouteInput, tenant: &str) -> [u8; 32] {
    let mut bytes = common_parts(class, input, tenant);
    let mut part = |s: &str| {
        let s = embed::collapse_whitespace(s);
        bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
        bytes.extend_from_slice(s.as_bytes());
    };
    part(&input.prompt);
    for m in &input.messages {
        part(&m.role.to_ascii_lowercase());
        part(&m.content);
    }
    let d = digest::digest(&digest::SHA256, &bytes);
    let mut key = [0_u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

/// The scope of a semantic key: tenant, class, parameters and the system prompt.
fn scope(class: &str, input: &RouteInput, tenant: &str, system: &str) -> u64 {
    let mut bytes = common_parts(class, input, tenant);
    bytes.extend_from_slice(embed::collapse_whitespace(system).as_bytes());
    fnv1a(0x5eed, &bytes)
}
