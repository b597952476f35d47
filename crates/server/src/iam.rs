//! The IAM API (awsQuery, Version 2010-05-08): roles, managed and inline policies, OIDC providers,
//! users and access keys for administrators, and the policy simulator.

use podiam_policy::{Policy, PolicyKind};
use podiam_store::{
    AccessKey, Change, ManagedPolicy, OidcProvider, PolicyVersion, Role, State, Tag, User,
};

use crate::auth::authorize;
use crate::error::AwsError;
use crate::query::Params;
use crate::xml::Xml;
use crate::{Ctx, ids};

pub const NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// Dispatches one IAM action. Returns the XML body.
pub async fn handle(ctx: &Ctx<'_>, action: &str, p: &Params) -> Result<String, AwsError> {
    match action {
        "CreateRole" => create_role(ctx, p).await,
        "GetRole" => get_role(ctx, p),
        "DeleteRole" => delete_role(ctx, p).await,
        "ListRoles" => list_roles(ctx, p),
        "UpdateRole" => update_role(ctx, p).await,
        "UpdateRoleDescription" => update_role(ctx, p).await,
        "UpdateAssumeRolePolicy" => update_assume_role_policy(ctx, p).await,
        "TagRole" => tag_role(ctx, p).await,
        "UntagRole" => untag_role(ctx, p).await,
        "ListRoleTags" => list_role_tags(ctx, p),
        "PutRolePolicy" => put_role_policy(ctx, p).await,
        "GetRolePolicy" => get_role_policy(ctx, p),
        "DeleteRolePolicy" => delete_role_policy(ctx, p).await,
        "ListRolePolicies" => list_role_policies(ctx, p),
        "AttachRolePolicy" => attach_role_policy(ctx, p).await,
        "DetachRolePolicy" => detach_role_policy(ctx, p).await,
        "ListAttachedRolePolicies" => list_attached_role_policies(ctx, p),
        "PutRolePermissionsBoundary" => put_role_permissions_boundary(ctx, p).await,
        "DeleteRolePermissionsBoundary" => delete_role_permissions_boundary(ctx, p).await,
        "CreatePolicy" => create_policy(ctx, p).await,
        "GetPolicy" => get_policy(ctx, p),
        "DeletePolicy" => delete_policy(ctx, p).await,
        "ListPolicies" => list_policies(ctx, p),
        "CreatePolicyVersion" => create_policy_version(ctx, p).await,
        "GetPolicyVersion" => get_policy_version(ctx, p),
        "ListPolicyVersions" => list_policy_versions(ctx, p),
        "SetDefaultPolicyVersion" => set_default_policy_version(ctx, p).await,
        "DeletePolicyVersion" => delete_policy_version(ctx, p).await,
        "CreateOpenIDConnectProvider" => create_oidc_provider(ctx, p).await,
        "GetOpenIDConnectProvider" => get_oidc_provider(ctx, p),
        "ListOpenIDConnectProviders" => list_oidc_providers(ctx, p),
        "DeleteOpenIDConnectProvider" => delete_oidc_provider(ctx, p).await,
        "AddClientIDToOpenIDConnectProvider" => oidc_client_id(ctx, p, true).await,
        "RemoveClientIDFromOpenIDConnectProvider" => oidc_client_id(ctx, p, false).await,
        "UpdateOpenIDConnectProviderThumbprint" => update_oidc_thumbprint(ctx, p).await,
        "CreateUser" => create_user(ctx, p).await,
        "GetUser" => get_user(ctx, p),
        "CreateAccessKey" => create_access_key(ctx, p).await,
        "DeleteAccessKey" => delete_access_key(ctx, p).await,
        "ListAccessKeys" => list_access_keys(ctx, p),
        "SimulatePrincipalPolicy" => crate::simulate::principal(ctx, p),
        "SimulateCustomPolicy" => crate::simulate::custom(ctx, p),
        other => Err(AwsError::invalid_action(other)),
    }
}

