//! The policy engine on a typical EKS workload role, and cedar-policy on a matched policy set.
//!
//! The role has 3 managed policies with 15 statements in total (S3, Secrets Manager, KMS, Bedrock,
//! logs and SQS grants; a source-network guard; a token-revocation guard), most of them with
//! conditions. Policies, entities and requests are built once, outside the timed loops, as the
//! server does: only the decision is measured.
//!
//! Run: `cargo bench -p podiam-policy-bench`.

#![expect(
    clippy::expect_used,
    reason = "benchmark set-up: a broken fixture must stop the run"
)]

use std::hint::black_box;
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use podiam_policy::{
    Context, EvalDecision, Policy, PolicyKind, PolicySet, Request, evaluate, evaluate_with_trace,
};

// === the role's managed policies ===

/// Workload grants, scoped to the pod's namespace through its session tag.
const APP_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ListOwnPrefix",
      "Effect": "Allow",
      "Action": "s3:ListBucket",
      "Resource": "arn:aws:s3:::app-data",
      "Condition": {"StringLike": {"s3:prefix": ["${aws:PrincipalTag/kubernetes-namespace}/*"]}}
    },
    {
      "Sid": "ReadWriteOwnPrefix",
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject"],
      "Resource": "arn:aws:s3:::app-data/${aws:PrincipalTag/kubernetes-namespace}/*",
      "Condition": {"Bool": {"aws:SecureTransport": "true"}}
    },
    {
      "Sid": "OwnSecrets",
      "Effect": "Allow",
      "Action": "secretsmanager:GetSecretValue",
      "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:*",
      "Condition": {"StringEquals": {"aws:ResourceTag/kubernetes-namespace": "${aws:PrincipalTag/kubernetes-namespace}"}}
    },
    {
      "Sid": "DecryptViaSecretsManager",
      "Effect": "Allow",
      "Action": "kms:Decrypt",
      "Resource": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
      "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}
    },
    {
      "Sid": "SharedConfig",
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:GetObjectVersion"],
      "Resource": "arn:aws:s3:::shared-config/*",
      "Condition": {
        "StringEquals": {"aws:PrincipalTag/kubernetes-namespace": ["payments", "billing"]},
        "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}
      }
    }
  ]
}"#;

/// Platform grants shared by every workload role.
const PLATFORM_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "InvokeAnthropicModels",
      "Effect": "Allow",
      "Action": ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
      "Resource": "arn:aws:bedrock:us-east-1::foundation-model/anthropic.*"
    },
    {
      "Sid": "WriteLogs",
      "Effect": "Allow",
      "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
      "Resource": "arn:aws:logs:us-east-1:111122223333:log-group:/eks/prod/*:*"
    },
    {
      "Sid": "NamespaceQueues",
      "Effect": "Allow",
      "Action": ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"],
      "Resource": "arn:aws:sqs:us-east-1:111122223333:${aws:PrincipalTag/kubernetes-namespace}-*",
      "Condition": {"StringEquals": {"aws:PrincipalTag/eks-cluster-name": "prod"}}
    },
    {
      "Sid": "WhoAmI",
      "Effect": "Allow",
      "Action": "sts:GetCallerIdentity",
      "Resource": "*"
    },
    {
      "Sid": "NoDeletes",
      "Effect": "Deny",
      "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
      "Resource": "arn:aws:s3:::app-data/*"
    }
  ]
}"#;

/// Account guardrails.
const GUARDRAILS_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "RevokeOlderSessions",
      "Effect": "Deny",
      "Action": "*",
      "Resource": "*",
      "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-11-01T00:00:00Z"}}
    },
    {
      "Sid": "RequireTls",
      "Effect": "Deny",
      "Action": "*",
      "Resource": "*",
      "Condition": {"Bool": {"aws:SecureTransport": "false"}}
    },
    {
      "Sid": "OnlyFromVpc",
      "Effect": "Deny",
      "Action": "*",
      "Resource": "*",
      "Condition": {
        "NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]},
        "Bool": {"aws:ViaAWSService": "false"}
      }
    },
    {
      "Sid": "NoIam",
      "Effect": "Deny",
      "Action": ["iam:*", "organizations:*"],
      "Resource": "*"
    },
    {
      "Sid": "OnlyUsEast1",
      "Effect": "Deny",
      "NotAction": ["sts:*", "iam:*"],
      "Resource": "*",
      "Condition": {"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}
    }
  ]
}"#;

const DOCUMENTS: [&str; 3] = [APP_POLICY, PLATFORM_POLICY, GUARDRAILS_POLICY];

