//! Interop tests (not a default workspace member, so ordinary builds do not compile the SDK).
//!
//! The harness the interop tests share: finding the `podiam` binary, bounded waits, and child
//! processes for providers that read only the process environment. The tests themselves are in
//! `tests/` (the Rust AWS SDK against a running podiam), run by `scripts/test`:
//! `cargo build -p podiam-cli && PODIAM_BIN=target/debug/podiam cargo test -p podiam-interop`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness: failing loudly is its job"
)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "000000000000";
pub const REGION: &str = "us-east-1";
/// One SDK call may take at most this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// One child test process may take at most this long.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Set in the child's environment; the child tests do nothing without it.
pub const CHILD_MARKER: &str = "PODIAM_INTEROP_CHILD";

/// The `podiam` binary: `$PODIAM_BIN`, else the newest of `target/{debug,release}/podiam` (under
/// `$CARGO_TARGET_DIR` too, when set).
pub fn podiam_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PODIAM_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "PODIAM_BIN={} does not exist; build it with `cargo build -p podiam-cli`",
            bin.display()
        );
        return bin;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut targets = vec![root.join("target")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.insert(0, root.join(dir));
    }
    let candidates: Vec<PathBuf> = targets
        .iter()
        .flat_map(|t| [t.join("debug/podiam"), t.join("release/podiam")])
        .collect();
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| {
            panic!(
                "no podiam binary: set PODIAM_BIN or build one with `cargo build -p podiam-cli` (looked at {})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Waits for `child` at most `limit`, then kills it and fails.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process ran longer than {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Awaits `f` at most [`CALL_TIMEOUT`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {CALL_TIMEOUT:?}"))
}

/// Runs one `#[ignore]`d test of this binary with exactly `env` (plus the marker and a HOME
/// without `.aws`); fails with its output if it fails.
pub fn run_child(test: &str, env: &[(&str, &str)]) -> String {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .envs(env.iter().copied())
        .env(CHILD_MARKER, "1")
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = wait_bounded(&mut child, CHILD_TIMEOUT);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success() && out.contains("1 passed"),
        "{test} failed ({status}):\n{out}\n{err}"
    );
    out
}

/// In a child process (see [`run_child`]): the variable `name`, which must be set. `None` when
/// this is not a child (the `#[ignore]`d test was run by hand).
pub fn child_env(name: &str) -> Option<String> {
    std::env::var(CHILD_MARKER).ok()?;
    Some(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set in the child")))
}

/// Runs `podiam ARGS --data-dir DATA_DIR` (at most [`CALL_TIMEOUT`]); fails with its stderr
/// unless it succeeds; returns its stdout.
pub fn podiam_cli(bin: &Path, data_dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, CALL_TIMEOUT);
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "podiam {args:?} failed: {err}");
    out
}

/// The administrator's access key ID and secret from `DATA_DIR/aws/credentials` (the `podiam`
/// profile `podiam up` writes).
pub fn admin_key(data_dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data_dir.join("aws").join("credentials")).unwrap();
    assert!(text.starts_with("[podiam]"), "{text}");
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {key} in the credentials file"))
    };
    (value("aws_access_key_id"), value("aws_secret_access_key"))
}
