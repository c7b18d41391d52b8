//! Switchyard: an adaptive LLM router. Other services ask it which model to call for a request of a
//! task class, then report what happened; it learns per (task class, model) how good, slow,
//! reliable and expensive each model is, and routes the next requests accordingly.
//!
//! # Layout
//! - [`breaker`]: pure circuit-breaker state machine per model (time passed in).
//! - [`config`]: TOML configuration, validated into runtime types; the built-in default.
//! - [`policy`]: pure decision maths: posteriors, Thompson sampling, UCB, baselines, decay.
//! - [`budget`]: pure spend ledgers per budget key: reservations, rollover, pacing, alerts.
//! - [`engine`]: the router core (arms, policy, pending decisions); sync, no I/O, time passed in.
//! - [`server`]: the tonic service over the engine, with health, reflection and metrics.
//! - [`store`]: sled persistence of engine state and the event log (schema-versioned).
//! - [`sim`]: the offline simulator: scenarios, traces, off-policy evaluation, tuning, reports.
//! - [`load`]: `switchyard bench`, a gRPC load tool measuring a running server against tonic's floor.
//! - [`stats`]: `switchyard stats`, a running service's arm statistics and budgets as tables.
//! - [`client`]: what those two tools share: the service's address as a gRPC endpoint.
//! - [`proto`]: the generated API types (`proto/switchyard/v1/switchyard.proto`).

pub mod breaker;
pub mod budget;
pub mod client;
pub mod config;
pub mod engine;
pub mod load;
pub mod policy;
pub mod record;
pub mod server;
pub mod sim;
pub mod stats;
pub mod store;
pub mod time;

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
