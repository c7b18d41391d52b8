//! The `switchyard` binary run to its end, as its commands other than `serve` are (`state`,
//! `trace`, `report`, `config`, `health`, `sim`, ...): [`run`] returns what the process wrote
//! and how it exited, [`run_ok`] requires exit 0. [`switchyard`] is the command itself, for the
//! callers that set more (the environment, a spawned server).

use std::ffi::{OsStr, OsString};
use std::process::{Command, Output};

/// The built `switchyard` binary, run from the repository's root (where `cargo test` runs the
/// suite), so that relative paths name the repository's files.
pub fn switchyard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// Runs `switchyard ARGS` to its end and returns its output, whatever its exit status.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    switchyard().args(args).output().unwrap()
}

/// Runs `switchyard ARGS` to its end, asserts it exited 0 (the failure names the arguments and
/// shows stderr) and returns its stdout.
pub fn run_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = run(&args);
    assert!(
        out.status.success(),
        "switchyard {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
