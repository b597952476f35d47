//! The actions podiam authorises and the request condition keys each one carries, as AWS's
//! Service Authorization Reference lists them (the pages for IAM, AWS STS, Amazon EKS and EKS
//! Auth: "Actions defined by …", columns *Resource types* and *Condition keys*).
//!
//! One table ([`ACTIONS`]) instead of a switch per handler: a handler says what the request
//! holds ([`RequestKeys`]: its tags, the policy it attaches, the boundary it sets, …), and
//! [`context_for`] puts into the context exactly the keys AWS documents for that action, so a
//! guardrail such as "Deny iam:AttachRolePolicy when iam:PolicyARN is AdministratorAccess" or
//! "CreateRole only with this iam:PermissionsBoundary" sees what it would see on AWS. Global keys
//! of the caller (`aws:PrincipalTag/…`, `aws:SourceIp`, …) come from `auth::caller_context`.

use podiam_store::{State, Tag};

/// A request or resource condition key (family) of the Service Authorization Reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    /// `aws:RequestTag/${TagKey}`: the tags the request sets.
    RequestTag,
    /// `aws:TagKeys`: the keys of the tags the request sets (or removes).
    TagKeys,
    /// `aws:ResourceTag/${TagKey}` (and, for IAM resources, `iam:ResourceTag/${TagKey}`).
    ResourceTag,
    /// `iam:PolicyARN`: the managed policy attached or detached.
    PolicyArn,
    /// `iam:PermissionsBoundary`: the boundary set by the request, or the role's current one.
    PermissionsBoundary,
    /// `iam:PassedToService`.
    PassedToService,
    /// `iam:AssociatedResourceArn`.
    AssociatedResourceArn,
}

use Key::*;

/// One served action: its name and the condition keys AWS documents for it.
pub(crate) struct Action {
    pub(crate) name: &'static str,
    pub(crate) keys: &'static [Key],
}

const fn a(name: &'static str, keys: &'static [Key]) -> Action {
    Action { name, keys }
}

