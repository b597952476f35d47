//! EKS Auth's `AssumeRoleForPodIdentity` (botocore `eks-auth` 2023-11-26): the node agent
//! presents a pod's ServiceAccount token; the cluster's issuer verifies it, the pod identity
//! association for (cluster, namespace, ServiceAccount) names the role, and the role's trust
//! policy must admit `pods.eks.amazonaws.com` with `sts:AssumeRole` and `sts:TagSession`.
//!
//! The token, trust and minting steps are [`crate::issuance`]'s, shared with STS. A role of
//! another account (broker mode) gets its session from the upstream STS instead: [`broker`].

use std::time::Duration;

use podiam_identity::jwt::{KubernetesClaims, ObjectRef};
use podiam_identity::session::{SessionSource, SessionTag};
use podiam_policy::{Context, PolicySet, RequestPrincipal};
use podiam_store::{Cluster, PodIdentityAssociation, Role, State};
use serde_json::{Value, json};

use crate::actions::RequestKeys;
use crate::audit::Event;
use crate::auth::{Caller, caller_context, caller_policies};
use crate::ctx::Ctx;
use crate::eks::{AUDIENCE, SERVICE_PRINCIPAL, authorized_cluster};
use crate::error::{AwsError, Protocol};
use crate::issuance::{
    NewSession, PresentedToken, SessionPolicies, TokenIssuer, TokenUse, TrustRequest, TrustWording,
    check_trust, insert_request_tags, mint,
};

mod broker;

/// EKS Pod Identity credentials last six hours; the agent renews them.
const CREDENTIALS_LIFETIME: Duration = Duration::from_secs(6 * 3600);

fn role_by_arn<'s>(state: &'s State, arn: &str) -> Result<&'s Role, AwsError> {
    crate::issuance::role_by_arn(state, arn).ok_or_else(|| {
        AwsError::access_denied(format!("The role {arn} of the association does not exist"))
    })
}

/// An optional string field of the request, at most [`MAX_AGENT_FIELD`] characters.
fn optional_field(body: &Value, name: &str) -> Result<Option<String>, AwsError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if v.chars().count() <= MAX_AGENT_FIELD => Ok(Some(v.clone())),
        Some(Value::String(_)) => Err(AwsError::invalid_request(format!(
            "`{name}` must be at most {MAX_AGENT_FIELD} characters"
        ))),
        Some(_) => Err(AwsError::invalid_request(format!(
            "`{name}` must be a string"
        ))),
    }
}

/// Node names are DNS subdomains (253); instance IDs and zones are far shorter.
const MAX_AGENT_FIELD: usize = 253;

/// `POST /clusters/{name}/assume-role-for-pod-identity {"token", "eksNodeName", "instanceId",
/// "zone"}`.
pub(crate) async fn assume_role_for_pod_identity(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    body: &Value,
) -> Result<Value, AwsError> {
    let mut event = Event::new(ctx, "AssumeRoleForPodIdentity");
    event.subject = ctx.caller.as_ref().map(|c| c.arn().to_string());
    let result = pod_identity(ctx, cluster_name, body, &mut event).await;
    event.finish(&result, Protocol::EksAuth);
    ctx.audit.record(event);
    result
}

