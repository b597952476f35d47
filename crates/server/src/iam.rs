//! The IAM API (awsQuery, Version 2010-05-08): roles, managed and inline policies, OIDC providers,
//! users and their access keys, groups, and the policy simulator.

use podiam_policy::{Policy, PolicyKind};
use std::collections::BTreeMap;

use podiam_store::{Group, ManagedPolicy, Role, State, Tag, User};

use podiam_policy::date::format_date as date;

use crate::actions::RequestKeys;
use crate::ctx::Ctx;
use crate::error::AwsError;
use crate::query::Params;
use crate::xml::Xml;

mod groups;
pub(crate) mod oidc;
pub(crate) mod policies;
pub(crate) mod roles;
mod users;

pub use oidc::{CreateOpenIdConnectProvider, provider_id, provider_key};
pub use roles::CreateRole;

pub(crate) const NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// Dispatches one IAM action. Returns the XML body.
pub(crate) async fn handle(
    ctx: &Ctx<'_>,
    action: &str,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    match action {
        "CreateRole" => roles::create_role_query(ctx, p).await,
        "GetRole" => roles::get_role_query(ctx, p),
        "DeleteRole" => roles::delete_role_query(ctx, p).await,
        "ListRoles" => roles::list_roles(ctx, p),
        "UpdateRole" => roles::update_role(ctx, p).await,
        "UpdateRoleDescription" => roles::update_role(ctx, p).await,
        "UpdateAssumeRolePolicy" => roles::update_assume_role_policy_query(ctx, p).await,
        "TagRole" => roles::tag_role(ctx, p).await,
        "UntagRole" => roles::untag_role(ctx, p).await,
        "ListRoleTags" => roles::list_role_tags(ctx, p),
        "PutRolePolicy" => roles::put_role_policy(ctx, p).await,
        "GetRolePolicy" => roles::get_role_policy(ctx, p),
        "DeleteRolePolicy" => roles::delete_role_policy_query(ctx, p).await,
        "ListRolePolicies" => roles::list_role_policies(ctx, p),
        "AttachRolePolicy" => roles::attach_role_policy_query(ctx, p).await,
        "DetachRolePolicy" => roles::detach_role_policy_query(ctx, p).await,
        "ListAttachedRolePolicies" => roles::list_attached_role_policies(ctx, p),
        "PutRolePermissionsBoundary" => roles::put_role_permissions_boundary(ctx, p).await,
        "DeleteRolePermissionsBoundary" => roles::delete_role_permissions_boundary(ctx, p).await,
        "CreatePolicy" => policies::create_policy(ctx, p).await,
        "GetPolicy" => policies::get_policy_query(ctx, p),
        "DeletePolicy" => policies::delete_policy(ctx, p).await,
        "ListPolicies" => policies::list_policies(ctx, p),
        "CreatePolicyVersion" => policies::create_policy_version(ctx, p).await,
        "GetPolicyVersion" => policies::get_policy_version(ctx, p),
        "ListPolicyVersions" => policies::list_policy_versions(ctx, p),
        "SetDefaultPolicyVersion" => policies::set_default_policy_version(ctx, p).await,
        "DeletePolicyVersion" => policies::delete_policy_version(ctx, p).await,
        "CreateOpenIDConnectProvider" => oidc::create_oidc_provider_query(ctx, p).await,
        "GetOpenIDConnectProvider" => oidc::get_oidc_provider_query(ctx, p),
        "ListOpenIDConnectProviders" => oidc::list_oidc_providers(ctx, p),
        "DeleteOpenIDConnectProvider" => oidc::delete_oidc_provider(ctx, p).await,
        "AddClientIDToOpenIDConnectProvider" => oidc::oidc_client_id(ctx, p, true).await,
        "RemoveClientIDFromOpenIDConnectProvider" => oidc::oidc_client_id(ctx, p, false).await,
        "UpdateOpenIDConnectProviderThumbprint" => oidc::update_oidc_thumbprint(ctx, p).await,
        "CreateUser" => users::create_user(ctx, p).await,
        "GetUser" => users::get_user(ctx, p),
        "ListUsers" => users::list_users(ctx, p),
        "UpdateUser" => users::update_user(ctx, p).await,
        "DeleteUser" => users::delete_user(ctx, p).await,
        "TagUser" => users::tag_user(ctx, p).await,
        "UntagUser" => users::untag_user(ctx, p).await,
        "ListUserTags" => users::list_user_tags(ctx, p),
        "PutUserPolicy" => users::put_user_policy(ctx, p).await,
        "GetUserPolicy" => users::get_user_policy(ctx, p),
        "DeleteUserPolicy" => users::delete_user_policy(ctx, p).await,
        "ListUserPolicies" => users::list_user_policies(ctx, p),
        "AttachUserPolicy" => users::attach_user_policy(ctx, p).await,
        "DetachUserPolicy" => users::detach_user_policy(ctx, p).await,
        "ListAttachedUserPolicies" => users::list_attached_user_policies(ctx, p),
        "ListGroupsForUser" => users::list_groups_for_user(ctx, p),
        "CreateGroup" => groups::create_group(ctx, p).await,
        "GetGroup" => groups::get_group(ctx, p),
        "ListGroups" => groups::list_groups(ctx, p),
        "UpdateGroup" => groups::update_group(ctx, p).await,
        "DeleteGroup" => groups::delete_group(ctx, p).await,
        "AddUserToGroup" => groups::add_user_to_group(ctx, p).await,
        "RemoveUserFromGroup" => groups::remove_user_from_group(ctx, p).await,
        "PutGroupPolicy" => groups::put_group_policy(ctx, p).await,
        "GetGroupPolicy" => groups::get_group_policy(ctx, p),
        "DeleteGroupPolicy" => groups::delete_group_policy(ctx, p).await,
        "ListGroupPolicies" => groups::list_group_policies(ctx, p),
        "AttachGroupPolicy" => groups::attach_group_policy(ctx, p).await,
        "DetachGroupPolicy" => groups::detach_group_policy(ctx, p).await,
        "ListAttachedGroupPolicies" => groups::list_attached_group_policies(ctx, p),
        "CreateAccessKey" => users::create_access_key(ctx, p).await,
        "DeleteAccessKey" => users::delete_access_key(ctx, p).await,
        "ListAccessKeys" => users::list_access_keys(ctx, p),
        "SimulatePrincipalPolicy" => crate::simulate::principal(ctx, p).await,
        "SimulateCustomPolicy" => crate::simulate::custom(ctx, p).await,
        other => Err(AwsError::invalid_action("iam", other)),
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
    if let Some(hint) = file_argument_hint(doc) {
        return Err(AwsError::malformed_policy(hint));
    }
    Ok(Policy::parse(doc, kind)?)
}

/// `aws iam create-policy --policy-document policy.json` sends the text `policy.json`: a
/// document that is one short word and not JSON was meant to be a file.
fn file_argument_hint(doc: &str) -> Option<String> {
    let word = doc.trim();
    let path_like = !word.is_empty()
        && word.len() <= 256
        && !word.starts_with(['{', '[', '"'])
        && !word.contains(char::is_whitespace);
    path_like.then(|| {
        format!(
            "the policy document is the text `{word}`, not JSON: to pass a file's contents, write file://{word}"
        )
    })
}

// === response helpers ===

/// Policy documents are URL-encoded in IAM responses (botocore decodes them).
pub(crate) fn url_encode(s: &str) -> String {
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

/// AWS's `AttachmentCount` (roles, users and groups the policy is attached to) and
/// `PermissionsBoundaryUsageCount`.
fn attachment_counts(state: &State, arn: &str) -> (usize, usize) {
    let has = |arns: &[String]| arns.iter().any(|a| a == arn);
    let attached = state
        .roles
        .values()
        .filter(|r| has(&r.attached_policy_arns))
        .count()
        + state
            .users
            .values()
            .filter(|u| has(&u.attached_policy_arns))
            .count()
        + state
            .groups
            .values()
            .filter(|g| has(&g.attached_policy_arns))
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
fn paginate<T>(
    items: Vec<(&str, T)>,
    p: &Params<'_>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
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

// AWS authorises before it looks up: a caller not allowed the action on `role/NAME` (a policy,
// a provider) gets AccessDenied whether or not it exists, so nobody can probe for names. The
// `authorized_*` lookups do both, in that order.

/// The role `name`, once the caller may perform `action` on it (its tags in the context).
fn authorized_role<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    name: &str,
    action: &str,
) -> Result<&'s Role, AwsError> {
    authorized_role_with(ctx, state, name, action, RequestKeys::default())
}

/// [`authorized_role`], with what the request holds (tags, the policy it attaches, …).
fn authorized_role_with<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    name: &str,
    action: &str,
    keys: RequestKeys<'_>,
) -> Result<&'s Role, AwsError> {
    match state.roles.get(&name.to_ascii_lowercase()) {
        Some(r) => {
            ctx.check_role_with(state, action, r, keys)?;
            Ok(r)
        }
        None => {
            ctx.check_with(state, action, &ctx.iam_arn(&format!("role/{name}")), &keys)?;
            role(state, name)
        }
    }
}

