//! EKS Pod Identity, on any cluster: the cluster registry, EKS's pod identity association API
//! (REST-JSON, botocore `eks` 2017-11-01) and EKS Auth's `AssumeRoleForPodIdentity` (botocore
//! `eks-auth` 2023-11-26).

use std::time::Duration;

use axum::http::StatusCode;
use podiam_identity::jwt::{JwtError, UnverifiedJwt};
use podiam_identity::session::{SessionSource, SessionTag};
use podiam_identity::{SystemClock, Validation};
use podiam_policy::{
    Context, Policy, PolicyKind, PolicySet, Request, RequestPrincipal, evaluate_trust,
    evaluate_with_trace,
};
use podiam_store::{Change, Cluster, PodIdentityAssociation, Role, State, Tag};
use serde_json::{Value, json};

use crate::Ctx;
use crate::audit::Event;
use crate::auth::{authorize, caller_policies};
use crate::error::AwsError;
use crate::sts::{Minted, NewSession, SessionPolicies, mint};

/// The audience of Pod Identity tokens: "always pods.eks.amazonaws.com".
pub const AUDIENCE: &str = "pods.eks.amazonaws.com";
/// The service principal a Pod Identity role's trust policy names.
pub const SERVICE_PRINCIPAL: &str = "pods.eks.amazonaws.com";
/// EKS Pod Identity credentials last six hours; the agent renews them.
const CREDENTIALS_LIFETIME: Duration = Duration::from_secs(6 * 3600);

// === errors (rest-json: `X-Amzn-ErrorType` + `{"message"}`) ===

fn not_found(message: impl Into<String>) -> AwsError {
    AwsError::new("ResourceNotFoundException", StatusCode::NOT_FOUND, message)
}

fn invalid_parameter(message: impl Into<String>) -> AwsError {
    AwsError::new(
        "InvalidParameterException",
        StatusCode::BAD_REQUEST,
        message,
    )
}

fn invalid_request(message: impl Into<String>) -> AwsError {
    AwsError::new("InvalidRequestException", StatusCode::BAD_REQUEST, message)
}

fn in_use(message: impl Into<String>) -> AwsError {
    AwsError::new("ResourceInUseException", StatusCode::CONFLICT, message)
}

fn invalid_token(message: impl Into<String>) -> AwsError {
    AwsError::new("InvalidTokenException", StatusCode::BAD_REQUEST, message)
}

/// IAM/STS codes become their REST-JSON names (EKS: AccessDeniedException 403; EKS Auth: 400).
pub fn rest_error(mut e: AwsError, eks_auth: bool) -> AwsError {
    match e.code {
        "AccessDenied" => {
            e.code = "AccessDeniedException";
            e.status = if eks_auth {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            };
        }
        "ValidationError" | "InvalidInput" | "MalformedPolicyDocument" => {
            e.code = if eks_auth {
                "InvalidRequestException"
            } else {
                "InvalidParameterException"
            };
            e.status = StatusCode::BAD_REQUEST;
        }
        "NoSuchEntity" => {
            e.code = "ResourceNotFoundException";
            e.status = StatusCode::NOT_FOUND;
        }
        "InternalFailure" | "ServiceFailure" => {
            e.code = if eks_auth {
                "InternalServerException"
            } else {
                "ServerException"
            };
        }
        _ => {}
    }
    e
}

fn name_rule(what: &str, v: &str) -> Result<(), AwsError> {
    let ok = (1..=100).contains(&v.len())
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid_parameter(format!(
            "{what} `{v}` must be 1 to 100 characters: letters, digits, `-` and `_`, starting with a letter or digit"
        )))
    }
}

/// Kubernetes names (DNS-1123 subdomain for namespaces and ServiceAccounts).
fn k8s_name_rule(what: &str, v: &str) -> Result<(), AwsError> {
    let ok = (1..=253).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid_parameter(format!(
            "{what} `{v}` is not a valid Kubernetes name"
        )))
    }
}