// === validation (AWS's name rules and limits) ===

fn name_rule(param: &str, value: &str, max: usize) -> Result<(), AwsError> {
    let ok = !value.is_empty()
        && value.chars().count() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{value}' at '{}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}",
            crate::error::lower_first(param)
        )))
    }
}

fn path_rule(param: &str, value: &str) -> Result<(), AwsError> {
    let ok = value == "/"
        || (value.len() <= 512
            && value.len() >= 2
            && value.starts_with('/')
            && value.ends_with('/')
            && value.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{value}' at '{}' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)",
            crate::error::lower_first(param)
        )))
    }
}

fn tags_rule(tags: &[(String, String)], existing: usize) -> Result<Vec<Tag>, AwsError> {
    if tags.len() + existing > 50 {
        return Err(AwsError::limit_exceeded(
            "The number of tags has reached the maximum limit of 50.",
        ));
    }
    tags.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(AwsError::validation(format!(
                    "Tag `{k}`: keys must be 1 to 128 characters and values at most 256"
                )));
            }
            if k.to_ascii_lowercase().starts_with("aws:") {
                return Err(AwsError::invalid_input(
                    "User-defined tag keys cannot start with `aws:`.",
                ));
            }
            Ok(Tag {
                key: k.clone(),
                value: v.clone(),
            })
        })
        .collect()
}

fn policy_doc_charset(doc: &str) -> Result<(), AwsError> {
    // AWS: policy documents may hold only tab, newline, carriage return and U+0020–U+00FF.
    match doc
        .chars()
        .find(|c| !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'))
    {
        Some(c) => Err(AwsError::malformed_policy(format!(
            "the policy contains the character U+{:04X}, which IAM policies cannot hold",
            c as u32
        ))),
        None => Ok(()),
    }
}

fn parse_policy(doc: &str, kind: PolicyKind) -> Result<Policy, AwsError> {
    policy_doc_charset(doc)?;
    Ok(Policy::parse(doc, kind)?)
}

// === response helpers ===

/// Policy documents are URL-encoded in IAM responses (botocore decodes them).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn date(ms: i64) -> String {
    podiam_policy::date::format_date(ms)
}

fn tags_xml(x: &mut Xml, name: &'static str, tags: &[Tag]) {
    x.start(name);
    for t in tags {
        x.start("member")
            .text("Key", &t.key)
            .text("Value", &t.value)
            .end();
    }
    x.end();
}

fn role_xml(x: &mut Xml, r: &Role, full: bool) {
    x.text("Path", &r.path)
        .text("RoleName", &r.role_name)
        .text("RoleId", &r.role_id)
        .text("Arn", &r.arn)
        .text("CreateDate", &date(r.create_date))
        .text(
            "AssumeRolePolicyDocument",
            &url_encode(&r.assume_role_policy_document),
        )
        .opt("Description", r.description.as_deref())
        .num("MaxSessionDuration", r.max_session_duration);
    if full {
        if let Some(b) = &r.permissions_boundary_arn {
            x.start("PermissionsBoundary")
                .text("PermissionsBoundaryType", "Policy")
                .text("PermissionsBoundaryArn", b)
                .end();
        }
        if !r.tags.is_empty() {
            tags_xml(x, "Tags", &r.tags);
        }
        x.start("RoleLastUsed");
        if let Some(t) = r.last_used {
            x.text("LastUsedDate", &date(t));
        }
        x.end();
    }
}

fn attachment_counts(state: &State, arn: &str) -> (usize, usize) {
    let attached = state
        .roles
        .values()
        .filter(|r| r.attached_policy_arns.iter().any(|a| a == arn))
        .count()
        + state
            .users
            .values()
            .filter(|u| u.attached_policy_arns.iter().any(|a| a == arn))
            .count();
    let boundary = state
        .roles
        .values()
        .filter(|r| r.permissions_boundary_arn.as_deref() == Some(arn))
        .count();
    (attached, boundary)
}

