//! What Route reads from a request's prompt: its size in tokens ([`tokens`]) and the task class it
//! belongs to ([`classify`]). Pure functions over text: no I/O, no state, nothing kept. The prompt
//! itself is never logged or persisted by these modules or by the engine that calls them; only
//! the counts and the matching rule's name leave them.

pub mod classify;
pub mod cli;
pub mod tokens;

use crate::engine::ChatMessage;

/// Longest prompt Route accepts, in bytes (the plain-text prompt and every message's role and
/// content together): 1 MiB, about 250,000 tokens of English, above the largest context window a
/// configured model offers today, and small enough that counting it stays a few milliseconds.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;

/// A request's prompt: the plain-text part and the chat messages (either may be empty).
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    pub text: &'a str,
    pub messages: &'a [ChatMessage],
}

impl<'a> Prompt<'a> {
    pub fn new(text: &'a str, messages: &'a [ChatMessage]) -> Self {
        Prompt { text, messages }
    }

    /// True when the request sent any prompt text.
    pub fn is_present(&self) -> bool {
        !self.text.is_empty() || self.messages.iter().any(|m| !m.content.is_empty())
    }

    /// Size in bytes, as bounded by [`MAX_PROMPT_BYTES`].
    pub fn len_bytes(&self) -> usize {
        self.text.len()
            + self
                .messages
                .iter()
                .map(|m| m.role.len() + m.content.len())
                .sum::<usize>()
    }

    /// The text the classifier reads: the plain prompt, then each message's content, one per
    /// line (roles left out: "system" and "user" say nothing about the task).
    pub fn joined(&self) -> std::borrow::Cow<'a, str> {
        if self.messages.is_empty() {
            return std::borrow::Cow::Borrowed(self.text);
        }
        let mut s = String::with_capacity(self.len_bytes() + self.messages.len());
        s.push_str(self.text);
        for m in self.messages {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(&m.content);
        }
        std::borrow::Cow::Owned(s)
    }
}
