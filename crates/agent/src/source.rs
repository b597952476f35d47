//! Where credentials come from: the [`CredentialSource`] trait (EKS Auth for pods, STS for the
//! node role), its data types and its error.

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

/// A set of temporary AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret; never logged.
    pub secret_access_key: String,
    /// The session token; never logged.
    pub session_token: String,
    /// When they stop working.
    pub expiration: SystemTime,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What EKS Auth `AssumeRoleForPodIdentity` answered (the members the agent uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCredentials {
    /// The role session's credentials.
    pub credentials: Credentials,
    /// `assumedRoleUser.arn`, e.g. `arn:aws:sts::111122223333:assumed-role/R/eks-c-pod-uuid`.
    pub assumed_role_arn: String,
    /// `podIdentityAssociation.associationId`, for logs.
    pub association_id: String,
    /// `subject.namespace`.
    pub namespace: String,
    /// `subject.serviceAccount`.
    pub service_account: String,
}

impl PodCredentials {
    /// The account in `assumed_role_arn` (`arn:PARTITION:sts::ACCOUNT:…`), as upstream derives
    /// `AccountId`.
    #[must_use]
    pub fn account_id(&self) -> Option<&str> {
        self.assumed_role_arn
            .split(':')
            .nth(4)
            .filter(|a| !a.is_empty())
    }
}

/// Why credentials could not be obtained.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The service answered with an AWS error (`X-Amzn-ErrorType` / `<Code>`).
    #[error("{code} ({status}): {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// AWS error code, e.g. `InvalidTokenException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The service could not be reached, timed out, or answered something unreadable.
    #[error("the credential service is unavailable: {reason}")]
    Unavailable {
        /// What went wrong (no secrets).
        reason: String,
    },
}

impl SourceError {
    /// AWS: these EKS Auth errors say the token or association is no good; retrying with the same
    /// token cannot succeed, so cached credentials obtained with it are dropped (as upstream).
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Service { code, .. } => matches!(
                code.as_str(),
                "InvalidTokenException"
                    | "ExpiredTokenException"
                    | "AccessDeniedException"
                    | "ResourceNotFoundException"
                    | "InvalidRequestException"
                    | "InvalidParameterException"
            ),
            Self::Unavailable { .. } => false,
        }
    }
}

/// Obtains credentials for pods (EKS Auth) and for the node role (STS). Implemented over HTTP by
/// [`crate::HttpSource`]; tests substitute a double.
pub trait CredentialSource: Send + Sync + 'static {
    /// EKS Auth `AssumeRoleForPodIdentity` for the pod whose projected token is `token`. The
    /// service verifies the token; the agent trusts nothing in it before this returns `Ok`.
    fn assume_for_pod(
        &self,
        cluster_name: &str,
        token: &str,
    ) -> impl Future<Output = Result<PodCredentials, SourceError>> + Send;

    /// Credentials for the node role (served over IMDS).
    fn node_credentials(&self) -> impl Future<Output = Result<Credentials, SourceError>> + Send;
}
