//! Policy documents are untrusted input (CreatePolicy, AssumeRole's `Policy`, trust policies):
//! parsing any bytes must return a policy or an error, never panic or hang, and a policy that
//! parses must evaluate without panicking.
//!
//! Shared by the libFuzzer target (`fuzz_targets/policy_parse.rs`, nightly) and the bounded
//! replay every `cargo test` runs on stable (`crates/*/tests/fuzz_replay.rs`).

use podiam_policy::{
    Context, Limits, Policy, PolicyKind, PolicySet, Request, RequestPrincipal, evaluate,
    evaluate_trust, evaluate_with_trace, validate,
};

/// Feeds `data` through the parser; panics only on a broken property.
pub fn check(data: &[u8]) {
    let Ok(document) = std::str::from_utf8(data) else {
        return;
    };
    let _ = validate::detect_kind(document);
    for kind in [
        PolicyKind::Identity,
        PolicyKind::Resource,
        PolicyKind::Trust,
    ] {
        if let Ok(policy) = Policy::parse(document, kind) {
            // Validation re-parses, then lints: only worth it for documents that parse.
            let _ = validate::validate(document, kind, &Limits::default());
            exercise(&policy);
        }
    }
}

/// Evaluates a compiled policy in the layer its kind belongs to, against one fixed request whose
/// context has keys of every type (and variables to resolve).
fn exercise(policy: &Policy) {
    let mut ctx = Context::new();
    ctx.insert("aws:PrincipalTag/kubernetes-namespace", "payments")
        .insert("aws:username", "alice")
        .insert("aws:SourceIp", "10.1.2.3")
        .insert("aws:SecureTransport", "true")
        .insert("aws:TokenIssueTime", "2026-11-24T09:00:00Z")
        .insert("aws:MultiFactorAuthAge", "300")
        .insert("s3:prefix", "home/alice/")
        .insert_list("aws:TagKeys", ["env", "team"]);
    let caller = RequestPrincipal::role_session(
        "arn:aws:sts::111122223333:assumed-role/app/pod-1",
        "arn:aws:iam::111122223333:role/app",
    );
    let request = Request {
        principal: Some(&caller),
        action: "s3:GetObject",
        resource: "arn:aws:s3:::bucket/home/alice/file.txt",
        context: &ctx,
    };
    let policies = [policy];
    let set = match policy.kind {
        PolicyKind::Identity => PolicySet {
            identity: &policies,
            permissions_boundary: Some(policy),
            session: Some(&policies),
            ..PolicySet::default()
        },
        PolicyKind::Resource | PolicyKind::Trust => PolicySet {
            resource: Some(policy),
            ..PolicySet::default()
        },
    };
    let plain = evaluate(&request, &set);
    let (traced, _trace) = evaluate_with_trace(&request, &set);
    assert_eq!(plain.decision, traced.decision);
    if policy.kind == PolicyKind::Trust {
        let web = RequestPrincipal::federated(
            "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE",
        );
        let assume = Request {
            principal: Some(&web),
            action: "sts:AssumeRoleWithWebIdentity",
            resource: "arn:aws:iam::111122223333:role/app",
            context: &ctx,
        };
        let _ = evaluate_trust(&assume, policy, &PolicySet::default());
    }
}
