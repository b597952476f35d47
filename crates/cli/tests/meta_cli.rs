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
