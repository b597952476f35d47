//! Policy evaluation in AWS's order for one account, with a reason trace.
//!
//! AWS (IAM User Guide, "Policy evaluation logic"):
//! 1. an explicit Deny in any policy wins;
//! 2. a resource-based policy Allow can grant on its own when it names the session or user ARN;
//!    when it names the role ARN, the permissions boundary and session policies still limit it;
//!    when it names the account, the identity side must also allow;
//! 3. otherwise an identity-based policy must Allow, and then the permissions boundary (if any)
//!    and the session policies (if any) must Allow too.
//!
//! A role's trust policy is a resource-based policy that must explicitly allow the principal.

use crate::arn::Arn;
use crate::condition::ConditionTrace;
use crate::context::Context;
use crate::json::Span;
use crate::pattern::NoVariables;
use crate::policy::{Effect, Policy, PrincipalSpec, Statement};

/// What kind of principal makes the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PrincipalKind {
    /// An IAM user, role session, federated user or account root: matched by `"AWS"`.
    Aws,
    /// An AWS service such as `pods.eks.amazonaws.com`: matched by `"Service"`.
    Service,
    /// A web identity, by its provider ARN: matched by `"Federated"`.
    Federated,
    /// Nobody signed the request: only `"*"` matches.
    Anonymous,
}

/// The caller, for resource-based and trust policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPrincipal {
    pub kind: PrincipalKind,
    /// The caller's ARN (`arn:aws:sts::A:assumed-role/R/S`, `arn:aws:iam::A:user/U`), service name
    /// or OIDC provider ARN.
    pub id: String,
    /// For a role session, the role's ARN with its path (`arn:aws:iam::A:role/path/R`).
    pub role_arn: Option<String>,
}

impl RequestPrincipal {
    pub fn aws(arn: impl Into<String>) -> RequestPrincipal {
        RequestPrincipal {
            kind: PrincipalKind::Aws,
            id: arn.into(),
            role_arn: None,
        }
    }

    pub fn role_session(
        session_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> RequestPrincipal {
        RequestPrincipal {
            kind: PrincipalKind::Aws,
            id: session_arn.into(),
            role_arn: Some(role_arn.into()),
        }
    }

    pub fn service(name: impl Into<String>) -> RequestPrincipal {
        RequestPrincipal {
            kind: PrincipalKind::Service,
            id: name.into(),
            role_arn: None,
        }
    }

    pub fn federated(provider_arn: impl Into<String>) -> RequestPrincipal {
        RequestPrincipal {
            kind: PrincipalKind::Federated,
            id: provider_arn.into(),
            role_arn: None,
        }
    }

    /// The principal an ARN names; a role session's ARN (`…:assumed-role/R/S`) also names its
    /// role (`…:role/R`: the session ARN carries no path), which a policy may name instead.
    pub fn from_arn(arn: &str) -> RequestPrincipal {
        let role = arn.strip_prefix("arn:").and_then(|rest| {
            let (partition, rest) = rest.split_once(":sts::")?;
            let (account, rest) = rest.split_once(":assumed-role/")?;
            let (role, _session) = rest.split_once('/')?;
            Some(format!("arn:{partition}:iam::{account}:role/{role}"))
        });
        RequestPrincipal {
            kind: PrincipalKind::Aws,
            id: arn.to_string(),
            role_arn: role,
        }
    }

    fn account(&self) -> Option<&str> {
        Arn::parse(&self.id)
            .map(|a| a.account)
            .filter(|a| !a.is_empty())
    }
}

/// One request to decide.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub principal: Option<&'a RequestPrincipal>,
    pub action: &'a str,
    pub resource: &'a str,
    pub context: &'a Context<'a>,
}

/// The policies that apply to a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicySet<'p> {
    /// Inline and managed identity-based policies of the principal.
    pub identity: &'p [&'p Policy],
    pub permissions_boundary: Option<&'p Policy>,
    /// `None`: no session policy was passed, so nothing is limited. `Some(&[])` would deny all.
    pub session: Option<&'p [&'p Policy]>,
    /// A resource-based policy, or the role's trust policy when deciding `sts:AssumeRole*`.
    pub resource: Option<&'p Policy>,
    /// Trust policies must explicitly allow the principal; the identity side alone never grants.
    pub resource_required: bool,
}