fn policy_xml(x: &mut Xml, state: &State, p: &ManagedPolicy, full: bool) {
    let (attached, boundary) = attachment_counts(state, &p.arn);
    x.text("PolicyName", &p.policy_name)
        .text("PolicyId", &p.policy_id)
        .text("Arn", &p.arn)
        .text("Path", &p.path)
        .text("DefaultVersionId", &p.default_version_id)
        .num("AttachmentCount", attached)
        .num("PermissionsBoundaryUsageCount", boundary)
        .bool("IsAttachable", true);
    if full {
        x.opt("Description", p.description.as_deref());
    }
    x.text("CreateDate", &date(p.create_date))
        .text("UpdateDate", &date(p.update_date));
    if full && !p.tags.is_empty() {
        tags_xml(x, "Tags", &p.tags);
    }
}

/// `Marker`/`MaxItems` pagination. The marker is the key of the first item of the next page.
fn paginate<T>(items: Vec<(&str, T)>, p: &Params) -> Result<(Vec<T>, Option<String>), AwsError> {
    let max = p.int("MaxItems")?.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{max}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000"
        )));
    }
    let max = usize::try_from(max).unwrap_or(100);
    let start = match p.get("Marker") {
        Some(m) => items
            .iter()
            .position(|(k, _)| *k >= m)
            .unwrap_or(items.len()),
        None => 0,
    };
    let mut rest = items.into_iter().skip(start);
    let page: Vec<T> = rest.by_ref().take(max).map(|(_, v)| v).collect();
    let next = rest.next().map(|(k, _)| k.to_string());
    Ok((page, next))
}

fn finish_page(x: &mut Xml, next: Option<String>) {
    x.bool("IsTruncated", next.is_some());
    if let Some(m) = next {
        x.text("Marker", &m);
    }
}

// === lookups ===

fn role<'s>(state: &'s State, name: &str) -> Result<&'s Role, AwsError> {
    state.roles.get(&name.to_ascii_lowercase()).ok_or_else(|| {
        AwsError::no_such_entity(format!("The role with name {name} cannot be found."))
    })
}

fn policy<'s>(state: &'s State, arn: &str) -> Result<&'s ManagedPolicy, AwsError> {
    state.policies.get(arn).ok_or_else(|| {
        AwsError::no_such_entity(format!("Policy {arn} does not exist or is not attachable."))
    })
}

fn arn_rule(param: &str, value: &str) -> Result<(), AwsError> {
    if value.len() < 20 || value.len() > 2048 || !value.starts_with("arn:") {
        return Err(AwsError::invalid_input(format!(
            "ARN {value} is not valid. ({param})"
        )));
    }
    Ok(())
}

impl Ctx<'_> {
    fn arn(&self, resource: &str) -> String {
        format!(
            "arn:{}:iam::{}:{resource}",
            self.shared.config.partition, self.shared.config.account_id
        )
    }

    fn check(&self, state: &State, action: &str, resource: &str) -> Result<(), AwsError> {
        authorize(
            self.shared,
            state,
            self.signed_caller()?,
            &self.facts,
            action,
            resource,
            &[],
        )
    }

    /// Checks an action on a role; its tags are `aws:ResourceTag/…` and `iam:ResourceTag/…`.
    fn check_role(&self, state: &State, action: &str, role: &Role) -> Result<(), AwsError> {
        let tags: Vec<(String, String)> = role
            .tags
            .iter()
            .flat_map(|t| {
                [
                    (format!("aws:ResourceTag/{}", t.key), t.value.clone()),
                    (format!("iam:ResourceTag/{}", t.key), t.value.clone()),
                ]
            })
            .collect();
        authorize(
            self.shared,
            state,
            self.signed_caller()?,
            &self.facts,
            action,
            &role.arn,
            &tags,
        )
    }

    fn reply(&self, action: &str, x: Xml) -> String {
        x.finish(action, self.request_id)
    }

    fn empty(&self, action: &str) -> String {
        Xml::empty(action, NS, self.request_id)
    }
}

