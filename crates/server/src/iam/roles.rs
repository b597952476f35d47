//! IAM roles: create, read, update, delete, tags, inline and attached policies, permissions boundaries.

use podiam_policy::PolicyKind;
use podiam_store::{Change, Role, State, Tag};

use super::*;
use crate::ids;

// === roles ===

/// `CreateRole`'s input.
#[derive(Clone, Debug, Default)]
pub struct CreateRole {
    pub role_name: String,
    /// `/` when `None`.
    pub path: Option<String>,
    pub assume_role_policy_document: String,
    /// 3,600 s when `None`.
    pub max_session_duration: Option<i64>,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    pub permissions_boundary: Option<String>,
}

pub(super) async fn create_role_query(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let input = CreateRole {
        role_name: p.required("RoleName")?.to_string(),
        path: p.get("Path").map(str::to_string),
        assume_role_policy_document: p.required("AssumeRolePolicyDocument")?.to_string(),
        max_session_duration: p.int("MaxSessionDuration")?,
        description: p.get("Description").map(str::to_string),
        tags: p.tags("Tags")?,
        permissions_boundary: p.get("PermissionsBoundary").map(str::to_string),
    };
    let role = create_role(ctx, input).await?;
    let mut x = Xml::response("CreateRole", NS);
    x.start("Role");
    role_xml(&mut x, &role, true);
    x.end();
    Ok(reply(ctx, "CreateRole", x))
}

/// AWS's `CreateRole`: name and path rules, the trust policy's grammar and size, the
/// session-duration range, at most 5,000 roles.
pub(crate) async fn create_role(ctx: &Ctx<'_>, input: CreateRole) -> Result<Role, AwsError> {
    let name = input.role_name;
    name_rule("RoleName", &name, 64)?;
    let path = input.path.unwrap_or_else(|| "/".to_string());
    path_rule("Path", &path)?;
    let trust = input.assume_role_policy_document;
    let compiled = parse_policy(&trust, PolicyKind::Trust)?;
    ctx.shared.config.limits.check_trust_policy(&compiled)?;
    let max = input.max_session_duration.unwrap_or(3600);
    max_session_rule(max)?;
    let description = input.description;
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        return Err(AwsError::validation(
            "The description may be at most 1000 characters.",
        ));
    }
    let tags = tags_rule(&input.tags, 0)?;
    let input_tags = input.tags;
    let boundary = input.permissions_boundary;
    let arn = ctx.iam_arn(&format!("role{path}{name}"));
    let role_id = ids::unique("AROA")?;
    ctx.shared
        .write(|state| {
            ctx.check_with(
                state,
                "iam:CreateRole",
                &arn,
                &crate::actions::RequestKeys {
                    request_tags: &input_tags,
                    permissions_boundary: boundary.as_deref(),
                    ..Default::default()
                },
            )?;
            if state.roles.contains_key(&name.to_ascii_lowercase()) {
                return Err(AwsError::already_exists(format!(
                    "Role with name {name} already exists."
                )));
            }
            if state.roles.len() >= 5000 {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for RolesPerAccount: 5000",
                ));
            }
            if let Some(b) = &boundary {
                policy(state, b)?;
            }
            let role = Role {
                role_name: name.clone(),
                path: path.clone(),
                role_id: role_id.clone(),
                arn: arn.clone(),
                create_date: ctx.facts.now,
                assume_role_policy_document: trust.clone(),
                description: description.clone(),
                max_session_duration: u32::try_from(max).unwrap_or(3600),
                permissions_boundary_arn: boundary.clone(),
                tags: tags.clone(),
                inline_policies: Default::default(),
                attached_policy_arns: Vec::new(),
                last_used: None,
            };
            Ok((
                vec![Change::Role(name.to_ascii_lowercase(), Some(role.clone()))],
                role,
            ))
        })
        .await
}

pub(super) fn max_session_rule(max: i64) -> Result<(), AwsError> {
    if (3600..=43_200).contains(&max) {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value less than or equal to 43200 and greater than or equal to 3600"
        )))
    }
}

