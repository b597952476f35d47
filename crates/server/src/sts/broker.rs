//! `AssumeRoleWithWebIdentity` for a role of another account (broker mode, IRSA): the pod's SDK
//! presents its projected ServiceAccount token with `AWS_ROLE_ARN` naming a role in the real
//! account. There is no trust policy of podiam's to evaluate for that role, so:
//!
//! - the token is verified against the keys of the registered cluster whose issuer signed it
//!   (as EKS Auth verifies a pod token), with the audiences of the issuer's IAM OIDC provider if
//!   one is registered, `sts.amazonaws.com` otherwise;
//! - the binding for (cluster, namespace, ServiceAccount) must name that very role: the pod
//!   identity association (`podiam create iamserviceaccount --role-arn`), so one record says
//!   which role a ServiceAccount gets, whichever of the two APIs its pods use;
//! - the session comes from upstream ([`crate::broker`]) as for Pod Identity: the session tags
//!   (pod name and UID from the token's `kubernetes.io` claim), SourceIdentity, the request's
//!   `DurationSeconds`, cache and rate limit; the upstream role's trust policy decides.
//!
//! The answer is STS's `AssumeRoleWithWebIdentity` shape, with upstream's credentials and
//! assumed-role user, and the token's `sub`, `aud` and issuer.

use std::time::Duration;

use crate::audit::Event;
use crate::broker::{BrokeredPod, upstream_session};
use crate::ctx::Ctx;
use crate::eks_auth::session_tags;
use crate::error::AwsError;
use crate::iam::provider_key;
use crate::issuance::{PresentedToken, TokenIssuer};
use crate::query::Params;
use crate::upstream::Via;
use crate::xml::Xml;

use super::{NS, SessionXml, credentials_parts_xml};

/// The audience IRSA tokens carry (the EKS Pod Identity Webhook's default, and what AWS's docs
/// register as the OIDC provider's client ID).
const IRSA_AUDIENCE: &str = "sts.amazonaws.com";

pub(super) async fn web_identity(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
    presented: PresentedToken<'_>,
    iss: &str,
    event: &mut Event,
) -> Result<String, AwsError> {
    let role_arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    if p.get("Policy").is_some() || !p.structs("PolicyArns").is_empty() {
        return Err(AwsError::validation(format!(
            "Session policies (Policy, PolicyArns) are not passed on for {role_arn}, a role of another account that podiam brokers: put the session policy on the ServiceAccount's pod identity association (`policy`)"
        )));
    }
    let duration = match p.int("DurationSeconds")? {
        None => None,
        Some(d @ 900..=43_200) => Some(Duration::from_secs(d.unsigned_abs())),
        Some(d) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"
            )));
        }
    };
    let state = ctx.shared.snapshot();
    let clusters: Vec<_> = state
        .clusters
        .values()
        .filter(|c| c.issuer_url == iss)
        .collect();
    let Some(first) = clusters.first() else {
        return Err(AwsError::invalid_identity_token(format!(
            "No cluster is registered in podiam for the issuer {iss}: the role {role_arn} is in another account, whose sessions podiam brokers for the pods of its registered clusters (podiam cluster create --name NAME --issuer-url {iss})"
        )));
    };
    let audiences = state
        .oidc_providers
        .values()
        .find(|o| provider_key(&o.url).is_some() && provider_key(&o.url) == provider_key(iss))
        .map_or_else(|| vec![IRSA_AUDIENCE.to_string()], |o| o.client_ids.clone());
    let claims = presented
        .verify(
            ctx,
            TokenIssuer {
                url: &first.issuer_url,
                static_jwks: first.static_jwks.as_deref(),
            },
            &audiences,
        )
        .await?;
    event.unauthenticated = false;
    let k8s = claims
        .kubernetes()
        .map_err(|e| AwsError::invalid_identity_token(e.to_string()))?
        .ok_or_else(|| {
            AwsError::invalid_identity_token(
                "The token has no `kubernetes.io` claim: a role of another account is brokered for Kubernetes ServiceAccount tokens only",
            )
        })?;
    let namespace = k8s.namespace.as_str();
    let service_account = k8s.serviceaccount.name.as_str();
    event.namespace = Some(namespace.to_string());
    event.service_account = Some(service_account.to_string());
    event.pod = k8s.pod.as_ref().map(|p| p.name.clone());
    event.token_age_seconds = claims.issued_at().map(|iat| ctx.facts.now / 1000 - iat);

    let binding = state.pod_identity_associations.values().find(|a| {
        a.namespace == namespace
            && a.service_account == service_account
            && clusters.iter().any(|c| c.name == a.cluster_name)
    });
    let cluster_names = clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let a = match binding {
        Some(a) if a.role_arn == role_arn => a,
        Some(a) => {
            return Err(AwsError::access_denied(format!(
                "Not authorized to perform sts:AssumeRoleWithWebIdentity: ServiceAccount {namespace}/{service_account} of cluster {} is bound to {}, not to {role_arn}",
                a.cluster_name, a.role_arn
            )));
        }
        None => {
            return Err(AwsError::access_denied(format!(
                "Not authorized to perform sts:AssumeRoleWithWebIdentity: no binding of ServiceAccount {namespace}/{service_account} of cluster {cluster_names} to {role_arn}, a role of another account; create it with `podiam create iamserviceaccount --cluster {} --namespace {namespace} --name {service_account} --role-arn {role_arn}`",
                first.name
            )));
        }
    };
    let cluster = clusters
        .iter()
        .find(|c| c.name == a.cluster_name)
        .copied()
        .unwrap_or(first);
    let tags = session_tags(cluster, a, namespace, service_account, k8s.pod.as_ref());
    let issued = upstream_session(
        ctx,
        BrokeredPod {
            association: a,
            namespace,
            service_account,
            pod: k8s.pod.as_ref(),
            tags: &tags,
            session_name: session_name.to_string(),
            via: Via::WebIdentity {
                session_name: session_name.to_string(),
                duration_secs: duration.map_or(0, |d| d.as_secs()),
            },
            duration,
        },
        event,
    )
    .await?;

    let sub = claims.subject().unwrap_or_default();
    let aud = claims
        .audiences()
        .iter()
        .find(|a| audiences.contains(a))
        .cloned()
        .unwrap_or_default();
    let mut x = Xml::response("AssumeRoleWithWebIdentity", NS);
    x.text("SubjectFromWebIdentityToken", sub)
        .text("Audience", &aud);
    credentials_parts_xml(
        &mut x,
        &SessionXml {
            access_key_id: &issued.access_key_id,
            secret_access_key: issued.secret_access_key.expose_secret(),
            session_token: &issued.session_token,
            expiration: issued.expiration,
            assumed_role_id: &[&issued.assumed_role_id],
            assumed_role_arn: &issued.assumed_role_arn,
        },
    );
    x.text("Provider", iss)
        .opt("SourceIdentity", issued.source_identity.as_deref());
    Ok(x.finish("AssumeRoleWithWebIdentity", ctx.request_id))
}