// === roles ===

async fn create_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?.to_string();
    name_rule("RoleName", &name, 64)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let trust = p.required("AssumeRolePolicyDocument")?.to_string();
    let compiled = parse_policy(&trust, PolicyKind::Trust)?;
    ctx.shared.config.limits.check_trust_policy(&compiled)?;
    let max = p.int("MaxSessionDuration")?.unwrap_or(3600);
    max_session_rule(max)?;
    let description = p.get("Description").map(str::to_string);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        return Err(AwsError::validation(
            "The description may be at most 1000 characters.",
        ));
    }
    let tags = tags_rule(&p.tags("Tags")?, 0)?;
    let boundary = p.get("PermissionsBoundary").map(str::to_string);
    let arn = ctx.arn(&format!("role{path}{name}"));
    let role_id = ids::unique("AROA")?;
    let role = ctx
        .shared
        .write(|state| {
            ctx.check(state, "iam:CreateRole", &arn)?;
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
        .await?;
    let mut x = Xml::response("CreateRole", NS);
    x.start("Role");
    role_xml(&mut x, &role, true);
    x.end();
    Ok(ctx.reply("CreateRole", x))
}

fn max_session_rule(max: i64) -> Result<(), AwsError> {
    if (3600..=43_200).contains(&max) {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value less than or equal to 43200 and greater than or equal to 3600"
        )))
    }
}

fn get_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let state = ctx.shared.snapshot();
    let r = role(&state, name)?;
    ctx.check_role(&state, "iam:GetRole", r)?;
    let mut x = Xml::response("GetRole", NS);
    x.start("Role");
    role_xml(&mut x, r, true);
    x.end();
    Ok(ctx.reply("GetRole", x))
}

async fn delete_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?.to_string();
    ctx.shared
        .write(|state| {
            let r = role(state, &name)?;
            ctx.check_role(state, "iam:DeleteRole", r)?;
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
        .await?;
    Ok(ctx.empty("DeleteRole"))
}

fn list_roles(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.reply("ListRoles", x))
}

/// Applies `change` to the named role after checking `action` on it.
async fn modify_role(
    ctx: &Ctx<'_>,
    name: &str,
    action: &str,
    change: impl Fn(&State, &mut Role) -> Result<(), AwsError>,
) -> Result<Role, AwsError> {
    ctx.shared
        .write(|state| {
            let mut r = role(state, name)?.clone();
            ctx.check_role(state, action, &r)?;
            change(state, &mut r)?;
            Ok((
                vec![Change::Role(name.to_ascii_lowercase(), Some(r.clone()))],
                r,
            ))
        })
        .await
}

async fn update_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
        return Ok(ctx.reply(action, x));
    }
    Ok(ctx.reply("UpdateRole", Xml::response("UpdateRole", NS)))
}

async fn update_assume_role_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Trust)?;
    ctx.shared.config.limits.check_trust_policy(&compiled)?;
    modify_role(ctx, name, "iam:UpdateAssumeRolePolicy", |_, r| {
        r.assume_role_policy_document = doc.clone();
        Ok(())
    })
    .await?;
    Ok(ctx.empty("UpdateAssumeRolePolicy"))
}

