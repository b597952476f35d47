//! The conformance corpus: every `tests/corpus/*.json` is one request against a set of policies
//! with the decision AWS documents for it. One test runs them all and reports every failure.

use std::fs;
use std::path::{Path, PathBuf};

use podiam_policy::{
    Context, ContextEntry, Policy, PolicyKind, PolicySet, Request, RequestPrincipal,
    evaluate_trust, evaluate_with_trace,
};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    /// The AWS documentation page (and section) the case is taken from.
    source: String,
    policies: Policies,
    #[serde(default)]
    request: Option<CaseRequest>,
    expected: Expected,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Policies {
    /// Identity-based policies (inline and managed) of the caller.
    #[serde(default)]
    identity: Vec<Box<RawValue>>,
    #[serde(default)]
    permissions_boundary: Option<Box<RawValue>>,
    /// Session policies; absent means no session policy was passed.
    #[serde(default)]
    session: Option<Vec<Box<RawValue>>>,
    /// A resource-based policy (bucket policy, queue policy, …).
    #[serde(default)]
    resource: Option<Box<RawValue>>,
    /// A role trust policy: the request is then an `sts:AssumeRole*`/`sts:TagSession` decision.
    #[serde(default)]
    trust: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    #[serde(default)]
    principal: Option<CasePrincipal>,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    /// AWS's `ContextEntries` shape.
    #[serde(default)]
    context: Vec<ContextEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePrincipal {
    /// `AWS`, `Service`, `Federated` or `Anonymous`.
    r#type: String,
    #[serde(default)]
    id: String,
    /// For a role session: the role's ARN.
    #[serde(default)]
    role_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// `allowed`, `explicitDeny` or `implicitDeny`; absent when `parse_error` is given.
    #[serde(default)]
    decision: Option<String>,
    /// The statements that decided, as `Sid`s (or `<policy>#<index>` for statements without one).
    #[serde(default)]
    matched: Option<Vec<String>>,
    /// The `Reason` variant name, e.g. `PermissionsBoundaryDoesNotAllow`.
    #[serde(default)]
    reason: Option<String>,
    /// The case's policies must be rejected, with an error containing this text.
    #[serde(default)]
    parse_error: Option<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Documents are taken as written in the case file (key order, positions and duplicate keys
/// intact); a JSON string holds a document verbatim (for malformed-JSON cases).
fn compile(doc: &RawValue, kind: PolicyKind, id: String) -> Result<Policy, String> {
    let raw = doc.get();
    let text = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?
    } else {
        raw.to_string()
    };
    Policy::parse(&text, kind)
        .map(|p| p.with_source_id(id))
        .map_err(|e| e.to_string())
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case: Case = serde_json::from_str(&text).map_err(|e| format!("bad case file: {e}"))?;
    if case.description.trim().is_empty() || case.source.trim().is_empty() {
        return Err(
            "`description` and `source` must say what the case checks and where AWS documents it"
                .into(),
        );
    }
    let p = &case.policies;
    let mut docs: Vec<(&RawValue, PolicyKind, String)> = Vec::new();
    for (i, d) in p.identity.iter().enumerate() {
        docs.push((d, PolicyKind::Identity, format!("identity{i}")));
    }
    if let Some(d) = &p.permissions_boundary {
        docs.push((d, PolicyKind::Identity, "boundary".into()));
    }
    for (i, d) in p.session.iter().flatten().enumerate() {
        docs.push((d, PolicyKind::Identity, format!("session{i}")));
    }
    if let Some(d) = &p.resource {
        docs.push((d, PolicyKind::Resource, "resource".into()));
    }
    if let Some(d) = &p.trust {
        docs.push((d, PolicyKind::Trust, "trust".into()));
    }
    let compiled: Vec<Result<Policy, String>> = docs
        .iter()
        .map(|(d, kind, id)| compile(d, *kind, id.clone()))
        .collect();

    if let Some(want) = &case.expected.parse_error {
        return match compiled.iter().find_map(|r| r.as_ref().err()) {
            Some(e) if e.contains(want.as_str()) => Ok(()),
            Some(e) => Err(format!("parse error `{e}` does not contain `{want}`")),
            None => Err(format!(
                "expected a parse error containing `{want}`, but every policy parsed"
            )),
        };
    }
    let compiled: Vec<Policy> = compiled
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("policy did not parse: {e}"))?;
    let mut it = compiled.iter();
    let identity: Vec<&Policy> = it.by_ref().take(p.identity.len()).collect();
    let boundary = if p.permissions_boundary.is_some() {
        it.next()
    } else {
        None
    };
    let session: Option<Vec<&Policy>> = p
        .session
        .as_ref()
        .map(|s| it.by_ref().take(s.len()).collect());
    let resource = if p.resource.is_some() {
        it.next()
    } else {
        None
    };
    let trust = if p.trust.is_some() { it.next() } else { None };

    let req = case
        .request
        .as_ref()
        .ok_or("a case without `parse_error` needs a `request`")?;
    let principal = req
        .principal
        .as_ref()
        .map(|p| -> Result<RequestPrincipal, String> {
            let mut rp = match p.r#type.as_str() {
                "AWS" => RequestPrincipal::aws(&p.id),
                "Service" => RequestPrincipal::service(&p.id),
                "Federated" => RequestPrincipal::federated(&p.id),
                "Anonymous" => RequestPrincipal {
                    kind: podiam_policy::PrincipalKind::Anonymous,
                    id: String::new(),
                    role_arn: None,
                },
                other => return Err(format!("unknown principal type `{other}`")),
            };
            rp.role_arn = p.role_arn.clone();
            Ok(rp)
        })
        .transpose()?;
    let context = Context::from_entries(&req.context);
    let request = Request {
        principal: principal.as_ref(),
        action: &req.action,
        resource: req.resource.as_deref().unwrap_or(""),
        context: &context,
    };
    let set = PolicySet {
        identity: &identity,
        permissions_boundary: boundary,
        session: session.as_deref(),
        resource,
        resource_required: false,
    };
    let (decision, trace) = evaluate_with_trace(&request, &set);
    let decision = match trust {
        Some(trust) => {
            // The fast path is what the server uses for trust decisions; it must agree with the
            // traced one.
            evaluate_trust(&request, trust, &set)
        }
        None => {
            let fast = podiam_policy::evaluate(&request, &set);
            if fast.decision != decision.decision || fast.reason != decision.reason {
                return Err(format!(
                    "traced and untraced evaluation disagree: {:?} vs {:?}",
                    decision.decision, fast.decision
                ));
            }
            decision
        }
    };

    let want = case
        .expected
        .decision
        .as_deref()
        .ok_or("`expected.decision` is required")?;
    let got = decision.decision.as_str();
    let explain = || serde_json::to_string_pretty(&trace).unwrap_or_default();
    if got != want {
        return Err(format!(
            "decision {got} ({:?}), expected {want}\ntrace: {}",
            decision.reason,
            explain()
        ));
    }
    if let Some(reason) = &case.expected.reason
        && format!("{:?}", decision.reason) != *reason
    {
        return Err(format!("reason {:?}, expected {reason}", decision.reason));
    }
    if let Some(matched) = &case.expected.matched {
        let got: Vec<String> = decision
            .matched
            .iter()
            .map(|r| {
                r.sid().map_or_else(
                    || format!("{}#{}", r.policy.source_id, r.index),
                    str::to_string,
                )
            })
            .collect();
        if &got != matched {
            return Err(format!("matched statements {got:?}, expected {matched:?}"));
        }
    }
    Ok(())
}

#[test]
fn corpus() {
    let mut paths: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("tests/corpus exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    for path in &paths {
        if let Err(e) = run_case(path) {
            failures.push(format!(
                "{}: {e}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
    assert!(
        paths.len() >= 150,
        "the corpus must keep at least 150 cases; it has {}",
        paths.len()
    );
}
