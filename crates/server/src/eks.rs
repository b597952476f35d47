//! EKS Pod Identity, on any cluster: the cluster registry (a podiam extension in EKS's shape) and
//! EKS's pod identity association API (REST-JSON, botocore `eks` 2017-11-01). EKS Auth's
//! `AssumeRoleForPodIdentity` is in [`crate::eks_auth`].

use podiam_policy::{Policy, PolicyKind};
use podiam_store::{Change, Cluster, PodIdentityAssociation, State, Tag};
use serde_json::{Value, json};

use crate::actions::RequestKeys;
use crate::ctx::Ctx;
use crate::error::AwsError;

/// The audience of Pod Identity tokens: "always pods.eks.amazonaws.com".
pub(crate) const AUDIENCE: &str = "pods.eks.amazonaws.com";
/// The service principal a Pod Identity role's trust policy names.
pub(crate) const SERVICE_PRINCIPAL: &str = "pods.eks.amazonaws.com";

fn name_rule(what: &str, v: &str) -> Result<(), AwsError> {
    let ok = (1..=100).contains(&v.len())
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AwsError::invalid_parameter(format!(
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
        Err(AwsError::invalid_parameter(format!(
            "{what} `{v}` is not a valid Kubernetes name"
        )))
    }
}

fn tags_of(v: Option<&Value>) -> Result<Vec<Tag>, AwsError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let obj = v
        .as_object()
        .ok_or_else(|| AwsError::invalid_parameter("tags must be an object of string values"))?;
    if obj.len() > 50 {
        return Err(AwsError::invalid_parameter("at most 50 tags"));
    }
    obj.iter()
        .map(|(k, v)| {
            Ok(Tag {
                key: k.clone(),
                value: v
                    .as_str()
                    .ok_or_else(|| {
                        AwsError::invalid_parameter(format!("tag `{k}` must have a string value"))
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
    str_field(body, name)
        .ok_or_else(|| AwsError::invalid_parameter(format!("`{name}` is required")))
}

fn epoch_seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

pub(crate) fn cluster<'s>(state: &'s State, name: &str) -> Result<&'s Cluster, AwsError> {
    state
        .clusters
        .get(name)
        .ok_or_else(|| AwsError::not_found(format!("No cluster found for name: {name}. Register it with `podiam cluster create --name {name} …`.")))
}

/// The cluster `name`, once the caller may perform `action` on it: its tags are
/// `aws:ResourceTag/…`, with what the request holds. Authorised before the lookup, so nobody
/// learns which clusters exist from a denial.
pub(crate) fn authorized_cluster<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    name: &str,
    action: &str,
    keys: RequestKeys<'_>,
) -> Result<&'s Cluster, AwsError> {
    let found = state.clusters.get(name);
    let tags = found.map_or(&[][..], |c| &c.tags);
    ctx.check_with(state, action, &ctx.cluster_arn(name), &keys.on(tags))?;
    cluster(state, name)
}

/// Tags as the request keys take them.
fn tag_pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
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
/// A cluster to register: its name and its ServiceAccount token issuer.
#[derive(Clone, Debug, Default)]
pub struct CreateCluster {
    pub name: String,
    /// podiam's own built-in issuer signs its tokens.
    pub builtin: bool,
    /// kube-apiserver's `--service-account-issuer`.
    pub issuer_url: Option<String>,
    /// The issuer's JWKS, when podiam cannot reach the issuer.
    pub jwks: Option<String>,
    pub tags: Vec<Tag>,
}

pub(crate) async fn create_cluster_json(ctx: &Ctx<'_>, body: &Value) -> Result<Value, AwsError> {
    let input = CreateCluster {
        name: required(body, "name")?.to_string(),
        builtin: body
            .get("builtin")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        issuer_url: str_field(body, "issuerUrl").map(str::to_string),
        jwks: str_field(body, "jwks").map(str::to_string),
        tags: tags_of(body.get("tags"))?,
    };
    let c = create_cluster(ctx, input).await?;
    Ok(json!({"cluster": cluster_json(&c)}))
}

/// Registers a cluster (`eks:CreateCluster`).
pub(crate) async fn create_cluster(
    ctx: &Ctx<'_>,
    input: CreateCluster,
) -> Result<Cluster, AwsError> {
    let name = input.name;
    name_rule("Cluster name", &name)?;
    let jwks = input.jwks;
    let issuer_url = match (input.builtin, input.issuer_url) {
        (true, None) => ctx.shared.config.issuer_url.clone(),
        (false, Some(u)) => {
            if !u.starts_with("https://") && !u.starts_with("http://") {
                return Err(AwsError::invalid_parameter(format!(
                    "issuerUrl `{u}` must be an https:// URL"
                )));
            }
            u
        }
        (true, Some(_)) => {
            return Err(AwsError::invalid_parameter(
                "give either `builtin` or `issuerUrl`, not both",
            ));
        }
        (false, None) => {
            return Err(AwsError::invalid_parameter(
                "a cluster needs its issuer: `issuerUrl` (kube-apiserver's --service-account-issuer), with `jwks` if that URL is not reachable, or `builtin`",
            ));
        }
    };
    if let Some(j) = &jwks {
        crate::issuer::check_jwks(j)?;
    }
    let tags = input.tags;
    let arn = ctx.cluster_arn(&name);
    let c = Cluster {
        name: name.clone(),
        arn: arn.clone(),
        issuer_url,
        static_jwks: jwks,
        created_at: ctx.facts.now,
        tags,
    };
    ctx.shared
        .write(|state| {
            ctx.check_with(
                state,
                "eks:CreateCluster",
                &arn,
                &RequestKeys::tagging(&tag_pairs(&c.tags)),
            )?;
            if state.clusters.contains_key(&name) {
                return Err(AwsError::in_use(format!(
                    "Cluster already exists with name: {name}"
                )));
            }
            Ok((
                vec![Change::Cluster(name.clone(), Some(c.clone()))],
                c.clone(),
            ))
        })
        .await
}

pub(crate) fn describe_cluster(ctx: &Ctx<'_>, name: &str) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    let c = authorized_cluster(
        ctx,
        &state,
        name,
        "eks:DescribeCluster",
        RequestKeys::default(),
    )?;
    Ok(json!({"cluster": cluster_json(c)}))
}

pub(crate) fn list_clusters_json(ctx: &Ctx<'_>) -> Result<Value, AwsError> {
    Ok(json!({"clusters": list_clusters(ctx)?}))
}

/// The names of the registered clusters (`eks:ListClusters`).
pub(crate) fn list_clusters(ctx: &Ctx<'_>) -> Result<Vec<String>, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "eks:ListClusters", "*")?;
    Ok(state.clusters.keys().cloned().collect())
}

pub(crate) async fn delete_cluster_json(ctx: &Ctx<'_>, name: &str) -> Result<Value, AwsError> {
    let c = delete_cluster(ctx, name).await?;
    Ok(json!({"cluster": cluster_json(&c)}))
}

/// Removes a registered cluster (`eks:DeleteCluster`); refused while it has associations.
pub(crate) async fn delete_cluster(ctx: &Ctx<'_>, name: &str) -> Result<Cluster, AwsError> {
    ctx.shared
        .write(|state| {
            let c = authorized_cluster(
                ctx,
                state,
                name,
                "eks:DeleteCluster",
                RequestKeys::default(),
            )?
            .clone();
            if state
                .pod_identity_associations
                .values()
                .any(|a| a.cluster_name == name)
            {
                return Err(AwsError::in_use(format!(
                    "Cluster {name} has pod identity associations: delete them first"
                )));
            }
            Ok((vec![Change::Cluster(name.to_string(), None)], c))
        })
        .await
}

/// The registered clusters (`eks:ListClusters`, then `eks:DescribeCluster` on each).
pub(crate) fn clusters(ctx: &Ctx<'_>) -> Result<Vec<Cluster>, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "eks:ListClusters", "*")?;
    state
        .clusters
        .values()
        .map(|c| {
            ctx.check(&state, "eks:DescribeCluster", &c.arn)?;
            Ok(c.clone())
        })
        .collect()
}

/// A cluster's associations, sorted by namespace and ServiceAccount
/// (`eks:ListPodIdentityAssociations`).
pub(crate) fn associations(
    ctx: &Ctx<'_>,
    cluster_name: &str,
) -> Result<Vec<PodIdentityAssociation>, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(
        &state,
        "eks:ListPodIdentityAssociations",
        &ctx.cluster_arn(cluster_name),
    )?;
    cluster(&state, cluster_name)?;
    let mut items: Vec<PodIdentityAssociation> = state
        .pod_identity_associations
        .values()
        .filter(|a| a.cluster_name == cluster_name)
        .cloned()
        .collect();
    items.sort_by(|x, y| {
        (&x.namespace, &x.service_account).cmp(&(&y.namespace, &y.service_account))
    });
    Ok(items)
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
            .map_err(|e| AwsError::invalid_parameter(format!("policy: {e}")))?;
        if compiled.size > 2048 {
            return Err(AwsError::invalid_parameter(
                "policy: session policies are at most 2,048 characters",
            ));
        }
    }
    Ok(())
}

