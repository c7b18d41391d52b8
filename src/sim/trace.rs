//! The two JSON Lines trace formats (documented in simulations/README.md), their readers and
//! writers, the RouterArena importer and the scenario-to-trace generator.
//!
//! - [`FullInfoRecord`]: one request with every model's outcome (as in routing benchmarks), which
//!   allows exact counterfactual replay of any policy.
//! - [`LoggedDecision`]: one decision of a running service (`switchyard trace export`), with the
//!   eligible models and the chosen model's propensity, for off-policy evaluation; defined once in
//!   [`crate::record`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SimError;
use crate::policy::Outcome;

/// One model's outcome on one request of a full-information trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOutcome {
    pub status: Outcome,
    /// Quality score in [0, 1] (0 for a failed call).
    pub quality: f64,
    /// Wall time of the call; `None` when the source has none (RouterArena).
    #[serde(default)]
    pub latency_ms: Option<f64>,
    pub cost_usd: f64,
    pub output_tokens: u64,
}

/// One request of a full-information trace: every model's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullInfoRecord {
    /// Arrival time, milliseconds from the start of the trace.
    pub t_ms: u64,
    pub task_class: String,
    pub input_tokens: u64,
    pub outcomes: BTreeMap<String, ModelOutcome>,
}

/// One decision of logged traffic, as `switchyard trace export` writes it: the one decision record
/// the service logs and the store persists.
pub use crate::record::DecisionRecord as LoggedDecision;

/// Reads a JSON Lines file of `T`; errors name the file and the line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, SimError> {
    let file = std::fs::File::open(path)
        .map_err(|e| SimError::new(path.display().to_string(), format!("cannot open: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let where_ = || format!("{}:{}", path.display(), n + 1);
        let line = line.map_err(|e| SimError::new(where_(), format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| SimError::new(where_(), e.to_string()))?);
    }
    Ok(out)
}

/// Writes `items` as JSON Lines.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<(), SimError> {
    let ctx = || path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SimError::new(ctx(), e.to_string()))?;
    }
    let file = std::fs::File::create(path)
        .map_err(|e| SimError::new(ctx(), format!("cannot create: {e}")))?;
    let mut w = BufWriter::new(file);
    for item in items {
        let line = serde_json::to_string(item).map_err(|e| SimError::new(ctx(), e.to_string()))?;
        writeln!(w, "{line}").map_err(|e| SimError::new(ctx(), e.to_string()))?;
    }
    w.flush().map_err(|e| SimError::new(ctx(), e.to_string()))
}

/// Checks a full-information trace's values (quality in [0, 1], finite non-negative numbers,
/// non-decreasing time); errors name the record.
pub fn validate_full_info(records: &[FullInfoRecord]) -> Result<(), SimError> {
    let mut last = 0;
    for (i, r) in records.iter().enumerate() {
        let ctx = |field: &str| format!("record {} ({field})", i + 1);
        if r.t_ms < last {
            return Err(SimError::new(
                ctx("t_ms"),
                format!("time goes backwards: {} after {last}", r.t_ms),
            ));
        }
        last = r.t_ms;
        if r.outcomes.is_empty() {
            return Err(SimError::new(ctx("outcomes"), "no model outcome"));
        }
        for (m, o) in &r.outcomes {
            if !(o.quality.is_finite() && (0.0..=1.0).contains(&o.quality)) {
                return Err(SimError::new(
                    ctx(&format!("outcomes.{m}.quality")),
                    format!("must be in [0, 1], got {}", o.quality),
                ));
            }
            if !(o.cost_usd.is_finite() && o.cost_usd >= 0.0) {
                return Err(SimError::new(
                    ctx(&format!("outcomes.{m}.cost_usd")),
                    format!("must be a finite number >= 0, got {}", o.cost_usd),
                ));
            }
            if let Some(l) = o.latency_ms.filter(|l| !(l.is_finite() && *l >= 0.0)) {
                return Err(SimError::new(
                    ctx(&format!("outcomes.{m}.latency_ms")),
                    format!("must be a finite number >= 0 or null, got {l}"),
                ));
            }
        }
    }
    Ok(())
}

/// RouterArena's per-model cached result line (only the fields the importer reads).
#[derive(Debug, Deserialize)]
struct ArenaLine {
    global_index: String,
    token_usage: Option<ArenaTokens>,
    success: Option<bool>,
    evaluation_result: Option<ArenaEval>,
}

