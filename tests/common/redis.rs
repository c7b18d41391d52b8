//! A throwaway `redis-server` (found on PATH; `scripts/test.sh` installs it) on a free loopback
//! port, killed when dropped; it can be paused (SIGSTOP) to simulate an unreachable store.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one without persistence and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test.sh installs it)");
        let r = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while r.ping().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "redis did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ping(&self) -> redis::RedisResult<String> {
        let mut con = redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("PING").query_async(&mut con).await
    }

    /// Pauses (`true`, SIGSTOP) or resumes (SIGCONT) the server.
    pub fn pause(&self, paused: bool) {
        let sig = if paused { "-STOP" } else { "-CONT" };
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