/// AWS: "The IAM principal that is creating the association must have `iam:PassRole`" on the
/// role (and on `targetRoleArn`), passed to `pods.eks.amazonaws.com`; `iam:AssociatedResourceArn`
/// is the cluster the role is associated with. Without it, whoever may create associations could
/// give their own ServiceAccount any role of the account.
fn check_pass_role(
    ctx: &Ctx<'_>,
    state: &State,
    role_arn: &str,
    cluster_name: &str,
) -> Result<(), AwsError> {
    let cluster_arn = ctx.cluster_arn(cluster_name);
    let keys = RequestKeys {
        passed_to_service: Some(SERVICE_PRINCIPAL),
        associated_resource_arn: Some(&cluster_arn),
        ..RequestKeys::default()
    };
    match crate::issuance::role_by_arn(state, role_arn) {
        Some(role) => ctx.check_role_with(state, "iam:PassRole", role, keys),
        None => ctx.check_with(state, "iam:PassRole", role_arn, &keys),
    }
}

fn role_must_exist(ctx: &Ctx<'_>, state: &State, arn: &str) -> Result<(), AwsError> {
    // Broker mode: another account's role exists (or not) upstream.
    if crate::upstream::is_upstream_role(&ctx.shared.config, arn) {
        return crate::upstream::check_upstream_role(ctx, arn);
    }
    if crate::issuance::role_by_arn(state, arn).is_some() {
        Ok(())
    } else {
        Err(AwsError::invalid_parameter(format!(
            "Role {arn} does not exist"
        )))
    }
}

