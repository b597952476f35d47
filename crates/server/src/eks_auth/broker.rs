//! `AssumeRoleForPodIdentity` for a role of another account (broker mode): the pod is verified
//! as for podiam's own roles (the token against the cluster's keys, the association), and the
//! session comes from the upstream STS ([`crate::broker`]), whose trust policy decides.
//! The answer is EKS Auth's, with upstream's credentials and assumed-role user.

use podiam_identity::jwt::ObjectRef;
use podiam_store::{Cluster, PodIdentityAssociation};
use serde_json::Value;

use crate::audit::Event;
use crate::broker::{BrokeredPod, upstream_session};
use crate::ctx::Ctx;
use crate::error::AwsError;
use crate::upstream::Via;

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
    let issued = upstream_session(
        ctx,
        BrokeredPod {
            association: p.association,
            namespace: p.namespace,
            service_account: p.service_account,
            pod: Some(p.pod),
            tags: p.tags,
            session_name: session_name(&p.cluster.name, &p.pod.name)?,
            via: Via::PodIdentity,
            duration: None,
        },
        event,
    )
    .await?;
    Ok(response(
        &PodCredentials {
            access_key_id: &issued.access_key_id,
            secret_access_key: issued.secret_access_key.expose_secret(),
            session_token: &issued.session_token,
            expiration: issued.expiration,
            assumed_role_arn: &issued.assumed_role_arn,
            assumed_role_id: &issued.assumed_role_id,
        },
        p.association,
        p.namespace,
        p.service_account,
    ))
}
