//! A throwaway `redis-server` (found on PATH; `scripts/test.sh` installs it) on a free loopback
//! port, killed when dropped. It can be paused (SIGSTOP) to simulate an unreachable store, and a
//! durable one (append-only file, fsync on every write) can be killed and started again on the
//! same port without losing an acknowledged write.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it is spawned.
const READY: Duration = Duration::from_secs(60);

pub struct RedisServer {
    child: Child,
    pub port: u16,
    durable: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one without persistence and waits until it answers PING. For every test that
    /// never restarts Redis: under `appendfsync always` an fsync on a loaded machine can stall
    /// Redis past the replicas' `redis_timeout_ms`, an outage (which the outage tests cover) in
    /// the middle of what such a test checks.
    pub async fn start() -> RedisServer {
        Self::start_with(false).await
    }

    /// Starts one whose every acknowledged write is on disk (`appendfsync always`), so
    /// [`RedisServer::restart`] loses nothing.
    pub async fn start_durable() -> RedisServer {
        Self::start_with(true).await
    }

    async fn start_with(durable: bool) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = spawn(port, dir.path(), durable);
        let r = RedisServer {
            child,
            port,
            durable,
            dir,
        };
        r.wait_ready().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new connection (panics when the server does not answer).
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn ping(&self) -> redis::RedisResult<String> {
        let mut con = redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("PING").query_async(&mut con).await
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        while self.ping().await.is_err() {
            assert!(start.elapsed() < READY, "redis did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The keys matching `pattern`; `None` while the server does not answer.
    pub async fn keys(&self, pattern: &str) -> Option<Vec<String>> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut con = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut con)
            .await
            .ok()
    }

    /// Pauses (`true`, SIGSTOP) or resumes (SIGCONT) the server.
    pub fn pause(&self, paused: bool) {
        let sig = if paused { "-STOP" } else { "-CONT" };
        let st = signal(self.child.id(), sig).unwrap();
        assert!(st.success(), "kill {sig}");
    }

    /// SIGKILL; a durable server's append-only file keeps every acknowledged write.
    pub fn stop(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts again on the same port and files, after [`RedisServer::stop`].
    pub async fn resume(&mut self) {
        self.child = spawn(self.port, self.dir.path(), self.durable);
        self.wait_ready().await;
    }

    /// SIGKILL, then start again on the same port and files.
    pub async fn restart(&mut self) {
        self.stop();
        self.resume().await;
    }
}

fn spawn(port: u16, dir: &Path, durable: bool) -> Child {
    let persistence: &[&str] = if durable {
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
    } else {
        &["--appendonly", "no", "--save", ""]
    };
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (scripts/test.sh installs it)")
}

fn signal(pid: u32, sig: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = signal(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
