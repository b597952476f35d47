//! `SimulatePrincipalPolicy` and `SimulateCustomPolicy`: AWS's result shape, plus podiam's trace
//! as a `PodiamTrace` element (JSON text) that SDKs ignore and people can read.

use std::sync::Arc;

use podiam_policy::{
    Context, ContextEntry, ContextKeyType, EvalDecision, Policy, PolicyKind, PolicySet, Request,
    RequestPrincipal, evaluate_with_trace,
};
use podiam_store::State;

use crate::auth::authorize;
use crate::ctx::Ctx;
use crate::error::AwsError;
use crate::iam::NS;
use crate::query::Params;
use crate::xml::Xml;

/// AWS's `SourcePolicyType` for each policy we evaluate.
struct Source {
    policy: Arc<Policy>,
    policy_type: &'static str,
}

fn parse_input(doc: &str, id: String) -> Result<Arc<Policy>, AwsError> {
    Ok(Arc::new(
        Policy::parse(doc, PolicyKind::Identity)?.with_source_id(id),
    ))
}

fn context_entries(p: &Params<'_>) -> Result<Context<'static>, AwsError> {
    let mut entries = Vec::new();
    let supplied = p.structs("ContextEntries");
    if supplied.len() > MAX_CONTEXT_ENTRIES {
        return Err(AwsError::invalid_input(format!(
            "ContextEntries has {} members; podiam takes at most {MAX_CONTEXT_ENTRIES}",
            supplied.len()
        )));
    }
    for fields in supplied {
        let name = fields
            .get("ContextKeyName")
            .ok_or_else(|| AwsError::missing("ContextKeyName"))?;
        let ty = fields.get("ContextKeyType").copied().unwrap_or("string");
        let ty: ContextKeyType = serde_json::from_value(serde_json::Value::String(ty.to_string()))
            .map_err(|_| {
                AwsError::invalid_input(format!(
                    "ContextKeyType `{ty}` is not one of string, stringList, numeric, numericList, boolean, booleanList, ip, ipList, binary, binaryList, date, dateList"
                ))
            })?;
        let mut values: Vec<(u32, String)> = fields
            .iter()
            .filter_map(|(k, v)| {
                let i = k.strip_prefix("ContextKeyValues.member.")?.parse().ok()?;
                Some((i, v.to_string()))
            })
            .collect();
        if values.len() > MAX_CONTEXT_VALUES {
            return Err(AwsError::invalid_input(format!(
                "ContextKeyValues of `{}` has {} members; podiam takes at most {MAX_CONTEXT_VALUES}",
                crate::text::bounded(name, 256),
                values.len()
            )));
        }
        values.sort_by_key(|(i, _)| *i);
        entries.push(ContextEntry {
            context_key_name: name.to_string(),
            context_key_values: values.into_iter().map(|(_, v)| v).collect(),
            context_key_type: ty,
        });
    }
    Ok(Context::from_entries(&entries).into_owned())
}

fn managed_source(
    shared: &crate::state::Shared,
    state: &State,
    arn: &str,
) -> Result<Option<Source>, AwsError> {
    let Some(p) = state.policies.get(arn) else {
        return Ok(None);
    };
    let Some(v) = p.default_version() else {
        return Ok(None);
    };
    Ok(Some(Source {
        policy: shared.compiled(&v.document, PolicyKind::Identity, arn)?,
        policy_type: if p.aws_managed {
            "aws-managed"
        } else {
            "user-managed"
        },
    }))
}

pub async fn principal(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let source_arn = p.required("PolicySourceArn")?;
    let state = ctx.shared.snapshot();
    authorize(
        ctx.shared,
        &state,
        ctx.signed_caller()?,
        &ctx.facts,
        "iam:SimulatePrincipalPolicy",
        source_arn,
        &[],
    )?;
    let mut identity = Vec::new();
    let mut boundary = None;
    if let Some(role) = crate::issuance::role_by_arn(&state, source_arn) {
        for (name, doc) in &role.inline_policies {
            identity.push(Source {
                policy: ctx.shared.compiled(doc, PolicyKind::Identity, name)?,
                policy_type: "role",
            });
        }
        for arn in &role.attached_policy_arns {
            identity.extend(managed_source(ctx.shared, &state, arn)?);
        }
        if let Some(b) = &role.permissions_boundary_arn {
            boundary = managed_source(ctx.shared, &state, b)?;
        }
    } else if let Some(user) = state.users.values().find(|u| u.arn == source_arn) {
        for (name, doc) in &user.inline_policies {
            identity.push(Source {
                policy: ctx.shared.compiled(doc, PolicyKind::Identity, name)?,
                policy_type: "user",
            });
        }
        for arn in &user.attached_policy_arns {
            identity.extend(managed_source(ctx.shared, &state, arn)?);
        }
        // AWS: "If you specify a user, the simulation also includes all policies that are
        // attached to any groups the user belongs to."
        for group in state.groups_of(user) {
            group_sources(ctx, &state, group, &mut identity)?;
        }
    } else if let Some(group) = state.groups.values().find(|g| g.arn == source_arn) {
        group_sources(ctx, &state, group, &mut identity)?;
    } else {
        return Err(AwsError::no_such_entity(format!(
            "The entity {source_arn} cannot be found: PolicySourceArn must name a role, user or group."
        )));
    }
    run(
        ctx,
        p,
        state,
        identity,
        boundary,
        "SimulatePrincipalPolicy",
        Some(source_arn),
    )
    .await
}

/// A group's inline and attached policies, as simulation sources.
fn group_sources(
    ctx: &Ctx<'_>,
    state: &State,
    group: &podiam_store::Group,
    out: &mut Vec<Source>,
) -> Result<(), AwsError> {
    for (name, doc) in &group.inline_policies {
        out.push(Source {
            policy: ctx.shared.compiled(doc, PolicyKind::Identity, name)?,
            policy_type: "group",
        });
    }
    for arn in &group.attached_policy_arns {
        out.extend(managed_source(ctx.shared, state, arn)?);
    }
    Ok(())
}

pub async fn custom(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    authorize(
        ctx.shared,
        &state,
        ctx.signed_caller()?,
        &ctx.facts,
        "iam:SimulateCustomPolicy",
        "*",
        &[],
    )?;
    let inputs = p.list("PolicyInputList");
    if inputs.is_empty() {
        return Err(AwsError::missing("PolicyInputList"));
    }
    run(
        ctx,
        p,
        state,
        Vec::new(),
        None,
        "SimulateCustomPolicy",
        None,
    )
    .await
}

/// AWS's page size when `MaxItems` is absent, and its largest.
const DEFAULT_ITEMS: usize = 100;
const MAX_ITEMS: usize = 1000;
/// Bounds on what one request may ask for (AWS documents none for the lists; these keep the
/// work of a page bounded whatever the request holds, and every page is bounded by `MaxItems`).
const MAX_ACTIONS: usize = 1000;
const MAX_RESOURCES: usize = 1000;
const MAX_CONTEXT_ENTRIES: usize = 200;
const MAX_CONTEXT_VALUES: usize = 1000;
/// A page stops early once its answer is this large; AWS: "IAM might return fewer than the
/// MaxItems number of results even when there are more results available".
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// One simulation, owned, so that it runs off the async workers.
struct Simulation {
    state: Arc<State>,
    identity: Vec<Source>,
    boundary: Option<Source>,
    resource_policy: Option<Arc<Policy>>,
    actions: Vec<String>,
    resources: Vec<String>,
    /// The principal's keys (its ARN, type, tags), as a real call of it would carry.
    principal_context: Context<'static>,
    /// What the request supplied in `ContextEntries`: it wins over what the store knows.
    supplied: Context<'static>,
    caller: Option<RequestPrincipal>,
    start: usize,
    max: usize,
    op: &'static str,
    request_id: String,
}

fn list_rule<'p>(p: &'p Params, name: &str, max: usize) -> Result<Vec<&'p str>, AwsError> {
    let items = p.list(name);
    if items.len() > max {
        return Err(AwsError::invalid_input(format!(
            "{name} has {} members; podiam simulates at most {max} per request",
            items.len()
        )));
    }
    Ok(items)
}