fn tags_of(v: Option<&Value>) -> Result<Vec<Tag>, AwsError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let obj = v
        .as_object()
        .ok_or_else(|| invalid_parameter("tags must be an object of string values"))?;
    if obj.len() > 50 {
        return Err(invalid_parameter("at most 50 tags"));
    }
    obj.iter()
        .map(|(k, v)| {
            Ok(Tag {
                key: k.clone(),
                value: v
                    .as_str()
                    .ok_or_else(|| {
                        invalid_parameter(format!("tag `{k}` must have a string value"))
                    })?
                    .to_string(),
            })
        })
        .collect()
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Object(
        tags.iter()
            .map(|t| (t.key.clone(), Value::String(t.value.clone())))
            .collect(),
    )
}

fn str_field<'v>(body: &'v Value, name: &str) -> Option<&'v str> {
    body.get(name).and_then(Value::as_str)
}

fn required<'v>(body: &'v Value, name: &str) -> Result<&'v str, AwsError> {
    str_field(body, name).ok_or_else(|| invalid_parameter(format!("`{name}` is required")))
}

fn epoch_seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

impl Ctx<'_> {
    fn cluster_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:eks:{}:{}:cluster/{name}",
            self.shared.config.partition, self.shared.config.region, self.shared.config.account_id
        )
    }

    fn eks_check(&self, state: &State, action: &str, resource: &str) -> Result<(), AwsError> {
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
}

fn cluster<'s>(state: &'s State, name: &str) -> Result<&'s Cluster, AwsError> {
    state
        .clusters
        .get(name)
        .ok_or_else(|| not_found(format!("No cluster found for name: {name}. Register it with `podiam cluster create --name {name} …`.")))
}

// === clusters (a podiam extension in EKS's shape) ===

fn cluster_json(c: &Cluster) -> Value {
    json!({
        "name": c.name,
        "arn": c.arn,
        "createdAt": epoch_seconds(c.created_at),
        "status": "ACTIVE",
        "identity": {"oidc": {"issuer": c.issuer_url}},
        "tags": tags_json(&c.tags),
    })
}

/// `POST /clusters {"name", "issuerUrl" | "jwks" | "builtin": true, "tags"}`.
pub async fn create_cluster(ctx: &Ctx<'_>, body: &Value) -> Result<Value, AwsError> {
    let name = required(body, "name")?.to_string();
    name_rule("Cluster name", &name)?;
    let builtin = body
        .get("builtin")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let issuer = str_field(body, "issuerUrl").map(str::to_string);
    let jwks = str_field(body, "jwks").map(str::to_string);
    let issuer_url = match (builtin, issuer) {
        (true, None) => ctx.shared.config.issuer_url.clone(),
        (false, Some(u)) => {
            if !u.starts_with("https://") && !u.starts_with("http://") {
                return Err(invalid_parameter(format!(
                    "issuerUrl `{u}` must be an https:// URL"
                )));
            }
            u
        }
        (true, Some(_)) => {
            return Err(invalid_parameter(
                "give either `builtin` or `issuerUrl`, not both",
            ));
        }
        (false, None) => {
            return Err(invalid_parameter(
                "a cluster needs its issuer: `issuerUrl` (kube-apiserver's --service-account-issuer), with `jwks` if that URL is not reachable, or `builtin`",
            ));
        }
    };
    if let Some(j) = &jwks {
        crate::issuer::check_jwks(j)?;
    }
    let tags = tags_of(body.get("tags"))?;
    let arn = ctx.cluster_arn(&name);
    let c = Cluster {
        name: name.clone(),
        arn: arn.clone(),
        issuer_url,
        static_jwks: jwks,
        created_at: ctx.facts.now,
        tags,
    };
    let c = ctx
        .shared
        .write(|state| {
            ctx.eks_check(state, "eks:CreateCluster", &arn)?;
            if state.clusters.contains_key(&name) {
                return Err(in_use(format!("Cluster already exists with name: {name}")));
            }
            Ok((
                vec![Change::Cluster(name.clone(), Some(c.clone()))],
                c.clone(),
            ))
        })
        .await?;
    Ok(json!({"cluster": cluster_json(&c)}))
}

