//! Wildcard matching (`StringLike`, `Action`, `Resource` patterns): the worst case an attacker can
//! choose, and the shapes real policies use.
//!
//! The attack: a session policy with `StringLike aws:UserAgent "*a…(1,900 a's)…b"` (it fits the
//! 2,048-character session policy quota) and a request whose User-Agent is 100 KB of `a`. Every
//! position of the input starts a near-match of the 1,900-character run, which a matcher that
//! retries the run at each position pays for with 1,900 comparisons. `attack` is that pattern
//! (whose run is a suffix: it can only match the input's last 1,901 characters);
//! `attack_middle` adds a trailing `*`, so that the run has to be searched for, the worst case of
//! a segment search; `attack_middle_folded` is the same with a two-byte character and case folding.
//!
//! Run: `cargo bench -p podiam-policy-bench --bench wildcard`.

#![expect(
    clippy::expect_used,
    reason = "benchmark set-up: a broken fixture must stop the run"
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use podiam_policy::pattern::{NoVariables, Pattern, Syntax};
use podiam_policy::{
    Context, EvalDecision, Policy, PolicyKind, PolicySet, Record, Request, RequestPrincipal,
    evaluate, evaluate_recorded, evaluate_with_trace,
};

/// `StringLike` in a Version 2012-10-17 policy.
const STRING_LIKE: Syntax = Syntax {
    wildcards: true,
    variables: true,
};

/// `*`, 1,900 × `c`, `b`, and optionally another `*`.
fn attack_pattern(c: char, trailing_star: bool) -> String {
    let mut p = String::from("*");
    p.extend(std::iter::repeat_n(c, 1_900));
    p.push('b');
    if trailing_star {
        p.push('*');
    }
    p
}

fn bench_worst_case(c: &mut Criterion) {
    let mut g = c.benchmark_group("wildcard");
    // As the attacker wrote it, and with a trailing `*`, which makes the 1,900-character run a
    // segment that has to be searched for rather than a suffix.
    for (name, trailing_star) in [("attack", false), ("attack_middle", true)] {
        let pattern = Pattern::compile(&attack_pattern('a', trailing_star), STRING_LIKE);
        for len in [10_000, 100_000] {
            let input = "a".repeat(len);
            assert!(!pattern.matches(&input, false, &NoVariables));
            g.bench_with_input(BenchmarkId::new(name, len), &input, |b, input| {
                b.iter(|| black_box(&pattern).matches(black_box(input), false, &NoVariables))
            });
        }
    }
    // The same with a two-byte character, folding case (as action names are matched): the input
    // is the pattern's character in upper case.
    let folded = Pattern::compile(&attack_pattern('é', true), STRING_LIKE);
    for len in [10_000, 100_000] {
        let input = "É".repeat(len / 2);
        assert!(!folded.matches(&input, true, &NoVariables));
        g.bench_with_input(
            BenchmarkId::new("attack_middle_folded", len),
            &input,
            |b, input| b.iter(|| black_box(&folded).matches(black_box(input), true, &NoVariables)),
        );
    }
    g.finish();
}

/// The attack end to end: a role session whose session policy holds the pattern.
fn bench_attack_evaluate(c: &mut Criterion) {
    let identity = Policy::parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
        PolicyKind::Identity,
    )
    .expect("identity policy parses");
    let session_doc = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "*",
            "Condition": {"StringLike": {"aws:UserAgent": attack_pattern('a', false)}},
        },
    })
    .to_string();
    let session = Policy::parse(&session_doc, PolicyKind::Identity).expect("session policy parses");
    let mut ctx = Context::new();
    ctx.insert("aws:UserAgent", "a".repeat(100_000));
    let caller = RequestPrincipal::role_session(
        "arn:aws:sts::111122223333:assumed-role/app/pod-1",
        "arn:aws:iam::111122223333:role/app",
    );
    let identity = [&identity];
    let session = [&session];
    let set = PolicySet {
        identity: &identity,
        session: Some(&session),
        ..PolicySet::default()
    };
    let request = Request {
        principal: Some(&caller),
        action: "s3:GetObject",
        resource: "arn:aws:s3:::app-data/x",
        context: &ctx,
    };
    assert_eq!(
        evaluate(&request, &set).decision,
        EvalDecision::ImplicitDeny
    );
    let mut g = c.benchmark_group("wildcard");
    g.bench_function("evaluate_session_policy_attack/100000", |b| {
        b.iter(|| evaluate(black_box(&request), black_box(&set)))
    });
    g.finish();
}

/// Shapes from real policies, on inputs of their usual length.
fn bench_common(c: &mut Criterion) {
    const USER_AGENT: &str = "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0-18-cloud-amd64 \
                              exe/x86_64.debian.12 prompt/off command/s3.ls";
    let cases: [(&str, &str, &str, bool, bool); 4] = [
        // (name, pattern, input, ignore case, matches)
        ("user_agent", "*aws-cli/2.*", USER_AGENT, false, true),
        ("action_suffix", "s3:*Object", "s3:GetObject", true, true),
        (
            "resource_two_stars",
            "arn:aws:s3:::app-data/*/reports/*.csv",
            "arn:aws:s3:::app-data/payments/reports/2026/11/summary.csv",
            false,
            true,
        ),
        (
            "many_stars_no_match",
            "*a*b*c*d*e*f*g*h*x",
            "arn:aws:s3:::app-data/payments/reports/2026/11/summary.csv",
            false,
            false,
        ),
    ];
    let mut g = c.benchmark_group("wildcard");
    for (name, pattern, input, ignore_case, want) in cases {
        let pattern = Pattern::compile(pattern, STRING_LIKE);
        assert_eq!(pattern.matches(input, ignore_case, &NoVariables), want);
        g.bench_function(name, |b| {
            b.iter(|| black_box(&pattern).matches(black_box(input), ignore_case, &NoVariables))
        });
    }
    g.finish();
}

/// A denial the server explains (trust checks always; IAM calls with `explain_denials`), at the
/// longest User-Agent the server lets through (4 KiB) and the attack with a trailing `*` (the
/// run searched for in the whole input): before, the server decided, then evaluated again with
/// the trace; now it decides once with a record and writes the trace from it.
fn bench_explained_denial(c: &mut Criterion) {
    let identity = Policy::parse(
        &serde_json::json!({
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "*",
                "Condition": {"StringLike": {"aws:UserAgent": attack_pattern('a', true)}},
            },
        })
        .to_string(),
        PolicyKind::Identity,
    )
    .expect("identity policy parses");
    let mut ctx = Context::new();
    ctx.insert("aws:UserAgent", "a".repeat(4_096));
    let identity = [&identity];
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    let request = Request {
        principal: None,
        action: "s3:GetObject",
        resource: "arn:aws:s3:::app-data/x",
        context: &ctx,
    };
    assert_eq!(
        evaluate(&request, &set).decision,
        EvalDecision::ImplicitDeny
    );
    let mut g = c.benchmark_group("explained_denial");
    g.bench_function("decide_then_trace/4096", |b| {
        b.iter(|| {
            let d = evaluate(black_box(&request), black_box(&set));
            let (_, trace) = evaluate_with_trace(black_box(&request), black_box(&set));
            (d.decision, trace)
        })
    });
    g.bench_function("recorded/4096", |b| {
        b.iter(|| {
            let mut record = Record::default();
            let d = evaluate_recorded(black_box(&request), black_box(&set), &mut record);
            let trace = record.trace(&request, &set, &d);
            (d.decision, trace)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_common,
    bench_worst_case,
    bench_attack_evaluate,
    bench_explained_denial
);
criterion_main!(benches);