/// The policy types, named as AWS's simulator names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PolicyType {
    #[serde(rename = "IAM Policy")]
    Identity,
    #[serde(rename = "Permissions Boundary Policy")]
    PermissionsBoundary,
    #[serde(rename = "Session Policy")]
    Session,
    #[serde(rename = "Resource Policy")]
    Resource,
}

/// A statement that took part in a decision.
#[derive(Clone, Copy, Debug)]
pub struct StatementRef<'p> {
    pub policy: &'p Policy,
    pub policy_type: PolicyType,
    pub index: usize,
}

impl<'p> StatementRef<'p> {
    pub fn statement(&self) -> &'p Statement {
        &self.policy.statements[self.index]
    }

    pub fn sid(&self) -> Option<&'p str> {
        self.statement().sid.as_deref()
    }

    pub fn span(&self) -> Span {
        self.statement().span
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum EvalDecision {
    #[serde(rename = "allowed")]
    Allow,
    #[serde(rename = "explicitDeny")]
    ExplicitDeny,
    #[serde(rename = "implicitDeny")]
    ImplicitDeny,
}

impl EvalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalDecision::Allow => "allowed",
            EvalDecision::ExplicitDeny => "explicitDeny",
            EvalDecision::ImplicitDeny => "implicitDeny",
        }
    }
}

/// Why the decision came out as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    /// A Deny statement matched.
    ExplicitDeny,
    /// The resource-based policy names this session or user (or everyone) and allows.
    ResourcePolicyAllowsPrincipal,
    /// The resource-based policy names the role; the boundary and session policies agree.
    ResourcePolicyAllowsRole,
    /// Identity-based policies allow, and the boundary and session policies agree.
    IdentityPolicyAllows,
    /// A trust policy did not name this principal.
    TrustPolicyDoesNotAllow,
    /// No identity-based policy allows (and no resource-based policy does either).
    NoIdentityPolicyAllows,
    PermissionsBoundaryDoesNotAllow,
    SessionPolicyDoesNotAllow,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::ExplicitDeny => "an explicit Deny statement matched",
            Reason::ResourcePolicyAllowsPrincipal => {
                "the resource-based policy allows this principal directly"
            }
            Reason::ResourcePolicyAllowsRole => {
                "the resource-based policy allows the role, and the permissions boundary and session policies allow too"
            }
            Reason::IdentityPolicyAllows => {
                "an identity-based policy allows, and no permissions boundary or session policy limits it"
            }
            Reason::TrustPolicyDoesNotAllow => "the trust policy does not allow this principal",
            Reason::NoIdentityPolicyAllows => "no identity-based policy allows the action",
            Reason::PermissionsBoundaryDoesNotAllow => {
                "the permissions boundary does not allow the action"
            }
            Reason::SessionPolicyDoesNotAllow => "the session policy does not allow the action",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Decision<'p> {
    pub decision: EvalDecision,
    pub reason: Reason,
    /// The statements that decided: the Deny statements for an explicit deny, the Allow
    /// statements of every layer that granted for an allow, none for an implicit deny.
    pub matched: Vec<StatementRef<'p>>,
}

impl Decision<'_> {
    pub fn is_allowed(&self) -> bool {
        self.decision == EvalDecision::Allow
    }
}

