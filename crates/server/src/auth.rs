//! Who is calling, and may they: every signed call is decided by the policy engine.

use std::sync::Arc;

use podiam_identity::SessionClaims;
use podiam_policy::{
    Context, EvalDecision, Policy, PolicyKind, PolicySet, Reason, Record, Request,
    StatementOutcome, evaluate, evaluate_recorded,
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
    /// The request's time, read once from the server's clock: milliseconds since the epoch.
    pub now: i64,
}

/// The most a request value that reaches the policy engine as a condition key may hold
/// (`aws:UserAgent`). A longer one is refused rather than cut: cutting would let padding push a
/// string a Deny looks for out of what the engine sees.
pub const MAX_REQUEST_VALUE: usize = 4096;

impl RequestFacts {
    /// Refuses a request whose values for the engine are past [`MAX_REQUEST_VALUE`]: each
    /// evaluation is then bounded whatever a caller sends.
    pub fn check_bounds(&self) -> Result<(), AwsError> {
        match &self.user_agent {
            Some(ua) if ua.len() > MAX_REQUEST_VALUE => Err(AwsError::validation(format!(
                "The User-Agent header is {} bytes; podiam accepts at most {MAX_REQUEST_VALUE}",
                ua.len()
            ))),
            _ => Ok(()),
        }
    }

    /// A clock that answers the request's time, for the libraries that take one.
    pub fn clock(&self) -> podiam_identity::FixedClock {
        podiam_identity::FixedClock(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(self.now).unwrap_or(0)),
        )
    }
}

/// Milliseconds since the epoch.
pub fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The context keys AWS sets for a caller: `aws:PrincipalArn`, `aws:userid`, `aws:PrincipalTag/…`,
/// `aws:TokenIssueTime`, …
pub fn caller_context<'a>(
    state: &'a State,
    caller: &'a Caller,
    facts: &'a RequestFacts,
    account_id: &'a str,
) -> Context<'a> {
    // The keys below, a few tags, and the action's own keys added by the caller.
    let mut ctx = Context::with_capacity(24);
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
        Caller::User(u) => insert_user(&mut ctx, u),
        Caller::Session(s) => {
            // AWS: the role's tags, then the session's tags, which win on the same key.
            match session_role(state, s) {
                Some(role) => insert_role(&mut ctx, role),
                None => {
                    ctx.insert("aws:PrincipalArn", s.role_arn.as_str());
                    ctx.insert("aws:PrincipalType", "AssumedRole");
                }
            }
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
            for t in &s.session_tags {
                ctx.insert(format!("aws:PrincipalTag/{}", t.key), t.value.as_str());
            }
        }
    }
    ctx
}

/// The keys that name an IAM user as the caller: `aws:PrincipalArn`, `aws:PrincipalType`,
/// `aws:username`, `aws:userid` and its tags as `aws:PrincipalTag/…`.
pub(crate) fn insert_user<'a>(ctx: &mut Context<'a>, u: &'a podiam_store::User) {
    ctx.insert("aws:PrincipalArn", u.arn.as_str());
    ctx.insert("aws:PrincipalType", "User");
    ctx.insert("aws:username", u.user_name.as_str());
    ctx.insert("aws:userid", u.user_id.as_str());
    for t in &u.tags {
        ctx.insert(format!("aws:PrincipalTag/{}", t.key), t.value.as_str());
    }
}

/// The keys that name a session of `role` as the caller, before any session tag:
/// `aws:PrincipalArn` (the role's ARN), `aws:PrincipalType` and the role's tags as
/// `aws:PrincipalTag/…`.
pub(crate) fn insert_role<'a>(ctx: &mut Context<'a>, role: &'a podiam_store::Role) {
    ctx.insert("aws:PrincipalArn", role.arn.as_str());
    ctx.insert("aws:PrincipalType", "AssumedRole");
    for t in &role.tags {
        ctx.insert(format!("aws:PrincipalTag/{}", t.key), t.value.as_str());
    }
}

