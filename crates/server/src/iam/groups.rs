//! IAM groups: create, read (with the members), rename, delete, membership, inline and attached
//! policies. A group's policies apply to each of its users (`auth::caller_policies`).

use podiam_policy::PolicyKind;
use podiam_store::{Change, Group, State, User};

use super::users::user_xml;
use super::*;
use crate::ids;

// === groups ===

pub(super) fn group_xml(x: &mut Xml, g: &Group) {
    x.text("Path", &g.path)
        .text("GroupName", &g.group_name)
        .text("GroupId", &g.group_id)
        .text("Arn", &g.arn)
        .text("CreateDate", &date(g.create_date));
}

/// AWS's `CreateGroup`: name and path rules, at most 300 groups (the default quota).
pub(super) async fn create_group(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?.to_string();
    name_rule("GroupName", &name, 128)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let group = Group {
        group_name: name.clone(),
        path: path.clone(),
        group_id: ids::unique("AGPA")?,
        arn: ctx.iam_arn(&format!("group{path}{name}")),
        create_date: ctx.facts.now,
        inline_policies: Default::default(),
        attached_policy_arns: Vec::new(),
        user_ids: Vec::new(),
    };
    let group = ctx
        .shared
        .write(|state| {
            ctx.check(state, "iam:CreateGroup", &group.arn)?;
            if state.groups.contains_key(&name.to_ascii_lowercase()) {
                return Err(AwsError::already_exists(format!(
                    "Group with name {name} already exists."
                )));
            }
            if state.groups.len() >= 300 {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for GroupsPerAccount: 300",
                ));
            }
            Ok((
                vec![Change::Group(
                    name.to_ascii_lowercase(),
                    Some(group.clone()),
                )],
                group.clone(),
            ))
        })
        .await?;
    let mut x = Xml::response("CreateGroup", NS);
    x.start("Group");
    group_xml(&mut x, &group);
    x.end();
    Ok(reply(ctx, "CreateGroup", x))
}

/// The group's members, in user-name order, keyed for pagination.
fn members<'s>(state: &'s State, g: &Group) -> Vec<(&'s str, &'s User)> {
    state
        .users
        .iter()
        .filter(|(_, u)| g.has_member(u))
        .map(|(k, u)| (k.as_str(), u))
        .collect()
}

/// AWS's `GetGroup`: the group and a page of its users.
pub(super) fn get_group(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let g = authorized_group(
        ctx,
        &state,
        p.required("GroupName")?,
        "iam:GetGroup",
        RequestKeys::default(),
    )?;
    let (page, next) = paginate(members(&state, g), p)?;
    let mut x = Xml::response("GetGroup", NS);
    x.start("Group");
    group_xml(&mut x, g);
    x.end();
    x.start("Users");
    for u in page {
        x.start("member");
        user_xml(&mut x, u, false);
        x.end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "GetGroup", x))
}

pub(super) fn list_groups(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "iam:ListGroups", "*")?;
    let prefix = p.get("PathPrefix").unwrap_or("/");
    let items: Vec<(&str, &Group)> = state
        .groups
        .iter()
        .filter(|(_, g)| g.path.starts_with(prefix))
        .map(|(k, g)| (k.as_str(), g))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListGroups", NS);
    x.start("Groups");
    for g in page {
        x.start("member");
        group_xml(&mut x, g);
        x.end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListGroups", x))
}

/// AWS's `UpdateGroup`: a new name and/or path, with `iam:UpdateGroup` on the group as it is and
/// as it will be. Members are held by user ID, so they stay.
pub(super) async fn update_group(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?.to_string();
    let new_name = p.get("NewGroupName").map(str::to_string);
    if let Some(n) = &new_name {
        name_rule("NewGroupName", n, 128)?;
    }
    let new_path = p.get("NewPath").map(str::to_string);
    if let Some(path) = &new_path {
        path_rule("NewPath", path)?;
    }
    ctx.shared
        .write(|state| {
            let old =
                authorized_group(ctx, state, &name, "iam:UpdateGroup", RequestKeys::default())?;
            let mut g = old.clone();
            if let Some(n) = &new_name {
                g.group_name = n.clone();
            }
            if let Some(path) = &new_path {
                g.path = path.clone();
            }
            g.arn = ctx.iam_arn(&format!("group{}{}", g.path, g.group_name));
            if g.arn != old.arn {
                ctx.check(state, "iam:UpdateGroup", &g.arn)?;
            }
            let (old_key, new_key) = (
                old.group_name.to_ascii_lowercase(),
                g.group_name.to_ascii_lowercase(),
            );
            let mut changes = Vec::new();
            if new_key != old_key {
                if state.groups.contains_key(&new_key) {
                    return Err(AwsError::already_exists(format!(
                        "Group with name {} already exists.",
                        g.group_name
                    )));
                }
                changes.push(Change::Group(old_key, None));
            }
            if g != *old {
                changes.push(Change::Group(new_key, Some(g)));
            }
            Ok((changes, ()))
        })
        .await?;
    Ok(empty(ctx, "UpdateGroup"))
}

/// AWS's `DeleteGroup`: "The group must not contain any users or have any attached policies."
pub(super) async fn delete_group(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?.to_string();
    ctx.shared
        .write(|state| {
            let g = authorized_group(ctx, state, &name, "iam:DeleteGroup", RequestKeys::default())?;
            if !members(state, g).is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must remove users from group first.",
                ));
            }
            if !g.inline_policies.is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !g.attached_policy_arns.is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            Ok((
                vec![Change::Group(g.group_name.to_ascii_lowercase(), None)],
                (),
            ))
        })
        .await?;
    Ok(empty(ctx, "DeleteGroup"))
}

