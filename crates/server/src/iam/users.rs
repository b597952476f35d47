//! IAM users: create, read, rename, delete, tags, inline and attached policies, their groups,
//! and their access keys.

use podiam_policy::PolicyKind;
use podiam_store::{AccessKey, Change, State, User};

use super::*;
use crate::ids;

// === users ===

/// A user as IAM describes it. `full`: with its tags (`GetUser`, `CreateUser`); AWS's list
/// operations leave them out.
pub(super) fn user_xml(x: &mut Xml, u: &User, full: bool) {
    x.text("Path", &u.path)
        .text("UserName", &u.user_name)
        .text("UserId", &u.user_id)
        .text("Arn", &u.arn)
        .text("CreateDate", &date(u.create_date));
    if full && !u.tags.is_empty() {
        tags_xml(x, "Tags", &u.tags);
    }
}

pub(super) async fn create_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?.to_string();
    name_rule("UserName", &name, 64)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let requested = p.tags("Tags")?;
    let tags = tags_rule(&requested, 0)?;
    let arn = ctx.iam_arn(&format!("user{path}{name}"));
    let user = User {
        user_name: name.clone(),
        path,
        user_id: ids::unique("AIDA")?,
        arn: arn.clone(),
        create_date: ctx.facts.now,
        tags,
        inline_policies: Default::default(),
        attached_policy_arns: Vec::new(),
        admin: false,
    };
    let user = ctx
        .shared
        .write(|state| {
            ctx.check_with(
                state,
                "iam:CreateUser",
                &arn,
                &RequestKeys::tagging(&requested),
            )?;
            if state.users.contains_key(&name.to_ascii_lowercase()) {
                return Err(AwsError::already_exists(format!(
                    "User with name {name} already exists."
                )));
            }
            if state.users.len() >= 5000 {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for UsersPerAccount: 5000",
                ));
            }
            Ok((
                vec![Change::User(name.to_ascii_lowercase(), Some(user.clone()))],
                user.clone(),
            ))
        })
        .await?;
    let mut x = Xml::response("CreateUser", NS);
    x.start("User");
    user_xml(&mut x, &user, true);
    x.end();
    Ok(reply(ctx, "CreateUser", x))
}

/// The user a call names, or the calling user when it names none (AWS: "defaults to the
/// caller"; `GetUser` and the access-key calls), once the caller may perform `action` on it:
/// authorised before the lookup, as AWS does.
pub(super) fn target_user<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    p: &Params<'_>,
    action: &str,
) -> Result<&'s User, AwsError> {
    let name = match (p.get("UserName"), ctx.signed_caller()?) {
        (Some(n), _) => n.to_string(),
        (None, crate::auth::Caller::User(u)) => u.user_name.clone(),
        (None, crate::auth::Caller::Session(_)) => {
            return Err(AwsError::validation(
                "Must specify userName when calling with non-User credentials",
            ));
        }
    };
    authorized_user(ctx, state, &name, action, RequestKeys::default())
}

pub(super) fn get_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = target_user(ctx, &state, p, "iam:GetUser")?;
    let mut x = Xml::response("GetUser", NS);
    x.start("User");
    user_xml(&mut x, u, true);
    x.end();
    Ok(reply(ctx, "GetUser", x))
}

// === access keys ===

pub(super) async fn create_access_key(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let (id, secret) = ids::access_key()?;
    let key = ctx
        .shared
        .write(|state| {
            let u = target_user(ctx, state, p, "iam:CreateAccessKey")?;
            if state
                .access_keys
                .values()
                .filter(|k| k.user_name == u.user_name)
                .count()
                >= 2
            {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for AccessKeysPerUser: 2",
                ));
            }
            let key = AccessKey {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                user_name: u.user_name.clone(),
                status: "Active".into(),
                create_date: ctx.facts.now,
            };
            Ok((
                vec![Change::AccessKey(
                    key.access_key_id.clone(),
                    Some(key.clone()),
                )],
                key,
            ))
        })
        .await?;
    let mut x = Xml::response("CreateAccessKey", NS);
    x.start("AccessKey")
        .text("UserName", &key.user_name)
        .text("AccessKeyId", &key.access_key_id)
        .text("Status", &key.status)
        .text("SecretAccessKey", &key.secret_access_key)
        .text("CreateDate", &date(key.create_date))
        .end();
    Ok(reply(ctx, "CreateAccessKey", x))
}

