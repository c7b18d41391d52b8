//! `switchyard classify`: run a `[classifier]` rules file over a JSONL file of prompts, print each
//! prompt's class and rule, and, when the lines carry labels, the accuracy and the confusion
//! matrix. Offline: it reads files only, so rules can be tried before a config carries them.
//!
//! Input lines are JSON objects with the prompt in `prompt` (or `question`, RouterArena's name)
//! and an optional label in `label` (or the field `--label-field` names). A label ending in an
//! item number (`PubMedQA_12`) stands for its dataset (`PubMedQA`), and `--label-map` maps
//! datasets to classes by prefix. `--split dev|test` keeps the even or odd lines (0-based), so
//! rules written while looking at one half are scored on the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::classify::Classifier;

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// A TOML file with a [classifier] table (a whole config file works too).
    #[arg(long)]
    pub rules: PathBuf,
    /// JSONL prompts: {"prompt": "...", "label": "..."} per line (label optional).
    #[arg(long)]
    pub input: PathBuf,
    /// The field holding each line's label (e.g. `global_index` for RouterArena's files).
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// A TOML file mapping classes to label prefixes: `math = ["AIME", "GSM8K"]`; a label takes
    /// the class of its longest matching prefix, else stays as it is.
    #[arg(long)]
    pub label_map: Option<PathBuf>,
    /// Which lines to use: all, the even lines (dev) or the odd lines (test), counted from 0.
    #[arg(long, value_enum, default_value = "all")]
    pub split: Split,
    /// Print only the summary, not a line per prompt.
    #[arg(long)]
    pub summary: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    All,
    Dev,
    Test,
}

impl Split {
    pub fn keeps(self, line: usize) -> bool {
        match self {
            Split::All => true,
            Split::Dev => line.is_multiple_of(2),
            Split::Test => !line.is_multiple_of(2),
        }
    }
}

/// Labels to classes by prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelMap {
    /// (prefix, class), longest prefix first.
    prefixes: Vec<(String, String)>,
}

impl LabelMap {
    pub fn from_toml(text: &str) -> Result<LabelMap, String> {
        let raw: BTreeMap<String, Vec<String>> = toml::from_str(text)
            .map_err(|e| format!("label map is not `class = [prefixes]` TOML: {e}"))?;
        let mut prefixes: Vec<(String, String)> = raw
            .into_iter()
            .flat_map(|(class, ps)| ps.into_iter().map(move |p| (p, class.clone())))
            .collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(LabelMap { prefixes })
    }

    /// The class of `label`: its item number dropped, then mapped by its longest prefix.
    pub fn class_of(&self, label: &str) -> String {
        let dataset = dataset_of(label);
        self.prefixes
            .iter()
            .find(|(p, _)| dataset.starts_with(p.as_str()))
            .map_or_else(|| dataset.to_string(), |(_, c)| c.clone())
    }
}

/// `PubMedQA_12` -> `PubMedQA`: a trailing `_<digits>` item number dropped.
pub fn dataset_of(label: &str) -> &str {
    match label.rsplit_once('_') {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => label,
    }
}

/// Accuracy and confusion counts of labelled predictions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Confusion {
    /// (actual, predicted) -> count.
    pub counts: BTreeMap<(String, String), u64>,
}

impl Confusion {
    pub fn add(&mut self, actual: &str, predicted: &str) {
        *self
            .counts
            .entry((actual.to_string(), predicted.to_string()))
            .or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn correct(&self) -> u64 {
        self.counts
            .iter()
            .filter(|((a, p), _)| a == p)
            .map(|(_, n)| n)
            .sum()
    }

    /// Share of predictions equal to their label; 0 without any.
    pub fn accuracy(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.correct() as f64 / n as f64,
        }
    }

    /// The matrix as a table: a row per actual class, a column per predicted class.
    pub fn table(&self) -> comfy_table::Table {
        let mut classes: Vec<&str> = self
            .counts
            .keys()
            .flat_map(|(a, p)| [a.as_str(), p.as_str()])
            .collect();
        classes.sort_unstable();
        classes.dedup();
        let mut t = comfy_table::Table::new();
        let mut header = vec!["actual \\ predicted".to_string()];
        header.extend(classes.iter().map(|c| c.to_string()));
        t.set_header(header);
        for a in &classes {
            let mut row = vec![a.to_string()];
            for p in &classes {
                let n = self
                    .counts
                    .get(&(a.to_string(), p.to_string()))
                    .copied()
                    .unwrap_or(0);
                row.push(n.to_string());
            }
            t.add_row(row);
        }
        t
    }
}