/// The user `name`, once the caller may perform `action` on it (its tags and what the request
/// holds in the context).
fn authorized_user<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    name: &str,
    action: &str,
    keys: RequestKeys<'_>,
) -> Result<&'s User, AwsError> {
    let found = state.users.get(&name.to_ascii_lowercase());
    match found {
        Some(u) => ctx.check_with(state, action, &u.arn, &keys.on_iam(&u.tags))?,
        None => ctx.check_with(state, action, &ctx.iam_arn(&format!("user/{name}")), &keys)?,
    }
    found.ok_or_else(|| no_such_user(name))
}

/// The group `name`, once the caller may perform `action` on it (IAM groups have no tags).
fn authorized_group<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    name: &str,
    action: &str,
    keys: RequestKeys<'_>,
) -> Result<&'s Group, AwsError> {
    let found = state.groups.get(&name.to_ascii_lowercase());
    let arn = found.map_or_else(|| ctx.iam_arn(&format!("group/{name}")), |g| g.arn.clone());
    ctx.check_with(state, action, &arn, &keys)?;
    found.ok_or_else(|| {
        AwsError::no_such_entity(format!("The group with name {name} cannot be found."))
    })
}

fn no_such_user(name: &str) -> AwsError {
    AwsError::no_such_entity(format!("The user with name {name} cannot be found."))
}