pub(super) async fn delete_access_key(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let id = p.required("AccessKeyId")?.to_string();
    ctx.shared
        .write(|state| {
            let u = target_user(ctx, state, p, "iam:DeleteAccessKey")?;
            match state.access_keys.get(&id) {
                Some(k) if k.user_name == u.user_name => {}
                _ => {
                    return Err(AwsError::no_such_entity(format!(
                        "The Access Key with id {id} cannot be found."
                    )));
                }
            }
            Ok((vec![Change::AccessKey(id.clone(), None)], ()))
        })
        .await?;
    Ok(empty(ctx, "DeleteAccessKey"))
}

pub(super) fn list_access_keys(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = target_user(ctx, &state, p, "iam:ListAccessKeys")?;
    let mut x = Xml::response("ListAccessKeys", NS);
    x.start("AccessKeyMetadata");
    for k in state
        .access_keys
        .values()
        .filter(|k| k.user_name == u.user_name)
    {
        x.start("member")
            .text("UserName", &k.user_name)
            .text("AccessKeyId", &k.access_key_id)
            .text("Status", &k.status)
            .text("CreateDate", &date(k.create_date))
            .end();
    }
    x.end();
    x.bool("IsTruncated", false);
    Ok(reply(ctx, "ListAccessKeys", x))
}

pub(super) fn list_users(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "iam:ListUsers", "*")?;
    let prefix = p.get("PathPrefix").unwrap_or("/");
    let items: Vec<(&str, &User)> = state
        .users
        .iter()
        .filter(|(_, u)| u.path.starts_with(prefix))
        .map(|(k, u)| (k.as_str(), u))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListUsers", NS);
    x.start("Users");
    for u in page {
        x.start("member");
        user_xml(&mut x, u, false);
        x.end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListUsers", x))
}

/// AWS's `UpdateUser`: a new name and/or path. The caller needs `iam:UpdateUser` on the user as
/// it is and as it will be ("to change Bob to Robert, … permission on Bob and Robert"). The
/// user's access keys follow it; its groups hold it by ID, so they need no change.
pub(super) async fn update_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?.to_string();
    let new_name = p.get("NewUserName").map(str::to_string);
    if let Some(n) = &new_name {
        name_rule("NewUserName", n, 64)?;
    }
    let new_path = p.get("NewPath").map(str::to_string);
    if let Some(path) = &new_path {
        path_rule("NewPath", path)?;
    }
    ctx.shared
        .write(|state| {
            let old = authorized_user(ctx, state, &name, "iam:UpdateUser", RequestKeys::default())?;
            let mut u = old.clone();
            if let Some(n) = &new_name {
                u.user_name = n.clone();
            }
            if let Some(path) = &new_path {
                u.path = path.clone();
            }
            u.arn = ctx.iam_arn(&format!("user{}{}", u.path, u.user_name));
            if u.arn != old.arn {
                ctx.check_with(
                    state,
                    "iam:UpdateUser",
                    &u.arn,
                    &RequestKeys::default().on_iam(&u.tags),
                )?;
            }
            let (old_key, new_key) = (
                old.user_name.to_ascii_lowercase(),
                u.user_name.to_ascii_lowercase(),
            );
            let mut changes = Vec::new();
            if new_key != old_key {
                if state.users.contains_key(&new_key) {
                    return Err(AwsError::already_exists(format!(
                        "User with name {} already exists.",
                        u.user_name
                    )));
                }
                changes.push(Change::User(old_key, None));
            }
            if u.user_name != old.user_name {
                for k in state
                    .access_keys
                    .values()
                    .filter(|k| k.user_name == old.user_name)
                {
                    let mut k = k.clone();
                    k.user_name = u.user_name.clone();
                    changes.push(Change::AccessKey(k.access_key_id.clone(), Some(k)));
                }
            }
            if u != *old {
                changes.push(Change::User(new_key, Some(u)));
            }
            Ok((changes, ()))
        })
        .await?;
    Ok(empty(ctx, "UpdateUser"))
}

