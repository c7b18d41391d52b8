//! What Route takes from a request's prompt: the task class when the request names none (the
//! `[classifier]` rules, kept to the classes the caller may use), the input tokens when the
//! request gives no count (the prompt counted with each candidate's tokenizer), and the output
//! limit the class governs. No state: the prompt is read and dropped, never logged or stored;
//! the decision keeps only the counts and the rule's name (so they survive a restart with it).
//!
//! The server classifies first ([`Engine::classify`]), then looks the response cache up under the
//! class found, then routes with that class as the request's own and the rule beside it: a
//! request sent without a class is cached, hit and stored like one that names it.

use std::borrow::Cow;

use crate::config::TaskClassConfig;
use crate::prompt::tokens::{PromptTokens, Tokenizer};
use crate::prompt::{Prompt, MAX_PROMPT_BYTES};

use super::*;

/// The task class Route decides under and, when the classifier chose it, the rule's name.
pub(super) struct Resolved<'a> {
    pub class: Cow<'a, str>,
    pub classified_by: Option<String>,
}

/// The classifier's choice for a request without a class: the class and the rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub class: String,
    pub rule: String,
}

/// The request's prompt, refused past [`MAX_PROMPT_BYTES`].
pub(super) fn prompt_of(input: &RouteInput) -> Result<Prompt<'_>, EngineError> {
    let prompt = Prompt::new(&input.prompt, &input.messages);
    let len = prompt.len_bytes();
    if len > MAX_PROMPT_BYTES {
        return Err(invalid(
            "prompt",
            format!(
                "is {len} bytes (text and messages together); at most {MAX_PROMPT_BYTES} bytes \
                 are accepted: send a shorter prompt, or omit it and give input_tokens"
            ),
        ));
    }
    Ok(prompt)
}

/// The prompt's token counts when Route will need them (a prompt is present and the request
/// gives no `input_tokens`, or it is to be classified): what the server computes before it
/// takes the engine's lock. `None` otherwise, and for a prompt too large to accept.
pub fn count_prompt(input: &RouteInput) -> Option<PromptTokens> {
    let prompt = prompt_of(input).ok()?;
    let needed = input.input_tokens == 0 || input.task_class.is_empty();
    (prompt.is_present() && needed).then(|| PromptTokens::count(prompt))
}

impl Engine {
    /// The class a request that names none is routed under, chosen from its prompt by the
    /// `[classifier]` rules (among `allowed_classes`): `None` when the request names its class or
    /// sends no prompt. The server calls this before it looks the response cache up, then routes
    /// with `task_class` set to the class and `classified_by` to the rule.
    pub fn classify(&self, input: &RouteInput) -> Result<Option<Classification>, EngineError> {
        if !input.task_class.is_empty() {
            return Ok(None);
        }
        let prompt = prompt_of(input)?;
        let mut counted = Counted::new(prompt, input.prompt_tokens);
        let r = self.resolve_class(input, prompt, &mut counted)?;
        Ok(r.classified_by.map(|rule| Classification {
            class: r.class.into_owned(),
            rule,
        }))
    }

    /// The class the request is routed under: its own (with the rule that chose it when the
    /// server classified it already), or the classifier's choice for a request with a prompt and
    /// no class.
    pub(super) fn resolve_class<'a>(
        &self,
        input: &'a RouteInput,
        prompt: Prompt<'_>,
        counted: &mut Counted<'_>,
    ) -> Result<Resolved<'a>, EngineError> {
        if !input.task_class.is_empty() || !prompt.is_present() {
            return Ok(Resolved {
                class: Cow::Borrowed(&input.task_class),
                classified_by: input.classified_by.clone(),
            });
        }
        let Some(classifier) = &self.config.classifier else {
            return Err(invalid(
                "task_class",
                format!(
                    "is required: no [classifier] is configured to classify the prompt; \
                     configured classes: {}",
                    self.class_names()
                ),
            ));
        };
        let allowed = |c: &str| {
            input.allowed_classes.as_ref().is_none_or(|a| a.contains(c))
                && self.config.task_classes.contains_key(c)
        };
        let text = prompt.joined();
        let encoding = classifier.encoding;
        let found = classifier.classify(&text, || counted.get().get(encoding), allowed);
        match found {
            Some(c) => Ok(Resolved {
                class: Cow::Owned(c.class.to_string()),
                classified_by: Some(c.rule.to_string()),
            }),
            None => Err(invalid(
                "task_class",
                "is required: the prompt matched no task class this key may use; send one of \
                 the key's task classes",
            )),
        }
    }
}

