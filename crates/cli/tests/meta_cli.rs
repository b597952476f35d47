//! What the binary says about itself, through the real binary: `podiam version`, `--version`,
//! `podiam completion`, and the exit codes of usage errors (64, sysexits' `EX_USAGE`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on unexpected errors"
)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn podiam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podiam"))
        .args(args)
        .env_remove("PODIAM_DATA_DIR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `2026-12-03T13:50:00Z`.
fn is_utc_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'Z'
        && s.chars().filter(char::is_ascii_digit).count() == 14
}

#[test]
fn version_names_the_commit_build_date_and_features() {
    let o = podiam(&["version", "-o", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["commit"].as_str().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    assert!(is_utc_time(v["buildDate"].as_str().unwrap()), "{v}");
    let features: Vec<&str> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        features.contains(&"sqlite") && features.contains(&"postgresql"),
        "{features:?}"
    );
    let text = stdout(&podiam(&["version"]));
    assert!(
        text.starts_with(&format!(
            "podiam {}\ncommit:   {commit}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let short = stdout(&podiam(&["--version"]));
    assert!(short.contains(&format!("(commit {commit})")), "{short}");
}

#[test]
fn completion_scripts_complete_the_verbs() {
    let bash = podiam(&["completion", "bash"]);
    assert!(bash.status.success());
    // Bash accepts it, and it registers a completion for `podiam`.
    let mut sh = Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p podiam"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sh.stdin.take().unwrap().write_all(&bash.stdout).unwrap();
    let registered = sh.wait_with_output().unwrap();
    assert!(registered.status.success());
    assert!(
        stdout(&registered).contains("podiam"),
        "{}",
        stdout(&registered)
    );
    assert!(stdout(&bash).contains("iamserviceaccount"));
    let zsh = stdout(&podiam(&["completion", "zsh"]));
    assert!(
        zsh.starts_with("#compdef podiam"),
        "{}",
        &zsh[..zsh.len().min(80)]
    );
    let fish = stdout(&podiam(&["completion", "fish"]));
    assert!(fish.contains("complete -c podiam") && fish.contains("podidentityassociation"));
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        &["no-such-verb"][..],
        &["create", "iamserviceaccount", "--namespace", "ns"],
        &["get", "cluster", "-o", "xml"],
        &["completion", "tcsh"],
        &["cluster", "create", "--name", "prod"],
        &["delete", "podidentityassociation", "--cluster", "prod"],
    ] {
        let o = podiam(args);
        assert_eq!(
            o.status.code(),
            Some(64),
            "podiam {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for args in [
        &["--help"][..],
        &["get", "--help"],
        &["delete", "iamserviceaccount", "--help"],
    ] {
        let o = podiam(args);
        assert_eq!(o.status.code(), Some(0), "podiam {}", args.join(" "));
    }
    // A failure that is not the command line's is 1.
    let o = podiam(&["get", "cluster", "--data-dir", "/nonexistent/podiam"]);
    assert_eq!(o.status.code(), Some(1));
}

/// One name per concept: every `--cluster` takes eks-pod-identity-agent's and the AWS CLI's
/// `--cluster-name` too, and the agent's manifests write the one name.
#[test]
fn cluster_name_is_an_alias_of_cluster_everywhere() {
    for args in [
        &["agent", "--help"][..],
        &["agent", "manifests", "--help"],
        &["create", "podidentityassociation", "--help"],
        &["create", "iamserviceaccount", "--help"],
        &["get", "podidentityassociation", "--help"],
        &["delete", "podidentityassociation", "--help"],
    ] {
        let help = stdout(&podiam(args));
        assert!(
            help.contains("--cluster <") && help.contains("[alias: --cluster-name]"),
            "podiam {}:\n{help}",
            args.join(" ")
        );
    }
    let old = podiam(&["agent", "manifests", "--cluster-name", "prod"]);
    let new = podiam(&["agent", "manifests", "--cluster", "prod"]);
    assert_eq!(old.status.code(), Some(0));
    assert_eq!(stdout(&old), stdout(&new));
    assert!(stdout(&new).contains("--cluster=prod"), "{}", stdout(&new));
}

/// The connection limits are flags of every listener, the agent's and the webhook's too.
#[test]
fn every_listener_takes_the_connection_limits() {
    for verb in ["up", "server", "agent", "webhook"] {
        let help = stdout(&podiam(&[verb, "--help"]));
        for flag in [
            "--max-connections",
            "--header-timeout-seconds",
            "--body-timeout-seconds",
        ] {
            assert!(help.contains(flag), "podiam {verb} --help has no {flag}");
        }
    }
}

/// `--log-level debug --log-format json`: one JSON object per request on `podiam::request`,
/// naming the call and never the credentials; without them, no request line.
#[test]
fn the_server_logs_each_request_as_json_at_debug() {
    use std::io::{BufRead as _, Read as _};
    let run = |extra: &[&str]| -> String {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_podiam"))
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("PODIAM_LOG_LEVEL")
            .env_remove("PODIAM_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .split_whitespace()
            .nth(4)
            .unwrap()
            .trim_start_matches("http://")
            .to_string();
        let body = "Action=GetCallerIdentity&Version=2011-06-15";
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIASECRETLOOKING/20261206/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        std::thread::sleep(std::time::Duration::from_millis(200));
        child.kill().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        child.wait().unwrap();
        err
    };
    let err = run(&["--log-level", "debug", "--log-format", "json"]);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "podiam::request")
        .collect();
    assert_eq!(request.len(), 1, "{err}");
    assert_eq!(request[0]["action"], "GetCallerIdentity");
    assert_eq!(request[0]["service"], "sts");
    assert!(
        matches!(request[0]["status"].as_u64(), Some(400..=403)),
        "{err}"
    );
    assert!(
        request[0]["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{err}"
    );
    assert_eq!(request[0]["source_ip"], "127.0.0.1");
    assert!(!err.contains("AKIASECRETLOOKING"), "{err}");
    // Libraries stay at info: no SQL statement per query.
    assert!(!err.contains("sqlx::query"), "{err}");
    let quiet = run(&[]);
    assert!(
        !quiet.contains("podiam::request") && !quiet.contains("\"request\""),
        "{quiet}"
    );
}