/// AWS's `DeleteUser`: refused while the user has access keys, policies or groups ("you must
/// delete the items attached to the user manually").
pub(super) async fn delete_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?.to_string();
    ctx.shared
        .write(|state| {
            let u = authorized_user(ctx, state, &name, "iam:DeleteUser", RequestKeys::default())?;
            if state
                .access_keys
                .values()
                .any(|k| k.user_name == u.user_name)
            {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must delete access keys first.",
                ));
            }
            if !u.inline_policies.is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !u.attached_policy_arns.is_empty() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            if state.groups_of(u).next().is_some() {
                return Err(AwsError::delete_conflict(
                    "Cannot delete entity, must remove user from all groups first.",
                ));
            }
            Ok((
                vec![Change::User(u.user_name.to_ascii_lowercase(), None)],
                (),
            ))
        })
        .await?;
    Ok(empty(ctx, "DeleteUser"))
}

/// Applies `change` to the named user after checking `action` on it with what the request holds.
async fn modify_user(
    ctx: &Ctx<'_>,
    name: &str,
    action: &str,
    keys: RequestKeys<'_>,
    change: impl Fn(&State, &mut User) -> Result<(), AwsError>,
) -> Result<User, AwsError> {
    ctx.shared
        .write(|state| {
            let mut u = authorized_user(ctx, state, name, action, keys)?.clone();
            change(state, &mut u)?;
            Ok((
                vec![Change::User(
                    u.user_name.to_ascii_lowercase(),
                    Some(u.clone()),
                )],
                u,
            ))
        })
        .await
}

pub(super) async fn tag_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?;
    let new = p.tags("Tags")?;
    if new.is_empty() {
        return Err(AwsError::missing("Tags"));
    }
    modify_user(
        ctx,
        name,
        "iam:TagUser",
        RequestKeys::tagging(&new),
        |_, u| {
            // The tags after the merge: existing ones not overwritten, plus the new ones.
            let overwritten = u
                .tags
                .iter()
                .filter(|t| new.iter().any(|(k, _)| *k == t.key))
                .count();
            tags_rule(&new, u.tags.len() - overwritten)?;
            for (k, v) in new.clone() {
                match u.tags.iter_mut().find(|t| t.key == k) {
                    Some(t) => t.value = v,
                    None => u.tags.push(Tag { key: k, value: v }),
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(empty(ctx, "TagUser"))
}

pub(super) async fn untag_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?;
    let keys: Vec<String> = p.list("TagKeys").into_iter().map(str::to_string).collect();
    if keys.is_empty() {
        return Err(AwsError::missing("TagKeys"));
    }
    modify_user(
        ctx,
        name,
        "iam:UntagUser",
        RequestKeys::untagging(&keys),
        |_, u| {
            u.tags.retain(|t| !keys.contains(&t.key));
            Ok(())
        },
    )
    .await?;
    Ok(empty(ctx, "UntagUser"))
}

pub(super) fn list_user_tags(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = authorized_user(
        ctx,
        &state,
        p.required("UserName")?,
        "iam:ListUserTags",
        RequestKeys::default(),
    )?;
    let items: Vec<(&str, &Tag)> = u.tags.iter().map(|t| (t.key.as_str(), t)).collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListUserTags", NS);
    x.start("Tags");
    for t in page {
        x.start("member")
            .text("Key", &t.key)
            .text("Value", &t.value)
            .end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListUserTags", x))
}

// === the user's policies ===

pub(super) async fn put_user_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?;
    let policy_name = p.required("PolicyName")?.to_string();
    name_rule("PolicyName", &policy_name, 128)?;
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Identity)?;
    modify_user(
        ctx,
        name,
        "iam:PutUserPolicy",
        RequestKeys::default(),
        |_, u| {
            put_inline(
                ctx,
                Holder::User,
                &mut u.inline_policies,
                &policy_name,
                &doc,
                compiled.size,
            )
        },
    )
    .await?;
    Ok(empty(ctx, "PutUserPolicy"))
}

pub(super) fn get_user_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = authorized_user(
        ctx,
        &state,
        p.required("UserName")?,
        "iam:GetUserPolicy",
        RequestKeys::default(),
    )?;
    let name = p.required("PolicyName")?;
    let doc = u
        .inline_policies
        .get(name)
        .ok_or_else(|| no_such_inline(Holder::User, name))?;
    let mut x = Xml::response("GetUserPolicy", NS);
    x.text("UserName", &u.user_name)
        .text("PolicyName", name)
        .text("PolicyDocument", &url_encode(doc));
    Ok(reply(ctx, "GetUserPolicy", x))
}