/// Applies `change` to the named group after checking `action` on it with what the request holds.
async fn modify_group(
    ctx: &Ctx<'_>,
    name: &str,
    action: &str,
    keys: RequestKeys<'_>,
    change: impl Fn(&State, &mut Group) -> Result<(), AwsError>,
) -> Result<Group, AwsError> {
    ctx.shared
        .write(|state| {
            let mut g = authorized_group(ctx, state, name, action, keys)?.clone();
            change(state, &mut g)?;
            Ok((
                vec![Change::Group(
                    g.group_name.to_ascii_lowercase(),
                    Some(g.clone()),
                )],
                g,
            ))
        })
        .await
}

// === membership ===

/// AWS's `AddUserToGroup` (authorised on the group): adding a member again is no change; a user
/// is in at most 10 groups (the default quota).
pub(super) async fn add_user_to_group(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?;
    let user_name = p.required("UserName")?.to_string();
    modify_group(
        ctx,
        name,
        "iam:AddUserToGroup",
        RequestKeys::default(),
        |state, g| {
            let u = state
                .users
                .get(&user_name.to_ascii_lowercase())
                .ok_or_else(|| no_such_user(&user_name))?;
            if g.has_member(u) {
                return Ok(());
            }
            if state.groups_of(u).count() >= 10 {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for GroupsPerUser: 10",
                ));
            }
            g.user_ids.push(u.user_id.clone());
            Ok(())
        },
    )
    .await?;
    Ok(empty(ctx, "AddUserToGroup"))
}

/// AWS's `RemoveUserFromGroup` (authorised on the group).
pub(super) async fn remove_user_from_group(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let name = p.required("GroupName")?;
    let user_name = p.required("UserName")?.to_string();
    modify_group(
        ctx,
        name,
        "iam:RemoveUserFromGroup",
        RequestKeys::default(),
        |state, g| {
            let u = state
                .users
                .get(&user_name.to_ascii_lowercase())
                .filter(|u| g.has_member(u))
                .ok_or_else(|| no_such_user(&user_name))?;
            g.user_ids.retain(|id| *id != u.user_id);
            Ok(())
        },
    )
    .await?;
    Ok(empty(ctx, "RemoveUserFromGroup"))
}

// === the group's policies ===

pub(super) async fn put_group_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?;
    let policy_name = p.required("PolicyName")?.to_string();
    name_rule("PolicyName", &policy_name, 128)?;
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Identity)?;
    modify_group(
        ctx,
        name,
        "iam:PutGroupPolicy",
        RequestKeys::default(),
        |_, g| {
            put_inline(
                ctx,
                Holder::Group,
                &mut g.inline_policies,
                &policy_name,
                &doc,
                compiled.size,
            )
        },
    )
    .await?;
    Ok(empty(ctx, "PutGroupPolicy"))
}

pub(super) fn get_group_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let g = authorized_group(
        ctx,
        &state,
        p.required("GroupName")?,
        "iam:GetGroupPolicy",
        RequestKeys::default(),
    )?;
    let name = p.required("PolicyName")?;
    let doc = g
        .inline_policies
        .get(name)
        .ok_or_else(|| no_such_inline(Holder::Group, name))?;
    let mut x = Xml::response("GetGroupPolicy", NS);
    x.text("GroupName", &g.group_name)
        .text("PolicyName", name)
        .text("PolicyDocument", &url_encode(doc));
    Ok(reply(ctx, "GetGroupPolicy", x))
}

pub(super) async fn delete_group_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?;
    let policy_name = p.required("PolicyName")?.to_string();
    modify_group(
        ctx,
        name,
        "iam:DeleteGroupPolicy",
        RequestKeys::default(),
        |_, g| {
            g.inline_policies
                .remove(&policy_name)
                .map(|_| ())
                .ok_or_else(|| no_such_inline(Holder::Group, &policy_name))
        },
    )
    .await?;
    Ok(empty(ctx, "DeleteGroupPolicy"))
}

pub(super) fn list_group_policies(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let g = authorized_group(
        ctx,
        &state,
        p.required("GroupName")?,
        "iam:ListGroupPolicies",
        RequestKeys::default(),
    )?;
    inline_names_reply(ctx, "ListGroupPolicies", &g.inline_policies, p)
}

pub(super) async fn attach_group_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?;
    let arn = p.required("PolicyArn")?.to_string();
    arn_rule("PolicyArn", &arn)?;
    modify_group(
        ctx,
        name,
        "iam:AttachGroupPolicy",
        RequestKeys::policy(&arn),
        |state, g| attach(state, Holder::Group, &mut g.attached_policy_arns, &arn),
    )
    .await?;
    Ok(empty(ctx, "AttachGroupPolicy"))
}

pub(super) async fn detach_group_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("GroupName")?;
    let arn = p.required("PolicyArn")?.to_string();
    arn_rule("PolicyArn", &arn)?;
    modify_group(
        ctx,
        name,
        "iam:DetachGroupPolicy",
        RequestKeys::policy(&arn),
        |_, g| detach(&mut g.attached_policy_arns, &arn),
    )
    .await?;
    Ok(empty(ctx, "DetachGroupPolicy"))
}

pub(super) fn list_attached_group_policies(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let g = authorized_group(
        ctx,
        &state,
        p.required("GroupName")?,
        "iam:ListAttachedGroupPolicies",
        RequestKeys::default(),
    )?;
    attached_reply(
        ctx,
        "ListAttachedGroupPolicies",
        &state,
        &g.attached_policy_arns,
        p,
    )
}