/// `CreatePodIdentityAssociation`'s input.
#[derive(Clone, Debug, Default)]
pub struct CreateAssociation {
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    pub tags: Vec<Tag>,
    pub disable_session_tags: bool,
    pub target_role_arn: Option<String>,
    /// A session policy for the pods' credentials.
    pub policy: Option<String>,
}

pub(crate) async fn create_association_json(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    body: &Value,
) -> Result<Value, AwsError> {
    let input = CreateAssociation {
        namespace: required(body, "namespace")?.to_string(),
        service_account: required(body, "serviceAccount")?.to_string(),
        role_arn: required(body, "roleArn")?.to_string(),
        tags: tags_of(body.get("tags"))?,
        disable_session_tags: body
            .get("disableSessionTags")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        target_role_arn: str_field(body, "targetRoleArn").map(str::to_string),
        policy: str_field(body, "policy").map(str::to_string),
    };
    let a = create_association(ctx, cluster_name, input).await?;
    Ok(json!({"association": association_json(&a)}))
}

/// AWS's `CreatePodIdentityAssociation`: one association per (cluster, namespace,
/// ServiceAccount).
pub(crate) async fn create_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    input: CreateAssociation,
) -> Result<PodIdentityAssociation, AwsError> {
    let CreateAssociation {
        namespace,
        service_account,
        role_arn,
        tags,
        disable_session_tags,
        target_role_arn,
        policy,
    } = input;
    k8s_name_rule("namespace", &namespace)?;
    k8s_name_rule("serviceAccount", &service_account)?;
    check_session_policy(policy.as_deref())?;
    let request_tags = tag_pairs(&tags);
    let id = association_id()?;
    let external_id = target_role_arn
        .as_ref()
        .map(|_| podiam_identity::issuer::random_uuid(&podiam_identity::SystemRng))
        .transpose()
        .map_err(|e| AwsError::internal(e.to_string()))?;
    ctx.shared
        .write(|state| {
            authorized_cluster(
                ctx,
                state,
                cluster_name,
                "eks:CreatePodIdentityAssociation",
                RequestKeys::tagging(&request_tags),
            )?;
            check_pass_role(ctx, state, &role_arn, cluster_name)?;
            role_must_exist(ctx, state, &role_arn)?;
            if let Some(t) = &target_role_arn {
                check_pass_role(ctx, state, t, cluster_name)?;
                role_must_exist(ctx, state, t)?;
            }
            crate::upstream::check_chain(&ctx.shared.config, &role_arn, target_role_arn.as_deref())?;
            if state.pod_identity_associations.values().any(|a| {
                a.cluster_name == cluster_name && a.namespace == namespace && a.service_account == service_account
            }) {
                return Err(AwsError::in_use(format!(
                    "Association already exists for service account {service_account} in namespace {namespace} of cluster {cluster_name}"
                )));
            }
            let a = PodIdentityAssociation {
                cluster_name: cluster_name.to_string(),
                namespace: namespace.clone(),
                service_account: service_account.clone(),
                role_arn: role_arn.clone(),
                association_arn: ctx.association_arn(cluster_name, &id),
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
        .await
}

/// The association `id` of `cluster_name`, once the caller may perform `action` on it (its tags
/// are `aws:ResourceTag/…`): authorised before the lookup.
fn authorized_association<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    cluster_name: &str,
    id: &str,
    action: &str,
) -> Result<&'s PodIdentityAssociation, AwsError> {
    let found = state
        .pod_identity_associations
        .get(id)
        .filter(|a| a.cluster_name == cluster_name);
    let tags = found.map_or(&[][..], |a| &a.tags);
    ctx.check_with(
        state,
        action,
        &ctx.association_arn(cluster_name, id),
        &RequestKeys::default().on(tags),
    )?;
    cluster(state, cluster_name)?;
    association(state, cluster_name, id)
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
        .ok_or_else(|| {
            AwsError::not_found(format!("No Pod Identity Association found for id: {id}"))
        })
}

pub(crate) fn describe_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    id: &str,
) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    let a = authorized_association(
        ctx,
        &state,
        cluster_name,
        id,
        "eks:DescribePodIdentityAssociation",
    )?;
    Ok(json!({"association": association_json(a)}))
}