/// Every action podiam authorises with the policy engine (identity policies), with its keys.
/// STS's `AssumeRole*`/`TagSession`/`SetSourceIdentity` are decided by the role's trust policy
/// and build their own context (`sts.rs`, `eks_auth.rs`); they are listed for completeness.
pub(crate) const ACTIONS: &[Action] = &[
    // === IAM: roles ===
    a(
        "iam:CreateRole",
        &[RequestTag, TagKeys, PermissionsBoundary],
    ),
    a("iam:GetRole", &[ResourceTag]),
    a("iam:DeleteRole", &[ResourceTag, PermissionsBoundary]),
    a("iam:ListRoles", &[]),
    a("iam:UpdateRole", &[ResourceTag]),
    a("iam:UpdateRoleDescription", &[ResourceTag]),
    a("iam:UpdateAssumeRolePolicy", &[ResourceTag]),
    a("iam:TagRole", &[ResourceTag, RequestTag, TagKeys]),
    a("iam:UntagRole", &[ResourceTag, TagKeys]),
    a("iam:ListRoleTags", &[ResourceTag]),
    a("iam:PutRolePolicy", &[ResourceTag, PermissionsBoundary]),
    a("iam:GetRolePolicy", &[ResourceTag]),
    a("iam:DeleteRolePolicy", &[ResourceTag, PermissionsBoundary]),
    a("iam:ListRolePolicies", &[ResourceTag]),
    a(
        "iam:AttachRolePolicy",
        &[ResourceTag, PolicyArn, PermissionsBoundary],
    ),
    a(
        "iam:DetachRolePolicy",
        &[ResourceTag, PolicyArn, PermissionsBoundary],
    ),
    a("iam:ListAttachedRolePolicies", &[ResourceTag]),
    a(
        "iam:PutRolePermissionsBoundary",
        &[ResourceTag, PermissionsBoundary],
    ),
    a(
        "iam:DeleteRolePermissionsBoundary",
        &[ResourceTag, PermissionsBoundary],
    ),
    a(
        "iam:PassRole",
        &[ResourceTag, PassedToService, AssociatedResourceArn],
    ),
    // === IAM: managed policies ===
    a("iam:CreatePolicy", &[RequestTag, TagKeys]),
    a("iam:GetPolicy", &[ResourceTag]),
    a("iam:DeletePolicy", &[ResourceTag]),
    a("iam:ListPolicies", &[]),
    a("iam:CreatePolicyVersion", &[ResourceTag]),
    a("iam:GetPolicyVersion", &[ResourceTag]),
    a("iam:ListPolicyVersions", &[ResourceTag]),
    a("iam:SetDefaultPolicyVersion", &[ResourceTag]),
    a("iam:DeletePolicyVersion", &[ResourceTag]),
    // === IAM: OIDC providers ===
    a("iam:CreateOpenIDConnectProvider", &[RequestTag, TagKeys]),
    a("iam:GetOpenIDConnectProvider", &[ResourceTag]),
    a("iam:ListOpenIDConnectProviders", &[]),
    a("iam:DeleteOpenIDConnectProvider", &[ResourceTag]),
    a("iam:AddClientIDToOpenIDConnectProvider", &[ResourceTag]),
    a(
        "iam:RemoveClientIDFromOpenIDConnectProvider",
        &[ResourceTag],
    ),
    a("iam:UpdateOpenIDConnectProviderThumbprint", &[ResourceTag]),
    // === IAM: users and access keys ===
    a(
        "iam:CreateUser",
        &[RequestTag, TagKeys, PermissionsBoundary],
    ),
    a("iam:GetUser", &[ResourceTag]),
    a("iam:CreateAccessKey", &[ResourceTag]),
    a("iam:DeleteAccessKey", &[ResourceTag]),
    a("iam:ListAccessKeys", &[ResourceTag]),
    a("iam:ListUsers", &[]),
    a("iam:UpdateUser", &[ResourceTag]),
    a("iam:DeleteUser", &[ResourceTag, PermissionsBoundary]),
    a("iam:TagUser", &[ResourceTag, RequestTag, TagKeys]),
    a("iam:UntagUser", &[ResourceTag, TagKeys]),
    a("iam:ListUserTags", &[ResourceTag]),
    a("iam:PutUserPolicy", &[ResourceTag, PermissionsBoundary]),
    a("iam:GetUserPolicy", &[ResourceTag]),
    a("iam:DeleteUserPolicy", &[ResourceTag, PermissionsBoundary]),
    a("iam:ListUserPolicies", &[ResourceTag]),
    a(
        "iam:AttachUserPolicy",
        &[ResourceTag, PolicyArn, PermissionsBoundary],
    ),
    a(
        "iam:DetachUserPolicy",
        &[ResourceTag, PolicyArn, PermissionsBoundary],
    ),
    a("iam:ListAttachedUserPolicies", &[ResourceTag]),
    a("iam:ListGroupsForUser", &[ResourceTag]),
    // === IAM: groups (no tags on AWS) ===
    a("iam:CreateGroup", &[]),
    a("iam:GetGroup", &[]),
    a("iam:ListGroups", &[]),
    a("iam:UpdateGroup", &[]),
    a("iam:DeleteGroup", &[]),
    a("iam:AddUserToGroup", &[]),
    a("iam:RemoveUserFromGroup", &[]),
    a("iam:PutGroupPolicy", &[]),
    a("iam:GetGroupPolicy", &[]),
    a("iam:DeleteGroupPolicy", &[]),
    a("iam:ListGroupPolicies", &[]),
    a("iam:AttachGroupPolicy", &[PolicyArn]),
    a("iam:DetachGroupPolicy", &[PolicyArn]),
    a("iam:ListAttachedGroupPolicies", &[]),
    // === IAM: the simulator ===
    a("iam:SimulatePrincipalPolicy", &[]),
    a("iam:SimulateCustomPolicy", &[]),
    // === STS (trust policies) ===
    a("sts:AssumeRole", &[RequestTag, TagKeys]),
    a("sts:AssumeRoleWithWebIdentity", &[RequestTag, TagKeys]),
    a("sts:TagSession", &[RequestTag, TagKeys]),
    a("sts:SetSourceIdentity", &[]),
    // === EKS ===
    a("eks:CreateCluster", &[RequestTag, TagKeys]),
    a("eks:DescribeCluster", &[ResourceTag]),
    a("eks:DeleteCluster", &[ResourceTag]),
    a("eks:ListClusters", &[]),
    a(
        "eks:CreatePodIdentityAssociation",
        &[ResourceTag, RequestTag, TagKeys],
    ),
    a("eks:DescribePodIdentityAssociation", &[ResourceTag]),
    a("eks:UpdatePodIdentityAssociation", &[ResourceTag]),
    a("eks:DeletePodIdentityAssociation", &[ResourceTag]),
    a("eks:ListPodIdentityAssociations", &[ResourceTag]),
    // === EKS Auth ===
    a("eks-auth:AssumeRoleForPodIdentity", &[ResourceTag]),
];