pub(super) async fn delete_user_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?;
    let policy_name = p.required("PolicyName")?.to_string();
    modify_user(
        ctx,
        name,
        "iam:DeleteUserPolicy",
        RequestKeys::default(),
        |_, u| {
            u.inline_policies
                .remove(&policy_name)
                .map(|_| ())
                .ok_or_else(|| no_such_inline(Holder::User, &policy_name))
        },
    )
    .await?;
    Ok(empty(ctx, "DeleteUserPolicy"))
}

pub(super) fn list_user_policies(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = authorized_user(
        ctx,
        &state,
        p.required("UserName")?,
        "iam:ListUserPolicies",
        RequestKeys::default(),
    )?;
    inline_names_reply(ctx, "ListUserPolicies", &u.inline_policies, p)
}

pub(super) async fn attach_user_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?;
    let arn = p.required("PolicyArn")?.to_string();
    arn_rule("PolicyArn", &arn)?;
    modify_user(
        ctx,
        name,
        "iam:AttachUserPolicy",
        RequestKeys::policy(&arn),
        |state, u| attach(state, Holder::User, &mut u.attached_policy_arns, &arn),
    )
    .await?;
    Ok(empty(ctx, "AttachUserPolicy"))
}

pub(super) async fn detach_user_policy(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let name = p.required("UserName")?;
    let arn = p.required("PolicyArn")?.to_string();
    arn_rule("PolicyArn", &arn)?;
    modify_user(
        ctx,
        name,
        "iam:DetachUserPolicy",
        RequestKeys::policy(&arn),
        |_, u| detach(&mut u.attached_policy_arns, &arn),
    )
    .await?;
    Ok(empty(ctx, "DetachUserPolicy"))
}

pub(super) fn list_attached_user_policies(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = authorized_user(
        ctx,
        &state,
        p.required("UserName")?,
        "iam:ListAttachedUserPolicies",
        RequestKeys::default(),
    )?;
    attached_reply(
        ctx,
        "ListAttachedUserPolicies",
        &state,
        &u.attached_policy_arns,
        p,
    )
}

pub(super) fn list_groups_for_user(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = authorized_user(
        ctx,
        &state,
        p.required("UserName")?,
        "iam:ListGroupsForUser",
        RequestKeys::default(),
    )?;
    let items: Vec<(&str, &Group)> = state
        .groups
        .iter()
        .filter(|(_, g)| g.has_member(u))
        .map(|(k, g)| (k.as_str(), g))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response("ListGroupsForUser", NS);
    x.start("Groups");
    for g in page {
        x.start("member");
        super::groups::group_xml(&mut x, g);
        x.end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, "ListGroupsForUser", x))
}