pub(crate) fn list_associations(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    query: &crate::query::Params,
) -> Result<Value, AwsError> {
    let state = ctx.shared.snapshot();
    authorized_cluster(
        ctx,
        &state,
        cluster_name,
        "eks:ListPodIdentityAssociations",
        RequestKeys::default(),
    )?;
    let max = match query.int("maxResults")? {
        Some(n) if (1..=100).contains(&n) => usize::try_from(n).unwrap_or(100),
        Some(n) => {
            return Err(AwsError::invalid_parameter(format!(
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
            .ok_or_else(|| AwsError::invalid_parameter("nextToken is not valid"))?,
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

pub(crate) async fn update_association(
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
            let mut a = authorized_association(
                ctx,
                state,
                cluster_name,
                id,
                "eks:UpdatePodIdentityAssociation",
            )?
            .clone();
            if let Some(r) = role_arn.clone() {
                check_pass_role(ctx, state, &r, cluster_name)?;
                role_must_exist(ctx, state, &r)?;
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
                    check_pass_role(ctx, state, &t, cluster_name)?;
                    role_must_exist(ctx, state, &t)?;
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
            crate::upstream::check_chain(
                &ctx.shared.config,
                &a.role_arn,
                a.target_role_arn.as_deref(),
            )?;
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

pub(crate) async fn delete_association_json(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    id: &str,
) -> Result<Value, AwsError> {
    let a = delete_association(ctx, cluster_name, id).await?;
    Ok(json!({"association": association_json(&a)}))
}

pub(crate) async fn delete_association(
    ctx: &Ctx<'_>,
    cluster_name: &str,
    id: &str,
) -> Result<PodIdentityAssociation, AwsError> {
    ctx.shared
        .write(|state| {
            let a = authorized_association(
                ctx,
                state,
                cluster_name,
                id,
                "eks:DeletePodIdentityAssociation",
            )?
            .clone();
            Ok((
                vec![Change::PodIdentityAssociation(id.to_string(), None)],
                a,
            ))
        })
        .await
}
