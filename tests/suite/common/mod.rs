//! Test support: the real server on 127.0.0.1:0 in this process, and a real tonic client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod redis;
pub mod served;
pub mod webhook;

use std::net::SocketAddr;

use switchyard::config::Config;
use switchyard::proto::route_client::RouteClient;
use switchyard::server::{self, ServeError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts the service with `config` on a free loopback port.
    pub async fn start(config: Config) -> TestServer {
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(config, listener, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Starts the service with `config` and a Prometheus endpoint, both on free loopback ports;
    /// returns the server and the endpoint's `http://ADDR/metrics` URL.
    pub async fn start_with_metrics(config: Config) -> (TestServer, String) {
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let metrics = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let options = server::ServeOptions {
            store: None,
            metrics: Some(metrics),
            ..Default::default()
        };
        let handle = tokio::spawn(server::serve_with(config, options, listener, async {
            let _ = rx.await;
        }));
        let server = TestServer {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        (server, url)
    }

    pub async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(ch) = Channel::from_shared(url.clone()).unwrap().connect().await {
                return ch;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server at {url} did not accept connections");
    }

    pub async fn client(&self) -> RouteClient<Channel> {
        RouteClient::new(self.channel().await)
    }

    /// Graceful shutdown; the serve future must end cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

/// A config of one class "bench" over models `m0..` with equal prices and priors unless given.
pub struct ModelSpec {
    pub id: &'static str,
    pub provider: &'static str,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub latency_ms: f64,
    pub quality: f64,
}

pub fn config(models: &[ModelSpec], class_extra: &str, policy: &str) -> Config {
    let mut text = format!("[policy]\n{policy}\nseed = 7\n");
    for m in models {
        text.push_str(&format!(
            "[models.\"{}\"]\nprovider = \"{}\"\ninput_usd_per_mtok = {}\noutput_usd_per_mtok = {}\nlatency_ms = {}\nlatency_p95_ms = {}\nquality = {}\n",
            m.id,
            m.provider,
            m.input_usd_per_mtok,
            m.output_usd_per_mtok,
            m.latency_ms,
            m.latency_ms * 2.0,
            m.quality
        ));
    }
    let ids: Vec<String> = models.iter().map(|m| format!("\"{}\"", m.id)).collect();
    text.push_str(&format!(
        "[task_classes.bench]\nmodels = [{}]\ntypical_input_tokens = 500\ntypical_output_tokens = 500\n{class_extra}\n",
        ids.join(", ")
    ));
    Config::from_toml_str(&text, "test config").unwrap()
}

pub fn spec(id: &'static str, provider: &'static str) -> ModelSpec {
    ModelSpec {
        id,
        provider,
        input_usd_per_mtok: 1.0,
        output_usd_per_mtok: 2.0,
        latency_ms: 500.0,
        quality: 0.5,
    }
}

/// Waits until nothing holds sled's lock on `data` (sled's background threads may hold it a moment
/// after the last handle is dropped), so a server started next does not find it held.
pub fn wait_sled_unlocked(data: &std::path::Path) {
    use fs2::FileExt;
    let file = std::fs::File::open(data.join("db")).unwrap();
    let start = std::time::Instant::now();
    while file.try_lock_exclusive().is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "sled's lock on {} was never released",
            data.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    FileExt::unlock(&file).unwrap();
}