/// Why one statement applied or not.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "Outcome")]
pub enum StatementOutcome {
    Matched {
        #[serde(rename = "Conditions", skip_serializing_if = "Vec::is_empty")]
        conditions: Vec<ConditionTrace>,
    },
    PrincipalNotMatched {
        #[serde(rename = "Principal")]
        principal: String,
        #[serde(rename = "Negated")]
        negated: bool,
    },
    ActionNotMatched {
        #[serde(rename = "Action")]
        action: String,
        #[serde(rename = "Patterns")]
        patterns: Vec<String>,
        #[serde(rename = "Negated")]
        negated: bool,
    },
    ResourceNotMatched {
        #[serde(rename = "Resource")]
        resource: String,
        #[serde(rename = "Patterns")]
        patterns: Vec<String>,
        #[serde(rename = "Negated")]
        negated: bool,
    },
    ConditionNotMet {
        #[serde(rename = "Condition")]
        condition: ConditionTrace,
    },
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatementTrace {
    pub source_policy_id: String,
    pub source_policy_type: PolicyType,
    pub statement_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    #[serde(flatten)]
    pub outcome: StatementOutcome,
}

/// Every statement considered, in evaluation order, and why it applied or not.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Trace {
    pub reason: String,
    pub statements: Vec<StatementTrace>,
}

/// How a resource-policy statement named the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Named {
    /// The account (`123456789012`, `arn:aws:iam::123456789012:root`): a delegation to the
    /// account's own identity-based policies.
    Account,
    /// The role whose session calls: limited by boundary and session policies.
    Role,
    /// The session or user itself, a service, a federated provider, or everyone.
    Directly,
}

/// Decides one request. Allocates only to record the matched statements.
pub fn evaluate<'p>(request: &Request<'_>, policies: &PolicySet<'p>) -> Decision<'p> {
    run(request, policies, None)
}

/// Decides one request and keeps a compact [`Record`] of what it saw of every statement, from
/// which [`Record::trace`] writes the explanation afterwards without evaluating again. For a
/// short policy set (up to eight statements and eight conditions) the record allocates nothing,
/// so callers that may need to explain a denial (trust checks, `explain_denials`) evaluate once.
pub fn evaluate_recorded<'p>(
    request: &Request<'_>,
    policies: &PolicySet<'p>,
    record: &mut Record,
) -> Decision<'p> {
    record.steps.clear();
    record.whys.clear();
    run(request, policies, Some(record))
}

/// Decides one request and records why every statement applied or not.
pub fn evaluate_with_trace<'p>(
    request: &Request<'_>,
    policies: &PolicySet<'p>,
) -> (Decision<'p>, Trace) {
    let mut record = Record::default();
    let decision = evaluate_recorded(request, policies, &mut record);
    let trace = record.trace(request, policies, &decision);
    (decision, trace)
}

/// Decides whether `request.principal` may perform `request.action` (`sts:AssumeRole`,
/// `sts:AssumeRoleWithWebIdentity`, `sts:TagSession`) on the role whose trust policy is given.
/// `caller` holds the caller's own policies when it is an IAM principal (for a trust policy that
/// delegates to the account), or is empty.
pub fn evaluate_trust<'p>(
    request: &Request<'_>,
    trust_policy: &'p Policy,
    caller: &PolicySet<'p>,
) -> Decision<'p> {
    evaluate(request, &trust_set(trust_policy, caller))
}

/// The policy set a trust decision evaluates: the caller's own policies and the trust policy,
/// which must name the principal.
pub fn trust_set<'p>(trust_policy: &'p Policy, caller: &PolicySet<'p>) -> PolicySet<'p> {
    PolicySet {
        resource: Some(trust_policy),
        resource_required: true,
        ..*caller
    }
}

/// What one statement did, as [`check`] found it: no strings, so recording it costs nothing.
#[derive(Clone, Copy, Debug)]
enum Step {
    PrincipalMiss,
    ActionMiss,
    ResourceMiss,
    /// The `at`th condition failed, for the reason `why`.
    ConditionMiss {
        at: u32,
        why: &'static str,
    },
    /// The statement applied; the reasons its conditions held start at `whys[from]`.
    Matched {
        from: u32,
    },
}