pub fn describe_cluster(ctx: &Ctx<'_>, name: &str) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    let c = cluster(&state, name)?;
    ctx.eks_check(&state, "eks:DescribeCluster", &c.arn)?;
    Ok(json!({"cluster": cluster_json(c)}))
}

pub fn list_clusters(ctx: &Ctx<'_>) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.eks_check(&state, "eks:ListClusters", "*")?;
    Ok(json!({"clusters": state.clusters.keys().collect::<Vec<_>>()}))
}

pub async fn delete_cluster(ctx: &Ctx<'_>, name: &str) -> Result<Value, AwsError> {
    let c = ctx
        .shared
        .write(|state| {
            let c = cluster(state, name)?.clone();
            ctx.eks_check(state, "eks:DeleteCluster", &c.arn)?;
            if state
                .pod_identity_associations
                .values()
                .any(|a| a.cluster_name == name)
            {
                return Err(in_use(format!(
                    "Cluster {name} has pod identity associations: delete them first"
                )));
            }
            Ok((vec![Change::Cluster(name.to_string(), None)], c))
        })
        .await?;
    Ok(json!({"cluster": cluster_json(&c)}))
}

// === pod identity associations ===

fn association_json(a: &PodIdentityAssociation) -> Value {
    let mut v = json!({
        "clusterName": a.cluster_name,
        "namespace": a.namespace,
        "serviceAccount": a.service_account,
        "roleArn": a.role_arn,
        "associationArn": a.association_arn,
        "associationId": a.association_id,
        "tags": tags_json(&a.tags),
        "createdAt": epoch_seconds(a.created_at),
        "modifiedAt": epoch_seconds(a.modified_at),
        "disableSessionTags": a.disable_session_tags,
    });
    for (k, val) in [
        ("targetRoleArn", &a.target_role_arn),
        ("externalId", &a.external_id),
        ("policy", &a.policy),
        ("ownerArn", &a.owner_arn),
    ] {
        if let Some(x) = val {
            v[k] = Value::String(x.clone());
        }
    }
    v
}

fn association_id() -> Result<String, AwsError> {
    let mut bytes = [0u8; 17];
    podiam_identity::Rng::fill(&podiam_identity::SystemRng, &mut bytes)
        .map_err(|e| AwsError::internal(format!("cannot mint an association ID: {e}")))?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(format!(
        "a-{}",
        bytes
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect::<String>()
    ))
}

fn check_session_policy(policy: Option<&str>) -> Result<(), AwsError> {
    if let Some(p) = policy {
        let compiled = Policy::parse(p, PolicyKind::Identity)
            .map_err(|e| invalid_parameter(format!("policy: {e}")))?;
        if compiled.size > 2048 {
            return Err(invalid_parameter(
                "policy: session policies are at most 2,048 characters",
            ));
        }
    }
    Ok(())
}

fn role_must_exist(state: &State, arn: &str) -> Result<(), AwsError> {
    if state.roles.values().any(|r| r.arn == arn) {
        Ok(())
    } else {
        Err(invalid_parameter(format!("Role {arn} does not exist")))
    }
}