async fn tag_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let new = p.tags("Tags")?;
    modify_role(ctx, name, "iam:TagRole", |_, r| {
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
    Ok(ctx.empty("TagRole"))
}

async fn untag_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let keys: Vec<String> = p.list("TagKeys").into_iter().map(str::to_string).collect();
    modify_role(ctx, name, "iam:UntagRole", |_, r| {
        r.tags.retain(|t| !keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(ctx.empty("UntagRole"))
}

fn list_role_tags(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = role(&state, p.required("RoleName")?)?;
    ctx.check_role(&state, "iam:ListRoleTags", r)?;
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
    Ok(ctx.reply("ListRoleTags", x))
}

async fn put_role_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.empty("PutRolePolicy"))
}

fn get_role_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = role(&state, p.required("RoleName")?)?;
    let name = p.required("PolicyName")?;
    ctx.check_role(&state, "iam:GetRolePolicy", r)?;
    let doc = r.inline_policies.get(name).ok_or_else(|| {
        AwsError::no_such_entity(format!("The role policy with name {name} cannot be found."))
    })?;
    let mut x = Xml::response("GetRolePolicy", NS);
    x.text("RoleName", &r.role_name)
        .text("PolicyName", name)
        .text("PolicyDocument", &url_encode(doc));
    Ok(ctx.reply("GetRolePolicy", x))
}

async fn delete_role_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let policy_name = p.required("PolicyName")?.to_string();
    modify_role(ctx, name, "iam:DeleteRolePolicy", |_, r| {
        r.inline_policies
            .remove(&policy_name)
            .map(|_| ())
            .ok_or_else(|| {
                AwsError::no_such_entity(format!(
                    "The role policy with name {policy_name} cannot be found."
                ))
            })
    })
    .await?;
    Ok(ctx.empty("DeleteRolePolicy"))
}

fn list_role_policies(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = role(&state, p.required("RoleName")?)?;
    ctx.check_role(&state, "iam:ListRolePolicies", r)?;
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
    Ok(ctx.reply("ListRolePolicies", x))
}

