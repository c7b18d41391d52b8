//! The prompt classifier: ordered rules that map a prompt to a task class, so a request sent
//! without a `task_class` is still routed under the class whose models and trade-offs suit it
//! (the seeds' "lightweight classifier (rule-based ...) to route incoming queries").
//!
//! A rule holds conditions that must all hold: a regex that must match (`regex`) or must not
//! (`not_regex`), a keyword set (any keyword, whole words, case-insensitive), length bounds in
//! characters and in tokens, and two detectors, code ([`looks_like_code`]) and mathematics
//! ([`looks_like_math`]). The first rule that matches and names a class the caller may use wins;
//! otherwise the default class (when the caller may use it). Rules are plain data, compiled once
//! when the config loads (regexes by the `regex` crate: linear time, so a hostile prompt cannot
//! make matching slow). Pure: no state, nothing kept.
//!
//! Token bounds count in one encoding for the whole classifier (`encoding`, default
//! [`DEFAULT_ENCODING`]), not in "the model's": the classifier runs before any model is chosen
//! (its answer decides which models are candidates), and a class may mix models of different
//! tokenizers. One fixed unit keeps a prompt's class independent of the models configured.

use std::sync::LazyLock;

use regex::Regex;

use super::tokens::Tokenizer;

/// The encoding token bounds count in when `[classifier] encoding` is not set: OpenAI's current
/// encoding (GPT-4o, GPT-4.1, GPT-5, the o-series).
pub const DEFAULT_ENCODING: Tokenizer = Tokenizer::O200kBase;

/// A compiled regex that remembers its source (two configs compare equal by their sources).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            source: source.to_string(),
            regex: Regex::new(source)?,
        })
    }

    /// A case-insensitive whole-word match of any of `keywords`.
    pub fn keywords(keywords: &[String]) -> Result<Pattern, regex::Error> {
        let alternatives: Vec<String> = keywords.iter().map(|k| regex::escape(k)).collect();
        Pattern::new(&format!(r"(?i)\b(?:{})\b", alternatives.join("|")))
    }
}

/// What a rule asks of a prompt; `None` = no condition. All present conditions must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conditions {
    pub regex: Option<Pattern>,
    pub not_regex: Option<Pattern>,
    /// Built from the configured keyword list by [`Pattern::keywords`].
    pub keywords: Option<Pattern>,
    pub min_chars: Option<u64>,
    pub max_chars: Option<u64>,
    /// Token bounds, counted in the classifier's `encoding` (see [`crate::prompt::tokens`]).
    pub min_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    /// `true`: the prompt must look like code; `false`: it must not.
    pub code: Option<bool>,
    /// `true`: the prompt must contain mathematics; `false`: it must not.
    pub math: Option<bool>,
}

impl Conditions {
    /// True when no condition is set (such a rule would match every prompt).
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    fn needs_tokens(&self) -> bool {
        self.min_tokens.is_some() || self.max_tokens.is_some()
    }

    fn hold(&self, text: &str, tokens: &mut dyn FnMut() -> u64) -> bool {
        let within = |v: u64, min: Option<u64>, max: Option<u64>| {
            min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
        };
        if self.min_chars.is_some() || self.max_chars.is_some() {
            let chars = text.chars().count() as u64;
            if !within(chars, self.min_chars, self.max_chars) {
                return false;
            }
        }
        let matches = |p: &Option<Pattern>| p.as_ref().map(|p| p.regex.is_match(text));
        if matches(&self.regex) == Some(false)
            || matches(&self.not_regex) == Some(true)
            || matches(&self.keywords) == Some(false)
        {
            return false;
        }
        if self.code.is_some_and(|want| looks_like_code(text) != want)
            || self.math.is_some_and(|want| looks_like_math(text) != want)
        {
            return false;
        }
        !self.needs_tokens() || within(tokens(), self.min_tokens, self.max_tokens)
    }
}

