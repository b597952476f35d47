//! A fixed [`CredentialSource`] and unsigned pod tokens, for tests, benchmarks and the load
//! generator. Not for production: it trusts every token.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::AgentClock;
use crate::source::{CredentialSource, Credentials, PodCredentials, SourceError};

/// Answers every call with credentials valid for `ttl`, counting calls.
#[derive(Clone, Debug)]
pub struct StaticSource {
    /// The clock expirations are computed on.
    pub clock: AgentClock,
    /// Credential lifetime.
    pub ttl: Duration,
    /// Calls made (pods and node).
    pub calls: Arc<AtomicU64>,
}

impl StaticSource {
    /// Credentials for an hour, on `clock`.
    #[must_use]
    pub fn new(clock: AgentClock) -> Self {
        Self {
            clock,
            ttl: Duration::from_secs(3600),
            calls: Arc::default(),
        }
    }

    fn credentials(&self) -> Credentials {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        Credentials {
            access_key_id: format!("ASIASTATIC{n:010}"),
            secret_access_key: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA".to_owned(),
            session_token: "FwoGZXIvYXdzE".repeat(40),
            expiration: self.clock.wall() + self.ttl,
        }
    }
}

impl CredentialSource for StaticSource {
    fn assume_for_pod(
        &self,
        cluster_name: &str,
        _token: &str,
    ) -> impl Future<Output = Result<PodCredentials, SourceError>> + Send {
        let c = PodCredentials {
            credentials: self.credentials(),
            assumed_role_arn: format!(
                "arn:aws:sts::111122223333:assumed-role/app/eks-{cluster_name}-pod"
            ),
            association_id: "a-static".to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
        };
        std::future::ready(Ok(c))
    }

    fn node_credentials(&self) -> impl Future<Output = Result<Credentials, SourceError>> + Send {
        std::future::ready(Ok(self.credentials()))
    }
}

/// An unsigned token shaped like a projected pod token (about the size kubelet writes).
#[must_use]
pub fn pod_token(pod_uid: &str, exp: i64) -> String {
    let payload = serde_json::json!({
        "aud": ["pods.eks.amazonaws.com"],
        "exp": exp,
        "iat": exp - 86_400,
        "iss": "https://oidc.example.com/id/0123456789ABCDEF",
        "jti": "5a0b7c1e-3f7e-4c0b-9d1a-2b3c4d5e6f70",
        "kubernetes.io": {
            "namespace": "default",
            "node": { "name": "ip-10-0-0-1.ec2.internal", "uid": "6a8c0b7e-1111-2222-3333-444455556666" },
            "pod": { "name": "app-5d4f8b7c9-abcde", "uid": pod_uid },
            "serviceaccount": { "name": "app", "uid": "9e8d7c6b-7777-8888-9999-aaaabbbbcccc" }
        },
        "nbf": exp - 86_400,
        "sub": "system:serviceaccount:default:app"
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD
            .encode(r#"{"alg":"RS256","kid":"0123456789abcdef0123456789abcdef01234567"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    )
}
