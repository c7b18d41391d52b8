//! Operator command-line tools that talk to a running service over gRPC only, as any client would:
//! nothing here imports the server, so a tool sees exactly what the wire offers.
//!
//! - [`stats`]: `switchyard stats`, a running service's arm statistics and budgets as tables.
//! - [`load`]: `switchyard bench`, a gRPC load tool measuring a running server against tonic's floor.
//! - [`health`]: `switchyard health`, a grpc.health.v1 check for container health checks.
//! - [`spend_report`]: `switchyard report spend`, spend from the rollup (GetSpend, or offline from
//!   a data dir).
//! - [`ab`]: `switchyard report ab`, an experiment's A/B report, offline from a data dir or over
//!   gRPC (the one tool that may also read a data dir, like `state`).
//! - [`client`]: what the tools share: the service's address as a gRPC endpoint.

pub mod ab;
pub mod client;
pub mod health;
pub mod load;
pub mod spend_report;
pub mod stats;
