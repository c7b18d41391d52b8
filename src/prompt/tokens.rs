//! Token counting: how many input tokens a prompt costs under a model's tokenizer, so that the
//! expected cost and the budget reservation of a Route use the prompt's real size rather than
//! the class's typical one.
//!
//! OpenAI's encodings are counted exactly with tiktoken-rs (`o200k_base` for GPT-4o, GPT-4.1,
//! GPT-5 and the o-series; `cl100k_base` for GPT-4 and GPT-3.5). Other providers do not publish
//! their tokenizers as a library, so their models use a documented estimate, OpenAI's rule of
//! thumb of one token per four characters of English text ([`ESTIMATE_CHARS_PER_TOKEN`]), unless
//! the model's `tokenizer` key in the config names one of the encodings.
//!
//! Chat messages are counted as OpenAI's cookbook ("How to count tokens with tiktoken") counts a
//! chat completion's prompt: every message costs [`TOKENS_PER_MESSAGE`] tokens of framing plus its
//! role and content, and the reply is primed with [`TOKENS_REPLY_PRIMING`] more.
//!
//! Counts are computed and returned; the prompt is not kept.

use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer as Encoding};

use super::Prompt;

/// Characters per token of the estimate used for models without a known tokenizer (OpenAI's
/// published rule of thumb for English text; code and non-Latin scripts run denser, so the
/// estimate is rounded up).
pub const ESTIMATE_CHARS_PER_TOKEN: usize = 4;

/// Framing tokens per chat message (`<|start|>{role}\n{content}<|end|>\n`), per OpenAI's cookbook.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens that prime the assistant's reply in a chat prompt, per OpenAI's cookbook.
pub const TOKENS_REPLY_PRIMING: u64 = 3;

/// How a model's input is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tokenizer {
    /// OpenAI's `o200k_base` (GPT-4o, GPT-4.1, GPT-5, o1/o3/o4).
    O200kBase,
    /// OpenAI's `cl100k_base` (GPT-4, GPT-3.5-turbo, text-embedding-3).
    Cl100kBase,
    /// One token per [`ESTIMATE_CHARS_PER_TOKEN`] characters, rounded up.
    Estimate,
}

impl Tokenizer {
    /// Every tokenizer, for messages listing the choices.
    pub const ALL: [Tokenizer; 3] = [
        Tokenizer::O200kBase,
        Tokenizer::Cl100kBase,
        Tokenizer::Estimate,
    ];

    /// The config name: `o200k_base`, `cl100k_base` or `estimate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tokenizer::O200kBase => "o200k_base",
            Tokenizer::Cl100kBase => "cl100k_base",
            Tokenizer::Estimate => "estimate",
        }
    }

    pub fn parse(name: &str) -> Option<Tokenizer> {
        Tokenizer::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The tokenizer of a model by its id, as OpenAI's tiktoken maps model names to encodings
    /// (`gpt-4o-mini` is `o200k_base`, `gpt-4` is `cl100k_base`); any other model is estimated.
    pub fn for_model(model_id: &str) -> Tokenizer {
        match get_tokenizer(model_id) {
            Some(Encoding::O200kBase) => Tokenizer::O200kBase,
            Some(Encoding::Cl100kBase) => Tokenizer::Cl100kBase,
            _ => Tokenizer::Estimate,
        }
    }

    /// Tokens of `text` alone. Special-token strings such as `<|endoftext|>` count as the plain
    /// text they are, as a provider counts a user's prompt.
    pub fn count_text(self, text: &str) -> u64 {
        let n = match self {
            Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton()
                .encode_ordinary(text)
                .len(),
            Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton()
                .encode_ordinary(text)
                .len(),
            Tokenizer::Estimate => text.chars().count().div_ceil(ESTIMATE_CHARS_PER_TOKEN),
        };
        n as u64
    }

    /// Tokens of a whole prompt: the plain text, then the chat messages with their framing.
    pub fn count(self, prompt: Prompt<'_>) -> u64 {
        let mut n = if prompt.text.is_empty() {
            0
        } else {
            self.count_text(prompt.text)
        };
        if !prompt.messages.is_empty() {
            for m in prompt.messages {
                n += TOKENS_PER_MESSAGE + self.count_text(&m.role) + self.count_text(&m.content);
            }
            n += TOKENS_REPLY_PRIMING;
        }
        n
    }
}

/// One prompt's size under every [`Tokenizer`]: counted once, before the router takes its lock,
/// then read per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromptTokens {
    pub o200k_base: u64,
    pub cl100k_base: u64,
    pub estimate: u64,
}

impl PromptTokens {
    pub fn count(prompt: Prompt<'_>) -> PromptTokens {
        PromptTokens {
            o200k_base: Tokenizer::O200kBase.count(prompt),
            cl100k_base: Tokenizer::Cl100kBase.count(prompt),
            estimate: Tokenizer::Estimate.count(prompt),
        }
    }

    pub fn get(&self, t: Tokenizer) -> u64 {
        match t {
            Tokenizer::O200kBase => self.o200k_base,
            Tokenizer::Cl100kBase => self.cl100k_base,
            Tokenizer::Estimate => self.estimate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ChatMessage;

    #[test]
    fn model_names_map_to_openai_encodings_and_others_are_estimated() {
        assert_eq!(Tokenizer::for_model("gpt-4o-mini"), Tokenizer::O200kBase);
        assert_eq!(Tokenizer::for_model("gpt-4.1"), Tokenizer::O200kBase);
        assert_eq!(Tokenizer::for_model("gpt-4"), Tokenizer::Cl100kBase);
        assert_eq!(Tokenizer::for_model("gpt-3.5-turbo"), Tokenizer::Cl100kBase);
        assert_eq!(
            Tokenizer::for_model("claude-3-haiku-20240307"),
            Tokenizer::Estimate
        );
        for t in Tokenizer::ALL {
            assert_eq!(Tokenizer::parse(t.as_str()), Some(t));
        }
        assert_eq!(Tokenizer::parse("p50k"), None);
    }

    #[test]
    fn the_estimate_rounds_characters_up_to_tokens() {
        assert_eq!(Tokenizer::Estimate.count_text(""), 0);
        assert_eq!(Tokenizer::Estimate.count_text("abcd"), 1);
        assert_eq!(Tokenizer::Estimate.count_text("abcde"), 2);
        // Characters, not bytes: four CJK characters are one estimated token.
        assert_eq!(Tokenizer::Estimate.count_text("東京大学"), 1);
    }

    #[test]
    fn chat_messages_add_the_cookbook_framing() {
        let messages = vec![
            ChatMessage {
                role: "system".into(),
                content: "You are terse.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "hello world".into(),
            },
        ];
        let t = Tokenizer::Cl100kBase;
        let parts: u64 = messages
            .iter()
            .map(|m| t.count_text(&m.role) + t.count_text(&m.content))
            .sum();
        assert_eq!(
            t.count(Prompt::new("", &messages)),
            parts + 2 * TOKENS_PER_MESSAGE + TOKENS_REPLY_PRIMING
        );
        assert_eq!(t.count(Prompt::new("hello world", &[])), 2);
    }
}
