//! IAM managed policies and their versions.

use podiam_policy::PolicyKind;
use podiam_store::{Change, ManagedPolicy, PolicyVersion};

use super::*;
use crate::ids;

// === managed policies ===

pub(super) async fn create_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("PolicyName")?.to_string();
    name_rule("PolicyName", &name, 128)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Identity)?;
    ctx.shared.config.limits.check_managed_policy(&compiled)?;
    let requested = p.tags("Tags")?;
    let tags = tags_rule(&requested, 0)?;
    let arn = ctx.iam_arn(&format!("policy{path}{name}"));
    let policy_id = ids::unique("ANPA")?;
    let description = p.get("Description").map(str::to_string);
    let created = ctx
        .shared
        .write(|state| {
            ctx.check_with(
                state,
                "iam:CreatePolicy",
                &arn,
                &RequestKeys::tagging(&requested),
            )?;
            if state.policies.contains_key(&arn)
                || state
                    .policies
                    .values()
                    .any(|p| !p.aws_managed && p.policy_name.eq_ignore_ascii_case(&name))
            {
                return Err(AwsError::already_exists(format!(
                    "A policy called {name} already exists. Duplicate names are not allowed."
                )));
            }
            let pol = ManagedPolicy {
                policy_name: name.clone(),
                path: path.clone(),
                policy_id: policy_id.clone(),
                arn: arn.clone(),
                description: description.clone(),
                create_date: ctx.facts.now,
                update_date: ctx.facts.now,
                default_version_id: "v1".into(),
                versions: vec![PolicyVersion {
                    version_id: "v1".into(),
                    document: doc.clone(),
                    create_date: ctx.facts.now,
                }],
                next_version: 2,
                tags: tags.clone(),
                aws_managed: false,
            };
            Ok((vec![Change::Policy(arn.clone(), Some(pol.clone()))], pol))
        })
        .await?;
    let state = ctx.shared.snapshot();
    let mut x = Xml::response("CreatePolicy", NS);
    x.start("Policy");
    policy_xml(&mut x, &state, &created, false);
    if !created.tags.is_empty() {
        tags_xml(&mut x, "Tags", &created.tags);
    }
    x.end();
    Ok(reply(ctx, "CreatePolicy", x))
}

/// AWS's `GetPolicy`.
pub(crate) fn get_policy(ctx: &Ctx<'_>, arn: &str) -> Result<ManagedPolicy, AwsError> {
    let state = ctx.shared.snapshot();
    let pol = authorized_policy(ctx, &state, arn, "iam:GetPolicy")?;
    Ok(pol.clone())
}

pub(super) fn get_policy_query(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let pol = &get_policy(ctx, p.required("PolicyArn")?)?;
    let state = ctx.shared.snapshot();
    let mut x = Xml::response("GetPolicy", NS);
    x.start("Policy");
    policy_xml(&mut x, &state, pol, true);
    x.end();
    Ok(reply(ctx, "GetPolicy", x))
}

pub(super) async fn delete_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let arn = p.required("PolicyArn")?.to_string();
    ctx.shared
        .write(|state| {
            let pol = authorized_policy(ctx, state, &arn, "iam:DeletePolicy")?;
            if pol.aws_managed {
                return Err(AwsError::unmodifiable(format!("Cannot delete the AWS managed policy {arn}.")));
            }
            let (attached, boundary) = attachment_counts(state, &arn);
            if attached + boundary > 0 {
                return Err(AwsError::delete_conflict("Cannot delete a policy attached to entities."));
            }
            if pol.versions.len() > 1 {
                return Err(AwsError::delete_conflict(
                    "This policy has more than one version. Before you delete a policy, you must delete the policy's versions. The default version is deleted with the policy.",
                ));
            }
            Ok((vec![Change::Policy(arn.clone(), None)], ()))
        })
        .await?;
    Ok(empty(ctx, "DeletePolicy"))
}

pub(super) fn list_policies(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "iam:ListPolicies", "*")?;
    let scope = p.get("Scope").unwrap_or("All");
    if !matches!(scope, "All" | "AWS" | "Local") {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{scope}' at 'scope' failed to satisfy constraint: Member must satisfy enum value set: [All, AWS, Local]"
        )));
    }
    let only_attached = p.bool("OnlyAttached")?.unwrap_or(false);
    let prefix = p.get("PathPrefix").unwrap_or("/");
    let items: Vec<(&str, &ManagedPolicy)> = state
        .policies
        .values()
        .filter(|pol| match scope {
            "AWS" => pol.aws_managed,
            "Local" => !pol.aws_managed,
            _ => true,
        })
        .filter(|pol| pol.path.starts_with(prefix))
        .filter(|pol| !only_attached || attachment_counts(&state, &pol.arn).0 > 0)
        .map(|pol| (pol.arn.as_str(), pol))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListPolicies", NS);
    x.start("Policies");
    for pol in page {
        x.start("member");
        policy_xml(&mut x, &state, pol, false);
        x.end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListPolicies", x))
}

pub(super) async fn modify_policy<T>(
    ctx: &Ctx<'_>,
    arn: &str,
    action: &str,
    change: impl Fn(&mut ManagedPolicy) -> Result<T, AwsError>,
) -> Result<T, AwsError> {
    ctx.shared
        .write(|state| {
            let mut pol = authorized_policy(ctx, state, arn, action)?.clone();
            if pol.aws_managed {
                return Err(AwsError::unmodifiable(format!(
                    "Cannot modify the AWS managed policy {arn}."
                )));
            }
            let out = change(&mut pol)?;
            pol.update_date = ctx.facts.now;
            Ok((vec![Change::Policy(arn.to_string(), Some(pol))], out))
        })
        .await
}