/// The role a session belongs to. AWS binds a session to the role's unique ID (`AROA…`), not its
/// name: after the role is deleted, a new role of the same name is another role, and the old
/// sessions open nothing.
pub fn session_role<'s>(state: &'s State, s: &SessionClaims) -> Option<&'s podiam_store::Role> {
    let name = s.role_arn.rsplit('/').next()?;
    state
        .roles
        .get(&name.to_ascii_lowercase())
        .filter(|r| r.role_id == s.role_id && r.arn == s.role_arn)
}

/// The policies that govern a caller.
pub struct CallerPolicies {
    pub identity: Vec<Arc<Policy>>,
    pub boundary: Option<Arc<Policy>>,
    pub session: Option<Vec<Arc<Policy>>>,
}

impl CallerPolicies {
    /// Calls `f` with these policies borrowed as the engine takes them.
    pub fn with_set<R>(&self, f: impl FnOnce(&PolicySet<'_>) -> R) -> R {
        let identity: Vec<&Policy> = self.identity.iter().map(|p| &**p).collect();
        let session: Option<Vec<&Policy>> = self
            .session
            .as_ref()
            .map(|s| s.iter().map(|p| &**p).collect());
        f(&PolicySet {
            identity: &identity,
            permissions_boundary: self.boundary.as_deref(),
            session: session.as_deref(),
            resource: None,
            resource_required: false,
        })
    }
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
            // AWS: a user's permissions are its own policies and those of every group it is in.
            // The user as the state has it now: `u` was copied when the request was authenticated.
            let current = state.users.get(&u.user_name.to_ascii_lowercase());
            for g in current.into_iter().flat_map(|u| state.groups_of(u)) {
                for (name, doc) in &g.inline_policies {
                    identity.push(shared.compiled(doc, PolicyKind::Identity, name)?);
                }
                for arn in &g.attached_policy_arns {
                    identity.extend(managed(arn)?);
                }
            }
            Ok(CallerPolicies {
                identity,
                boundary: None,
                session: None,
            })
        }
        Caller::Session(s) => {
            let role = session_role(state, s).ok_or_else(|| {
                AwsError::invalid_client_token(format!(
                    "The role {} of this session no longer exists.",
                    s.role_arn
                ))
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
    extra: &[(String, Vec<String>)],
) -> Result<(), AwsError> {
    if let Caller::User(u) = caller
        && u.admin
    {
        return Ok(());
    }
    let policies = caller_policies(shared, state, caller)?;
    let mut context = caller_context(state, caller, facts, &shared.config.account_id);
    for (k, v) in extra {
        // AWS: `aws:TagKeys` is multivalued (set operators apply); the other request keys are
        // single-valued, so a policy variable may name them.
        match v.as_slice() {
            [one] if !k.eq_ignore_ascii_case("aws:TagKeys") => context.insert(k, one.as_str()),
            _ => context.insert_list(k, v.iter().map(String::as_str)),
        };
    }
    let request = Request {
        principal: None,
        action,
        resource,
        context: &context,
    };
    let explaining = shared.config.explain_denials;
    let (decision, detail) = policies.with_set(|set| {
        // One evaluation: when denials are explained, its compact record (no allocation for a
        // short policy set) becomes the trace only if the answer is a denial.
        let mut record = Record::default();
        let decision = if explaining {
            evaluate_recorded(&request, set, &mut record)
        } else {
            evaluate(&request, set)
        };
        if decision.decision == EvalDecision::Allow {
            return (None, None);
        }
        let detail =
            explaining.then(|| explain(&decision, &record.trace(&request, set, &decision)));
        (
            Some((
                decision.reason,
                decision.matched.first().map(|m| m.policy_type),
            )),
            detail.flatten(),
        )
    });
    let Some((reason, first_match)) = decision else {
        return Ok(());
    };
    let because = match reason {
        Reason::ExplicitDeny => match first_match {
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
    if let Some(detail) = detail {
        message.push_str(" (podiam: ");
        message.push_str(&detail);
        message.push(')');
    }
    Err(AwsError::access_denied(message))
}

/// Condition keys whose expected value is a secret shared with the caller: explanations name
/// them but never print what was expected.
const SECRET_KEYS: [&str; 1] = ["sts:externalid"];

fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))
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
                // A secret the caller must present (the confused-deputy ExternalId): say which
                // key failed, never the value expected.
                StatementOutcome::ConditionNotMet { condition: c } if is_secret_key(&c.key) => {
                    format!(
                        "condition {} on `{}` is not met (the expected value is not shown)",
                        c.operator, c.key
                    )
                }
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

// === SigV4 authentication ===

/// The parts of an HTTP request SigV4 signs.
pub struct SignedRequest<'a> {
    pub method: &'a axum::http::Method,
    pub uri: &'a axum::http::Uri,
    pub headers: &'a axum::http::HeaderMap,
    pub body: &'a [u8],
}

/// AWS's answer for every unknown, inactive or unopenable credential: it says no more.
fn invalid_token() -> AwsError {
    AwsError::invalid_client_token("The security token included in the request is invalid.")
}

/// SigV4: the access key names the secret (the store for `AKIA…`, the sealed session token for
/// `ASIA…`), then the signature is checked in constant time, at the request's time `clock`.
pub fn authenticate(
    shared: &Shared,
    clock: &impl podiam_identity::Clock,
    r: &SignedRequest<'_>,
    services: &[&str],
) -> Result<Caller, AwsError> {
    use podiam_identity::{AccessKeyKind, HttpRequest, SigV4Auth, VerifyOptions};
    let mut header_pairs: Vec<(&str, &str)> = r
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    // HTTP/2 carries the host as `:authority`, which clients sign as `host`.
    if !r.headers.contains_key(axum::http::header::HOST)
        && let Some(authority) = r.uri.authority()
    {
        header_pairs.push(("host", authority.as_str()));
    }
    let request = HttpRequest {
        method: r.method.as_str(),
        path: r.uri.path(),
        query: r.uri.query().unwrap_or(""),
        headers: &header_pairs,
        body: r.body,
    };
    let auth = SigV4Auth::parse(&request).map_err(|e| AwsError::from(&e))?;
    let options = VerifyOptions {
        region: None,
        services: services.iter().map(|s| (*s).to_string()).collect(),
        ..VerifyOptions::default()
    };
    let state = shared.snapshot();
    match auth.access_key_id.kind() {
        AccessKeyKind::LongTerm => {
            let key = state
                .access_keys
                .get(auth.access_key_id.as_str())
                .filter(|k| k.status == "Active")
                .ok_or_else(invalid_token)?;
            let user = state
                .users
                .get(&key.user_name.to_ascii_lowercase())
                .ok_or_else(invalid_token)?;
            auth.verify(
                &request,
                &podiam_identity::SecretAccessKey::new(key.secret_access_key.clone()),
                &options,
                clock,
            )
            .map_err(|e| AwsError::from(&e))?;
            Ok(Caller::User(user.clone()))
        }
        AccessKeyKind::Temporary => {
            let token = auth.security_token.as_deref().ok_or_else(invalid_token)?;
            let session = shared
                .keys()
                .sessions
                .open(token, clock)
                .map_err(|e| match e {
                    podiam_identity::OpenError::Expired { .. } => AwsError::new(
                        crate::error::ErrorKind::ExpiredToken,
                        "The security token included in the request is expired",
                    ),
                    _ => invalid_token(),
                })?;
            // AWS: the token must belong to the key that signed.
            if session.access_key_id != auth.access_key_id {
                return Err(invalid_token());
            }
            // A session of a role deleted since (even if one of the same name exists now).
            if session_role(&state, &session).is_none() {
                return Err(invalid_token());
            }
            auth.verify(&request, &session.secret_access_key, &options, clock)
                .map_err(|e| AwsError::from(&e))?;
            Ok(Caller::Session(Box::new(session)))
        }
        AccessKeyKind::Unknown => Err(invalid_token()),
    }
}