pub async fn create_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    body: &Value,
) -> Result<Value, AwsError> {
    let namespace = required(body, "namespace")?.to_string();
    let service_account = required(body, "serviceAccount")?.to_string();
    let role_arn = required(body, "roleArn")?.to_string();
    k8s_name_rule("namespace", &namespace)?;
    k8s_name_rule("serviceAccount", &service_account)?;
    let tags = tags_of(body.get("tags"))?;
    let disable_session_tags = body
        .get("disableSessionTags")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let target_role_arn = str_field(body, "targetRoleArn").map(str::to_string);
    let policy = str_field(body, "policy").map(str::to_string);
    check_session_policy(policy.as_deref())?;
    let id = association_id()?;
    let external_id = target_role_arn
        .as_ref()
        .map(|_| podiam_identity::issuer::random_uuid(&podiam_identity::SystemRng))
        .transpose()
        .map_err(|e| AwsError::internal(e.to_string()))?;
    let a = ctx
        .shared
        .write(|state| {
            let c = cluster(state, cluster_name)?;
            ctx.eks_check(state, "eks:CreatePodIdentityAssociation", &c.arn)?;
            role_must_exist(state, &role_arn)?;
            if let Some(t) = &target_role_arn {
                role_must_exist(state, t)?;
            }
            if state.pod_identity_associations.values().any(|a| {
                a.cluster_name == cluster_name && a.namespace == namespace && a.service_account == service_account
            }) {
                return Err(in_use(format!(
                    "Association already exists for service account {service_account} in namespace {namespace} of cluster {cluster_name}"
                )));
            }
            let a = PodIdentityAssociation {
                cluster_name: cluster_name.to_string(),
                namespace: namespace.clone(),
                service_account: service_account.clone(),
                role_arn: role_arn.clone(),
                association_arn: format!(
                    "arn:{}:eks:{}:{}:podidentityassociation/{cluster_name}/{id}",
                    ctx.shared.config.partition, ctx.shared.config.region, ctx.shared.config.account_id
                ),
                association_id: id.clone(),
                tags: tags.clone(),
                created_at: ctx.facts.now,
                modified_at: ctx.facts.now,
                disable_session_tags,
                target_role_arn: target_role_arn.clone(),
                external_id: external_id.clone(),
                policy: policy.clone(),
                owner_arn: None,
            };
            Ok((vec![Change::PodIdentityAssociation(id.clone(), Some(a.clone()))], a))
        })
        .await?;
    Ok(json!({"association": association_json(&a)}))
}

fn association<'s>(
    state: &'s State,
    cluster_name: &str,
    id: &str,
) -> Result<&'s PodIdentityAssociation, AwsError> {
    state
        .pod_identity_associations
        .get(id)
        .filter(|a| a.cluster_name == cluster_name)
        .ok_or_else(|| not_found(format!("No Pod Identity Association found for id: {id}")))
}

pub fn describe_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    id: &str,
) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    cluster(&state, cluster_name)?;
    let a = association(&state, cluster_name, id)?;
    ctx.eks_check(
        &state,
        "eks:DescribePodIdentityAssociation",
        &a.association_arn,
    )?;
    Ok(json!({"association": association_json(a)}))
}

pub fn list_associations(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    query: &crate::query::Params,
) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    let c = cluster(&state, cluster_name)?;
    ctx.eks_check(&state, "eks:ListPodIdentityAssociations", &c.arn)?;
    let max = match query.int("maxResults")? {
        Some(n) if (1..=100).contains(&n) => usize::try_from(n).unwrap_or(100),
        Some(n) => {
            return Err(invalid_parameter(format!(
                "maxResults {n} must be between 1 and 100"
            )));
        }
        None => 100,
    };
    let mut items: Vec<&PodIdentityAssociation> = state
        .pod_identity_associations
        .values()
        .filter(|a| a.cluster_name == cluster_name)
        .filter(|a| query.get("namespace").is_none_or(|n| a.namespace == n))
        .filter(|a| {
            query
                .get("serviceAccount")
                .is_none_or(|s| a.service_account == s)
        })
        .collect();
    items.sort_by(|x, y| {
        (&x.namespace, &x.service_account).cmp(&(&y.namespace, &y.service_account))
    });
    let start = match query.get("nextToken") {
        Some(t) => items
            .iter()
            .position(|a| a.association_id == t)
            .ok_or_else(|| invalid_parameter("nextToken is not valid"))?,
        None => 0,
    };
    let page: Vec<Value> = items
        .iter()
        .skip(start)
        .take(max)
        .map(|a| {
            json!({
                "clusterName": a.cluster_name,
                "namespace": a.namespace,
                "serviceAccount": a.service_account,
                "associationArn": a.association_arn,
                "associationId": a.association_id,
            })
        })
        .collect();
    let mut out = json!({"associations": page});
    if let Some(next) = items.get(start + max) {
        out["nextToken"] = Value::String(next.association_id.clone());
    }
    Ok(out)
}