/// The action's entry, by name (exact, as podiam's handlers spell them).
pub(crate) fn action(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// The name of an awsQuery action podiam serves (`"CreateRole"`, `"GetCallerIdentity"`), as a
/// static string for a metrics label; anything else is `"Unknown"`. The label set stays the
/// finite set of served actions whatever a caller sends: `Action=` is the client's to choose
/// before any authentication, and each distinct label value would be a new series held forever.
pub(crate) fn query_action_label(sts: bool, action: &str) -> &'static str {
    let service = if sts { "sts:" } else { "iam:" };
    if sts && action == "GetCallerIdentity" {
        return "GetCallerIdentity";
    }
    ACTIONS
        .iter()
        .find_map(|a| {
            a.name
                .strip_prefix(service)
                .filter(|n| *n == action && !matches!(*n, "TagSession" | "SetSourceIdentity"))
        })
        .unwrap_or("Unknown")
}

/// What a request holds that condition keys may test. Handlers fill what they have; only the
/// keys the action documents reach the context.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestKeys<'a> {
    /// The tags the request sets (`aws:RequestTag/…`; their keys are `aws:TagKeys`).
    pub(crate) request_tags: &'a [(String, String)],
    /// The tag keys the request removes (`aws:TagKeys` of an `Untag…`).
    pub(crate) removed_tag_keys: &'a [String],
    /// The target resource's tags (`aws:ResourceTag/…`).
    pub(crate) resource_tags: &'a [Tag],
    /// The target is an IAM resource: its tags are also `iam:ResourceTag/…`.
    pub(crate) iam_resource: bool,
    pub(crate) policy_arn: Option<&'a str>,
    pub(crate) permissions_boundary: Option<&'a str>,
    pub(crate) passed_to_service: Option<&'a str>,
    pub(crate) associated_resource_arn: Option<&'a str>,
}

impl<'a> RequestKeys<'a> {
    /// A request that sets these tags (`Create…` with `Tags`, `Tag…`).
    pub(crate) fn tagging(tags: &'a [(String, String)]) -> Self {
        RequestKeys {
            request_tags: tags,
            ..RequestKeys::default()
        }
    }

    /// A request that removes these tag keys (`Untag…`).
    pub(crate) fn untagging(keys: &'a [String]) -> Self {
        RequestKeys {
            removed_tag_keys: keys,
            ..RequestKeys::default()
        }
    }

    /// A request that attaches or detaches this managed policy.
    pub(crate) fn policy(arn: &'a str) -> Self {
        RequestKeys {
            policy_arn: Some(arn),
            ..RequestKeys::default()
        }
    }

    /// The request targets an IAM resource with these tags (`aws:ResourceTag/…` and
    /// `iam:ResourceTag/…`).
    pub(crate) fn on_iam(self, tags: &'a [Tag]) -> Self {
        RequestKeys {
            resource_tags: tags,
            iam_resource: true,
            ..self
        }
    }

