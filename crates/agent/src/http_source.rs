//! [`HttpSource`]: the real [`CredentialSource`]. Pods: EKS Auth `AssumeRoleForPodIdentity`
//! (rest-json, SigV4 service `eks-auth`). Node role: STS `AssumeRole` (awsQuery, SigV4 service
//! `sts`). Both signed with the agent's own key: by default the AWS SDK's standard credential
//! chain's ([`crate::aws_chain`]: web identity on a cluster), or a shared-credentials file
//! (`--credentials-file`, re-read when it changes, so a rotated Secret is picked up).

use std::fmt;
use std::time::Duration;

use podiam_identity::sigv4::{HttpRequest, KeySource, SigningParams, sign};

use crate::clock::AgentClock;
use crate::source::{CredentialSource, Credentials, PodCredentials, SourceError};
use crate::wire::{
    AssumeRoleForPodIdentityRequest, parse_assume_role_for_pod_identity, parse_assume_role_xml,
    parse_query_error, parse_rest_json_error,
};

// === impl HttpSource ===

/// Settings for [`HttpSource`].
#[derive(Clone, Debug)]
pub struct HttpSourceConfig {
    /// EKS Auth base URL, e.g. `http://127.0.0.1:8080` (no trailing path).
    pub eks_auth_endpoint: String,
    /// STS base URL.
    pub sts_endpoint: String,
    /// Signing region.
    pub region: String,
    /// `--node-role-arn`, for IMDS.
    pub node_role_arn: Option<String>,
    /// `RoleSessionName` for the node role.
    pub node_role_session_name: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts for a request that failed to reach the server or got a 5xx (not 429).
    pub attempts: u32,
}

/// A response as read off the wire.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// The headers whose values are text, as [`podiam_identity::rest_json`] reads them.
    fn text_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
    }
}

/// EKS Auth and STS over HTTP.
pub struct HttpSource {
    client: reqwest::Client,
    config: HttpSourceConfig,
    key: KeySource,
    clock: AgentClock,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source signing with `key`.
    ///
    /// # Errors
    /// [`SourceError::Unavailable`] when the HTTP client cannot be built.
    pub fn new(
        config: HttpSourceConfig,
        key: KeySource,
        clock: AgentClock,
    ) -> Result<Self, SourceError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(1000).min(config.timeout))
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SourceError::Unavailable {
                reason: format!("while building the HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            config,
            key,
            clock,
        })
    }

    /// POSTs `body` to `base + path`, SigV4-signed for `service`; retries what may be transient.
    async fn post(
        &self,
        base: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        service: &str,
    ) -> Result<Reply, SourceError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .post_once(base, path, content_type, &body, service)
                .await;
            let transient = match &result {
                Err(_) => true,
                Ok(reply) => reply.status >= 500,
            };
            if !transient || attempt >= self.config.attempts.max(1) {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
    }

    async fn post_once(
        &self,
        base: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
        service: &str,
    ) -> Result<Reply, SourceError> {
        let unavailable = |reason: String| SourceError::Unavailable { reason };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| unavailable(format!("bad URL `{url}`: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(unavailable(format!("no host in `{url}`"))),
        };
        let current = self
            .key
            .current()
            .await
            .map_err(|e| unavailable(format!("the agent's key: {e}")))?;
        if let Some(problem) = &current.kept_because {
            tracing::warn!(%problem, "the agent's key source is unusable; signing with the key read before");
        }
        let key = current.key;
        let headers = [("content-type", content_type), ("host", host.as_str())];
        let request = HttpRequest {
            method: "POST",
            path: parsed.path(),
            query: "",
            headers: &headers,
            body,
        };
        let params = SigningParams::new(&key, &self.config.region, service, self.clock.wall());
        let signature = sign(&request, &params).map_err(|e| unavailable(e.to_string()))?;
        let mut builder = self
            .client
            .post(parsed)
            .header("content-type", content_type)
            .body(body.to_vec());
        for (name, value) in signature {
            builder = builder.header(name, value);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| unavailable(format!("{service}: {e}")))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("{service}: while reading the response: {e}")))?;
        Ok(Reply {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

impl CredentialSource for HttpSource {
    async fn assume_for_pod(
        &self,
        cluster_name: &str,
        token: &str,
    ) -> Result<PodCredentials, SourceError> {
        let body = serde_json::to_vec(&AssumeRoleForPodIdentityRequest { token }).map_err(|e| {
            SourceError::Unavailable {
                reason: e.to_string(),
            }
        })?;
        let path = format!("/clusters/{cluster_name}/assume-role-for-pod-identity");
        let reply = self
            .post(
                &self.config.eks_auth_endpoint,
                &path,
                "application/json",
                body,
                "eks-auth",
            )
            .await?;
        if reply.status == 200 {
            parse_assume_role_for_pod_identity(&reply.body)
        } else {
            Err(parse_rest_json_error(
                reply.status,
                reply.text_headers(),
                &reply.body,
            ))
        }
    }

    async fn node_credentials(&self) -> Result<Credentials, SourceError> {
        let Some(role_arn) = &self.config.node_role_arn else {
            return Err(SourceError::Unavailable {
                reason: "no --node-role-arn configured".to_owned(),
            });
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRole")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", role_arn)
            .append_pair("RoleSessionName", &self.config.node_role_session_name)
            .finish();
        let reply = self
            .post(
                &self.config.sts_endpoint,
                "/",
                "application/x-www-form-urlencoded; charset=utf-8",
                body.into_bytes(),
                "sts",
            )
            .await?;
        let text = String::from_utf8_lossy(&reply.body);
        if reply.status == 200 {
            parse_assume_role_xml(&text)
        } else {
            Err(parse_query_error(reply.status, &text))
        }
    }
}

/// A `RoleSessionName` (`[\w+=,.@-]{2,64}`) for the node role from the node's name.
#[must_use]
pub fn node_role_session_name(node_name: &str) -> String {
    let clean: String = format!("podiam-agent-{node_name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(
            node_role_session_name("ip-10-0-0-1.ec2"),
            "podiam-agent-ip-10-0-0-1.ec2"
        );
        assert_eq!(node_role_session_name("a/b c"), "podiam-agent-a-b-c");
        assert_eq!(node_role_session_name(&"x".repeat(100)).len(), 64);
    }
}
