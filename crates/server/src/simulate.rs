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

fn context_entries(p: &Params) -> Result<Context, AwsError> {
    let mut entries = Vec::new();
    for fields in p.structs("ContextEntries") {
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
        values.sort_by_key(|(i, _)| *i);
        entries.push(ContextEntry {
            context_key_name: name.to_string(),
            context_key_values: values.into_iter().map(|(_, v)| v).collect(),
            context_key_type: ty,
        });
    }
    Ok(Context::from_entries(&entries))
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

pub fn principal(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    if let Some(role) = state.roles.values().find(|r| r.arn == source_arn) {
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
        identity,
        boundary,
        "SimulatePrincipalPolicy",
        Some(source_arn),
    )
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

pub fn custom(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    run(ctx, p, Vec::new(), None, "SimulateCustomPolicy", None)
}

fn run(
    ctx: &Ctx<'_>,
    p: &Params,
    mut identity: Vec<Source>,
    mut boundary: Option<Source>,
    op: &str,
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
    let actions = p.list("ActionNames");
    if actions.is_empty() {
        return Err(AwsError::missing("ActionNames"));
    }
    let mut resources = p.list("ResourceArns");
    if resources.is_empty() {
        resources.push("*");
    }
    let context = context_entries(p)?;
    let caller = p
        .get("CallerArn")
        .or(source_arn)
        .map(RequestPrincipal::from_arn);

    let identity_refs: Vec<&Policy> = identity.iter().map(|s| &*s.policy).collect();
    let set = PolicySet {
        identity: &identity_refs,
        permissions_boundary: boundary.as_ref().map(|b| &*b.policy),
        session: None,
        resource: resource_policy.as_deref(),
        resource_required: false,
    };
    let type_of = |policy: &Policy| -> &'static str {
        if policy.source_id == "ResourcePolicy" {
            return "resource";
        }
        identity
            .iter()
            .chain(boundary.iter())
            .find(|s| std::ptr::eq(&*s.policy, policy))
            .map_or("none", |s| s.policy_type)
    };
    let all: Vec<&Policy> = identity_refs
        .iter()
        .copied()
        .chain(set.permissions_boundary)
        .chain(set.resource)
        .collect();
    let missing: Vec<&str> = {
        let mut keys: Vec<&str> = Vec::new();
        for pol in &all {
            for s in pol.statements.iter() {
                for c in s.conditions.iter() {
                    if context.get(&c.key).is_none()
                        && !keys.iter().any(|k| k.eq_ignore_ascii_case(&c.key))
                    {
                        keys.push(&c.key);
                    }
                }
            }
        }
        keys
    };

    let mut x = Xml::response(op, NS);
    x.start("EvaluationResults");
    for action in &actions {
        for resource in &resources {
            let request = Request {
                principal: caller.as_ref(),
                action,
                resource,
                context: &context,
            };
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
                for k in &missing {
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
    }
    x.end();
    x.bool("IsTruncated", false);
    Ok(x.finish(op, ctx.request_id))
}