pub async fn update_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    id: &str,
    body: &Value,
) -> Result<Value, AwsError> {
    let role_arn = str_field(body, "roleArn").map(str::to_string);
    let disable = body.get("disableSessionTags").and_then(Value::as_bool);
    let target = str_field(body, "targetRoleArn").map(str::to_string);
    let policy = str_field(body, "policy").map(str::to_string);
    check_session_policy(policy.as_deref())?;
    let a = ctx
        .shared
        .write(|state| {
            cluster(state, cluster_name)?;
            let mut a = association(state, cluster_name, id)?.clone();
            ctx.eks_check(
                state,
                "eks:UpdatePodIdentityAssociation",
                &a.association_arn,
            )?;
            if let Some(r) = role_arn.clone() {
                role_must_exist(state, &r)?;
                a.role_arn = r;
            }
            if let Some(d) = disable {
                a.disable_session_tags = d;
            }
            if let Some(t) = target.clone() {
                if t.is_empty() {
                    a.target_role_arn = None;
                    a.external_id = None;
                } else {
                    role_must_exist(state, &t)?;
                    if a.external_id.is_none() {
                        a.external_id = Some(
                            podiam_identity::issuer::random_uuid(&podiam_identity::SystemRng)
                                .map_err(|e| AwsError::internal(e.to_string()))?,
                        );
                    }
                    a.target_role_arn = Some(t);
                }
            }
            if let Some(p) = policy.clone() {
                a.policy = (!p.is_empty()).then_some(p);
            }
            a.modified_at = ctx.facts.now;
            Ok((
                vec![Change::PodIdentityAssociation(
                    id.to_string(),
                    Some(a.clone()),
                )],
                a,
            ))
        })
        .await?;
    Ok(json!({"association": association_json(&a)}))
}

pub async fn delete_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    id: &str,
) -> Result<Value, AwsError> {
    let a = ctx
        .shared
        .write(|state| {
            cluster(state, cluster_name)?;
            let a = association(state, cluster_name, id)?.clone();
            ctx.eks_check(
                state,
                "eks:DeletePodIdentityAssociation",
                &a.association_arn,
            )?;
            Ok((
                vec![Change::PodIdentityAssociation(id.to_string(), None)],
                a,
            ))
        })
        .await?;
    Ok(json!({"association": association_json(&a)}))
}

// === EKS Auth: AssumeRoleForPodIdentity ===

fn pod_jwt_error(e: &JwtError) -> AwsError {
    match e {
        JwtError::TokenExpired { .. } => AwsError::new(
            "ExpiredTokenException",
            StatusCode::BAD_REQUEST,
            format!("The token is expired: {e}"),
        ),
        _ => invalid_token(format!("The token is not valid: {e}")),
    }
}

fn role_by_arn<'s>(state: &'s State, arn: &str) -> Result<&'s Role, AwsError> {
    state.roles.values().find(|r| r.arn == arn).ok_or_else(|| {
        AwsError::new(
            "AccessDeniedException",
            StatusCode::BAD_REQUEST,
            format!("The role {arn} of the association does not exist"),
        )
    })
}

/// Trust check for a Pod Identity step; the denial names what failed.
fn trust(
    ctx: &Ctx<'_>,
    role: &Role,
    principal: &RequestPrincipal,
    actions: &[&str],
    context: &Context,
    caller: &PolicySet<'_>,
    event: &mut Event,
) -> Result<(), AwsError> {
    let trust = ctx.shared.compiled(
        &role.assume_role_policy_document,
        PolicyKind::Trust,
        "trust policy",
    )?;
    for action in actions {
        let request = Request {
            principal: Some(principal),
            action,
            resource: &role.arn,
            context,
        };
        let decision = evaluate_trust(&request, &trust, caller);
        if decision.is_allowed() {
            continue;
        }
        let set = PolicySet {
            resource: Some(&trust),
            resource_required: true,
            ..*caller
        };
        let (_, tr) = evaluate_with_trace(&request, &set);
        let detail = crate::auth::explain(&decision, &tr)
            .unwrap_or_else(|| decision.reason.describe().to_string());
        event.reason = Some(format!("{action}: {detail}"));
        let mut message = format!(
            "The role {} trust policy does not allow {} to perform {action}",
            role.arn, principal.id
        );
        if ctx.shared.config.explain_denials {
            message.push_str(&format!(" (podiam: {detail}; Pod Identity roles trust `\"Service\": \"pods.eks.amazonaws.com\"` with `sts:AssumeRole` and `sts:TagSession`)"));
        }
        return Err(AwsError::new(
            "AccessDeniedException",
            StatusCode::BAD_REQUEST,
            message,
        ));
    }
    Ok(())
}

