//! The Python client (clients/python) against the real binary: its checked-in generated code is
//! what grpcio-tools makes of today's proto, its example routes, calls a stand-in model and
//! reports, and its unittest suite passes. Python and the pinned packages come from
//! `scripts/test.sh` (SWITCHYARD_PYTHON); without them these tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::served::ServedBinary;
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::GetArmStatsRequest;

const GENERATED: [&str; 3] = [
    "switchyard/v1/switchyard_pb2.py",
    "switchyard/v1/switchyard_pb2.pyi",
    "switchyard/v1/switchyard_pb2_grpc.py",
];

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// SWITCHYARD_PYTHON, else the venv scripts/test.sh makes, else python3; it must import the
/// pinned packages.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-venv/bin/python");
    let python = std::env::var_os("SWITCHYARD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if venv.exists() {
                venv
            } else {
                PathBuf::from("python3")
            }
        });
    let check = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools, google.protobuf"])
        .output();
    match check {
        Ok(o) if o.status.success() => python,
        other => panic!(
            "{} cannot import grpcio and grpcio-tools ({other:?}); run `bash scripts/test.sh`, \
             which installs clients/python/requirements.txt, or set SWITCHYARD_PYTHON",
            python.display()
        ),
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn checked_in_generated_code_matches_the_proto() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(client_dir().join("generate.sh"))
        .arg(out.path())
        .env("PYTHON", python())
        .output()
        .unwrap();
    assert!(o.status.success(), "generate.sh failed: {}", show(&o));
    for file in GENERATED {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let checked_in = std::fs::read_to_string(client_dir().join(file)).unwrap();
        assert!(
            fresh == checked_in,
            "clients/python/{file} is stale: run clients/python/generate.sh and commit the result"
        );
    }
}

/// A CA, a `localhost` server certificate signed by it and an unrelated CA, made with the
/// openssl command.
fn make_certs(dir: &Path) {
    let run = |command: &str| {
        let args: Vec<&str> = command.split_whitespace().collect();
        let o = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (scripts/test.sh installs it)");
        assert!(o.status.success(), "openssl {command}: {}", show(&o));
    };
    for ca in ["ca", "other-ca"] {
        run(&format!(
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={ca} -keyout {ca}.key -out {ca}.pem"
        ));
    }
    run("req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr");
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    run(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile ext.cnf -out server.pem",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_routes_calls_a_stand_in_model_and_reports() {
    let python = python();
    let served = ServedBinary::start();
    let o = Command::new(&python)
        .arg(client_dir().join("examples/route_and_report.py"))
        .arg(&served.addr)
        .output()
        .unwrap();
    assert!(o.status.success(), "example failed: {}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let model = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reported SUCCESS for "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no report line: {}", show(&o)))
        .to_string();

    // The service saw the feedback: the model's arm has one success with the example's quality.
    let mut client = RouteClient::connect(format!("http://{}", served.addr))
        .await
        .unwrap();
    let arms = client
        .get_arm_stats(GetArmStatsRequest {
            task_class: "qa".into(),
            model: model.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .arms;
    assert_eq!(arms.len(), 1, "{arms:?}");
    assert_eq!((arms[0].pulls, arms[0].successes), (1, 1), "{:?}", arms[0]);
    assert_eq!(arms[0].quality_reports, 1, "{:?}", arms[0]);
}

#[test]
fn wrapper_unit_tests_pass_against_the_binary() {
    let python = python();
    let served = ServedBinary::start();
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let o = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(client_dir().join("tests"))
        .arg("-t")
        .arg(client_dir())
        .env("SWITCHYARD_ADDR", &served.addr)
        .env("SWITCHYARD_TEST_CERTS", certs.path())
        .output()
        .unwrap();
    let report = show(&o);
    assert!(o.status.success(), "python tests failed: {report}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("skipped"),
        "a python test skipped: {report}"
    );
    let ran: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no 'Ran N tests' line: {report}"));
    assert!(ran >= 9, "only {ran} python tests ran: {report}");
}
