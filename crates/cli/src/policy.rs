//! `podiam policy simulate` and `podiam policy validate`: the engine, offline, on files.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use podiam_policy::validate::{Finding, Severity, detect_kind, validate};
use podiam_policy::{
    Context, ContextEntry, Decision, EvalDecision, Limits, Policy, PolicyKind, PolicySet, Request,
    RequestPrincipal, StatementOutcome, Trace, evaluate_with_trace,
};
use serde::Serialize;

use crate::exit;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Decide actions on resources against policy files, as `aws iam simulate-custom-policy` does,
    /// and say why.
    Simulate(SimulateArgs),
    /// Check policy files against AWS's grammar and size limits, and warn about risky patterns,
    /// actions and condition keys AWS does not have, and operators of the wrong type for a key.
    Validate(ValidateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// Identity-based policy files (inline or managed policies of the caller).
    #[arg(
        long = "policy",
        value_name = "FILE",
        num_args = 1..,
        required_unless_present = "resource_policy"
    )]
    policies: Vec<PathBuf>,
    /// A permissions boundary policy file.
    #[arg(long, value_name = "FILE")]
    permissions_boundary: Option<PathBuf>,
    /// Session policy files (as passed to AssumeRole's `Policy`).
    #[arg(long = "session-policy", value_name = "FILE")]
    session_policies: Vec<PathBuf>,
    /// A resource-based policy file (bucket policy, queue policy, …); needs --caller-arn.
    #[arg(long, value_name = "FILE", requires = "caller_arn")]
    resource_policy: Option<PathBuf>,
    /// The caller's ARN, matched against `Principal` in the resource policy (a role session:
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    #[arg(long, value_name = "ARN")]
    caller_arn: Option<String>,
    /// Actions to decide, such as `s3:GetObject`.
    #[arg(long = "action", value_name = "ACTION", num_args = 1.., required = true)]
    actions: Vec<String>,
    /// Resource ARNs to decide each action on.
    #[arg(long = "resource", value_name = "ARN", num_args = 1.., default_value = "*")]
    resources: Vec<String>,
    /// Request context in AWS's `ContextEntries` JSON shape:
    /// `[{"ContextKeyName":"aws:SourceIp","ContextKeyValues":["10.0.0.1"],"ContextKeyType":"ip"}]`.
    #[arg(long, value_name = "FILE")]
    context_entries: Option<PathBuf>,
    /// `text` for a person, `json` for a script.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Policy files to check.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// What the documents are; by default read from their shape (a `Principal` without a
    /// `Resource` is a trust policy).
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// `text` for a person, `json` for a script.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Fail on warnings too, for CI. The exit code is 1 when any file has an error (it would be
    /// rejected) or, with --strict, a warning; 0 otherwise.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Identity,
    Resource,
    Trust,
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Simulate(args) => simulate(&args),
        PolicyCommand::Validate(args) => validate_files(&args),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
}

fn load(path: &Path, kind: PolicyKind) -> anyhow::Result<Policy> {
    let text = read(path)?;
    let name = path.display().to_string();
    Policy::parse(&text, kind)
        .map(|p| p.with_source_id(name.clone()))
        .with_context(|| format!("`{name}` is not a valid policy"))
}

// === simulate ===

/// AWS's `EvaluationResult`, plus the trace.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EvaluationResult {
    eval_action_name: String,
    eval_resource_name: String,
    eval_decision: EvalDecision,
    matched_statements: Vec<MatchedStatement>,
    missing_context_values: Vec<String>,
    eval_decision_reason: &'static str,
    trace: Trace,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MatchedStatement {
    source_policy_id: String,
    source_policy_type: podiam_policy::PolicyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    start_position: podiam_policy::json::Position,
    end_position: podiam_policy::json::Position,
}