pub async fn assume_role_for_pod_identity(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    body: &Value,
) -> Result<Value, AwsError> {
    let mut event = Event::new(ctx, "AssumeRoleForPodIdentity");
    event.subject = ctx.caller.as_ref().map(|c| c.arn().to_string());
    let result = pod_identity(ctx, cluster_name, body, &mut event).await;
    event.finish(&result);
    if let Err(e) = &result
        && (e.code == "AccessDeniedException"
            || e.code == "InvalidTokenException"
            || e.code == "ExpiredTokenException")
    {
        event.outcome = "denied".into();
    }
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
        .ok_or_else(|| invalid_request("`token` is required"))?;
    let state = ctx.shared.snapshot();
    let c = cluster(&state, cluster_name)?.clone();
    ctx.eks_check(&state, "eks-auth:AssumeRoleForPodIdentity", &c.arn)
        .map_err(|e| rest_error(e, true))?;

    // The token, against the cluster's keys.
    let unverified = UnverifiedJwt::parse(token).map_err(|e| pod_jwt_error(&e))?;
    let jwks = if ctx.shared.is_own_issuer(&c.issuer_url) {
        ctx.shared.keys().jwks.clone()
    } else if let Some(j) = &c.static_jwks {
        ctx.shared.static_jwks(j)?
    } else {
        ctx.shared.remote_jwks(&c.issuer_url, false).await?
    };
    let validation = Validation::new(c.issuer_url.clone(), [AUDIENCE]);
    let verified = unverified
        .verify(&jwks, &validation, &SystemClock)
        .map_err(|e| pod_jwt_error(&e))?;
    let claims = verified.claims();
    let k8s = claims
        .kubernetes()
        .map_err(|e| invalid_token(e.to_string()))?
        .ok_or_else(|| invalid_token("The token has no `kubernetes.io` claim: it is not a Kubernetes ServiceAccount token"))?;
    let pod = k8s.pod.clone().ok_or_else(|| {
        invalid_token("The token is not bound to a pod: use a projected ServiceAccount token")
    })?;
    let namespace = k8s.namespace.clone();
    let service_account = k8s.serviceaccount.name.clone();
    event.issuer = Some(c.issuer_url.clone());
    event.namespace = Some(namespace.clone());
    event.service_account = Some(service_account.clone());
    event.pod = Some(pod.name.clone());
    event.token_age_seconds = claims.issued_at().map(|iat| ctx.facts.now / 1000 - iat);

    let a = state
        .pod_identity_associations
        .values()
        .find(|a| a.cluster_name == cluster_name && a.namespace == namespace && a.service_account == service_account)
        .ok_or_else(|| {
            not_found(format!(
                "No Pod Identity Association for service account {service_account} in namespace {namespace} of cluster {cluster_name}"
            ))
        })?
        .clone();
    let role = role_by_arn(&state, &a.role_arn)?.clone();
    event.role = Some(role.arn.clone());

    // AWS: six session tags, all transitive, unless the association disables them.
    let tags: Vec<(String, String)> = if a.disable_session_tags {
        Vec::new()
    } else {
        vec![
            ("eks-cluster-arn".into(), c.arn.clone()),
            ("eks-cluster-name".into(), c.name.clone()),
            ("kubernetes-namespace".into(), namespace.clone()),
            ("kubernetes-service-account".into(), service_account.clone()),
            ("kubernetes-pod-name".into(), pod.name.clone()),
            ("kubernetes-pod-uid".into(), pod.uid.clone()),
        ]
    };
    let transitive: Vec<String> = tags.iter().map(|(k, _)| k.clone()).collect();
    let mut context = Context::new();
    context.insert("aws:SourceAccount", ctx.shared.config.account_id.as_str());
    context.insert("aws:SourceArn", c.arn.as_str());
    context.insert(
        "aws:CurrentTime",
        podiam_policy::date::format_date(ctx.facts.now),
    );
    for (k, v) in &tags {
        context.insert(&format!("aws:RequestTag/{k}"), v.as_str());
    }
    if !tags.is_empty() {
        context.insert_list("aws:TagKeys", tags.iter().map(|(k, _)| k.as_str()));
        context.insert_list(
            "sts:TransitiveTagKeys",
            transitive.iter().map(String::as_str),
        );
    }
    let mut actions = vec!["sts:AssumeRole"];
    if !tags.is_empty() {
        actions.push("sts:TagSession");
    }
    let service = RequestPrincipal::service(SERVICE_PRINCIPAL);
    trust(
        ctx,
        &role,
        &service,
        &actions,
        &context,
        &PolicySet::default(),
        event,
    )?;

    // Session name: `eks-CLUSTER-POD-UUID`, at most 64 characters.
    let uuid = podiam_identity::issuer::random_uuid(&podiam_identity::SystemRng)
        .map_err(|e| AwsError::internal(e.to_string()))?;
    let mut session_name: String = format!("eks-{}-{}-", c.name, pod.name)
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || "_+=,.@-".contains(*ch))
        .collect();
    session_name.truncate(64 - uuid.len().min(32));
    session_name.push_str(&uuid[..uuid.len().min(64 - session_name.len())]);
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
        arns: Vec::new(),
        packed_percent: 0,
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
                SessionPolicies {
                    inline: None,
                    arns: Vec::new(),
                    packed_percent: 0,
                }
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
            let caller = crate::auth::Caller::Session(Box::new(first.claims.clone()));
            let caller_pols = caller_policies(ctx.shared, &state, &caller)?;
            let identity: Vec<&Policy> = caller_pols.identity.iter().map(|p| &**p).collect();
            let set = PolicySet {
                identity: &identity,
                permissions_boundary: caller_pols.boundary.as_deref(),
                session: None,
                resource: None,
                resource_required: false,
            };
            let mut ctx2 = crate::auth::caller_context(
                &state,
                &caller,
                &ctx.facts,
                &ctx.shared.config.account_id,
            );
            if let Some(x) = &a.external_id {
                ctx2.insert("sts:ExternalId", x.as_str());
            }
            ctx2.insert("sts:RoleSessionName", session_name.as_str());
            for (k, v) in &tags {
                ctx2.insert(&format!("aws:RequestTag/{k}"), v.as_str());
            }
            if !tags.is_empty() {
                ctx2.insert_list("aws:TagKeys", tags.iter().map(|(k, _)| k.as_str()));
            }
            let principal = RequestPrincipal::role_session(
                first.claims.assumed_role_arn.as_str(),
                role.arn.as_str(),
            );
            trust(ctx, &target, &principal, &actions, &ctx2, &set, event)?;
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
    Ok(response(&minted, &a, &namespace, &service_account))
}

fn response(
    m: &Minted,
    a: &PodIdentityAssociation,
    namespace: &str,
    service_account: &str,
) -> Value {
    let expiration = m
        .claims
        .expires_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "subject": {"namespace": namespace, "serviceAccount": service_account},
        "audience": AUDIENCE,
        "podIdentityAssociation": {"associationArn": a.association_arn, "associationId": a.association_id},
        "assumedRoleUser": {
            "arn": m.claims.assumed_role_arn,
            "assumeRoleId": format!("{}:{}", m.claims.role_id, m.claims.role_session_name),
        },
        "credentials": {
            "sessionToken": m.token,
            "secretAccessKey": m.claims.secret_access_key.expose_secret(),
            "accessKeyId": m.claims.access_key_id.as_str(),
            "expiration": expiration,
        },
    })
}
