//! The real `switchyard` binary serving on a free loopback port, for tests that drive it from
//! another process (the Python client, `switchyard health`) or that stop it the way an operator
//! or a crash does (SIGTERM, SIGKILL). Killed when dropped.
//!
//! [`ServedBinary::builder`] says how to start it (config, data dir or none, more arguments,
//! environment, stderr kept or logged to a file); [`ServeBuilder::start`] returns once the process
//! printed its `listening on ADDR` line ([`ServeBuilder::try_start`] also when it may refuse to
//! start), so every test starts, waits and stops the binary the same way.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

pub struct ServedBinary {
    pub addr: String,
    /// The `/metrics` URL, when started with `--metrics-listen`.
    pub metrics: Option<String>,
    child: Child,
    _data: Option<tempfile::TempDir>,
}

/// Where `serve` keeps its state.
enum DataDir {
    /// A temporary dir owned by the [`ServedBinary`], gone when it is dropped.
    Fresh,
    /// The caller's dir, which outlives the process (restarts, the offline tools).
    At(PathBuf),
    /// No `--data-dir` at all: the config's `durability = "memory"` runs without one.
    Memory,
}

/// Where the process's stderr (its log) goes.
enum Stderr {
    Discard,
    /// A pipe, read by [`ServedBinary::stderr`] or into a refused start's [`Output`].
    Capture,
    /// Appended to this file.
    Log(PathBuf),
}

/// How to start `switchyard serve` on 127.0.0.1 port 0; from [`ServedBinary::builder`].
#[must_use]
pub struct ServeBuilder {
    data: DataDir,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stderr: Stderr,
}

impl ServeBuilder {
    /// Serve on the caller's data dir `data` instead of a fresh temporary one (for restarts on the
    /// same state, or the offline tools after the process is gone).
    pub fn data_dir(mut self, data: &Path) -> Self {
        self.data = DataDir::At(data.to_path_buf());
        self
    }

    /// Start without `--data-dir` (a config with `durability = "memory"`).
    pub fn memory(mut self) -> Self {
        self.data = DataDir::Memory;
        self
    }

    /// `--config path` instead of the built-in default config.
    pub fn config(self, path: &Path) -> Self {
        self.args([OsStr::new("--config"), path.as_os_str()])
    }

    /// More arguments after the others (`--metrics-listen 127.0.0.1:0`, `--otlp-endpoint URL`);
    /// with `--metrics-listen`, [`ServedBinary::metrics`] is the scrape URL.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable for the process (the test clock's file, `RUST_LOG`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Keep the process's stderr for [`ServedBinary::stderr`] (or a refused start's [`Output`])
    /// instead of discarding it. The pipe is read only then, so a test logs little (one
    /// `RUST_LOG=info` start, not a load run; [`ServeBuilder::log_to`] for those).
    pub fn capture_stderr(mut self) -> Self {
        self.stderr = Stderr::Capture;
        self
    }

    /// Append the process's stderr to the file `log` (created when missing) instead of discarding
    /// it: for a test that reads the log after the process is gone or across restarts (each start
    /// appends), or that logs more than an unread pipe holds (`RUST_LOG=debug` under load).
    pub fn log_to(mut self, log: &Path) -> Self {
        self.stderr = Stderr::Log(log.to_path_buf());
        self
    }

    /// The command line; a fresh data dir is created here and returned to be kept alive.
    fn command(&self) -> (Command, Option<tempfile::TempDir>) {
        let mut cmd = super::cli::switchyard();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        let fresh = match &self.data {
            DataDir::Fresh => {
                let dir = tempfile::tempdir().unwrap();
                cmd.arg("--data-dir").arg(dir.path());
                Some(dir)
            }
            DataDir::At(path) => {
                cmd.arg("--data-dir").arg(path);
                None
            }
            DataDir::Memory => None,
        };
        cmd.args(&self.args).envs(self.env.iter().cloned());
        (cmd, fresh)
    }

