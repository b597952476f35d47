//! Who is calling, and may they: every signed call is decided by the policy engine.

use std::sync::Arc;

use podiam_identity::SessionClaims;
use podiam_policy::{
    Context, EvalDecision, Policy, PolicyKind, PolicySet, Reason, Request, StatementOutcome,
    evaluate, evaluate_with_trace,
};
use podiam_store::State;

use crate::error::AwsError;
use crate::state::Shared;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An IAM user (the bootstrap administrator is one, with `admin` set).
    User(podiam_store::User),
    /// A role session, opened from its sealed session token.
    Session(Box<SessionClaims>),
}

impl Caller {
    pub fn arn(&self) -> &str {
        match self {
            Caller::User(u) => &u.arn,
            Caller::Session(s) => &s.assumed_role_arn,
        }
    }

    /// `aws:userid`: `AIDA…` for a user, `AROA…:session` for a role session.
    pub fn user_id(&self) -> String {
        match self {
            Caller::User(u) => u.user_id.clone(),
            Caller::Session(s) => format!("{}:{}", s.role_id, s.role_session_name),
        }
    }
}

/// Facts about the request itself that policies may test.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    pub source_ip: Option<String>,
    pub secure_transport: bool,
    pub user_agent: Option<String>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// The context keys AWS sets for a caller: `aws:PrincipalArn`, `aws:userid`, `aws:PrincipalTag/…`,
/// `aws:TokenIssueTime`, …
/// Milliseconds since the epoch.
pub fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn caller_context(
    state: &State,
    caller: &Caller,
    facts: &RequestFacts,
    account_id: &str,
) -> Context {
    let mut ctx = Context::new();
    ctx.insert("aws:PrincipalAccount", account_id);
    ctx.insert(
        "aws:CurrentTime",
        podiam_policy::date::format_date(facts.now),
    );
    ctx.insert("aws:EpochTime", (facts.now / 1000).to_string());
    ctx.insert("aws:SecureTransport", facts.secure_transport.to_string());
    ctx.insert("aws:MultiFactorAuthPresent", "false");
    if let Some(ip) = &facts.source_ip {
        ctx.insert("aws:SourceIp", ip.as_str());
    }
    if let Some(ua) = &facts.user_agent {
        ctx.insert("aws:UserAgent", ua.as_str());
    }
    match caller {
        Caller::User(u) => {
            ctx.insert("aws:PrincipalArn", u.arn.as_str());
            ctx.insert("aws:PrincipalType", "User");
            ctx.insert("aws:username", u.user_name.as_str());
            ctx.insert("aws:userid", u.user_id.as_str());
            for t in &u.tags {
                ctx.insert(&format!("aws:PrincipalTag/{}", t.key), t.value.as_str());
            }
        }
        Caller::Session(s) => {
            ctx.insert("aws:PrincipalArn", s.role_arn.as_str());
            ctx.insert("aws:PrincipalType", "AssumedRole");
            ctx.insert("aws:userid", caller.user_id());
            ctx.insert(
                "aws:TokenIssueTime",
                podiam_policy::date::format_date(millis(s.issued_at)),
            );
            ctx.insert("aws:ViaAWSService", "false");
            if let Some(si) = &s.source_identity {
                ctx.insert("aws:SourceIdentity", si.as_str());
            }
            if let podiam_identity::session::SessionSource::WebIdentity { issuer, .. } = &s.source {
                ctx.insert("aws:FederatedProvider", issuer.as_str());
            }
            // AWS: the role's tags, then the session's tags, which win on the same key.
            if let Some(role) = state.roles.values().find(|r| r.arn == s.role_arn) {
                for t in &role.tags {
                    ctx.insert(&format!("aws:PrincipalTag/{}", t.key), t.value.as_str());
                }
            }
            for t in &s.session_tags {
                ctx.insert(&format!("aws:PrincipalTag/{}", t.key), t.value.as_str());
            }
        }
    }
    ctx
}

/// The policies that govern a caller.
pub struct CallerPolicies {
    pub identity: Vec<Arc<Policy>>,
    pub boundary: Option<Arc<Policy>>,
    pub session: Option<Vec<Arc<Policy>>>,
}