async fn attach_role_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let arn = p.required("PolicyArn")?.to_string();
    arn_rule("PolicyArn", &arn)?;
    modify_role(ctx, name, "iam:AttachRolePolicy", |state, r| {
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
    Ok(ctx.empty("AttachRolePolicy"))
}

async fn detach_role_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let arn = p.required("PolicyArn")?.to_string();
    modify_role(ctx, name, "iam:DetachRolePolicy", |_, r| {
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
    Ok(ctx.empty("DetachRolePolicy"))
}

fn list_attached_role_policies(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let r = role(&state, p.required("RoleName")?)?;
    ctx.check_role(&state, "iam:ListAttachedRolePolicies", r)?;
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
    Ok(ctx.reply("ListAttachedRolePolicies", x))
}

async fn put_role_permissions_boundary(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("RoleName")?;
    let arn = p.required("PermissionsBoundary")?.to_string();
    arn_rule("PermissionsBoundary", &arn)?;
    modify_role(ctx, name, "iam:PutRolePermissionsBoundary", |state, r| {
        policy(state, &arn)?;
        r.permissions_boundary_arn = Some(arn.clone());
        Ok(())
    })
    .await?;
    Ok(ctx.empty("PutRolePermissionsBoundary"))
}

async fn delete_role_permissions_boundary(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.empty("DeleteRolePermissionsBoundary"))
}

// === managed policies ===

async fn create_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("PolicyName")?.to_string();
    name_rule("PolicyName", &name, 128)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let doc = p.required("PolicyDocument")?.to_string();
    let compiled = parse_policy(&doc, PolicyKind::Identity)?;
    ctx.shared.config.limits.check_managed_policy(&compiled)?;
    let tags = tags_rule(&p.tags("Tags")?, 0)?;
    let arn = ctx.arn(&format!("policy{path}{name}"));
    let policy_id = ids::unique("ANPA")?;
    let description = p.get("Description").map(str::to_string);
    let created = ctx
        .shared
        .write(|state| {
            ctx.check(state, "iam:CreatePolicy", &arn)?;
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
    Ok(ctx.reply("CreatePolicy", x))
}

fn get_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let pol = policy(&state, p.required("PolicyArn")?)?;
    ctx.check(&state, "iam:GetPolicy", &pol.arn)?;
    let mut x = Xml::response("GetPolicy", NS);
    x.start("Policy");
    policy_xml(&mut x, &state, pol, true);
    x.end();
    Ok(ctx.reply("GetPolicy", x))
}

async fn delete_policy(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let arn = p.required("PolicyArn")?.to_string();
    ctx.shared
        .write(|state| {
            let pol = policy(state, &arn)?;
            ctx.check(state, "iam:DeletePolicy", &arn)?;
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
    Ok(ctx.empty("DeletePolicy"))
}

fn list_policies(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.reply("ListPolicies", x))
}

async fn modify_policy<T>(
    ctx: &Ctx<'_>,
    arn: &str,
    action: &str,
    change: impl Fn(&mut ManagedPolicy) -> Result<T, AwsError>,
) -> Result<T, AwsError> {
    ctx.shared
        .write(|state| {
            let mut pol = policy(state, arn)?.clone();
            ctx.check(state, action, arn)?;
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

async fn create_policy_version(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.reply("CreatePolicyVersion", x))
}

fn get_policy_version(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let pol = policy(&state, p.required("PolicyArn")?)?;
    let id = p.required("VersionId")?;
    ctx.check(&state, "iam:GetPolicyVersion", &pol.arn)?;
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
    Ok(ctx.reply("GetPolicyVersion", x))
}

fn list_policy_versions(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let pol = policy(&state, p.required("PolicyArn")?)?;
    ctx.check(&state, "iam:ListPolicyVersions", &pol.arn)?;
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
    Ok(ctx.reply("ListPolicyVersions", x))
}

async fn set_default_policy_version(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.empty("SetDefaultPolicyVersion"))
}

async fn delete_policy_version(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
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
    Ok(ctx.empty("DeletePolicyVersion"))
}

// === OIDC providers ===

/// `https://host/path` → `host/path`, the form used in provider ARNs and condition keys.
pub fn provider_id(url: &str) -> Option<String> {
    provider_key(url).map(str::to_string)
}

/// [`provider_id`] borrowed from `url`.
pub fn provider_key(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    (!rest.is_empty() && !rest.contains(['?', '#', ' '])).then_some(rest)
}

fn thumbprint_rule(t: &[&str]) -> Result<(), AwsError> {
    if t.len() > 5 {
        return Err(AwsError::limit_exceeded(
            "Cannot exceed quota for ThumbprintsPerOpenIdConnectProvider: 5",
        ));
    }
    if let Some(bad) = t
        .iter()
        .find(|t| t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(AwsError::validation(format!(
            "Thumbprint `{bad}` must be 40 hexadecimal characters."
        )));
    }
    Ok(())
}

fn client_id_rule(ids: &[&str]) -> Result<(), AwsError> {
    if ids.len() > 100 {
        return Err(AwsError::limit_exceeded(
            "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: 100",
        ));
    }
    if let Some(bad) = ids.iter().find(|c| c.is_empty() || c.chars().count() > 255) {
        return Err(AwsError::validation(format!(
            "Client ID `{bad}` must be 1 to 255 characters."
        )));
    }
    Ok(())
}

async fn create_oidc_provider(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let url = p.required("Url")?.to_string();
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Err(AwsError::validation(format!(
            "Url `{url}` must begin with https://"
        )));
    }
    let id = provider_id(&url)
        .ok_or_else(|| AwsError::validation(format!("Url `{url}` is not a valid issuer URL")))?;
    let client_ids = p.list("ClientIDList");
    client_id_rule(&client_ids)?;
    let thumbprints = p.list("ThumbprintList");
    thumbprint_rule(&thumbprints)?;
    let tags = tags_rule(&p.tags("Tags")?, 0)?;
    // podiam extension: the issuer's JWKS, for clusters whose issuer cannot be reached.
    let static_jwks = p.get("Jwks").map(str::to_string);
    if let Some(j) = &static_jwks {
        crate::issuer::check_jwks(j)?;
    }
    let arn = ctx.arn(&format!("oidc-provider/{id}"));
    let provider = OidcProvider {
        arn: arn.clone(),
        url,
        client_ids: client_ids.iter().map(|s| s.to_string()).collect(),
        thumbprints: thumbprints.iter().map(|s| s.to_string()).collect(),
        create_date: ctx.facts.now,
        tags,
        static_jwks,
    };
    let created = ctx
        .shared
        .write(|state| {
            ctx.check(state, "iam:CreateOpenIDConnectProvider", &arn)?;
            if state.oidc_providers.contains_key(&arn) {
                return Err(AwsError::already_exists(format!(
                    "Provider with url {} already exists.",
                    provider.url
                )));
            }
            if state.oidc_providers.len() >= 100 {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for OpenIdConnectProvidersPerAccount: 100",
                ));
            }
            Ok((
                vec![Change::OidcProvider(arn.clone(), Some(provider.clone()))],
                provider.clone(),
            ))
        })
        .await?;
    let mut x = Xml::response("CreateOpenIDConnectProvider", NS);
    x.text("OpenIDConnectProviderArn", &created.arn);
    if !created.tags.is_empty() {
        tags_xml(&mut x, "Tags", &created.tags);
    }
    Ok(ctx.reply("CreateOpenIDConnectProvider", x))
}