/// A compact account of one evaluation, in evaluation order: per statement, whether it applied
/// and, if not, what failed first. [`Record::trace`] turns it into a [`Trace`] (strings,
/// patterns, request values) only when someone reads the explanation.
#[derive(Clone, Debug, Default)]
pub struct Record {
    steps: smallvec::SmallVec<[Step; 8]>,
    whys: smallvec::SmallVec<[&'static str; 8]>,
}

impl Record {
    /// The trace of the evaluation this record was filled by: `request` and `policies` must be
    /// the ones given to [`evaluate_recorded`], and `decision` its answer. Nothing is matched
    /// again; only the patterns' variables are resolved to print them.
    pub fn trace(
        &self,
        request: &Request<'_>,
        policies: &PolicySet<'_>,
        decision: &Decision<'_>,
    ) -> Trace {
        let ctx = request.context;
        let mut steps = self.steps.iter();
        let mut statements = Vec::with_capacity(self.steps.len());
        for (policy, policy_type) in layers(policies) {
            for (index, statement) in policy.statements.iter().enumerate() {
                let Some(step) = steps.next() else {
                    break;
                };
                let outcome = match *step {
                    Step::PrincipalMiss => StatementOutcome::PrincipalNotMatched {
                        principal: request
                            .principal
                            .map_or_else(|| "(anonymous)".into(), |p| p.id.clone()),
                        negated: statement.principal.as_ref().is_some_and(|p| p.negated),
                    },
                    Step::ActionMiss => StatementOutcome::ActionNotMatched {
                        action: request.action.to_string(),
                        patterns: statement
                            .action
                            .patterns
                            .iter()
                            .map(|p| p.as_str().to_string())
                            .collect(),
                        negated: statement.action.negated,
                    },
                    Step::ResourceMiss => {
                        let resource = statement.resource.as_ref();
                        StatementOutcome::ResourceNotMatched {
                            resource: request.resource.to_string(),
                            patterns: resource
                                .map(|r| &r.patterns[..])
                                .unwrap_or_default()
                                .iter()
                                .map(|p| match (p.has_variables(), p.resolved(ctx)) {
                                    (false, _) => p.as_str().to_string(),
                                    (true, Some(r)) => format!("{} (= {r})", p.as_str()),
                                    (true, None) => {
                                        format!("{} (a variable has no value)", p.as_str())
                                    }
                                })
                                .collect(),
                            negated: resource.is_some_and(|r| r.negated),
                        }
                    }
                    Step::ConditionMiss { at, why } => StatementOutcome::ConditionNotMet {
                        condition: match statement.conditions.get(at as usize) {
                            Some(c) => c.trace(ctx, false, why),
                            None => continue,
                        },
                    },
                    Step::Matched { from } => StatementOutcome::Matched {
                        conditions: statement
                            .conditions
                            .iter()
                            .zip(self.whys.iter().skip(from as usize))
                            .map(|(c, why)| c.trace(ctx, true, why))
                            .collect(),
                    },
                };
                statements.push(StatementTrace {
                    source_policy_id: policy.source_id.clone(),
                    source_policy_type: policy_type,
                    statement_index: index,
                    sid: statement.sid.clone(),
                    effect: statement.effect,
                    outcome,
                });
            }
        }
        Trace {
            reason: decision.reason.describe().to_string(),
            statements,
        }
    }
}

/// The policies of a set in evaluation order, each with its type: identity, permissions
/// boundary, session, resource. [`run`] and [`Record::trace`] walk the same order.
fn layers<'p>(set: &PolicySet<'p>) -> impl Iterator<Item = (&'p Policy, PolicyType)> {
    let identity = set.identity.iter().map(|p| (*p, PolicyType::Identity));
    let boundary = set
        .permissions_boundary
        .map(|p| (p, PolicyType::PermissionsBoundary));
    let session = set
        .session
        .unwrap_or(&[])
        .iter()
        .map(|p| (*p, PolicyType::Session));
    let resource = set.resource.map(|p| (p, PolicyType::Resource));
    identity.chain(boundary).chain(session).chain(resource)
}

/// Per-layer results while walking the statements.
#[derive(Default)]
struct Layer {
    allowed: bool,
}

