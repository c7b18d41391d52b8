//! The integration suite as one test binary. Every file here links the whole crate and its
//! dependencies; as separate binaries they cost a link each and about 80 MB of disk each even
//! with line tables only (2.7 GB for a clean build), so they are modules of this one. `cargo test --test suite cluster::` runs
//! one file's tests; the tests of all files share the harness's threads as tests of one file did.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod binary;
mod breakers;
mod budget_clock;
mod budgets;
mod cache_shared;
mod cluster;
mod cluster_spend;
mod front_door;
mod grpc_service;
mod guard;
mod health_cli;
mod integrity;
mod load_tool;
mod metrics;
mod objective;
mod persistence;
mod prompt_routing;
mod python_client;
mod reflection_health;
mod response_cache;
mod self_contained;
mod shadow_ab;
mod sim_cli;
mod sim_offpolicy;
mod sim_policies;
mod spend;
mod stats_cli;