/// `Marker`: where the previous page stopped, as podiam wrote it.
fn marker(p: &Params<'_>) -> Result<usize, AwsError> {
    match p.get("Marker") {
        None => Ok(0),
        Some(m) => m
            .strip_prefix("result-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                AwsError::invalid_input(format!(
                    "Marker `{}` is not one podiam returned: pass the Marker of the previous page",
                    crate::text::bounded(m, 64)
                ))
            }),
    }
}

async fn run(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
    state: Arc<State>,
    mut identity: Vec<Source>,
    mut boundary: Option<Source>,
    op: &'static str,
    source_arn: Option<&str>,
) -> Result<String, AwsError> {
    for (i, doc) in p.list("PolicyInputList").into_iter().enumerate() {
        identity.push(Source {
            policy: parse_input(doc, format!("PolicyInputList.{}", i + 1))?,
            policy_type: "none",
        });
    }
    if let Some(doc) = p.list("PermissionsBoundaryPolicyInputList").first() {
        boundary = Some(Source {
            policy: parse_input(doc, "PermissionsBoundaryPolicyInputList.1".into())?,
            policy_type: "none",
        });
    }
    let resource_policy = match p.get("ResourcePolicy") {
        Some(doc) => Some(Arc::new(
            Policy::parse(doc, PolicyKind::Resource)?.with_source_id("ResourcePolicy"),
        )),
        None => None,
    };
    let actions = list_rule(p, "ActionNames", MAX_ACTIONS)?;
    if actions.is_empty() {
        return Err(AwsError::missing("ActionNames"));
    }
    if let Some(a) = actions.iter().find(|a| !(3..=128).contains(&a.len())) {
        return Err(AwsError::validation(format!(
            "ActionNames member `{}` must be 3 to 128 characters",
            crate::text::bounded(a, 128)
        )));
    }
    let mut resources = list_rule(p, "ResourceArns", MAX_RESOURCES)?;
    if let Some(r) = resources.iter().find(|r| !(1..=2048).contains(&r.len())) {
        return Err(AwsError::validation(format!(
            "ResourceArns member `{}…` must be 1 to 2048 characters",
            crate::text::bounded(r, 64)
        )));
    }
    if resources.is_empty() {
        resources.push("*");
    }
    let supplied = context_entries(p)?;
    let max = match p.int("MaxItems")? {
        None => DEFAULT_ITEMS,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_ITEMS).contains(n))
            .ok_or_else(|| {
                AwsError::validation(format!("MaxItems {n} must be between 1 and {MAX_ITEMS}"))
            })?,
    };
    let start = marker(p)?;
    // The principal as a real call of it would carry it: the caller named by `CallerArn`, else
    // the user or role whose policies are simulated.
    let caller_arn = p.get("CallerArn").or(source_arn);
    let mut principal_context = Context::new();
    if let Some(arn) = caller_arn {
        principal_context.insert(
            "aws:PrincipalAccount",
            ctx.shared.config.account_id.as_str(),
        );
        if let Some(u) = state.users.values().find(|u| u.arn == arn) {
            crate::auth::insert_user(&mut principal_context, u);
        } else if let Some(r) = crate::issuance::role_by_arn(&state, arn) {
            crate::auth::insert_role(&mut principal_context, r);
        }
    }
    let sim = Simulation {
        identity,
        boundary,
        resource_policy,
        actions: actions.into_iter().map(str::to_string).collect(),
        resources: resources.into_iter().map(str::to_string).collect(),
        principal_context: principal_context.into_owned(),
        supplied,
        caller: caller_arn.map(RequestPrincipal::from_arn),
        start,
        max,
        op,
        request_id: ctx.request_id.to_string(),
        state,
    };
    // Up to MaxItems traced evaluations: on a blocking thread, never on an async worker.
    tokio::task::spawn_blocking(move || sim.render())
        .await
        .map_err(|e| AwsError::internal(format!("the simulation did not finish: {e}")))
}