async fn pod_identity(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    body: &Value,
    event: &mut Event,
) -> Result<Value, AwsError> {
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| AwsError::invalid_request("`token` is required"))?;
    // AWS's newer request fields: where the agent runs. Recorded, bounded, never trusted.
    event.node = optional_field(body, "eksNodeName")?;
    event.instance_id = optional_field(body, "instanceId")?;
    event.zone = optional_field(body, "zone")?;
    let state = ctx.shared.snapshot();
    let c = authorized_cluster(
        ctx,
        &state,
        cluster_name,
        "eks-auth:AssumeRoleForPodIdentity",
        RequestKeys::default(),
    )?
    .clone();

    // The token, against the cluster's keys.
    let presented = PresentedToken::new(ctx, token, TokenUse::PodIdentity)?;
    let claims = presented
        .verify(
            ctx,
            TokenIssuer {
                url: &c.issuer_url,
                static_jwks: c.static_jwks.as_deref(),
            },
            &[AUDIENCE.to_string()],
        )
        .await?;
    let k8s = claims
        .kubernetes()
        .map_err(|e| AwsError::invalid_token(e.to_string()))?
        .ok_or_else(|| AwsError::invalid_token("The token has no `kubernetes.io` claim: it is not a Kubernetes ServiceAccount token"))?;
    let pod = k8s.pod.clone().ok_or_else(|| {
        AwsError::invalid_token(
            "The token is not bound to a pod: use a projected ServiceAccount token",
        )
    })?;
    let namespace = k8s.namespace.clone();
    let service_account = k8s.serviceaccount.name.clone();
    event.issuer = Some(c.issuer_url.clone());
    event.namespace = Some(namespace.clone());
    event.service_account = Some(service_account.clone());
    event.pod = Some(pod.name.clone());
    event.token_age_seconds = claims.issued_at().map(|iat| ctx.facts.now / 1000 - iat);
    let pod_node = token_node(&k8s).map_err(AwsError::invalid_token)?;
    let agent = agent_node(ctx.caller.as_ref());
    event.agent_node = agent.map(|a| a.node.to_owned());
    check_node_binding(
        ctx.shared.config.require_node_binding,
        &format!("{namespace}/{}", pod.name),
        pod_node.as_deref().map(|node| AgentNode {
            issuer: &c.issuer_url,
            node,
        }),
        agent,
    )?;

    let a = state
        .pod_identity_associations
        .values()
        .find(|a| a.cluster_name == cluster_name && a.namespace == namespace && a.service_account == service_account)
        .ok_or_else(|| {
            AwsError::not_found(format!(
                "No Pod Identity Association for service account {service_account} in namespace {namespace} of cluster {cluster_name}"
            ))
        })?
        .clone();
    let tags = session_tags(&c, &a, &namespace, &service_account, Some(&pod));
    if crate::upstream::is_upstream_role(&ctx.shared.config, &a.role_arn) {
        // Boxed: the upstream call's future is kilobytes, and inline it would make every pod
        // request's future (moved by each wrapper above) that large.
        return Box::pin(broker::pod_identity(
            ctx,
            broker::Pod {
                cluster: &c,
                association: &a,
                namespace: &namespace,
                service_account: &service_account,
                pod: &pod,
                tags: &tags,
            },
            event,
        ))
        .await;
    }
    let role = role_by_arn(&state, &a.role_arn)?.clone();
    event.role = Some(role.arn.clone());

    let transitive: Vec<String> = tags.iter().map(|(k, _)| k.clone()).collect();
    let mut context = Context::new();
    context.insert("aws:SourceAccount", ctx.shared.config.account_id.as_str());
    context.insert("aws:SourceArn", c.arn.as_str());
    context.insert(
        "aws:CurrentTime",
        podiam_policy::date::format_date(ctx.facts.now),
    );
    insert_request_tags(&mut context, &tags, &transitive);
    let mut actions = vec!["sts:AssumeRole"];
    if !tags.is_empty() {
        actions.push("sts:TagSession");
    }
    let service = RequestPrincipal::service(SERVICE_PRINCIPAL);
    check_trust(
        ctx,
        &TrustRequest {
            role: &role,
            principal: &service,
            actions: &actions,
            context: &context,
            caller: &PolicySet::default(),
            wording: TrustWording::PodIdentity,
        },
        event,
    )?;

    let session_name = session_name(&c.name, &pod.name)?;
    event.session_name = Some(session_name.clone());

    let session_tags: Vec<SessionTag> = tags
        .iter()
        .map(|(key, value)| SessionTag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    let policies = SessionPolicies {
        inline: a.policy.clone(),
        ..SessionPolicies::default()
    };
    let source = SessionSource::PodIdentity {
        cluster_name: c.name.clone(),
        namespace: namespace.clone(),
        service_account: service_account.clone(),
        pod_name: pod.name.clone(),
        pod_uid: pod.uid.clone(),
    };
    let first = mint(
        ctx,
        NewSession {
            role: &role,
            session_name: &session_name,
            duration: CREDENTIALS_LIFETIME,
            tags: session_tags.clone(),
            transitive: transitive.clone(),
            policies: &if a.target_role_arn.is_some() {
                SessionPolicies::default()
            } else {
                policies.clone()
            },
            source_identity: None,
            source: source.clone(),
        },
    )?;
    let minted = match &a.target_role_arn {
        None => first,
        Some(target_arn) => {
            // AWS: the association role chains into the target role, presenting the external ID.
            let target = role_by_arn(&state, target_arn)?.clone();
            let caller = Caller::Session(Box::new(first.claims.clone()));
            let mut chained =
                caller_context(&state, &caller, &ctx.facts, &ctx.shared.config.account_id);
            if let Some(x) = &a.external_id {
                chained.insert("sts:ExternalId", x.as_str());
            }
            chained.insert("sts:RoleSessionName", session_name.as_str());
            insert_request_tags(&mut chained, &tags, &[]);
            chained.remove("sts:TransitiveTagKeys");
            let principal = RequestPrincipal::role_session(
                first.claims.assumed_role_arn.as_str(),
                role.arn.as_str(),
            );
            let mut own = caller_policies(ctx.shared, &state, &caller)?;
            // The first session carries no session policy: the association's policy applies to
            // the target session.
            own.session = None;
            own.with_set(|set| {
                check_trust(
                    ctx,
                    &TrustRequest {
                        role: &target,
                        principal: &principal,
                        actions: &actions,
                        context: &chained,
                        caller: set,
                        wording: TrustWording::PodIdentity,
                    },
                    event,
                )
            })?;
            event.role = Some(target.arn.clone());
            mint(
                ctx,
                NewSession {
                    role: &target,
                    session_name: &session_name,
                    duration: CREDENTIALS_LIFETIME.min(Duration::from_secs(3600)),
                    tags: session_tags,
                    transitive,
                    policies: &policies,
                    source_identity: None,
                    source,
                },
            )?
        }
    };
    let assumed_role_id = format!(
        "{}:{}",
        minted.claims.role_id, minted.claims.role_session_name
    );
    Ok(response(
        &PodCredentials {
            access_key_id: minted.claims.access_key_id.as_str(),
            secret_access_key: minted.claims.secret_access_key.expose_secret(),
            session_token: &minted.token,
            expiration: minted.claims.expires_at,
            assumed_role_arn: &minted.claims.assumed_role_arn,
            assumed_role_id: &assumed_role_id,
        },
        &a,
        &namespace,
        &service_account,
    ))
}

