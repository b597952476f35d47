//! The hot path allocates nothing per statement.
//!
//! `evaluate` promises to allocate only to record the statements that matched. This binary counts
//! heap allocations with `allocation-counter`, whose global allocator counts per thread (so the
//! test harness's other threads do not disturb the numbers), and checks that promise on compiled
//! policies: a request that no statement applies to allocates nothing, however many statements
//! and conditions are evaluated, and a request that one Allow applies to allocates the same few
//! blocks for 10 statements as for 400.
//!
//! The workspace forbids `unsafe_code`, so this file cannot define its own `GlobalAlloc`; the
//! counting allocator lives in the (dev-only) dependency.

use std::hint::black_box;

use allocation_counter::{AllocationInfo, measure};
use podiam_policy::{
    Context, EvalDecision, Policy, PolicyKind, PolicySet, Record, Request, RequestPrincipal,
    evaluate, evaluate_recorded,
};

/// Statements that the test requests all reach (their action and resource match, or `*`), so
/// that their conditions are evaluated, and that then do not apply: one condition of every
/// operator family, each of which fails in [`context`].
const NON_MATCHING: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"StringEquals": {"aws:PrincipalTag/kubernetes-namespace": ["kube-system", "default"]}}},
    {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::app-data/*",
     "Condition": {"StringNotEqualsIgnoreCase": {"aws:PrincipalTag/kubernetes-namespace": "PAYMENTS"}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"StringLike": {"aws:PrincipalTag/kubernetes-service-account": ["*-admin", "system:*"]}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"NumericGreaterThan": {"s3:max-keys": "1000"}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-11-01T00:00:00Z"}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/*"}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"Null": {"aws:PrincipalTag/kubernetes-namespace": "true"}}},
    {"Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["owner", "cost-center"]}}},
    {"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"},
    {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::app-data/*"},
    {"Effect": "Allow", "Action": "s3:GetObject",
     "Resource": "arn:aws:s3:::app-data/${aws:PrincipalTag/kubernetes-namespace}/*",
     "Condition": {"StringEqualsIfExists": {"aws:PrincipalTag/kubernetes-service-account": "${aws:username}"}}},
    {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "arn:aws:s3:::app-data/*",
     "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": ["env"]}}}
  ]
}"#;

/// The one Allow that applies to [`ALLOWED`].
const ONE_ALLOW: &str = r#"{
  "Version": "2012-10-17",
  "Statement": {
    "Sid": "ReadOwnNamespace",
    "Effect": "Allow",
    "Action": "s3:GetObject",
    "Resource": "arn:aws:s3:::app-data/${aws:PrincipalTag/kubernetes-namespace}/*",
    "Condition": {
      "StringEquals": {"aws:PrincipalTag/kubernetes-namespace": "payments"},
      "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
      "Bool": {"aws:SecureTransport": "true"}
    }
  }
}"#;

/// A resource-based policy whose statements name other principals, so principal matching runs.
const RESOURCE_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::444455556666:root", "444455556666"]},
     "Action": "s3:GetObject", "Resource": "arn:aws:s3:::app-data/*"},
    {"Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:iam::111122223333:role/app", "111122223333",
     "arn:aws:sts::111122223333:assumed-role/app/pod-1"]}, "Action": "*", "Resource": "*"},
    {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
     "Action": "s3:GetObject", "Resource": "*"}
  ]
}"#;

const DENIED: (&str, &str) = ("s3:GetObject", "arn:aws:s3:::app-data/billing/report.csv");
const ALLOWED: (&str, &str) = ("s3:GetObject", "arn:aws:s3:::app-data/payments/report.csv");

fn context() -> Context<'static> {
    let mut ctx = Context::new();
    ctx.insert("aws:PrincipalTag/kubernetes-namespace", "payments")
        .insert("aws:PrincipalTag/kubernetes-service-account", "api")
        .insert("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app")
        .insert("aws:SourceIp", "10.1.2.3")
        .insert("aws:SecureTransport", "true")
        .insert("aws:TokenIssueTime", "2026-11-24T09:00:00Z")
        .insert("aws:username", "pod-1")
        .insert("s3:max-keys", "100")
        .insert_list("aws:TagKeys", ["env", "team"]);
    ctx
}

#[expect(
    clippy::unwrap_used,
    reason = "a fixture that does not parse fails the test"
)]
fn parse(document: &str, kind: PolicyKind) -> Policy {
    Policy::parse(document, kind).unwrap()
}

/// `copies` copies of the non-matching policy (14 statements each), plus `extra`.
fn identity_policies(copies: usize, extra: &[&str]) -> Vec<Policy> {
    let mut policies: Vec<Policy> = (0..copies)
        .map(|_| parse(NON_MATCHING, PolicyKind::Identity))
        .collect();
    policies.extend(extra.iter().map(|d| parse(d, PolicyKind::Identity)));
    policies
}

/// Evaluates once to check the decision, then counts the allocations of a second evaluation.
fn count(
    policies: &[Policy],
    resource_policy: Option<&Policy>,
    (action, resource): (&str, &str),
    want: EvalDecision,
) -> AllocationInfo {
    let ctx = context();
    let caller = RequestPrincipal::role_session(
        "arn:aws:sts::111122223333:assumed-role/app/pod-1",
        "arn:aws:iam::111122223333:role/app",
    );
    let identity: Vec<&Policy> = policies.iter().collect();
    let set = PolicySet {
        identity: &identity,
        resource: resource_policy,
        ..PolicySet::default()
    };
    let request = Request {
        principal: Some(&caller),
        action,
        resource,
        context: &ctx,
    };
    assert_eq!(evaluate(&request, &set).decision, want);
    measure(|| {
        black_box(evaluate(black_box(&request), black_box(&set)));
    })
}

#[test]
fn counter_sees_allocations() {
    // Guards against a silently inactive counting allocator, which would make every test pass.
    let info = measure(|| {
        black_box(vec![0u8; 64]);
    });
    assert_eq!(info.count_total, 1);
    assert_eq!(info.bytes_total, 64);
}

#[test]
fn a_request_no_statement_applies_to_allocates_nothing() {
    let resource = parse(RESOURCE_POLICY, PolicyKind::Resource);
    for copies in [1, 30] {
        let policies = identity_policies(copies, &[ONE_ALLOW]);
        let info = count(
            &policies,
            Some(&resource),
            DENIED,
            EvalDecision::ImplicitDeny,
        );
        assert_eq!(
            info,
            AllocationInfo::default(),
            "{} statements evaluated",
            copies * 14 + 4
        );
    }
}

#[test]
fn one_matching_allow_allocates_only_the_matched_list() {
    let small = identity_policies(1, &[ONE_ALLOW]);
    let large = identity_policies(30, &[ONE_ALLOW]);
    let a = count(&small, None, ALLOWED, EvalDecision::Allow);
    let b = count(&large, None, ALLOWED, EvalDecision::Allow);
    // One block: the vector of matched statements, which the decision returns (so it is freed
    // when the caller drops the decision, inside the measured closure).
    assert_eq!(a.count_total, 1, "{a:?}");
    assert_eq!(
        a, b,
        "allocations must not depend on the number of statements"
    );
    assert_eq!(a.count_current, 0, "nothing leaks");
}

#[test]
fn an_explicit_deny_allocates_only_the_matched_lists() {
    const DENY_DELETE: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny",
        "Action": "s3:Get*", "Resource": "arn:aws:s3:::app-data/*"}}"#;
    let small = identity_policies(1, &[ONE_ALLOW, DENY_DELETE]);
    let large = identity_policies(30, &[ONE_ALLOW, DENY_DELETE]);
    let a = count(&small, None, ALLOWED, EvalDecision::ExplicitDeny);
    let b = count(&large, None, ALLOWED, EvalDecision::ExplicitDeny);
    // The matched Deny and the matched Allow: one vector each.
    assert!(a.count_total <= 2, "{a:?}");
    assert_eq!(a, b);
}

#[test]
fn a_resource_policy_grant_allocates_only_the_matched_list() {
    const GRANT: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:sts::111122223333:assumed-role/app/pod-1"},
        "Action": "s3:GetObject", "Resource": "arn:aws:s3:::app-data/*"}}"#;
    let grant = parse(GRANT, PolicyKind::Resource);
    let small = identity_policies(1, &[ONE_ALLOW]);
    let large = identity_policies(30, &[ONE_ALLOW]);
    let a = count(&small, Some(&grant), ALLOWED, EvalDecision::Allow);
    let b = count(&large, Some(&grant), ALLOWED, EvalDecision::Allow);
    // The identity Allow and the resource Allow share the one vector; keeping only the resource
    // layer's entries reuses it.
    assert!(a.count_total <= 2, "{a:?}");
    assert_eq!(a, b);
}

// === former allocation sites ===
//
// These allocated on every evaluation until BinaryEquals decoded into a stack buffer and long
// patterns resolved into a larger inline buffer; the tests keep it so.

#[test]
fn binary_equals_allocates_nothing() {
    const BINARY: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Action": "*", "Resource": "*", "Condition": {"BinaryEquals": {"s3:max-keys": "aGVsbG8="}}}}"#;
    let policies = identity_policies(0, &[BINARY]);
    let info = count(&policies, None, DENIED, EvalDecision::ImplicitDeny);
    assert_eq!(info, AllocationInfo::default());
}

#[test]
fn long_patterns_allocate_nothing() {
    const LONG: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Action": "s3:GetObject", "Resource": "arn:aws:s3:::app-data/a*b*c*d*e*f*g*h*x"}}"#;
    let policies = identity_policies(0, &[LONG]);
    let info = count(&policies, None, DENIED, EvalDecision::ImplicitDeny);
    assert_eq!(info, AllocationInfo::default());
}

// === evaluating with a record, so that a denial can be explained without a second pass ===

#[test]
fn recording_a_short_evaluation_allocates_nothing_more() {
    let ctx = context();
    let caller = RequestPrincipal::role_session(
        "arn:aws:sts::111122223333:assumed-role/app/pod-1",
        "arn:aws:iam::111122223333:role/app",
    );
    let policies = identity_policies(0, &[ONE_ALLOW]);
    let identity: Vec<&Policy> = policies.iter().collect();
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    for ((action, resource), want) in [
        (ALLOWED, EvalDecision::Allow),
        (DENIED, EvalDecision::ImplicitDeny),
    ] {
        let request = Request {
            principal: Some(&caller),
            action,
            resource,
            context: &ctx,
        };
        let plain = measure(|| {
            black_box(evaluate(black_box(&request), black_box(&set)));
        });
        let recorded = measure(|| {
            let mut record = Record::default();
            let d = evaluate_recorded(black_box(&request), black_box(&set), &mut record);
            assert_eq!(d.decision, want);
            black_box(record);
        });
        assert_eq!(plain, recorded, "{action} {resource}");
    }
}