impl Simulation {
    /// The context of one simulated call: the principal's keys, the resource's keys the action
    /// documents ([`crate::actions`]), then what the request supplied, which wins.
    fn context_for(&self, action: &str, resource: &str) -> Context<'_> {
        let mut context = self.principal_context.clone();
        let keys = crate::actions::resource_keys(&self.state, resource);
        for (k, v) in crate::actions::context_for(action, &keys) {
            let multi = k.eq_ignore_ascii_case("aws:TagKeys");
            context.set(k, v, multi);
        }
        for v in self.supplied.iter() {
            context.set(&*v.name, v.values.to_strings(), v.multi);
        }
        context
    }

    fn render(self) -> String {
        let identity_refs: Vec<&Policy> = self.identity.iter().map(|s| &*s.policy).collect();
        let set = PolicySet {
            identity: &identity_refs,
            permissions_boundary: self.boundary.as_ref().map(|b| &*b.policy),
            session: None,
            resource: self.resource_policy.as_deref(),
            resource_required: false,
        };
        let type_of = |policy: &Policy| -> &'static str {
            if policy.source_id == "ResourcePolicy" {
                return "resource";
            }
            self.identity
                .iter()
                .chain(self.boundary.iter())
                .find(|s| std::ptr::eq(&*s.policy, policy))
                .map_or("none", |s| s.policy_type)
        };
        // Every condition key the policies test, once (as spelled first), in order.
        let mut seen = std::collections::HashSet::new();
        let tested: Vec<&str> = identity_refs
            .iter()
            .copied()
            .chain(set.permissions_boundary)
            .chain(set.resource)
            .flat_map(|pol| pol.statements.iter())
            .flat_map(|s| s.conditions.iter())
            .map(|c| &*c.key)
            .filter(|k| seen.insert(k.to_ascii_lowercase()))
            .collect();

        let total = self.actions.len() * self.resources.len();
        let mut x = Xml::response(self.op, NS);
        x.start("EvaluationResults");
        let mut next = None;
        for index in self.start..total.min(self.start.saturating_add(self.max)) {
            if x.written() > MAX_RESPONSE_BYTES {
                next = Some(index);
                break;
            }
            let action = &self.actions[index / self.resources.len()];
            let resource = &self.resources[index % self.resources.len()];
            let context = self.context_for(action, resource);
            let request = Request {
                principal: self.caller.as_ref(),
                action,
                resource,
                context: &context,
            };
            // One evaluation gives the decision and its explanation.
            let (decision, trace) = evaluate_with_trace(&request, &set);
            x.start("member")
                .text("EvalActionName", action)
                .text("EvalResourceName", resource)
                .text("EvalDecision", decision.decision.as_str());
            x.start("MatchedStatements");
            for m in &decision.matched {
                let span = m.span();
                x.start("member")
                    .text("SourcePolicyId", &m.policy.source_id)
                    .text("SourcePolicyType", type_of(m.policy))
                    .start("StartPosition")
                    .num("Line", span.start.line)
                    .num("Column", span.start.column)
                    .end()
                    .start("EndPosition")
                    .num("Line", span.end.line)
                    .num("Column", span.end.column)
                    .end()
                    .end();
            }
            x.end();
            x.start("MissingContextValues");
            if decision.decision != EvalDecision::Allow {
                for k in tested.iter().filter(|k| context.get(k).is_none()) {
                    x.text("member", k);
                }
            }
            x.end();
            x.start("EvalDecisionDetails");
            x.start("entry")
                .text("key", "IAM Policy")
                .text("value", decision.decision.as_str())
                .end();
            x.end();
            let trace_json = serde_json::to_string(&trace).unwrap_or_default();
            x.text("PodiamTrace", &trace_json);
            x.end();
        }
        if next.is_none() && self.start.saturating_add(self.max) < total {
            next = Some(self.start + self.max);
        }
        x.end();
        x.bool("IsTruncated", next.is_some());
        if let Some(n) = next {
            x.text("Marker", &format!("result-{n}"));
        }
        x.finish(self.op, &self.request_id)
    }
}