/// The request context of a pod in namespace `payments`: 9 keys.
fn context() -> Context<'static> {
    let mut ctx = Context::new();
    ctx.insert("aws:PrincipalTag/kubernetes-namespace", "payments")
        .insert("aws:PrincipalTag/kubernetes-service-account", "api")
        .insert("aws:PrincipalTag/eks-cluster-name", "prod")
        .insert("aws:SourceIp", "10.1.2.3")
        .insert("aws:SecureTransport", "true")
        .insert("aws:ViaAWSService", "false")
        .insert("aws:TokenIssueTime", "2026-11-24T09:00:00Z")
        .insert("aws:CurrentTime", "2026-11-24T09:05:00Z")
        .insert("aws:RequestedRegion", "us-east-1");
    ctx
}

/// The three requests; every one walks all 15 statements (evaluation never stops early, because
/// an explicit Deny anywhere must still win).
const ALLOW: (&str, &str) = (
    "s3:GetObject",
    "arn:aws:s3:::shared-config/payments/app.yaml",
);
const IMPLICIT_DENY: (&str, &str) = ("s3:GetObject", "arn:aws:s3:::other-bucket/report.csv");
const EXPLICIT_DENY: (&str, &str) = ("s3:DeleteObject", "arn:aws:s3:::app-data/payments/x.csv");

fn parse_all() -> Vec<Policy> {
    DOCUMENTS
        .iter()
        .map(|d| Policy::parse(d, PolicyKind::Identity).expect("benchmark policy parses"))
        .collect()
}

