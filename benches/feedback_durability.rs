//! Feedback throughput over real gRPC on 127.0.0.1 with the sled store, in each durability mode:
//! 32 concurrent clients, each looping Route + Feedback for a fixed count (bounded, loopback only).
//! `cargo bench --bench feedback_durability` measures; under `cargo test` it runs a tiny smoke pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use switchyard::config::{Config, Durability};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{FeedbackRequest, Outcome, RouteRequest};
use switchyard::server;
use switchyard::store::Store;

const CLIENTS: usize = 32;

async fn run(durability: Durability, pairs_per_client: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::builtin().unwrap();
    config.storage.durability = durability;
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server::serve_with_store(
        config,
        Some(store),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    let url = format!("http://{addr}");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = loop {
                if let Ok(c) = RouteClient::connect(url.clone()).await {
                    break c;
                }
            };
            for _ in 0..pairs_per_client {
                let d = c
                    .route(RouteRequest {
                        task_class: "qa".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                c.feedback(FeedbackRequest {
                    decision_id: d.decision_id,
                    outcome: Outcome::Success as i32,
                    latency_ms: Some(800.0),
                    quality: Some(0.8),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
    (CLIENTS * pairs_per_client) as f64 / secs
}

fn main() {
    let measure = std::env::args().any(|a| a == "--bench");
    let pairs = if measure { 200 } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, mode) in [
        ("sync", Durability::Sync),
        ("periodic", Durability::Periodic),
    ] {
        let rate = rt.block_on(run(mode, pairs));
        println!(
            "durability {name:8} {CLIENTS} clients x {pairs} Route+Feedback pairs: {rate:.0} pairs/s"
        );
    }
}
