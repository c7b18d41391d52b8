//! The real `switchyard` binary serving on a free loopback port, for tests that drive it from
//! another process (the Python client, `switchyard health`). Killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct ServedBinary {
    pub addr: String,
    /// The `/metrics` URL, when started with `--metrics-listen`.
    pub metrics: Option<String>,
    child: Child,
    _data: Option<tempfile::TempDir>,
}

impl ServedBinary {
    /// `switchyard serve` on the built-in default config, 127.0.0.1 port 0, a fresh data dir;
    /// returns once it printed its `listening on ADDR` line.
    pub fn start() -> ServedBinary {
        let data = tempfile::tempdir().unwrap();
        let mut served = Self::start_in(data.path());
        served._data = Some(data);
        served
    }

    /// `switchyard serve` on the built-in default config with the caller's data dir `data` (for
    /// restarts on the same state).
    pub fn start_in(data: &std::path::Path) -> ServedBinary {
        Self::start_with(data, &[])
    }

    /// `switchyard serve` on 127.0.0.1 port 0 with data dir `data` and `extra` arguments (a
    /// `--config`, `--metrics-listen`); with `--metrics-listen`, `metrics` is the scrape URL.
    pub fn start_with(data: &std::path::Path, extra: &[&str]) -> ServedBinary {
        Self::start_env(data, extra, &[])
    }

    /// [`ServedBinary::start_with`] with environment variables `env` set for the process (the
    /// test clock's file).
    pub fn start_env(
        data: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> ServedBinary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let metrics = extra.contains(&"--metrics-listen").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("metrics on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .to_string()
        });
        ServedBinary {
            addr,
            metrics,
            child,
            _data: None,
        }
    }
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