    /// Spawns the process and returns once it printed `listening on ADDR` (and `metrics on URL`
    /// with `--metrics-listen`): by then its data dir is open and restored and the port bound.
    /// Panics when it exits instead (see [`ServeBuilder::try_start`]).
    pub fn start(self) -> ServedBinary {
        self.try_start()
            .unwrap_or_else(|out| panic!("serve exited without serving: {out:?}"))
    }

    /// [`ServeBuilder::start`] for a start that may be refused (a damaged data dir): `Err` with
    /// the exit status and stderr (with [`ServeBuilder::capture_stderr`]) when the process closed
    /// its stdout without a line, which a refused `serve` does by exiting. Any other first line
    /// panics, as it is neither serving nor a refusal.
    pub fn try_start(self) -> Result<ServedBinary, Output> {
        let (mut cmd, data) = self.command();
        let stderr = match &self.stderr {
            Stderr::Discard => Stdio::null(),
            Stderr::Capture => Stdio::piped(),
            Stderr::Log(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap()
                .into(),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            // Reads stderr while waiting, so a long refusal cannot fill the pipe and hang.
            return Err(child.wait_with_output().unwrap());
        }
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let metrics = self.args.iter().any(|a| a == "--metrics-listen").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("metrics on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .to_string()
        });
        Ok(ServedBinary {
            addr,
            metrics,
            child,
            _data: data,
        })
    }

    /// Runs the process to its exit with stdout and stderr captured, for a start that is meant
    /// to be refused (it never serves, so there is nothing to wait for or stop).
    pub fn output(self) -> Output {
        self.command().0.output().unwrap()
    }
}

impl ServedBinary {
    /// How to start `switchyard serve`: by default on the built-in default config with a fresh
    /// data dir, stderr discarded.
    pub fn builder() -> ServeBuilder {
        ServeBuilder {
            data: DataDir::Fresh,
            args: Vec::new(),
            env: Vec::new(),
            stderr: Stderr::Discard,
        }
    }

    /// `switchyard serve` on the built-in default config, 127.0.0.1 port 0, a fresh data dir;
    /// returns once it printed its `listening on ADDR` line.
    pub fn start() -> ServedBinary {
        Self::builder().start()
    }

    /// `switchyard serve` on the built-in default config with the caller's data dir `data` (for
    /// restarts on the same state).
    pub fn start_in(data: &Path) -> ServedBinary {
        Self::builder().data_dir(data).start()
    }

    /// A channel to the server. The port is bound by the time [`ServeBuilder::start`] returns, but
    /// a loaded machine (two cores, replicas under load) can still refuse or time out a connect,
    /// so this tries again every 20 ms for up to a minute before it panics.
    pub async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.addr);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(ch) = Channel::from_shared(url.clone()).unwrap().connect().await {
                return ch;
            }
            assert!(Instant::now() < deadline, "no connection to {url}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status once the process is gone; panics (after a SIGKILL) if it
    /// has not stopped `within`. Polls without blocking the test's runtime: the server's graceful
    /// shutdown waits for the test's open connections, which that runtime drives.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.wait_exit(within).await
    }

    /// [`ServedBinary::terminate`], asserting a clean exit: a graceful shutdown within `within`.
    pub async fn stop(mut self, within: Duration) {
        let status = self.terminate(within).await;
        assert!(status.success(), "exit status {status:?}");
    }

    /// The exit status once the process stops by itself (a server that finds damage after it
    /// started serving stops with an error); panics (after a SIGKILL) if it has not stopped
    /// `within`. Polls like [`ServedBinary::terminate`], for the same reason.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                self.child.kill().unwrap();
                panic!("serve did not stop within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap: a crash, with no chance to flush. The data dir stays (a caller's until
    /// the caller drops it, a fresh one until this is dropped) for a restart or the offline tools.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Everything the process wrote to stderr; started with [`ServeBuilder::capture_stderr`].
    /// Reads to the end, so call it once the process has exited.
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        self.child
            .stderr
            .take()
            .expect("started without capture_stderr")
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