/// One named rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub class: String,
    pub when: Conditions,
}

/// The ordered rules and the default class (`[classifier]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    pub rules: Vec<Rule>,
    pub default_class: String,
    /// What `min_tokens` and `max_tokens` count in.
    pub encoding: Tokenizer,
}

/// The rule name reported when no rule matched and the default class was used.
pub const DEFAULT_RULE: &str = "default";

/// A classification: the class and the rule that chose it ([`DEFAULT_RULE`] for the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified<'a> {
    pub class: &'a str,
    pub rule: &'a str,
}

impl Classifier {
    /// The first rule that matches `text` and whose class `allowed` accepts, else the default
    /// class if allowed; `None` when neither. `tokens` is called at most once, and only when a
    /// rule reached has a token bound.
    pub fn classify<'a>(
        &'a self,
        text: &str,
        tokens: impl FnOnce() -> u64,
        allowed: impl Fn(&str) -> bool,
    ) -> Option<Classified<'a>> {
        let mut tokens = Some(tokens);
        let mut counted = None;
        let mut count = || *counted.get_or_insert_with(|| tokens.take().map_or(0, |f| f()));
        for rule in &self.rules {
            if allowed(&rule.class) && rule.when.hold(text, &mut count) {
                return Some(Classified {
                    class: &rule.class,
                    rule: &rule.name,
                });
            }
        }
        allowed(&self.default_class).then_some(Classified {
            class: &self.default_class,
            rule: DEFAULT_RULE,
        })
    }

    /// The classes the rules and the default name, each once, in order of first mention.
    pub fn classes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in self
            .rules
            .iter()
            .map(|r| r.class.as_str())
            .chain(std::iter::once(self.default_class.as_str()))
        {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// Markdown code fences (three backticks or tildes).
static CODE_FENCE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*(```|~~~)").ok());

/// A line that reads as source code: a definition or import keyword at its start, or a line
/// ending in `;`, `{` or `}`.
static CODE_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?m)^\s*(?:(?:def|class|import|from\s+\S+\s+import|fn|pub\s+fn|let|const|var|function|func|public|private|static|return|#include|package|using|SELECT|INSERT|UPDATE|CREATE)\b.*|[\w.\[\]]+\s*[-+*/]?=\s*\S.*|.*[;{}]\s*)$",
    )
    .ok()
});

/// Code lines needed, without a fence, for [`looks_like_code`].
pub const CODE_LINES_MIN: usize = 3;

/// Whether `text` contains code: a Markdown code fence, or at least [`CODE_LINES_MIN`] lines that
/// read as code (a heuristic: prose rarely ends three lines in `;`, `{` or `}`).
pub fn looks_like_code(text: &str) -> bool {
    let fenced = CODE_FENCE.as_ref().is_some_and(|r| r.is_match(text));
    fenced
        || CODE_LINE
            .as_ref()
            .is_some_and(|r| r.find_iter(text).take(CODE_LINES_MIN).count() >= CODE_LINES_MIN)
}

/// Mathematical notation: inline LaTeX (`$...$`, `\(...\)`), LaTeX commands (`\frac`, `\sqrt`,
/// `\int`, ...), or an arithmetic expression with at least two operators (`3x + 4 = 10`).
static MATH: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"\$[^$\n]{1,400}\$|\\\(|\\\[|\\(?:frac|dfrac|sqrt|int|sum|prod|lim|cdot|times|div|leq?|geq?|neq|pi|theta|alpha|beta|infty|binom|log|sin|cos|tan)\b|\d\s*[a-z]?\s*[-+*/^×÷]\s*\(?\d*[a-z]?\)?\s*[+*/^=×÷]\s*\d|[a-z]\s*\^\s*\d",
    )
    .ok()
});

/// Whether `text` contains mathematics (see the pattern's doc above).
pub fn looks_like_math(text: &str) -> bool {
    MATH.as_ref().is_some_and(|r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, class: &str, when: Conditions) -> Rule {
        Rule {
            name: name.into(),
            class: class.into(),
            when,
        }
    }

    fn classifier() -> Classifier {
        Classifier {
            encoding: DEFAULT_ENCODING,
            rules: vec![
                rule(
                    "code",
                    "code",
                    Conditions {
                        code: Some(true),
                        ..Default::default()
                    },
                ),
                rule(
                    "summary",
                    "summarize",
                    Conditions {
                        keywords: Some(
                            Pattern::keywords(&["summarize".into(), "tl;dr".into()]).unwrap(),
                        ),
                        not_regex: Some(Pattern::new(r"(?i)do not summarize").unwrap()),
                        ..Default::default()
                    },
                ),
                rule(
                    "long",
                    "summarize",
                    Conditions {
                        min_tokens: Some(100),
                        ..Default::default()
                    },
                ),
            ],
            default_class: "qa".into(),
        }
    }

    #[test]
    fn the_detector_patterns_compile() {
        assert!(CODE_FENCE.is_some() && CODE_LINE.is_some() && MATH.is_some());
    }

    #[test]
    fn first_matching_rule_wins_and_the_default_catches_the_rest() {
        let c = classifier();
        let all = |_: &str| true;
        let fenced = "Fix this:\n```\nlet x = 1\n```";
        assert_eq!(
            c.classify(fenced, || 0, all),
            Some(Classified {
                class: "code",
                rule: "code"
            })
        );
        let ask = "Please SUMMARIZE the memo below.";
        assert_eq!(c.classify(ask, || 0, all).map(|x| x.rule), Some("summary"));
        // not_regex vetoes the keyword rule; the token rule then decides by size.
        let veto = "Do not summarize; answer directly.";
        assert_eq!(
            c.classify(veto, || 5, all).map(|x| x.rule),
            Some(DEFAULT_RULE)
        );
        assert_eq!(c.classify(veto, || 500, all).map(|x| x.rule), Some("long"));
        // Whole words only: "summarized" is not the keyword.
        assert_eq!(
            c.classify("It summarized well.", || 1, all)
                .map(|x| x.class),
            Some("qa")
        );
    }

    #[test]
    fn classes_the_caller_may_not_use_are_skipped() {
        let c = classifier();
        let fenced = "```\nfn main() {}\n```";
        let no_code = |k: &str| k != "code";
        assert_eq!(
            c.classify(fenced, || 1, no_code).map(|x| x.class),
            Some("qa")
        );
        let only_code = |k: &str| k == "code";
        assert_eq!(c.classify("What is 2FA?", || 1, only_code), None);
    }

    #[test]
    fn tokens_are_counted_only_when_a_rule_reached_needs_them() {
        let c = classifier();
        let mut calls = 0;
        let _ = c.classify(
            "```\ncode\n```",
            || {
                calls += 1;
                1
            },
            |_| true,
        );
        assert_eq!(calls, 0);
    }

    #[test]
    fn detectors_tell_code_and_math_from_prose() {
        assert!(looks_like_code("def f(x):\n    y = x * 2\n    return y\n"));
        assert!(!looks_like_code("def f(x):\nA definition; nothing more.\n"));
        assert!(looks_like_code(
            "int main() {\n  puts(\"hi\");\n  return 0;\n}"
        ));
        assert!(!looks_like_code(
            "What is the capital of France? Paris, I think."
        ));
        assert!(looks_like_math("Let $F_1$ be a focus"));
        assert!(looks_like_math(r"Compute \frac{1}{2} of it"));
        assert!(looks_like_math("Solve 3x + 4 = 10"));
        assert!(!looks_like_math("Who wrote Hamlet in 1600?"));
        assert!(!looks_like_math("Call me at 555-1234, not 555-9876."));
        assert!(!looks_like_math("Due 2026-11-29, room 4-12."));
    }
}
