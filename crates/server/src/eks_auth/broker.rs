//! `AssumeRoleForPodIdentity` for a role of another account (broker mode): the pod is verified
//! as for podiam's own roles (the token against the cluster's keys, the association), and the
//! session comes from the upstream STS ([`crate::upstream`]), whose trust policy decides.
//! The answer is EKS Auth's, with upstream's credentials and assumed-role user.

use podiam_identity::jwt::ObjectRef;
use podiam_store::{Cluster, PodIdentityAssociation};
use serde_json::Value;

use crate::audit::Event;
use crate::ctx::Ctx;
use crate::error::{AwsError, ErrorKind};
use crate::upstream::{CacheKey, PodSession};

use super::{PodCredentials, response, session_name};

/// The verified pod and what its association says.
pub(super) struct Pod<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) association: &'a PodIdentityAssociation,
    pub(super) namespace: &'a str,
    pub(super) service_account: &'a str,
    pub(super) pod: &'a ObjectRef,
    /// The six session tags, or none when the association disables them.
    pub(super) tags: &'a [(String, String)],
}

pub(super) async fn pod_identity(
    ctx: &Ctx<'_>,
    p: Pod<'_>,
    event: &mut Event,
) -> Result<Value, AwsError> {
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
                "The role {} of the association is in another account than this podiam's ({}): its sessions come from that account's STS, and this server was started without --upstream-sts",
                a.role_arn, ctx.shared.config.account_id
            ),
        ));
    };
    let source_identity = upstream
        .options()
        .source_identity
        .then(|| crate::upstream::source_identity(p.namespace, &p.pod.name));
    let session = PodSession {
        key: CacheKey {
            association_id: a.association_id.clone(),
            association_version: a.modified_at,
            pod_uid: p.pod.uid.clone(),
        },
        role_arn: &a.role_arn,
        target_role_arn: a.target_role_arn.as_deref(),
        external_id: a.external_id.as_deref(),
        session_name: session_name(&p.cluster.name, &p.pod.name)?,
        tags: p.tags,
        policy: a.policy.as_deref(),
        source_identity,
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
    Ok(response(
        &PodCredentials {
            access_key_id: &issued.access_key_id,
            secret_access_key: issued.secret_access_key.expose_secret(),
            session_token: &issued.session_token,
            expiration: issued.expiration,
            assumed_role_arn: &issued.assumed_role_arn,
            assumed_role_id: &issued.assumed_role_id,
        },
        a,
        p.namespace,
        p.service_account,
    ))
}