fn bench_podiam(c: &mut Criterion) {
    let policies = parse_all();
    let statements: usize = policies.iter().map(|p| p.statements.len()).sum();
    assert_eq!(statements, 15, "the scenario has 15 statements");
    let identity: Vec<&Policy> = policies.iter().collect();
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    let ctx = context();
    let request = |(action, resource): (&'static str, &'static str)| Request {
        principal: None,
        action,
        resource,
        context: &ctx,
    };
    let allow = request(ALLOW);
    let implicit = request(IMPLICIT_DENY);
    let explicit = request(EXPLICIT_DENY);
    // The scenario must decide as described, or the numbers mean nothing.
    assert_eq!(evaluate(&allow, &set).decision, EvalDecision::Allow);
    assert_eq!(
        evaluate(&implicit, &set).decision,
        EvalDecision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&explicit, &set).decision,
        EvalDecision::ExplicitDeny
    );
    let (_, trace) = evaluate_with_trace(&allow, &set);
    assert_eq!(
        trace.statements.len(),
        statements,
        "every statement is traced"
    );

    let mut g = c.benchmark_group("podiam");
    g.bench_function("evaluate_allow", |b| {
        b.iter(|| evaluate(black_box(&allow), black_box(&set)))
    });
    g.bench_function("evaluate_implicit_deny", |b| {
        b.iter(|| evaluate(black_box(&implicit), black_box(&set)))
    });
    g.bench_function("evaluate_explicit_deny", |b| {
        b.iter(|| evaluate(black_box(&explicit), black_box(&set)))
    });
    g.bench_function("evaluate_with_trace_allow", |b| {
        b.iter(|| evaluate_with_trace(black_box(&allow), black_box(&set)))
    });
    g.bench_function("parse_3_policies", |b| {
        b.iter(|| {
            DOCUMENTS
                .iter()
                .map(|d| Policy::parse(black_box(d), PolicyKind::Identity))
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

// === cedar-policy on the same scenario ===

/// The same 15 statements as Cedar policies: one `permit`/`forbid` per IAM statement, actions as
/// action entities, S3 keys, ARNs and tags as entity attributes and tags, request keys as context.
/// Cedar has no action or resource wildcards, so `like` on attributes stands in for them.
const CEDAR_POLICIES: &str = r#"
// APP_POLICY
@id("ListOwnPrefix")
permit(principal, action == Action::"s3:ListBucket", resource)
when { resource.arn == "arn:aws:s3:::app-data" && context has s3_prefix && context.s3_prefix like "*/*"
       && principal.hasTag("kubernetes-namespace") && resource.prefix == principal.getTag("kubernetes-namespace") };

@id("ReadWriteOwnPrefix")
permit(principal, action in [Action::"s3:GetObject", Action::"s3:PutObject"], resource)
when { resource.bucket == "app-data" && principal.hasTag("kubernetes-namespace")
       && resource.prefix == principal.getTag("kubernetes-namespace") && context.secure_transport };

@id("OwnSecrets")
permit(principal, action == Action::"secretsmanager:GetSecretValue", resource)
when { resource.arn like "arn:aws:secretsmanager:us-east-1:111122223333:secret:*"
       && resource.hasTag("kubernetes-namespace") && principal.hasTag("kubernetes-namespace")
       && resource.getTag("kubernetes-namespace") == principal.getTag("kubernetes-namespace") };

@id("DecryptViaSecretsManager")
permit(principal, action == Action::"kms:Decrypt", resource)
when { resource.arn == "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
       && context has via_service && context.via_service == "secretsmanager.us-east-1.amazonaws.com" };

@id("SharedConfig")
permit(principal, action in [Action::"s3:GetObject", Action::"s3:GetObjectVersion"], resource)
when { resource.arn like "arn:aws:s3:::shared-config/*"
       && principal.hasTag("kubernetes-namespace")
       && ["payments", "billing"].contains(principal.getTag("kubernetes-namespace"))
       && (context.source_ip.isInRange(ip("10.0.0.0/8")) || context.source_ip.isInRange(ip("192.168.0.0/16"))) };

// PLATFORM_POLICY
@id("InvokeAnthropicModels")
permit(principal, action in [Action::"bedrock:InvokeModel", Action::"bedrock:InvokeModelWithResponseStream"], resource)
when { resource.arn like "arn:aws:bedrock:us-east-1::foundation-model/anthropic.*" };

@id("WriteLogs")
permit(principal, action in [Action::"logs:CreateLogStream", Action::"logs:PutLogEvents"], resource)
when { resource.arn like "arn:aws:logs:us-east-1:111122223333:log-group:/eks/prod/*:*" };

@id("NamespaceQueues")
permit(principal, action in [Action::"sqs:SendMessage", Action::"sqs:ReceiveMessage", Action::"sqs:DeleteMessage"], resource)
when { resource.arn like "arn:aws:sqs:us-east-1:111122223333:*" && principal.hasTag("kubernetes-namespace")
       && resource.prefix == principal.getTag("kubernetes-namespace")
       && principal.hasTag("eks-cluster-name") && principal.getTag("eks-cluster-name") == "prod" };

@id("WhoAmI")
permit(principal, action == Action::"sts:GetCallerIdentity", resource);

@id("NoDeletes")
forbid(principal, action in [Action::"s3:DeleteObject", Action::"s3:DeleteObjectVersion"], resource)
when { resource.arn like "arn:aws:s3:::app-data/*" };

// GUARDRAILS_POLICY
@id("RevokeOlderSessions")
forbid(principal, action, resource)
when { context.token_issue_time < datetime("2026-11-01T00:00:00Z") };

@id("RequireTls")
forbid(principal, action, resource)
unless { context.secure_transport };

@id("OnlyFromVpc")
forbid(principal, action, resource)
when { !(context.source_ip.isInRange(ip("10.0.0.0/8")) || context.source_ip.isInRange(ip("192.168.0.0/16")))
       && !context.via_aws_service };

@id("NoIam")
forbid(principal, action in [Action::"iam:*", Action::"organizations:*"], resource);

@id("OnlyUsEast1")
forbid(principal, action, resource)
unless { action in [Action::"sts:*", Action::"iam:*"] || context.requested_region == "us-east-1" };
"#;

/// The role with its session tags, the resources of the three requests, and the action groups
/// (`Action::"iam:*"` stands for every IAM action, as IAM's `iam:*` pattern does).
fn cedar_entities() -> serde_json::Value {
    let action = |id: &str, parents: &[&str]| {
        serde_json::json!({
            "uid": {"type": "Action", "id": id},
            "attrs": {},
            "parents": parents.iter().map(|p| serde_json::json!({"type": "Action", "id": p})).collect::<Vec<_>>(),
        })
    };
    serde_json::json!([
        {
            "uid": {"type": "Role", "id": "payments-app"},
            "attrs": {"arn": "arn:aws:iam::111122223333:role/payments-app"},
            "parents": [],
            "tags": {
                "kubernetes-namespace": "payments",
                "kubernetes-service-account": "api",
                "eks-cluster-name": "prod"
            }
        },
        {
            "uid": {"type": "Resource", "id": "arn:aws:s3:::shared-config/payments/app.yaml"},
            "attrs": {"arn": "arn:aws:s3:::shared-config/payments/app.yaml", "bucket": "shared-config", "prefix": "payments"},
            "parents": []
        },
        {
            "uid": {"type": "Resource", "id": "arn:aws:s3:::other-bucket/report.csv"},
            "attrs": {"arn": "arn:aws:s3:::other-bucket/report.csv", "bucket": "other-bucket", "prefix": "report.csv"},
            "parents": []
        },
        {
            "uid": {"type": "Resource", "id": "arn:aws:s3:::app-data/payments/x.csv"},
            "attrs": {"arn": "arn:aws:s3:::app-data/payments/x.csv", "bucket": "app-data", "prefix": "payments"},
            "parents": []
        },
        action("s3:GetObject", &[]),
        action("s3:PutObject", &[]),
        action("s3:GetObjectVersion", &[]),
        action("s3:ListBucket", &[]),
        action("s3:DeleteObject", &[]),
        action("s3:DeleteObjectVersion", &[]),
        action("secretsmanager:GetSecretValue", &[]),
        action("kms:Decrypt", &[]),
        action("bedrock:InvokeModel", &[]),
        action("bedrock:InvokeModelWithResponseStream", &[]),
        action("logs:CreateLogStream", &[]),
        action("logs:PutLogEvents", &[]),
        action("sqs:SendMessage", &[]),
        action("sqs:ReceiveMessage", &[]),
        action("sqs:DeleteMessage", &[]),
        action("sts:GetCallerIdentity", &["sts:*"]),
        action("sts:*", &[]),
        action("iam:*", &[]),
        action("organizations:*", &[]),
    ])
}

/// The same 9 request keys as [`context`].
const CEDAR_CONTEXT: &str = r#"{
  "kubernetes_namespace": "payments",
  "kubernetes_service_account": "api",
  "eks_cluster_name": "prod",
  "source_ip": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}},
  "secure_transport": true,
  "via_aws_service": false,
  "token_issue_time": {"__extn": {"fn": "datetime", "arg": "2026-11-24T09:00:00Z"}},
  "current_time": {"__extn": {"fn": "datetime", "arg": "2026-11-24T09:05:00Z"}},
  "requested_region": "us-east-1"
}"#;

fn bench_cedar(c: &mut Criterion) {
    use cedar_policy::{Authorizer, Decision, Entities, EntityUid, PolicySet, Request};

    let policies = PolicySet::from_str(CEDAR_POLICIES).expect("cedar policies parse");
    assert_eq!(policies.policies().count(), 15, "one policy per statement");
    let entities = Entities::from_json_value(cedar_entities(), None).expect("cedar entities");
    let uid = |s: String| EntityUid::from_str(&s).expect("entity uid");
    let principal = uid(r#"Role::"payments-app""#.to_string());
    let request = |(action, resource): (&str, &str)| {
        let context =
            cedar_policy::Context::from_json_str(CEDAR_CONTEXT, None).expect("cedar context");
        Request::new(
            principal.clone(),
            uid(format!(r#"Action::"{action}""#)),
            uid(format!(r#"Resource::"{resource}""#)),
            context,
            None,
        )
        .expect("cedar request")
    };
    let allow = request(ALLOW);
    let implicit = request(IMPLICIT_DENY);
    let explicit = request(EXPLICIT_DENY);
    let authorizer = Authorizer::new();
    // The matched policy set must decide as the IAM one does.
    for (req, want, forbids) in [
        (&allow, Decision::Allow, 0),
        (&implicit, Decision::Deny, 0),
        (&explicit, Decision::Deny, 1),
    ] {
        let response = authorizer.is_authorized(req, &policies, &entities);
        assert_eq!(response.decision(), want);
        assert!(
            response.diagnostics().errors().next().is_none(),
            "cedar evaluation errors: {:?}",
            response.diagnostics().errors().collect::<Vec<_>>()
        );
        let reasons: Vec<_> = response.diagnostics().reason().collect();
        if forbids > 0 {
            assert_eq!(reasons.len(), forbids, "forbid reasons: {reasons:?}");
        }
    }

    let mut g = c.benchmark_group("cedar");
    g.bench_function("is_authorized_allow", |b| {
        b.iter(|| authorizer.is_authorized(black_box(&allow), &policies, &entities))
    });
    g.bench_function("is_authorized_implicit_deny", |b| {
        b.iter(|| authorizer.is_authorized(black_box(&implicit), &policies, &entities))
    });
    g.bench_function("is_authorized_explicit_deny", |b| {
        b.iter(|| authorizer.is_authorized(black_box(&explicit), &policies, &entities))
    });
    g.finish();
}

criterion_group!(benches, bench_podiam, bench_cedar);
criterion_main!(benches);