#[derive(Debug, Deserialize)]
struct ArenaTokens {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ArenaEval {
    score: Option<f64>,
    inference_cost: Option<f64>,
}

/// The models the RouterArena importer joins (the files under `data_dir`).
pub const ROUTERARENA_MODELS: [&str; 2] = ["claude-3-haiku-20240307", "gemini-2.0-flash-001"];

/// Spacing of the imported prompts in time: one request per second, in file order of the first model.
pub const ROUTERARENA_SPACING_MS: u64 = 1000;

/// The task class of a RouterArena dataset prefix (the `global_index` before its last `_`).
/// Grouping: math word problems and competition maths -> `math`; LiveCodeBench -> `code`; WMT19
/// translation -> `translation`; reading comprehension, entailment and ethics -> `reading`;
/// medical -> `medical`; everything else (MMLU, MMLU-Pro, ARC, trivia, QANTA, geography, music,
/// chess) -> `knowledge`.
pub fn routerarena_task_class(global_index: &str) -> &'static str {
    let prefix = global_index
        .rsplit_once('_')
        .map_or(global_index, |(p, _)| p);
    let p = prefix.to_ascii_lowercase();
    if [
        "aime",
        "math",
        "mathqa",
        "gsm8k",
        "asdiv",
        "finqa",
        "mmlupro_math",
    ]
    .contains(&p.as_str())
    {
        "math"
    } else if p.starts_with("livecodebench") {
        "code"
    } else if p.starts_with("wmt19") {
        "translation"
    } else if p.starts_with("pubmedqa") || p.starts_with("medmcqa") || p == "mmlupro_health" {
        "medical"
    } else if p.starts_with("narrativeqa")
        || p.starts_with("superglue")
        || p.starts_with("socialiqa")
        || p.starts_with("ethics")
    {
        "reading"
    } else {
        "knowledge"
    }
}

/// Joins RouterArena's per-model cached results on `global_index` into a full-information trace.
/// Quality = `evaluation_result.score`; cost = `evaluation_result.inference_cost` as published
/// (which is input and output tokens at `cost.json`'s prices); latency is absent (RouterArena has
/// none); a line with `success = false` is an `error` with quality 0 and cost 0. Prompts missing
/// from any model's file are skipped.
pub fn import_routerarena(data_dir: &Path) -> Result<Vec<FullInfoRecord>, SimError> {
    // Per model: (global_index, input tokens, outcome) in file order.
    type Rows = Vec<(String, u64, ModelOutcome)>;
    let mut per_model: Vec<(String, Rows)> = Vec::new();
    for model in ROUTERARENA_MODELS {
        let path = data_dir.join(format!("{model}.jsonl"));
        let lines: Vec<ArenaLine> = read_jsonl(&path)?;
        let mut rows = Vec::with_capacity(lines.len());
        for l in lines {
            let tokens = l.token_usage.as_ref();
            let input = tokens.and_then(|t| t.input_tokens).unwrap_or(0);
            let output = tokens.and_then(|t| t.output_tokens).unwrap_or(0);
            let eval = l.evaluation_result.as_ref();
            let ok = l.success.unwrap_or(false) && eval.and_then(|e| e.score).is_some();
            let outcome = if ok {
                ModelOutcome {
                    status: Outcome::Success,
                    quality: eval.and_then(|e| e.score).unwrap_or(0.0).clamp(0.0, 1.0),
                    latency_ms: None,
                    cost_usd: eval.and_then(|e| e.inference_cost).unwrap_or(0.0).max(0.0),
                    output_tokens: output,
                }
            } else {
                ModelOutcome {
                    status: Outcome::Error,
                    quality: 0.0,
                    latency_ms: None,
                    cost_usd: 0.0,
                    output_tokens: 0,
                }
            };
            rows.push((l.global_index, input, outcome));
        }
        per_model.push((model.to_string(), rows));
    }
    let Some((_, first)) = per_model.first() else {
        return Ok(Vec::new());
    };
    let lookups: Vec<BTreeMap<&str, (u64, &ModelOutcome)>> = per_model
        .iter()
        .map(|(_, rows)| rows.iter().map(|(g, i, o)| (g.as_str(), (*i, o))).collect())
        .collect();
    let mut out = Vec::new();
    for (global_index, _, _) in first {
        let mut outcomes = BTreeMap::new();
        let mut input_tokens = 0;
        for ((model, _), lookup) in per_model.iter().zip(&lookups) {
            if let Some((input, o)) = lookup.get(global_index.as_str()) {
                input_tokens = input_tokens.max(*input);
                outcomes.insert(model.clone(), (*o).clone());
            }
        }
        if outcomes.len() == per_model.len() {
            out.push(FullInfoRecord {
                t_ms: out.len() as u64 * ROUTERARENA_SPACING_MS,
                task_class: routerarena_task_class(global_index).to_string(),
                input_tokens,
                outcomes,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_class_grouping() {
        assert_eq!(routerarena_task_class("AIME_112"), "math");
        assert_eq!(routerarena_task_class("MMLUPro_math_3"), "math");
        assert_eq!(routerarena_task_class("MMLUPro_law_3"), "knowledge");
        assert_eq!(routerarena_task_class("WMT19-de-en_7"), "translation");
        assert_eq!(routerarena_task_class("LiveCodeBench_1"), "code");
        assert_eq!(routerarena_task_class("PubMedQA_12"), "medical");
        assert_eq!(routerarena_task_class("SuperGLUE-Wic_2"), "reading");
    }
}
