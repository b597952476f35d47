//! IAM users and their access keys (for administrators).

use podiam_store::{AccessKey, Change, State, User};

use super::*;
use crate::ids;

// === users and access keys (for administrators) ===

pub(super) fn user_xml(x: &mut Xml, u: &User) {
    x.text("Path", &u.path)
        .text("UserName", &u.user_name)
        .text("UserId", &u.user_id)
        .text("Arn", &u.arn)
        .text("CreateDate", &date(u.create_date));
    if !u.tags.is_empty() {
        tags_xml(x, "Tags", &u.tags);
    }
}

pub(super) async fn create_user(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("UserName")?.to_string();
    name_rule("UserName", &name, 64)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let tags = tags_rule(&p.tags("Tags")?, 0)?;
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
            ctx.check(state, "iam:CreateUser", &arn)?;
            if state.users.contains_key(&name.to_ascii_lowercase()) {
                return Err(AwsError::already_exists(format!(
                    "User with name {name} already exists."
                )));
            }
            Ok((
                vec![Change::User(name.to_ascii_lowercase(), Some(user.clone()))],
                user.clone(),
            ))
        })
        .await?;
    let mut x = Xml::response("CreateUser", NS);
    x.start("User");
    user_xml(&mut x, &user);
    x.end();
    Ok(reply(ctx, "CreateUser", x))
}

/// The named user, or the caller when no name is given (AWS: "defaults to the caller").
/// The user a call names (or the calling user), once the caller may perform `action` on it:
/// authorised before the lookup, as AWS does.
pub(super) fn target_user<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    p: &Params,
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
    match state.users.get(&name.to_ascii_lowercase()) {
        Some(u) => {
            ctx.check(state, action, &u.arn)?;
            Ok(u)
        }
        None => {
            ctx.check(state, action, &ctx.iam_arn(&format!("user/{name}")))?;
            Err(AwsError::no_such_entity(format!(
                "The user with name {name} cannot be found."
            )))
        }
    }
}

pub(super) fn get_user(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = target_user(ctx, &state, p, "iam:GetUser")?;
    let mut x = Xml::response("GetUser", NS);
    x.start("User");
    user_xml(&mut x, u);
    x.end();
    Ok(reply(ctx, "GetUser", x))
}

pub(super) async fn create_access_key(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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

pub(super) async fn delete_access_key(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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

pub(super) fn list_access_keys(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