#[derive(Deserialize)]
struct Line {
    prompt: Option<String>,
    question: Option<String>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

pub fn run(args: ClassifyArgs) -> ExitCode {
    match classify_file(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard classify: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn classify_file(args: &ClassifyArgs) -> Result<(), String> {
    let classifier: Classifier = crate::config::classifier::rules_from_toml(&read(&args.rules)?)
        .map_err(|e| format!("{}: {e}", args.rules.display()))?;
    let labels = match &args.label_map {
        Some(p) => LabelMap::from_toml(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?,
        None => LabelMap::default(),
    };
    let text = read(&args.input)?;
    let mut confusion = Confusion::default();
    let mut rules: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen = 0u64;
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() || !args.split.keeps(i) {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|e| {
            format!(
                "{} line {}: not a JSON object: {e}",
                args.input.display(),
                i + 1
            )
        })?;
        let Some(prompt) = line.prompt.or(line.question) else {
            return Err(format!(
                "{} line {}: no \"prompt\" (or \"question\") field",
                args.input.display(),
                i + 1
            ));
        };
        let found = classifier
            .classify(
                &prompt,
                || classifier.encoding.count_text(&prompt),
                |_| true,
            )
            .map(|c| (c.class, c.rule))
            .unwrap_or((
                classifier.default_class.as_str(),
                super::classify::DEFAULT_RULE,
            ));
        seen += 1;
        *rules.entry(found.1).or_default() += 1;
        let label = line.rest.get(&args.label_field).and_then(|v| v.as_str());
        let actual = label.map(|l| labels.class_of(l));
        if let Some(a) = &actual {
            confusion.add(a, found.0);
        }
        if !args.summary {
            match (label, &actual) {
                (Some(l), Some(a)) => println!("{}\t{}\t{}\t{l}\t{a}", i + 1, found.0, found.1),
                _ => println!("{}\t{}\t{}", i + 1, found.0, found.1),
            }
        }
    }
    println!("prompts: {seen} (split {:?})", args.split);
    println!(
        "rules fired: {}",
        rules
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if confusion.total() > 0 {
        println!(
            "accuracy: {}/{} = {:.1}%",
            confusion.correct(),
            confusion.total(),
            100.0 * confusion.accuracy()
        );
        println!("{}", confusion.table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_item_numbers_and_map_by_longest_prefix() {
        let m = LabelMap::from_toml("math = [\"MMLUPro_math\", \"GSM8K\"]\nqa = [\"MMLUPro\"]\n")
            .unwrap();
        assert_eq!(m.class_of("MMLUPro_math_17"), "math");
        assert_eq!(m.class_of("MMLUPro_history_3"), "qa");
        assert_eq!(m.class_of("GSM8K_0"), "math");
        assert_eq!(m.class_of("WMT19-de-en_4"), "WMT19-de-en");
        assert_eq!(
            dataset_of("OpenTDB_Science: Computers_12"),
            "OpenTDB_Science: Computers"
        );
        assert_eq!(dataset_of("plain"), "plain");
    }

    #[test]
    fn accuracy_counts_the_diagonal() {
        let mut c = Confusion::default();
        c.add("math", "math");
        c.add("math", "qa");
        c.add("qa", "qa");
        c.add("code", "code");
        assert_eq!((c.correct(), c.total()), (3, 4));
        assert!((c.accuracy() - 0.75).abs() < 1e-12);
        let t = c.table().to_string();
        assert!(t.contains("actual \\ predicted"), "{t}");
    }

    #[test]
    fn splits_are_the_even_and_odd_lines() {
        let dev: Vec<usize> = (0..6).filter(|&i| Split::Dev.keeps(i)).collect();
        let test: Vec<usize> = (0..6).filter(|&i| Split::Test.keeps(i)).collect();
        assert_eq!((dev, test), (vec![0, 2, 4], vec![1, 3, 5]));
    }
}