pub(super) fn get_role_query(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let r = get_role(ctx, p.required("RoleName")?)?;
    let mut x = Xml::response("GetRole", NS);
    x.start("Role");
    role_xml(&mut x, &r, true);
    x.end();
    Ok(reply(ctx, "GetRole", x))
}

/// AWS's `GetRole`.
pub(crate) fn get_role(ctx: &Ctx<'_>, name: &str) -> Result<Role, AwsError> {
    let state = ctx.shared.snapshot();
    let r = authorized_role(ctx, &state, name, "iam:GetRole")?;
    Ok(r.clone())
}

pub(super) async fn delete_role_query(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    delete_role(ctx, p.required("RoleName")?).await?;
    Ok(empty(ctx, "DeleteRole"))
}

pub(crate) async fn delete_role(ctx: &Ctx<'_>, name: &str) -> Result<(), AwsError> {
    ctx.shared
        .write(|state| {
            let r = authorized_role(ctx, state, name, "iam:DeleteRole")?;
            if !r.attached_policy_arns.is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            if !r.inline_policies.is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            Ok((vec![Change::Role(name.to_ascii_lowercase(), None)], ()))
        })
        .await
}

pub(super) fn list_roles(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "iam:ListRoles", "*")?;
    let prefix = p.get("PathPrefix").unwrap_or("/");
    let items: Vec<(&str, &Role)> = state
        .roles
        .iter()
        .filter(|(_, r)| r.path.starts_with(prefix))
        .map(|(k, r)| (k.as_str(), r))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListRoles", NS);
    x.start("Roles");
    for r in page {
        x.start("member");
        role_xml(&mut x, r, false);
        x.end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListRoles", x))
}

/// Applies `change` to the named role after checking `action` on it.
pub(super) async fn modify_role(
    ctx: &Ctx<'_>,
    name: &str,
    action: &str,
    change: impl Fn(&State, &mut Role) -> Result<(), AwsError>,
) -> Result<Role, AwsError> {
    modify_role_with(
        ctx,
        name,
        action,
        crate::actions::RequestKeys::default(),
        change,
    )
    .await
}

/// [`modify_role`], with what the request holds for its condition keys.
pub(super) async fn modify_role_with(
    ctx: &Ctx<'_>,
    name: &str,
    action: &str,
    keys: crate::actions::RequestKeys<'_>,
    change: impl Fn(&State, &mut Role) -> Result<(), AwsError>,
) -> Result<Role, AwsError> {
    ctx.shared
        .write(|state| {
            let mut r = authorized_role_with(ctx, state, name, action, keys)?.clone();
            change(state, &mut r)?;
            Ok((
                vec![Change::Role(name.to_ascii_lowercase(), Some(r.clone()))],
                r,
            ))
        })
        .await
}

pub(super) async fn update_role(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let description = p.get("Description").map(str::to_string);
    let max = p.int("MaxSessionDuration")?;
    if let Some(m) = max {
        max_session_rule(m)?;
    }
    let action = p.get("Action").unwrap_or("UpdateRole");
    let r = modify_role(ctx, name, "iam:UpdateRole", |_, r| {
        if let Some(d) = description.clone() {
            r.description = Some(d);
        }
        if let Some(m) = max {
            r.max_session_duration = u32::try_from(m).unwrap_or(r.max_session_duration);
        }
        Ok(())
    })
    .await?;
    if action == "UpdateRoleDescription" {
        let mut x = Xml::response(action, NS);
        x.start("Role");
        role_xml(&mut x, &r, true);
        x.end();
        return Ok(reply(ctx, action, x));
    }
    Ok(reply(ctx, "UpdateRole", Xml::response("UpdateRole", NS)))
}

pub(super) async fn update_assume_role_policy_query(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    update_assume_role_policy(ctx, p.required("RoleName")?, p.required("PolicyDocument")?).await?;
    Ok(empty(ctx, "UpdateAssumeRolePolicy"))
}

/// AWS's `UpdateAssumeRolePolicy`.
pub(crate) async fn update_assume_role_policy(
    ctx: &Ctx<'_>,
    name: &str,
    document: &str,
) -> Result<(), AwsError> {
    let doc = document.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Trust)?;
    ctx.shared.config.limits.check_trust_policy(&compiled)?;
    modify_role(ctx, name, "iam:UpdateAssumeRolePolicy", |_, r| {
        r.assume_role_policy_document = doc.clone();
        Ok(())
    })
    .await?;
    Ok(())
}