    /// The request targets a resource of another service with these tags (`aws:ResourceTag/…`).
    pub(crate) fn on(self, tags: &'a [Tag]) -> Self {
        RequestKeys {
            resource_tags: tags,
            iam_resource: false,
            ..self
        }
    }
}

/// What the store knows of the resource `arn` names, as request keys: its tags (and a role's
/// permissions boundary). The simulator uses it so that a simulated call sees the resource as a
/// real call would; an ARN that names nothing podiam holds gives no keys.
pub(crate) fn resource_keys<'s>(state: &'s State, arn: &str) -> RequestKeys<'s> {
    let none = RequestKeys::default();
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some(service), Some(_region), Some(_account), Some(res)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return none;
    };
    let (kind, rest) = res.split_once('/').unwrap_or((res, ""));
    match (service, kind) {
        ("iam", "role") => match crate::issuance::role_by_arn(state, arn) {
            Some(r) => RequestKeys {
                permissions_boundary: r.permissions_boundary_arn.as_deref(),
                ..none.on_iam(&r.tags)
            },
            None => none,
        },
        ("iam", "user") => state
            .users
            .values()
            .find(|u| u.arn == arn)
            .map_or(none, |u| none.on_iam(&u.tags)),
        ("iam", "policy") => state
            .policies
            .get(arn)
            .map_or(none, |p| none.on_iam(&p.tags)),
        ("iam", "oidc-provider") => state
            .oidc_providers
            .get(arn)
            .map_or(none, |o| none.on_iam(&o.tags)),
        ("eks", "cluster") => state
            .clusters
            .get(rest)
            .filter(|c| c.arn == arn)
            .map_or(none, |c| none.on(&c.tags)),
        ("eks", "podidentityassociation") => rest
            .split_once('/')
            .and_then(|(cluster, id)| {
                state
                    .pod_identity_associations
                    .get(id)
                    .filter(|a| a.cluster_name == cluster)
            })
            .map_or(none, |a| none.on(&a.tags)),
        _ => none,
    }
}

/// The context keys `action` carries for this request: `(name, values)`, multi-valued ones
/// (`aws:TagKeys`) as lists. An action missing from [`ACTIONS`] carries none (and the table test
/// fails for it).
pub(crate) fn context_for(action_name: &str, r: &RequestKeys<'_>) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let Some(action) = action(action_name) else {
        return out;
    };
    for key in action.keys {
        match key {
            RequestTag => {
                for (k, v) in r.request_tags {
                    out.push((format!("aws:RequestTag/{k}"), vec![v.clone()]));
                }
            }
            TagKeys => {
                let keys: Vec<String> = r
                    .request_tags
                    .iter()
                    .map(|(k, _)| k.clone())
                    .chain(r.removed_tag_keys.iter().cloned())
                    .collect();
                if !keys.is_empty() {
                    out.push(("aws:TagKeys".to_string(), keys));
                }
            }
            ResourceTag => {
                for t in r.resource_tags {
                    out.push((format!("aws:ResourceTag/{}", t.key), vec![t.value.clone()]));
                    if r.iam_resource {
                        out.push((format!("iam:ResourceTag/{}", t.key), vec![t.value.clone()]));
                    }
                }
            }
            PolicyArn => push(&mut out, "iam:PolicyARN", r.policy_arn),
            PermissionsBoundary => {
                push(&mut out, "iam:PermissionsBoundary", r.permissions_boundary);
            }
            PassedToService => push(&mut out, "iam:PassedToService", r.passed_to_service),
            AssociatedResourceArn => {
                push(
                    &mut out,
                    "iam:AssociatedResourceArn",
                    r.associated_resource_arn,
                );
            }
        }
    }
    out
}

fn push(out: &mut Vec<(String, Vec<String>)>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        out.push((key.to_string(), vec![v.to_string()]));
    }
}

#[cfg(test)]
mod tests;