fn oidc<'s>(state: &'s State, arn: &str) -> Result<&'s OidcProvider, AwsError> {
    state.oidc_providers.get(arn).ok_or_else(|| {
        AwsError::no_such_entity(format!("OpenIDConnect Provider not found for arn {arn}"))
    })
}

fn get_oidc_provider(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let o = oidc(&state, p.required("OpenIDConnectProviderArn")?)?;
    ctx.check(&state, "iam:GetOpenIDConnectProvider", &o.arn)?;
    let mut x = Xml::response("GetOpenIDConnectProvider", NS);
    // AWS returns the URL without its scheme.
    x.text("Url", &provider_id(&o.url).unwrap_or_default());
    x.start("ClientIDList");
    for c in &o.client_ids {
        x.text("member", c);
    }
    x.end().start("ThumbprintList");
    for t in &o.thumbprints {
        x.text("member", t);
    }
    x.end().text("CreateDate", &date(o.create_date));
    if !o.tags.is_empty() {
        tags_xml(&mut x, "Tags", &o.tags);
    }
    Ok(ctx.reply("GetOpenIDConnectProvider", x))
}

fn list_oidc_providers(ctx: &Ctx<'_>, _p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "iam:ListOpenIDConnectProviders", "*")?;
    let mut x = Xml::response("ListOpenIDConnectProviders", NS);
    x.start("OpenIDConnectProviderList");
    for arn in state.oidc_providers.keys() {
        x.start("member").text("Arn", arn).end();
    }
    x.end();
    Ok(ctx.reply("ListOpenIDConnectProviders", x))
}

async fn delete_oidc_provider(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn")?.to_string();
    ctx.shared
        .write(|state| {
            oidc(state, &arn)?;
            ctx.check(state, "iam:DeleteOpenIDConnectProvider", &arn)?;
            Ok((vec![Change::OidcProvider(arn.clone(), None)], ()))
        })
        .await?;
    Ok(ctx.empty("DeleteOpenIDConnectProvider"))
}

async fn modify_oidc(
    ctx: &Ctx<'_>,
    arn: &str,
    action: &str,
    change: impl Fn(&mut OidcProvider) -> Result<(), AwsError>,
) -> Result<(), AwsError> {
    ctx.shared
        .write(|state| {
            let mut o = oidc(state, arn)?.clone();
            ctx.check(state, action, arn)?;
            change(&mut o)?;
            Ok((vec![Change::OidcProvider(arn.to_string(), Some(o))], ()))
        })
        .await
}