pub(super) async fn tag_role(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let new = p.tags("Tags")?;
    let keys = crate::actions::RequestKeys {
        request_tags: &new,
        ..Default::default()
    };
    modify_role_with(ctx, name, "iam:TagRole", keys, |_, r| {
        // The tags after the merge: existing ones not overwritten, plus the new ones.
        let overwritten = r
            .tags
            .iter()
            .filter(|t| new.iter().any(|(k, _)| *k == t.key))
            .count();
        tags_rule(&new, r.tags.len() - overwritten)?;
        for (k, v) in new.clone() {
            match r.tags.iter_mut().find(|t| t.key == k) {
                Some(t) => t.value = v,
                None => r.tags.push(Tag { key: k, value: v }),
            }
        }
        Ok(())
    })
    .await?;
    Ok(empty(ctx, "TagRole"))
}

pub(super) async fn untag_role(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let keys: Vec<String> = p.list("TagKeys").into_iter().map(str::to_string).collect();
    let request = crate::actions::RequestKeys {
        removed_tag_keys: &keys,
        ..Default::default()
    };
    modify_role_with(ctx, name, "iam:UntagRole", request, |_, r| {
        r.tags.retain(|t| !keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(empty(ctx, "UntagRole"))
}

pub(super) fn list_role_tags(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = authorized_role(ctx, &state, p.required("RoleName")?, "iam:ListRoleTags")?;
    let items: Vec<(&str, &Tag)> = r.tags.iter().map(|t| (t.key.as_str(), t)).collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListRoleTags", NS);
    x.start("Tags");
    for t in page {
        x.start("member")
            .text("Key", &t.key)
            .text("Value", &t.value)
            .end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListRoleTags", x))
}

pub(super) async fn put_role_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let policy_name = p.required("PolicyName")?.to_string();
    name_rule("PolicyName", &policy_name, 128)?;
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Identity)?;
    let limits = ctx.shared.config.limits;
    modify_role(ctx, name, "iam:PutRolePolicy", |_, r| {
        let others = r
            .inline_policies
            .iter()
            .filter(|(n, _)| **n != policy_name)
            .map(|(_, d)| podiam_policy::limits::policy_size(d));
        limits.check_role_inline_total(others.chain([compiled.size]))?;
        r.inline_policies.insert(policy_name.clone(), doc.clone());
        Ok(())
    })
    .await?;
    Ok(empty(ctx, "PutRolePolicy"))
}

pub(super) fn get_role_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = authorized_role(ctx, &state, p.required("RoleName")?, "iam:GetRolePolicy")?;
    let name = p.required("PolicyName")?;
    let doc = r.inline_policies.get(name).ok_or_else(|| {
        AwsError::no_such_entity(format!("The role policy with name {name} cannot be found."))
    })?;
    let mut x = Xml::response("GetRolePolicy", NS);
    x.text("RoleName", &r.role_name)
        .text("PolicyName", name)
        .text("PolicyDocument", &url_encode(doc));
    Ok(reply(ctx, "GetRolePolicy", x))
}

pub(super) async fn delete_role_policy_query(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    delete_role_policy(ctx, p.required("RoleName")?, p.required("PolicyName")?).await?;
    Ok(empty(ctx, "DeleteRolePolicy"))
}

pub(crate) async fn delete_role_policy(
    ctx: &Ctx<'_>,
    name: &str,
    policy_name: &str,
) -> Result<(), AwsError> {
    modify_role(ctx, name, "iam:DeleteRolePolicy", |_, r| {
        r.inline_policies
            .remove(policy_name)
            .map(|_| ())
            .ok_or_else(|| {
                AwsError::no_such_entity(format!(
                    "The role policy with name {policy_name} cannot be found."
                ))
            })
    })
    .await?;
    Ok(())
}

pub(super) fn list_role_policies(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = authorized_role(ctx, &state, p.required("RoleName")?, "iam:ListRolePolicies")?;
    let items: Vec<(&str, &str)> = r
        .inline_policies
        .keys()
        .map(|k| (k.as_str(), k.as_str()))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListRolePolicies", NS);
    x.start("PolicyNames");
    for n in page {
        x.text("member", n);
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListRolePolicies", x))
}

pub(super) async fn attach_role_policy_query(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    attach_role_policy(ctx, p.required("RoleName")?, p.required("PolicyArn")?).await?;
    Ok(empty(ctx, "AttachRolePolicy"))
}

/// AWS's `AttachRolePolicy`: attaching the same policy twice is no change; at most 20.
pub(crate) async fn attach_role_policy(
    ctx: &Ctx<'_>,
    name: &str,
    arn: &str,
) -> Result<(), AwsError> {
    let arn = arn.to_string();
    arn_rule("PolicyArn", &arn)?;
    let keys = crate::actions::RequestKeys {
        policy_arn: Some(&arn),
        ..Default::default()
    };
    modify_role_with(ctx, name, "iam:AttachRolePolicy", keys, |state, r| {
        policy(state, &arn)?;
        if r.attached_policy_arns.contains(&arn) {
            return Ok(());
        }
        if r.attached_policy_arns.len() >= 20 {
            return Err(AwsError::limit_exceeded(
                "Cannot exceed quota for PoliciesPerRole: 20",
            ));
        }
        r.attached_policy_arns.push(arn.clone());
        Ok(())
    })
    .await?;
    Ok(())
}

pub(super) async fn detach_role_policy_query(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    detach_role_policy(ctx, p.required("RoleName")?, p.required("PolicyArn")?).await?;
    Ok(empty(ctx, "DetachRolePolicy"))
}

pub(crate) async fn detach_role_policy(
    ctx: &Ctx<'_>,
    name: &str,
    arn: &str,
) -> Result<(), AwsError> {
    let keys = crate::actions::RequestKeys {
        policy_arn: Some(arn),
        ..Default::default()
    };
    modify_role_with(ctx, name, "iam:DetachRolePolicy", keys, |_, r| {
        let before = r.attached_policy_arns.len();
        r.attached_policy_arns.retain(|a| *a != arn);
        if r.attached_policy_arns.len() == before {
            return Err(AwsError::no_such_entity(format!(
                "Policy {arn} was not found."
            )));
        }
        Ok(())
    })
    .await?;
    Ok(())
}

pub(super) fn list_attached_role_policies(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = authorized_role(
        ctx,
        &state,
        p.required("RoleName")?,
        "iam:ListAttachedRolePolicies",
    )?;
    let prefix = p.get("PathPrefix").unwrap_or("/");
    let items: Vec<(&str, (&str, &str))> = r
        .attached_policy_arns
        .iter()
        .filter_map(|a| state.policies.get(a))
        .filter(|pol| pol.path.starts_with(prefix))
        .map(|pol| {
            (
                pol.arn.as_str(),
                (pol.policy_name.as_str(), pol.arn.as_str()),
            )
        })
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListAttachedRolePolicies", NS);
    x.start("AttachedPolicies");
    for (n, a) in page {
        x.start("member")
            .text("PolicyName", n)
            .text("PolicyArn", a)
            .end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListAttachedRolePolicies", x))
}

pub(super) async fn put_role_permissions_boundary(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let arn = p.required("PermissionsBoundary")?.to_string();
    arn_rule("PermissionsBoundary", &arn)?;
    modify_role(ctx, name, "iam:PutRolePermissionsBoundary", |state, r| {
        policy(state, &arn)?;
        r.permissions_boundary_arn = Some(arn.clone());
        Ok(())
    })
    .await?;
    Ok(empty(ctx, "PutRolePermissionsBoundary"))
}

pub(super) async fn delete_role_permissions_boundary(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    modify_role(ctx, name, "iam:DeleteRolePermissionsBoundary", |_, r| {
        r.permissions_boundary_arn
            .take()
            .map(|_| ())
            .ok_or_else(|| {
                AwsError::no_such_entity(format!(
                    "The role {} has no permissions boundary.",
                    r.role_name
                ))
            })
    })
    .await?;
    Ok(empty(ctx, "DeleteRolePermissionsBoundary"))
}