pub(super) async fn create_policy_version(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let arn = p.required("PolicyArn")?.to_string();
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Identity)?;
    ctx.shared.config.limits.check_managed_policy(&compiled)?;
    let set_default = p.bool("SetAsDefault")?.unwrap_or(false);
    let now = ctx.facts.now;
    let version = modify_policy(ctx, &arn, "iam:CreatePolicyVersion", |pol| {
        if pol.versions.len() >= 5 {
            return Err(AwsError::limit_exceeded(
                "A managed policy can have up to 5 versions. Before you create a new version, you must delete an existing version.",
            ));
        }
        let v = PolicyVersion {
            version_id: format!("v{}", pol.next_version),
            document: doc.clone(),
            create_date: now,
        };
        pol.next_version += 1;
        if set_default {
            pol.default_version_id = v.version_id.clone();
        }
        pol.versions.push(v.clone());
        Ok((v, set_default))
    })
    .await?;
    let mut x = Xml::response("CreatePolicyVersion", NS);
    x.start("PolicyVersion")
        .text("VersionId", &version.0.version_id)
        .bool("IsDefaultVersion", version.1)
        .text("CreateDate", &date(version.0.create_date))
        .end();
    Ok(reply(ctx, "CreatePolicyVersion", x))
}

pub(super) fn get_policy_version(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let pol = authorized_policy(
        ctx,
        &state,
        p.required("PolicyArn")?,
        "iam:GetPolicyVersion",
    )?;
    let id = p.required("VersionId")?;
    let v = pol
        .versions
        .iter()
        .find(|v| v.version_id == id)
        .ok_or_else(|| {
            AwsError::no_such_entity(format!(
                "Policy {} version {id} does not exist or is not attachable.",
                pol.arn
            ))
        })?;
    let mut x = Xml::response("GetPolicyVersion", NS);
    x.start("PolicyVersion")
        .text("Document", &url_encode(&v.document))
        .text("VersionId", &v.version_id)
        .bool("IsDefaultVersion", v.version_id == pol.default_version_id)
        .text("CreateDate", &date(v.create_date))
        .end();
    Ok(reply(ctx, "GetPolicyVersion", x))
}

pub(super) fn list_policy_versions(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let pol = authorized_policy(
        ctx,
        &state,
        p.required("PolicyArn")?,
        "iam:ListPolicyVersions",
    )?;
    let mut versions: Vec<&PolicyVersion> = pol.versions.iter().collect();
    versions.sort_by(|a, b| {
        b.create_date
            .cmp(&a.create_date)
            .then(b.version_id.len().cmp(&a.version_id.len()))
            .then(b.version_id.cmp(&a.version_id))
    });
    let items: Vec<(&str, &PolicyVersion)> = versions
        .into_iter()
        .map(|v| (v.version_id.as_str(), v))
        .collect();
    // Versions are listed newest first; the marker is a position, not a key order.
    let max = usize::try_from(p.int("MaxItems")?.unwrap_or(100).clamp(1, 1000)).unwrap_or(100);
    let start = p
        .get("Marker")
        .and_then(|m| items.iter().position(|(k, _)| *k == m))
        .unwrap_or(0);
    let page: Vec<&PolicyVersion> = items
        .iter()
        .skip(start)
        .take(max)
        .map(|(_, v)| *v)
        .collect();
    let next = items.get(start + max).map(|(k, _)| k.to_string());
    let mut x = Xml::response("ListPolicyVersions", NS);
    x.start("Versions");
    for v in page {
        x.start("member")
            .text("VersionId", &v.version_id)
            .bool("IsDefaultVersion", v.version_id == pol.default_version_id)
            .text("CreateDate", &date(v.create_date))
            .end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListPolicyVersions", x))
}

pub(super) async fn set_default_policy_version(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let arn = p.required("PolicyArn")?.to_string();
    let id = p.required("VersionId")?.to_string();
    modify_policy(ctx, &arn, "iam:SetDefaultPolicyVersion", |pol| {
        if !pol.versions.iter().any(|v| v.version_id == id) {
            return Err(AwsError::no_such_entity(format!(
                "Policy {arn} version {id} does not exist or is not attachable."
            )));
        }
        pol.default_version_id = id.clone();
        Ok(())
    })
    .await?;
    Ok(empty(ctx, "SetDefaultPolicyVersion"))
}

pub(super) async fn delete_policy_version(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let arn = p.required("PolicyArn")?.to_string();
    let id = p.required("VersionId")?.to_string();
    modify_policy(ctx, &arn, "iam:DeletePolicyVersion", |pol| {
        if pol.default_version_id == id {
            return Err(AwsError::delete_conflict(
                "Cannot delete the default version of a policy.",
            ));
        }
        let before = pol.versions.len();
        pol.versions.retain(|v| v.version_id != id);
        if pol.versions.len() == before {
            return Err(AwsError::no_such_entity(format!(
                "Policy {arn} version {id} does not exist or is not attachable."
            )));
        }
        Ok(())
    })
    .await?;
    Ok(empty(ctx, "DeletePolicyVersion"))
}