pub fn caller_policies(
    shared: &Shared,
    state: &State,
    caller: &Caller,
) -> Result<CallerPolicies, AwsError> {
    let managed = |arn: &str| -> Result<Option<Arc<Policy>>, AwsError> {
        match state.policies.get(arn).and_then(|p| p.default_version()) {
            Some(v) => Ok(Some(shared.compiled(
                &v.document,
                PolicyKind::Identity,
                arn,
            )?)),
            None => Ok(None),
        }
    };
    match caller {
        Caller::User(u) => {
            let mut identity = Vec::new();
            for (name, doc) in &u.inline_policies {
                identity.push(shared.compiled(doc, PolicyKind::Identity, name)?);
            }
            for arn in &u.attached_policy_arns {
                identity.extend(managed(arn)?);
            }
            Ok(CallerPolicies {
                identity,
                boundary: None,
                session: None,
            })
        }
        Caller::Session(s) => {
            let role = state
                .roles
                .values()
                .find(|r| r.arn == s.role_arn)
                .ok_or_else(|| {
                    AwsError::new(
                        "InvalidClientTokenId",
                        axum::http::StatusCode::FORBIDDEN,
                        format!("The role {} of this session no longer exists.", s.role_arn),
                    )
                })?;
            let mut identity = Vec::new();
            for (name, doc) in &role.inline_policies {
                identity.push(shared.compiled(doc, PolicyKind::Identity, name)?);
            }
            for arn in &role.attached_policy_arns {
                identity.extend(managed(arn)?);
            }
            let boundary = match &role.permissions_boundary_arn {
                Some(arn) => managed(arn)?,
                None => None,
            };
            let session = if s.session_policy.is_none() && s.session_policy_arns.is_empty() {
                None
            } else {
                let mut v = Vec::new();
                if let Some(doc) = &s.session_policy {
                    v.push(shared.compiled(doc, PolicyKind::Identity, "session policy")?);
                }
                for arn in &s.session_policy_arns {
                    // A managed session policy deleted since: it allows nothing.
                    v.extend(managed(arn)?);
                }
                Some(v)
            };
            Ok(CallerPolicies {
                identity,
                boundary,
                session,
            })
        }
    }
}

/// Decides whether `caller` may perform `action` on `resource`; the administrator may do all.
pub fn authorize(
    shared: &Shared,
    state: &State,
    caller: &Caller,
    facts: &RequestFacts,
    action: &str,
    resource: &str,
    extra: &[(String, String)],
) -> Result<(), AwsError> {
    if let Caller::User(u) = caller
        && u.admin
    {
        return Ok(());
    }
    let policies = caller_policies(shared, state, caller)?;
    let mut context = caller_context(state, caller, facts, &shared.config.account_id);
    for (k, v) in extra {
        context.insert(k, v.as_str());
    }
    let identity: Vec<&Policy> = policies.identity.iter().map(|p| &**p).collect();
    let session: Option<Vec<&Policy>> = policies
        .session
        .as_ref()
        .map(|s| s.iter().map(|p| &**p).collect());
    let set = PolicySet {
        identity: &identity,
        permissions_boundary: policies.boundary.as_deref(),
        session: session.as_deref(),
        resource: None,
        resource_required: false,
    };
    let request = Request {
        principal: None,
        action,
        resource,
        context: &context,
    };
    let decision = evaluate(&request, &set);
    if decision.decision == EvalDecision::Allow {
        return Ok(());
    }
    let because = match decision.reason {
        Reason::ExplicitDeny => match decision.matched.first().map(|m| m.policy_type) {
            Some(podiam_policy::PolicyType::Session) => "with an explicit deny in a session policy",
            Some(podiam_policy::PolicyType::PermissionsBoundary) => {
                "with an explicit deny in a permissions boundary"
            }
            _ => "with an explicit deny in an identity-based policy",
        },
        Reason::PermissionsBoundaryDoesNotAllow => {
            "because no permissions boundary allows the action"
        }
        Reason::SessionPolicyDoesNotAllow => "because no session policy allows the action",
        _ => "because no identity-based policy allows the action",
    };
    let mut message = format!(
        "User: {} is not authorized to perform: {action} on resource: {resource} {because}",
        caller.arn()
    );
    if shared.config.explain_denials {
        let (_, trace) = evaluate_with_trace(&request, &set);
        if let Some(detail) = explain(&decision, &trace) {
            message.push_str(" (podiam: ");
            message.push_str(&detail);
            message.push(')');
        }
    }
    Err(AwsError::access_denied(message))
}

/// One line on what decided a denial: the Deny statement, or the closest statement that failed.
pub fn explain(
    decision: &podiam_policy::Decision<'_>,
    trace: &podiam_policy::Trace,
) -> Option<String> {
    if let Some(m) = decision.matched.first() {
        return Some(format!(
            "statement {} of policy `{}` denies",
            m.sid()
                .map_or_else(|| format!("#{}", m.index), |s| format!("`{s}`")),
            m.policy.source_id
        ));
    }
    let failed: Vec<String> = trace
        .statements
        .iter()
        .filter(|s| s.effect == podiam_policy::Effect::Allow)
        .filter_map(|s| {
            let what = match &s.outcome {
                StatementOutcome::ConditionNotMet { condition: c } => format!(
                    "condition {} on `{}` expected {:?} but the request has {}",
                    c.operator,
                    c.key,
                    c.expected,
                    c.actual
                        .as_ref()
                        .map_or_else(|| "no value".to_string(), |v| format!("{v:?}"))
                ),
                StatementOutcome::ResourceNotMatched { patterns, .. } => {
                    format!("resource not in {}", patterns.join(", "))
                }
                _ => return None,
            };
            Some(format!(
                "statement {} of `{}`: {what}",
                s.sid
                    .as_deref()
                    .map_or_else(|| format!("#{}", s.statement_index), |x| format!("`{x}`")),
                s.source_policy_id
            ))
        })
        .take(3)
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}