fn run<'p>(
    request: &Request<'_>,
    set: &PolicySet<'p>,
    mut record: Option<&mut Record>,
) -> Decision<'p> {
    let mut denies: Vec<StatementRef<'p>> = Vec::new();
    let mut allows: Vec<StatementRef<'p>> = Vec::new();
    let mut identity = Layer::default();
    let mut boundary = Layer::default();
    let mut session = Layer::default();
    let mut resource_named: Option<Named> = None;
    let has_boundary = set.permissions_boundary.is_some();

    for (policy, policy_type) in layers(set) {
        for (index, statement) in policy.statements.iter().enumerate() {
            let outcome = check(
                statement,
                request,
                has_boundary,
                record.as_deref_mut().map(|r| &mut r.whys),
            );
            if let Some(r) = record.as_deref_mut() {
                r.steps.push(outcome.step);
            }
            if !outcome.applies {
                continue;
            }
            let r = StatementRef {
                policy,
                policy_type,
                index,
            };
            match statement.effect {
                Effect::Deny => denies.push(r),
                Effect::Allow => {
                    allows.push(r);
                    match policy_type {
                        PolicyType::Identity => identity.allowed = true,
                        PolicyType::PermissionsBoundary => boundary.allowed = true,
                        PolicyType::Session => session.allowed = true,
                        PolicyType::Resource => {}
                    }
                    if let Some(named) = outcome.named {
                        resource_named = resource_named.max(Some(named));
                    }
                }
            }
        }
    }

    // AWS: an explicit Deny in any policy overrides any Allow.
    if !denies.is_empty() {
        return Decision {
            decision: EvalDecision::ExplicitDeny,
            reason: Reason::ExplicitDeny,
            matched: denies,
        };
    }
    let boundary_ok = set.permissions_boundary.is_none() || boundary.allowed;
    let session_ok = set.session.is_none() || session.allowed;
    let keep = |allows: Vec<StatementRef<'p>>, layers: &[PolicyType]| -> Vec<StatementRef<'p>> {
        allows
            .into_iter()
            .filter(|r| layers.contains(&r.policy_type))
            .collect()
    };
    let allow = |reason, matched| Decision {
        decision: EvalDecision::Allow,
        reason,
        matched,
    };
    let deny = |reason| Decision {
        decision: EvalDecision::ImplicitDeny,
        reason,
        matched: Vec::new(),
    };

    match resource_named {
        // AWS: a resource-based policy that names the session (or user) grants on its own;
        // implicit denies in the identity, boundary and session policies do not limit it.
        Some(Named::Directly) => {
            return allow(
                Reason::ResourcePolicyAllowsPrincipal,
                keep(allows, &[PolicyType::Resource]),
            );
        }
        // AWS: naming the role ARN, the grant is still limited by the boundary and session policy.
        Some(Named::Role) if boundary_ok && session_ok => {
            return allow(
                Reason::ResourcePolicyAllowsRole,
                keep(
                    allows,
                    &[
                        PolicyType::Resource,
                        PolicyType::PermissionsBoundary,
                        PolicyType::Session,
                    ],
                ),
            );
        }
        Some(Named::Role) if !boundary_ok => return deny(Reason::PermissionsBoundaryDoesNotAllow),
        Some(Named::Role) => return deny(Reason::SessionPolicyDoesNotAllow),
        // Naming the account delegates to the account's identity-based policies, below.
        Some(Named::Account) => {}
        None if set.resource_required => return deny(Reason::TrustPolicyDoesNotAllow),
        None => {}
    }
    if !identity.allowed {
        return deny(Reason::NoIdentityPolicyAllows);
    }
    if !boundary_ok {
        return deny(Reason::PermissionsBoundaryDoesNotAllow);
    }
    if !session_ok {
        return deny(Reason::SessionPolicyDoesNotAllow);
    }
    allow(Reason::IdentityPolicyAllows, allows)
}

struct Checked {
    applies: bool,
    /// For resource-policy statements: how the principal was named.
    named: Option<Named>,
    step: Step,
}

