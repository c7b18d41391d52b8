//! Operator command-line tools that talk to a running service over gRPC only, as any client would:
//! nothing here imports the server, so a tool sees exactly what the wire offers.
//!
//! - [`stats`]: `switchyard stats`, a running service's arm statistics and budgets as tables.
//! - [`load`]: `switchyard bench`, a gRPC load tool measuring a running server against tonic's floor.
//! - [`client`]: what the tools share: the service's address as a gRPC endpoint.

pub mod client;
pub mod load;
pub mod stats;