/// The managed policy `arn`, once the caller may perform `action` on it.
fn authorized_policy<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    arn: &str,
    action: &str,
) -> Result<&'s ManagedPolicy, AwsError> {
    let found = state.policies.get(arn);
    let tags = found.map_or(&[][..], |p| &p.tags);
    ctx.check_with(state, action, arn, &RequestKeys::default().on_iam(tags))?;
    policy(state, arn)
}

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

// === request condition keys ===

// === inline and attached policies of users and groups ===

/// Which entity holds the policies, in the words of AWS's messages and quotas.
#[derive(Clone, Copy)]
enum Holder {
    User,
    Group,
}

impl Holder {
    fn noun(self) -> &'static str {
        match self {
            Holder::User => "user",
            Holder::Group => "group",
        }
    }
}

/// `Put{User,Group}Policy`: the document replaces one of the same name; all inline policies of
/// the entity together stay within AWS's quota (2,048 characters for a user, 5,120 for a group).
fn put_inline(
    ctx: &Ctx<'_>,
    holder: Holder,
    policies: &mut BTreeMap<String, String>,
    name: &str,
    document: &str,
    size: usize,
) -> Result<(), AwsError> {
    let others = policies
        .iter()
        .filter(|(n, _)| *n != name)
        .map(|(_, d)| podiam_policy::limits::policy_size(d))
        .chain([size]);
    let limits = ctx.shared.config.limits;
    match holder {
        Holder::User => limits.check_user_inline_total(others)?,
        Holder::Group => limits.check_group_inline_total(others)?,
    }
    policies.insert(name.to_string(), document.to_string());
    Ok(())
}

fn no_such_inline(holder: Holder, name: &str) -> AwsError {
    AwsError::no_such_entity(format!(
        "The {} policy with name {name} cannot be found.",
        holder.noun()
    ))
}

/// `Attach{User,Group}Policy`: the policy must exist; attaching it again is no change; at most
/// 10 managed policies per user or group (AWS's default quota).
fn attach(
    state: &State,
    holder: Holder,
    arns: &mut Vec<String>,
    arn: &str,
) -> Result<(), AwsError> {
    policy(state, arn)?;
    if arns.iter().any(|a| a == arn) {
        return Ok(());
    }
    if arns.len() >= 10 {
        let quota = match holder {
            Holder::User => "PoliciesPerUser",
            Holder::Group => "PoliciesPerGroup",
        };
        return Err(AwsError::limit_exceeded(format!(
            "Cannot exceed quota for {quota}: 10"
        )));
    }
    arns.push(arn.to_string());
    Ok(())
}

fn detach(arns: &mut Vec<String>, arn: &str) -> Result<(), AwsError> {
    let before = arns.len();
    arns.retain(|a| a != arn);
    if arns.len() == before {
        return Err(AwsError::no_such_entity(format!(
            "Policy {arn} was not found."
        )));
    }
    Ok(())
}

/// `List{User,Group}Policies`: the inline policy names, a page of them.
fn inline_names_reply(
    ctx: &Ctx<'_>,
    action: &str,
    policies: &BTreeMap<String, String>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let items: Vec<(&str, &str)> = policies.keys().map(|k| (k.as_str(), k.as_str())).collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response(action, NS);
    x.start("PolicyNames");
    for n in page {
        x.text("member", n);
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, action, x))
}

/// `ListAttached{User,Group}Policies`: the attached policies under `PathPrefix`, a page of them.
fn attached_reply(
    ctx: &Ctx<'_>,
    action: &str,
    state: &State,
    arns: &[String],
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let prefix = p.get("PathPrefix").unwrap_or("/");
    let mut attached: Vec<&ManagedPolicy> = arns
        .iter()
        .filter_map(|a| state.policies.get(a))
        .filter(|pol| pol.path.starts_with(prefix))
        .collect();
    attached.sort_by(|a, b| a.arn.cmp(&b.arn));
    let items: Vec<(&str, &ManagedPolicy)> = attached
        .into_iter()
        .map(|pol| (pol.arn.as_str(), pol))
        .collect();
    let (page, next) = paginate(items, p)?;
    let mut x = Xml::response(action, NS);
    x.start("AttachedPolicies");
    for pol in page {
        x.start("member")
            .text("PolicyName", &pol.policy_name)
            .text("PolicyArn", &pol.arn)
            .end();
    }
    x.end();
    finish_page(&mut x, next);
    Ok(reply(ctx, action, x))
}

/// The XML answer of `action`.
fn reply(ctx: &Ctx<'_>, action: &str, x: Xml) -> String {
    x.finish(action, ctx.request_id)
}

/// The empty XML answer of `action` (only the request ID).
fn empty(ctx: &Ctx<'_>, action: &str) -> String {
    Xml::empty(action, NS, ctx.request_id)
}