/// Node names are DNS subdomains: at most 253 characters.
const MAX_NODE_NAME: usize = 253;

/// The node a Kubernetes token's pod runs on (`kubernetes.io.node.name`), if it names one.
///
/// # Errors
/// A node name that is empty or longer than a DNS subdomain.
pub(crate) fn token_node(k: &KubernetesClaims) -> Result<Option<String>, String> {
    match &k.node {
        None => Ok(None),
        Some(n) if !n.name.is_empty() && n.name.len() <= MAX_NODE_NAME => Ok(Some(n.name.clone())),
        Some(_) => Err(format!(
            "The token's `kubernetes.io.node.name` must be 1 to {MAX_NODE_NAME} characters"
        )),
    }
}

/// A node of a cluster: node names are unique only within their cluster, so a binding is to the
/// node and to the issuer that vouched for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AgentNode<'a> {
    issuer: &'a str,
    node: &'a str,
}

/// The node a calling agent's session is bound to: a web identity session opened with the
/// agent's own ServiceAccount token, which named its node (see [`token_node`]).
fn agent_node(caller: Option<&Caller>) -> Option<AgentNode<'_>> {
    match caller? {
        Caller::Session(s) => match &s.source {
            SessionSource::WebIdentity {
                issuer,
                node_name: Some(node),
                ..
            } => Some(AgentNode { issuer, node }),
            _ => None,
        },
        Caller::User(_) => None,
    }
}