async fn oidc_client_id(ctx: &Ctx<'_>, p: &Params, add: bool) -> Result<String, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn")?.to_string();
    let client = p.required("ClientID")?.to_string();
    client_id_rule(&[&client])?;
    let (op, action) = if add {
        (
            "AddClientIDToOpenIDConnectProvider",
            "iam:AddClientIDToOpenIDConnectProvider",
        )
    } else {
        (
            "RemoveClientIDFromOpenIDConnectProvider",
            "iam:RemoveClientIDFromOpenIDConnectProvider",
        )
    };
    modify_oidc(ctx, &arn, action, |o| {
        if add {
            if !o.client_ids.contains(&client) {
                let ids: Vec<&str> = o
                    .client_ids
                    .iter()
                    .map(String::as_str)
                    .chain([client.as_str()])
                    .collect();
                client_id_rule(&ids)?;
                o.client_ids.push(client.clone());
            }
        } else {
            o.client_ids.retain(|c| *c != client);
        }
        Ok(())
    })
    .await?;
    Ok(ctx.empty(op))
}

async fn update_oidc_thumbprint(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn")?.to_string();
    let list = p.list("ThumbprintList");
    thumbprint_rule(&list)?;
    let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    modify_oidc(
        ctx,
        &arn,
        "iam:UpdateOpenIDConnectProviderThumbprint",
        |o| {
            o.thumbprints = list.clone();
            Ok(())
        },
    )
    .await?;
    Ok(ctx.empty("UpdateOpenIDConnectProviderThumbprint"))
}

// === users and access keys (for administrators) ===

fn user_xml(x: &mut Xml, u: &User) {
    x.text("Path", &u.path)
        .text("UserName", &u.user_name)
        .text("UserId", &u.user_id)
        .text("Arn", &u.arn)
        .text("CreateDate", &date(u.create_date));
    if !u.tags.is_empty() {
        tags_xml(x, "Tags", &u.tags);
    }
}

async fn create_user(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let name = p.required("UserName")?.to_string();
    name_rule("UserName", &name, 64)?;
    let path = p.get("Path").unwrap_or("/").to_string();
    path_rule("Path", &path)?;
    let tags = tags_rule(&p.tags("Tags")?, 0)?;
    let arn = ctx.arn(&format!("user{path}{name}"));
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
    Ok(ctx.reply("CreateUser", x))
}

/// The named user, or the caller when no name is given (AWS: "defaults to the caller").
fn target_user<'s>(ctx: &Ctx<'_>, state: &'s State, p: &Params) -> Result<&'s User, AwsError> {
    let name = match (p.get("UserName"), ctx.signed_caller()?) {
        (Some(n), _) => n.to_string(),
        (None, crate::auth::Caller::User(u)) => u.user_name.clone(),
        (None, crate::auth::Caller::Session(_)) => {
            return Err(AwsError::validation(
                "Must specify userName when calling with non-User credentials",
            ));
        }
    };
    state.users.get(&name.to_ascii_lowercase()).ok_or_else(|| {
        AwsError::no_such_entity(format!("The user with name {name} cannot be found."))
    })
}

fn get_user(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = target_user(ctx, &state, p)?;
    ctx.check(&state, "iam:GetUser", &u.arn)?;
    let mut x = Xml::response("GetUser", NS);
    x.start("User");
    user_xml(&mut x, u);
    x.end();
    Ok(ctx.reply("GetUser", x))
}

async fn create_access_key(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let (id, secret) = ids::access_key()?;
    let key = ctx
        .shared
        .write(|state| {
            let u = target_user(ctx, state, p)?;
            ctx.check(state, "iam:CreateAccessKey", &u.arn)?;
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
    Ok(ctx.reply("CreateAccessKey", x))
}

async fn delete_access_key(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let id = p.required("AccessKeyId")?.to_string();
    ctx.shared
        .write(|state| {
            let u = target_user(ctx, state, p)?;
            ctx.check(state, "iam:DeleteAccessKey", &u.arn)?;
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
    Ok(ctx.empty("DeleteAccessKey"))
}

fn list_access_keys(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    let u = target_user(ctx, &state, p)?;
    ctx.check(&state, "iam:ListAccessKeys", &u.arn)?;
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
    Ok(ctx.reply("ListAccessKeys", x))
}
