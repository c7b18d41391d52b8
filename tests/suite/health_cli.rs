//! `switchyard health` against the real binary (exit 0 only for SERVING, a clear line otherwise)
//! and `switchyard auth hash-key`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::cli;
use common::served::ServedBinary;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn health_exits_zero_only_when_serving() {
    let served = ServedBinary::start();
    for service in ["", "switchyard.v1.Route"] {
        let o = cli::run(["health", "--addr", &served.addr, "--service", service]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        assert!(out.trim_end().ends_with(": SERVING"), "{out}");
    }
    let o = cli::run(["health", "--addr", &served.addr, "--service", "no.Such"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("unknown service `no.Such`"), "{err}");
}

#[test]
fn health_fails_clearly_when_nothing_listens_or_the_address_is_bad() {
    // A port that was free a moment ago: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let o = cli::run(["health", "--addr", &addr]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    let o = cli::run(["health", "--addr", "127.0.0.1"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no port"), "{err}");
}

#[test]
fn hash_key_prints_the_sha256_of_stdin_or_key() {
    // FIPS 180-2 test vector: SHA-256("abc").
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let mut child = cli::switchyard()
        .args(["auth", "hash-key"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), ABC);

    let o = cli::run(["auth", "hash-key", "--key", "abc"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), ABC);

    let o = cli::run(["auth", "hash-key", "--key", "  "]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty key"));
}
