//! Switchyard: an adaptive LLM router. Other services ask it which model to call for a request of a
//! task class, then report what happened; it learns per (task class, model) how good, slow,
//! reliable and expensive each model is, and routes the next requests accordingly.
//!
//! # Layout
//! - [`breaker`]: pure circuit-breaker state machine per model (time passed in).
//! - [`config`]: TOML configuration, validated into runtime types; the built-in default.
//! - [`policy`]: pure decision maths: posteriors, Thompson sampling, UCB, baselines, decay.
//! - [`cache`]: the response cache (exact and semantic), in memory per process; pure.
//! - [`budget`]: pure spend ledgers per budget key: reservations, rollover, pacing, alerts.
//! - [`engine`]: the router core (arms, policy, pending decisions); sync, no I/O, time passed in.
//! - [`server`]: the tonic service over the engine, with health, reflection and metrics.
//! - [`store`]: sled persistence of engine state and the event log (schema-versioned).
//! - [`spend`]: pure spend accounting: tags, the persisted per-day spend rollup and its reports,
//!   cost anomaly detection per budget key and model.
//! - [`sim`]: the offline simulator: scenarios, traces, off-policy evaluation, tuning, reports.
//! - [`tools`]: the command-line tools that only talk gRPC: `switchyard stats` (arm statistics and
//!   budgets as tables), `switchyard bench` (a load tool measuring a running server against
//!   tonic's floor) and the address parsing they share.
//! - [`ab_report`]: the A/B report of an experiment (control vs router) from logged decisions.
//! - [`interval`]: means with 95% intervals (Welford, Student's t, Welch) for paired shadow
//!   comparisons and A/B reports.
//! - [`grpc_code`]: gRPC status codes by name, for the server's metrics and the tools' reports.
//! - [`logging`]: the one tracing setup every subcommand uses.
//! - [`time`]: Unix-ms instants rendered as RFC 3339 for messages.
//! - [`validation`]: the typed error a settings type's `validate` returns (field and message).
//! - [`prompt`]: pure prompt reading: token counts per tokenizer and the rule-based classifier.
//! - [`auth`]: API keys (stored as SHA-256 hashes), roles per RPC and tenant scopes; pure checks.
//! - [`proto`]: the generated API types (`proto/switchyard/v1/switchyard.proto`).

pub mod ab_report;
pub mod auth;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod grpc_code;
pub mod interval;
pub mod logging;
pub mod policy;
pub mod prompt;
pub mod record;
pub mod server;
pub mod sim;
pub mod spend;
pub mod store;
pub mod time;
pub mod tools;
pub mod validation;

/// Generated protobuf and gRPC types for `switchyard.v1`.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("switchyard.v1");

    /// Encoded descriptor set of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("switchyard_descriptor");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_names_the_service() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<_> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        assert_eq!(services, vec!["Route".to_string()]);
    }
}
