//! What EKS Auth (`AssumeRoleForPodIdentity`) and STS (`AssumeRoleWithWebIdentity`, IRSA) do
//! alike for a pod whose role is in another account (broker mode): once the pod is verified and
//! its association found, ask the upstream STS ([`crate::upstream`]) for the session, with the
//! pod's session tags and source identity, and record upstream's IDs in the audit event. Each
//! API answers in its own shape.

use std::sync::Arc;
use std::time::Duration;

use podiam_identity::jwt::ObjectRef;
use podiam_store::PodIdentityAssociation;

use crate::audit::Event;
use crate::ctx::Ctx;
use crate::error::{AwsError, ErrorKind};
use crate::upstream::{CacheKey, Issued, PodSession, Via};

/// A verified pod (of a cluster), its association, and what its API asks for.
pub(crate) struct BrokeredPod<'a> {
    pub(crate) association: &'a PodIdentityAssociation,
    pub(crate) namespace: &'a str,
    pub(crate) service_account: &'a str,
    /// The pod the token is bound to; an IRSA token may be bound to none.
    pub(crate) pod: Option<&'a ObjectRef>,
    /// The session tags, or none when the association disables them.
    pub(crate) tags: &'a [(String, String)],
    pub(crate) session_name: String,
    pub(crate) via: Via,
    /// `DurationSeconds` asked for (IRSA); `None`: `--upstream-session-duration`.
    pub(crate) duration: Option<Duration>,
}

/// The pod's upstream session: from the cache or from upstream, with the audit fields set.
pub(crate) async fn upstream_session(
    ctx: &Ctx<'_>,
    p: BrokeredPod<'_>,
    event: &mut Event,
) -> Result<Arc<Issued>, AwsError> {
    let a = p.association;
    event.role = Some(
        a.target_role_arn
            .clone()
            .unwrap_or_else(|| a.role_arn.clone()),
    );
    let Some(upstream) = ctx.shared.upstream() else {
        return Err(AwsError::new(
            ErrorKind::ServiceUnavailable,
            format!(
                "The role {} is in another account than this podiam's ({}): its sessions come from that account's STS, and this server was started without --upstream-sts",
                a.role_arn, ctx.shared.config.account_id
            ),
        ));
    };
    // A token bound to no pod (IRSA with a plain ServiceAccount token): the ServiceAccount's
    // sessions are one entry, and there is no pod to name in SourceIdentity.
    let pod_uid = match p.pod {
        Some(pod) => pod.uid.clone(),
        None => format!("serviceaccount:{}/{}", p.namespace, p.service_account),
    };
    let source_identity = p
        .pod
        .filter(|_| upstream.options().source_identity)
        .map(|pod| crate::upstream::source_identity(p.namespace, &pod.name));
    let session = PodSession {
        key: CacheKey {
            association_id: a.association_id.clone(),
            association_version: a.modified_at,
            pod_uid,
            via: p.via,
        },
        role_arn: &a.role_arn,
        target_role_arn: a.target_role_arn.as_deref(),
        external_id: a.external_id.as_deref(),
        session_name: p.session_name,
        tags: p.tags,
        policy: a.policy.as_deref(),
        source_identity,
        duration: p.duration,
    };
    let (issued, served) = match upstream.pod_credentials(&session, ctx.now()).await {
        Ok(ok) => ok,
        Err(failure) => {
            event.upstream_request_ids = failure
                .request_id()
                .map(str::to_string)
                .into_iter()
                .collect();
            return Err(AwsError::from(&failure));
        }
    };
    event.session_name = Some(issued.session_name.clone());
    event.upstream_request_ids = issued.request_ids.clone();
    event.upstream_session_arn = Some(issued.assumed_role_arn.clone());
    event.upstream_cache = Some(served.as_str().to_string());
    Ok(issued)
}