fn simulate(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let identity = args
        .policies
        .iter()
        .map(|p| load(p, PolicyKind::Identity))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let boundary = args
        .permissions_boundary
        .as_deref()
        .map(|p| load(p, PolicyKind::Identity))
        .transpose()?;
    let session = args
        .session_policies
        .iter()
        .map(|p| load(p, PolicyKind::Identity))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resource = args
        .resource_policy
        .as_deref()
        .map(|p| load(p, PolicyKind::Resource))
        .transpose()?;
    let context = match &args.context_entries {
        Some(path) => {
            let entries: Vec<ContextEntry> = serde_json::from_str(&read(path)?).with_context(|| {
                format!(
                    "`{}` is not a ContextEntries list such as \
                     [{{\"ContextKeyName\":\"aws:SourceIp\",\"ContextKeyValues\":[\"10.0.0.1\"],\"ContextKeyType\":\"ip\"}}]",
                    path.display()
                )
            })?;
            Context::from_entries(&entries).into_owned()
        }
        None => Context::new(),
    };
    let principal = args.caller_arn.as_deref().map(RequestPrincipal::from_arn);

    let identity_refs: Vec<&Policy> = identity.iter().collect();
    let session_refs: Vec<&Policy> = session.iter().collect();
    let set = PolicySet {
        identity: &identity_refs,
        permissions_boundary: boundary.as_ref(),
        session: (!session_refs.is_empty()).then_some(session_refs.as_slice()),
        resource: resource.as_ref(),
        resource_required: false,
    };
    let all: Vec<&Policy> = identity
        .iter()
        .chain(boundary.iter())
        .chain(session.iter())
        .chain(resource.iter())
        .collect();
    let missing = missing_context_keys(&all, &context);

    let mut results = Vec::new();
    for action in &args.actions {
        for resource in &args.resources {
            let request = Request {
                principal: principal.as_ref(),
                action,
                resource,
                context: &context,
            };
            let (decision, trace) = evaluate_with_trace(&request, &set);
            results.push(result(action, resource, &decision, trace, &missing));
        }
    }

    match args.output {
        Output::Json => {
            #[derive(Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct Out<'a> {
                evaluation_results: &'a [EvaluationResult],
            }
            crate::emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&Out {
                    evaluation_results: &results
                })?
            ))?;
        }
        Output::Text => crate::emit(&print_text(&results))?,
    }
    let all_allowed = results
        .iter()
        .all(|r| r.eval_decision == EvalDecision::Allow);
    Ok(ExitCode::from(if all_allowed {
        exit::OK
    } else {
        exit::DENIED
    }))
}

/// Condition keys the policies test that the context does not supply, as AWS's simulator
/// reports them in `MissingContextValues`.
fn missing_context_keys(policies: &[&Policy], context: &Context) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in policies {
        for s in p.statements.iter() {
            for c in s.conditions.iter() {
                if context.get(&c.key).is_none()
                    && !out.iter().any(|k| k.eq_ignore_ascii_case(&c.key))
                {
                    out.push(c.key.to_string());
                }
            }
        }
    }
    out
}

fn result(
    action: &str,
    resource: &str,
    decision: &Decision<'_>,
    trace: Trace,
    missing: &[String],
) -> EvaluationResult {
    EvaluationResult {
        eval_action_name: action.to_string(),
        eval_resource_name: resource.to_string(),
        eval_decision: decision.decision,
        matched_statements: decision
            .matched
            .iter()
            .map(|r| MatchedStatement {
                source_policy_id: r.policy.source_id.clone(),
                source_policy_type: r.policy_type,
                sid: r.sid().map(str::to_string),
                start_position: r.span().start,
                end_position: r.span().end,
            })
            .collect(),
        missing_context_values: missing.to_vec(),
        eval_decision_reason: decision.reason.describe(),
        trace,
    }
}

fn print_text(results: &[EvaluationResult]) -> String {
    let mut out = String::new();
    for r in results {
        let verdict = match r.eval_decision {
            EvalDecision::Allow => "ALLOWED",
            EvalDecision::ExplicitDeny => "DENIED (explicit deny)",
            EvalDecision::ImplicitDeny => "DENIED (implicit deny)",
        };
        let _ = writeln!(
            out,
            "{verdict}  {}  {}",
            r.eval_action_name, r.eval_resource_name
        );
        let _ = writeln!(out, "  why: {}", r.eval_decision_reason);
        for m in &r.matched_statements {
            let _ = writeln!(
                out,
                "  matched: {} {} ({}, line {})",
                m.source_policy_id,
                m.sid
                    .as_deref()
                    .map_or_else(|| "statement".to_string(), |s| format!("`{s}`")),
                policy_type_name(m.source_policy_type),
                m.start_position.line
            );
        }
        if r.eval_decision != EvalDecision::Allow {
            for s in &r.trace.statements {
                let _ = writeln!(out, "  - {}", describe_statement(s));
            }
            if !r.missing_context_values.is_empty() {
                let _ = writeln!(
                    out,
                    "  context keys the policies test but the request lacks: {}",
                    r.missing_context_values.join(", ")
                );
            }
        }
    }
    out
}