/// podiam's node binding (neither EKS nor its agent has one): a pod's token is exchanged only by
/// the agent of the pod's node, of the pod's cluster, so a token copied off a node is worth
/// nothing elsewhere. A token or an agent bound to no node passes unless `require`
/// (`--require-node-binding`).
fn check_node_binding(
    require: bool,
    pod: &str,
    pod_node: Option<AgentNode<'_>>,
    agent_node: Option<AgentNode<'_>>,
) -> Result<(), AwsError> {
    match (pod_node, agent_node) {
        (Some(p), Some(a)) if p == a => Ok(()),
        (Some(p), Some(a)) if p.issuer != a.issuer => Err(AwsError::access_denied(format!(
            "The token of pod {pod} is bound to node `{}` of the cluster whose issuer is `{}`, but the calling agent's session is bound to node `{}` of issuer `{}`: only the agent of the pod's node may exchange it",
            p.node, p.issuer, a.node, a.issuer
        ))),
        (Some(p), Some(a)) => Err(AwsError::access_denied(format!(
            "The token of pod {pod} is bound to node `{}`, but the calling agent's session is bound to node `{}`: only the agent of the pod's node may exchange it",
            p.node, a.node
        ))),
        _ if !require => Ok(()),
        (None, _) => Err(AwsError::access_denied(format!(
            "The token of pod {pod} names no node (`kubernetes.io.node.name`) and node binding is required: use a projected ServiceAccount token of Kubernetes 1.30 or later"
        ))),
        (Some(p), None) => Err(AwsError::access_denied(format!(
            "The token of pod {pod} is bound to node `{}`, but the caller is not an agent session bound to a node and node binding is required: the agent must use its ServiceAccount token (web identity)",
            p.node
        ))),
    }
}

/// AWS: six session tags, all transitive, unless the association disables them. The pod's two
/// are left out for a token bound to no pod (IRSA with a plain ServiceAccount token).
pub(crate) fn session_tags(
    c: &Cluster,
    a: &PodIdentityAssociation,
    namespace: &str,
    service_account: &str,
    pod: Option<&ObjectRef>,
) -> Vec<(String, String)> {
    if a.disable_session_tags {
        return Vec::new();
    }
    let mut tags = vec![
        ("eks-cluster-arn".into(), c.arn.clone()),
        ("eks-cluster-name".into(), c.name.clone()),
        ("kubernetes-namespace".into(), namespace.to_string()),
        (
            "kubernetes-service-account".into(),
            service_account.to_string(),
        ),
    ];
    if let Some(pod) = pod {
        tags.push(("kubernetes-pod-name".into(), pod.name.clone()));
        tags.push(("kubernetes-pod-uid".into(), pod.uid.clone()));
    }
    tags
}

/// Session name: `eks-CLUSTER-POD-UUID`, at most 64 characters.
fn session_name(cluster: &str, pod: &str) -> Result<String, AwsError> {
    let uuid = podiam_identity::issuer::random_uuid(&podiam_identity::PooledSystemRng)
        .map_err(|e| AwsError::internal(e.to_string()))?;
    let mut session_name: String = format!("eks-{cluster}-{pod}-")
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || "_+=,.@-".contains(*ch))
        .collect();
    session_name.truncate(64 - uuid.len().min(32));
    session_name.push_str(&uuid[..uuid.len().min(64 - session_name.len())]);
    Ok(session_name)
}

/// The credentials a pod gets, minted here or by an upstream STS.
struct PodCredentials<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: std::time::SystemTime,
    assumed_role_arn: &'a str,
    assumed_role_id: &'a str,
}

/// EKS Auth's response shape.
fn response(
    creds: &PodCredentials<'_>,
    a: &PodIdentityAssociation,
    namespace: &str,
    service_account: &str,
) -> Value {
    let expiration = creds
        .expiration
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "subject": {"namespace": namespace, "serviceAccount": service_account},
        "audience": AUDIENCE,
        "podIdentityAssociation": {"associationArn": a.association_arn, "associationId": a.association_id},
        "assumedRoleUser": {
            "arn": creds.assumed_role_arn,
            "assumeRoleId": creds.assumed_role_id,
        },
        "credentials": {
            "sessionToken": creds.session_token,
            "secretAccessKey": creds.secret_access_key,
            "accessKeyId": creds.access_key_id,
            "expiration": expiration,
        },
    })
}