/// The prompt's counts, computed at most once per Route (when the server did not send them).
pub(super) struct Counted<'a> {
    prompt: Prompt<'a>,
    tokens: Option<PromptTokens>,
}

impl<'a> Counted<'a> {
    pub fn new(prompt: Prompt<'a>, given: Option<PromptTokens>) -> Self {
        Counted {
            prompt,
            tokens: given,
        }
    }

    pub fn get(&mut self) -> PromptTokens {
        *self
            .tokens
            .get_or_insert_with(|| PromptTokens::count(self.prompt))
    }

    /// The input tokens a decision assumes from the prompt: the largest count among the
    /// tokenizers of the requested models, so that no candidate's cost, nor the reservation, is
    /// underestimated. `None` without a prompt.
    pub fn input_tokens(&mut self, tokenizers: impl IntoIterator<Item = Tokenizer>) -> Option<u64> {
        if !self.prompt.is_present() {
            return None;
        }
        let counts = self.get();
        tokenizers.into_iter().map(|t| counts.get(t)).max()
    }
}

/// The output tokens a decision assumes and the limit it returns: under the class's
/// governance, the request's ask capped (or the default without one), returned for the caller
/// to apply; without governance, the request's ask, else the class's typical size (no limit
/// returned).
pub(super) fn output_tokens(class: &TaskClassConfig, asked: Option<u64>) -> (u64, Option<u64>) {
    match class.output_limit {
        Some(limit) => {
            let v = limit.govern(asked);
            (v, Some(v))
        }
        None => (asked.unwrap_or(class.typical_output_tokens), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// Classes `short` (the default) and `long` (40 tokens or more in `encoding`).
    fn engine(encoding: &str) -> Engine {
        let text = format!(
            "[models.m]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [task_classes.short]\nmodels = [\"m\"]\n[task_classes.long]\nmodels = [\"m\"]\n\
             [classifier]\ndefault = \"short\"\n{encoding}\n\
             [[classifier.rules]]\nname = \"long\"\nclass = \"long\"\nmin_tokens = 40\n"
        );
        Engine::new(Config::from_toml_str(&text, "test").unwrap(), 0)
    }

    #[test]
    fn token_bounds_count_in_the_classifiers_encoding() {
        // " a" is one token in OpenAI's encodings: 40 tokens, 79 characters (20 estimated).
        let prompt = format!("a{}", " a".repeat(39));
        assert_eq!(Tokenizer::O200kBase.count_text(&prompt), 40);
        assert_eq!(Tokenizer::Estimate.count_text(&prompt), 20);
        let input = RouteInput {
            prompt,
            ..RouteInput::default()
        };
        for (encoding, class, rule) in [
            ("", "long", "long"),
            ("encoding = \"cl100k_base\"", "long", "long"),
            ("encoding = \"estimate\"", "short", "default"),
        ] {
            let mut e = engine(encoding);
            let found = e.classify(&input).unwrap();
            let want = Classification {
                class: class.into(),
                rule: rule.into(),
            };
            assert_eq!(found.as_ref(), Some(&want), "{encoding:?}");
            // Route classifies the same way, and takes a class the server classified with its rule.
            let mut rng = SmallRng::seed_from_u64(3);
            let d = e.route(&input, 1, &mut rng).unwrap();
            assert_eq!(
                (d.task_class.as_str(), d.classified_by.as_deref()),
                (class, Some(rule))
            );
            let classified = RouteInput {
                task_class: want.class.clone(),
                classified_by: Some(want.rule.clone()),
                ..input.clone()
            };
            assert_eq!(e.classify(&classified).unwrap(), None);
            let d = e.route(&classified, 2, &mut rng).unwrap();
            assert_eq!(
                (d.task_class.as_str(), d.classified_by.as_deref()),
                (class, Some(rule))
            );
        }
    }
}