fn policy_type_name(t: podiam_policy::PolicyType) -> &'static str {
    match t {
        podiam_policy::PolicyType::Identity => "identity policy",
        podiam_policy::PolicyType::PermissionsBoundary => "permissions boundary",
        podiam_policy::PolicyType::Session => "session policy",
        podiam_policy::PolicyType::Resource => "resource policy",
    }
}

fn describe_statement(s: &podiam_policy::StatementTrace) -> String {
    let name = match &s.sid {
        Some(sid) => format!("{} `{sid}`", s.source_policy_id),
        None => format!("{} Statement[{}]", s.source_policy_id, s.statement_index),
    };
    let why = match &s.outcome {
        StatementOutcome::Matched { .. } => format!("{} statement applies", s.effect),
        StatementOutcome::PrincipalNotMatched { principal, negated } => {
            format!(
                "principal `{principal}` is {}listed",
                if *negated { "" } else { "not " }
            )
        }
        StatementOutcome::ActionNotMatched {
            action,
            patterns,
            negated,
        } => format!(
            "action `{action}` {} {}",
            if *negated {
                "is in NotAction"
            } else {
                "is not in"
            },
            patterns.join(", ")
        ),
        StatementOutcome::ResourceNotMatched {
            resource,
            patterns,
            negated,
        } => format!(
            "resource `{resource}` {} {}",
            if *negated {
                "is in NotResource"
            } else {
                "is not in"
            },
            patterns.join(", ")
        ),
        StatementOutcome::ConditionNotMet { condition: c } => format!(
            "condition `{}` on `{}` failed: expected {:?}, request has {}: {}",
            c.operator,
            c.key,
            c.expected,
            c.actual
                .as_ref()
                .map_or_else(|| "no value".to_string(), |v| format!("{v:?}")),
            c.why
        ),
    };
    format!("{name} ({}): {why}", policy_type_name(s.source_policy_type))
}

// === validate ===

fn validate_files(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    #[derive(Serialize)]
    struct FileFindings<'a> {
        file: String,
        kind: PolicyKind,
        findings: &'a [Finding],
    }
    let limits = Limits::default();
    let mut errors = 0usize;
    let mut warnings = 0usize;
    let mut all = Vec::new();
    for path in &args.files {
        let text = read(path)?;
        let kind = match args.kind {
            Some(Kind::Identity) => PolicyKind::Identity,
            Some(Kind::Resource) => PolicyKind::Resource,
            Some(Kind::Trust) => PolicyKind::Trust,
            None => detect_kind(&text),
        };
        let findings = validate(&text, kind, &limits);
        errors += findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        warnings += findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        all.push((path.display().to_string(), kind, findings));
    }
    match args.output {
        Output::Json => {
            let out: Vec<FileFindings<'_>> = all
                .iter()
                .map(|(file, kind, findings)| FileFindings {
                    file: file.clone(),
                    kind: *kind,
                    findings,
                })
                .collect();
            crate::emit(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
        }
        Output::Text => {
            let mut out = String::new();
            for (file, kind, findings) in &all {
                if findings.is_empty() {
                    let _ = writeln!(out, "{file}: ok ({} policy)", kind_name(*kind));
                }
                for f in findings {
                    let severity = match f.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    };
                    let _ = writeln!(
                        out,
                        "{file}:{}:{}: {severity}[{}] {}: {}",
                        f.at.line, f.at.column, f.code, f.path, f.message
                    );
                }
            }
            if all.len() > 1 || errors + warnings > 0 {
                let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
            }
            crate::emit(&out)?;
        }
    }
    Ok(ExitCode::from(
        if errors > 0 || (args.strict && warnings > 0) {
            exit::ERROR
        } else {
            exit::OK
        },
    ))
}

fn kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Identity => "identity",
        PolicyKind::Resource => "resource-based",
        PolicyKind::Trust => "trust",
    }
}
