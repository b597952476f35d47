//! `podiam policy …` as a user runs it: the real binary, real files, exit codes and output.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on unexpected errors"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn podiam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podiam"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podiam-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// `podiam policy validate FILE --output json`, which exits 0 (no errors), parsed.
fn validate_json(file: &Path) -> serde_json::Value {
    let o = podiam(&[
        "policy",
        "validate",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn simulate_allows_and_reports_the_matched_statement_as_aws_does() {
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        "examples/app-policy.json",
        "--action",
        "s3:GetObject",
        "secretsmanager:GetSecretValue",
        "--resource",
        "arn:aws:s3:::app-bucket/reports/q1.csv",
        "--output",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "one of the two is denied: {}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = v["EvaluationResults"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["EvalActionName"], "s3:GetObject");
    assert_eq!(results[0]["EvalDecision"], "allowed");
    let m = &results[0]["MatchedStatements"][0];
    assert_eq!(m["Sid"], "ReadReports");
    assert_eq!(m["SourcePolicyType"], "IAM Policy");
    assert_eq!(m["StartPosition"]["Line"], 4);
    assert_eq!(results[1]["EvalDecision"], "implicitDeny");
    // The Deny on aws:SecureTransport could not be evaluated without the key.
    assert_eq!(results[1]["MissingContextValues"][0], "aws:SecureTransport");
}

#[test]
fn simulate_all_allowed_exits_zero() {
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        "examples/abac-namespace.json",
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::shared-bucket/payments/a.csv",
        "--context-entries",
        "examples/context-payments.json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("ALLOWED  s3:GetObject"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn simulate_explains_a_failed_condition() {
    let ctx = scratch(
        "http.json",
        r#"[{"ContextKeyName":"aws:SecureTransport","ContextKeyValues":["false"],"ContextKeyType":"boolean"}]"#,
    );
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        "examples/app-policy.json",
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::app-bucket/reports/q1.csv",
        "--context-entries",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.starts_with("DENIED (explicit deny)"), "{out}");
    assert!(
        out.contains("matched: examples/app-policy.json `TlsOnly`"),
        "{out}"
    );
}

#[test]
fn simulate_variable_resource_says_what_it_resolved_to() {
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        "examples/abac-namespace.json",
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::shared-bucket/orders/a.csv",
        "--context-entries",
        "examples/context-payments.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("(= arn:aws:s3:::shared-bucket/payments/*)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn resource_policy_naming_the_session_grants_without_identity_policy() {
    let bucket = scratch(
        "bucket.json",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/app/s1"},
            "Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
    );
    let o = podiam(&[
        "policy",
        "simulate",
        "--resource-policy",
        bucket.to_str().unwrap(),
        "--caller-arn",
        "arn:aws:sts::111122223333:assumed-role/app/s1",
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::b/k",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = podiam(&[
        "policy",
        "simulate",
        "--resource-policy",
        bucket.to_str().unwrap(),
        "--caller-arn",
        "arn:aws:sts::111122223333:assumed-role/app/s2",
        "--action",
        "s3:GetObject",
        "--resource",
        "arn:aws:s3:::b/k",
    ]);
    assert_eq!(o.status.code(), Some(2), "another session is not named");
}

#[test]
fn malformed_policy_is_an_error_naming_the_path() {
    let bad = scratch(
        "bad.json",
        "{\"Version\":\"2012-10-17\",\n \"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:*\",\"Resource\":\"*\",\n  \"Condition\":{\"NumericLessThan\":{\"s3:max-keys\":\"ten\"}}}]}",
    );
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        bad.to_str().unwrap(),
        "--action",
        "s3:ListBucket",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("`Statement[0].Condition.NumericLessThan` at 3:"),
        "{err}"
    );
    assert!(err.contains("`ten` is not a number"), "{err}");
}

#[test]
fn bad_context_entries_say_what_shape_is_expected() {
    let ctx = scratch("ctx.json", r#"{"aws:SourceIp":"1.2.3.4"}"#);
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        "examples/app-policy.json",
        "--action",
        "s3:GetObject",
        "--context-entries",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ContextKeyName"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_64() {
    let o = podiam(&["policy", "simulate", "--action", "s3:GetObject"]);
    assert_eq!(o.status.code(), Some(64));
    let o = podiam(&[
        "policy",
        "simulate",
        "--policy",
        "x.json",
        "--action",
        "s3:GetObject",
        "--output",
        "yaml",
    ]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn validate_warns_on_risky_trust_and_fails_on_errors() {
    let o = podiam(&[
        "policy",
        "validate",
        "examples/risky-trust.json",
        "examples/irsa-trust.json",
    ]);
    assert_eq!(o.status.code(), Some(0), "warnings alone do not fail");
    let out = stdout(&o);
    assert!(
        out.contains("examples/risky-trust.json:4:5: warning[oidc-wildcard-sub]"),
        "{out}"
    );
    assert!(out.contains("warning[oidc-missing-aud]"), "{out}");
    assert!(
        out.contains("examples/irsa-trust.json: ok (trust policy)"),
        "{out}"
    );
    let bad = scratch(
        "notaction.json",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*","Sid":"Wide"}}"#,
    );
    let v = validate_json(&bad);
    let codes: Vec<&str> = v[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["allow-notaction-all-resources"]);
    let o = podiam(&["policy", "validate", "examples/context-payments.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error[malformed]"));
}

#[test]
fn validate_suggests_the_action_meant() {
    let typo = scratch(
        "typo.json",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObjet"],"Resource":"*"}]}"#,
    );
    let o = podiam(&["policy", "validate", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "warnings alone do not fail");
    let out = stdout(&o);
    assert!(
        out.contains(":1:66: warning[unknown-action] Statement.Action[0]: `s3` has no action `GetObjet`; did you mean `s3:GetObject`?"),
        "{out}"
    );
}

#[test]
fn validate_flags_a_string_operator_on_an_ip_key() {
    let ip = scratch(
        "ip.json",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"StringEquals":{"aws:SourceIp":"10.0.0.1"}}}}"#,
    );
    let v = validate_json(&ip);
    let f = &v[0]["findings"][0];
    assert_eq!(f["code"], "condition-type-mismatch");
    assert_eq!(f["path"], "Statement.Condition.StringEquals.aws:SourceIp");
    assert!(
        f["message"].as_str().unwrap().contains("use `IpAddress`"),
        "{f}"
    );
}

#[test]
fn validate_strict_fails_on_warnings_and_passes_clean_policies() {
    let o = podiam(&[
        "policy",
        "validate",
        "--strict",
        "examples/risky-trust.json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning[oidc-missing-aud]"));
    let o = podiam(&[
        "policy",
        "validate",
        "--strict",
        "examples/irsa-trust.json",
        "examples/app-policy.json",
        "examples/abac-namespace.json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("0 error(s), 0 warning(s)"),
        "{}",
        stdout(&o)
    );
}
