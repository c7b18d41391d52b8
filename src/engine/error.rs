//! Why the engine refuses a request: one error enum, mapped to gRPC status codes at the edge.

/// Why a request was refused. Each variant maps to one gRPC status code at the transport edge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
}

pub(super) fn invalid(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument {
        field: field.to_string(),
        message: message.into(),
    }
}
