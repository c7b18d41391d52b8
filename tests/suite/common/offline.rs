//! The `switchyard` binary's offline subcommands (`state`, `trace`, `report`), run to their end:
//! [`offline`] returns what the process wrote and how it exited, [`offline_ok`] requires exit 0.

use std::ffi::{OsStr, OsString};
use std::process::{Command, Output};

/// Runs `switchyard ARGS` to its end and returns its output, whatever its exit status.
pub fn offline<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `switchyard ARGS` to its end, asserts it exited 0 (the failure names the arguments and
/// shows stderr) and returns its stdout.
pub fn offline_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = offline(&args);
    assert!(
        out.status.success(),
        "switchyard {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