/// Whether a statement applies to the request, and the [`Step`] that says why. Allocates
/// nothing; with `whys`, the reasons the conditions of an applying statement held are pushed
/// there for the trace.
fn check(
    statement: &Statement,
    request: &Request<'_>,
    has_boundary: bool,
    whys: Option<&mut smallvec::SmallVec<[&'static str; 8]>>,
) -> Checked {
    let ctx = request.context;
    let miss = |step: Step| Checked {
        applies: false,
        named: None,
        step,
    };
    let mut named = None;
    if let Some(spec) = &statement.principal {
        let m = match request.principal {
            Some(p) if !spec.negated => match_principal(spec, p),
            _ => None,
        };
        let applies = if spec.negated {
            // AWS: "The NotPrincipal element with a Deny effect will always deny any IAM
            // principal that has a permissions boundary policy attached, regardless of the
            // values specified in the NotPrincipal element."
            let boundary_override = statement.effect == Effect::Deny
                && has_boundary
                && request
                    .principal
                    .is_some_and(|p| p.kind == PrincipalKind::Aws);
            boundary_override
                || !request
                    .principal
                    .is_some_and(|p| excluded_by_not_principal(spec, p))
        } else {
            m.is_some()
        };
        if !applies {
            return miss(Step::PrincipalMiss);
        }
        named = if spec.negated {
            Some(Named::Directly)
        } else {
            m
        };
    }

    // AWS: actions are case-insensitive.
    let action = &statement.action;
    let hit = action
        .patterns
        .iter()
        .any(|p| p.matches(request.action, true, &NoVariables));
    if hit == action.negated {
        return miss(Step::ActionMiss);
    }

    // AWS: resources are case-sensitive; variables resolve from the request context.
    if let Some(resource) = &statement.resource {
        let hit = resource
            .patterns
            .iter()
            .any(|p| p.matches(request.resource, ctx));
        if hit == resource.negated {
            return miss(Step::ResourceMiss);
        }
    }

    // AWS: every condition must hold (AND across operators and keys).
    let from = whys.as_ref().map_or(0, |w| w.len() as u32);
    let mut whys = whys;
    for (at, c) in statement.conditions.iter().enumerate() {
        let (holds, why) = c.decide(ctx);
        if !holds {
            if let Some(w) = whys.as_deref_mut() {
                w.truncate(from as usize);
            }
            return miss(Step::ConditionMiss { at: at as u32, why });
        }
        if let Some(w) = whys.as_deref_mut() {
            w.push(why);
        }
    }
    Checked {
        applies: true,
        named,
        step: Step::Matched { from },
    }
}

/// How (if at all) a `Principal` element names the caller. AWS: no partial wildcards; a role
/// ARN matches that role's sessions; an account matches every principal in it.
fn match_principal(spec: &PrincipalSpec, p: &RequestPrincipal) -> Option<Named> {
    if spec.everyone {
        return Some(Named::Directly);
    }
    match p.kind {
        PrincipalKind::Aws => {
            let mut best = None;
            for entry in spec.aws.iter() {
                let named = if entry == "*" || *entry == p.id {
                    Some(Named::Directly)
                } else if p.role_arn.as_deref() == Some(entry.as_str()) {
                    Some(Named::Role)
                } else if p.account().is_some_and(|acct| names_account(entry, acct)) {
                    Some(Named::Account)
                } else {
                    None
                };
                best = best.max(named);
            }
            best
        }
        PrincipalKind::Service => spec
            .service
            .iter()
            .any(|s| s == "*" || s.eq_ignore_ascii_case(&p.id))
            .then_some(Named::Directly),
        PrincipalKind::Federated => spec
            .federated
            .iter()
            .any(|s| s == "*" || *s == p.id)
            .then_some(Named::Directly),
        PrincipalKind::Anonymous => spec.aws.iter().any(|s| s == "*").then_some(Named::Directly),
    }
}

/// AWS: `NotPrincipal` excludes a caller only when every identity AWS checks for it is listed:
/// the account, the role (for a role session) and the session or user ARN itself.
fn excluded_by_not_principal(spec: &PrincipalSpec, p: &RequestPrincipal) -> bool {
    if spec.everyone {
        return true;
    }
    match p.kind {
        PrincipalKind::Aws => {
            let listed = |want: &str| spec.aws.iter().any(|e| e == "*" || e == want);
            let account_listed = p
                .account()
                .is_some_and(|acct| spec.aws.iter().any(|e| e == "*" || names_account(e, acct)));
            listed(&p.id) && account_listed && p.role_arn.as_deref().is_none_or(listed)
        }
        PrincipalKind::Service | PrincipalKind::Federated | PrincipalKind::Anonymous => {
            match_principal(spec, p).is_some()
        }
    }
}

fn names_account(entry: &str, account: &str) -> bool {
    entry == account
        || entry
            .strip_prefix("arn:")
            .and_then(|rest| rest.split_once(":iam::"))
            .is_some_and(|(_, tail)| tail.strip_suffix(":root") == Some(account))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::DECIDED;
    use crate::policy::PolicyKind;

    fn parse(document: &str) -> Policy {
        Policy::parse(document, PolicyKind::Identity).unwrap()
    }

    fn decided() -> usize {
        DECIDED.with(|d| d.get())
    }

    /// Three statements: one applies (two conditions hold), one fails at its second condition,
    /// one has an action that does not match.
    const POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [
      {"Sid": "Reads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
       "Condition": {"StringEquals": {"aws:PrincipalTag/team": "a"},
                     "StringLike": {"aws:UserAgent": "*boto*"}}},
      {"Sid": "NotFromHere", "Effect": "Deny", "Action": "s3:*", "Resource": "*",
       "Condition": {"StringEquals": {"aws:PrincipalTag/team": "a"},
                     "IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}},
      {"Sid": "Writes", "Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}
    ]}"#;

    #[test]
    fn the_trace_of_a_recorded_evaluation_decides_nothing_again() {
        let policy = parse(POLICY);
        let identity = [&policy];
        let set = PolicySet {
            identity: &identity,
            ..PolicySet::default()
        };
        let mut ctx = Context::new();
        ctx.insert("aws:PrincipalTag/team", "a")
            .insert("aws:UserAgent", "Boto3/1.35 botocore")
            .insert("aws:SourceIp", "10.0.0.1");
        let request = Request {
            principal: None,
            action: "s3:GetObject",
            resource: "arn:aws:s3:::b/k",
            context: &ctx,
        };
        let before = decided();
        let plain = evaluate(&request, &set);
        let one_pass = decided() - before;
        assert_eq!(
            one_pass, 4,
            "two conditions of each of the first two statements"
        );

        let before = decided();
        let mut record = Record::default();
        let decision = evaluate_recorded(&request, &set, &mut record);
        let trace = record.trace(&request, &set, &decision);
        assert_eq!(decided() - before, one_pass, "the trace evaluated again");
        assert_eq!(decision.decision, plain.decision);
        assert_eq!(decision.reason, plain.reason);

        // And the trace is the one a traced evaluation writes, statement by statement.
        let outcomes: Vec<_> = trace
            .statements
            .iter()
            .map(|s| (s.sid.as_deref(), &s.outcome))
            .collect();
        let StatementOutcome::Matched { conditions } = outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(conditions.len(), 2);
        assert!(conditions.iter().all(|c| c.result && !c.why.is_empty()));
        let StatementOutcome::ConditionNotMet { condition } = outcomes[1].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(
            (condition.key.as_str(), condition.result),
            ("aws:SourceIp", false)
        );
        assert_eq!(
            condition.actual.as_deref(),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(
            condition.why,
            "the request value matched none of the policy values"
        );
        let StatementOutcome::ActionNotMatched { patterns, .. } = outcomes[2].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(patterns, &["s3:PutObject".to_string()]);
        assert_eq!(trace.reason, decision.reason.describe());
    }

    #[test]
    fn a_record_is_reused_without_carrying_the_last_evaluation() {
        let policy = parse(POLICY);
        let identity = [&policy];
        let set = PolicySet {
            identity: &identity,
            ..PolicySet::default()
        };
        let ctx = Context::new();
        let mut record = Record::default();
        for action in ["s3:GetObject", "s3:PutObject"] {
            let request = Request {
                principal: None,
                action,
                resource: "*",
                context: &ctx,
            };
            let decision = evaluate_recorded(&request, &set, &mut record);
            let trace = record.trace(&request, &set, &decision);
            assert_eq!(trace.statements.len(), 3, "{action}: {trace:?}");
        }
    }
}
