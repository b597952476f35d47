//! [`HttpSource`]: the real [`CredentialSource`]. Pods: EKS Auth `AssumeRoleForPodIdentity`
//! (rest-json, SigV4 service `eks-auth`). Node role: STS `AssumeRole` (awsQuery, SigV4 service
//! `sts`). Both signed with the agent's own key, which comes from a shared-credentials file
//! (re-read when it changes, so a rotated Secret is picked up) or the environment.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use podiam_identity::sigv4::{HttpRequest, SigningCredentials, SigningParams, sign};

use crate::clock::AgentClock;
use crate::source::{CredentialSource, Credentials, PodCredentials, SourceError};
use crate::wire::{
    AssumeRoleForPodIdentityRequest, parse_assume_role_for_pod_identity, parse_assume_role_xml,
    parse_query_error, parse_rest_json_error,
};

// === the agent's key ===

/// The agent's own AWS key.
pub type AgentKey = SigningCredentials;

/// Why the agent's key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The credentials file could not be read.
    #[error("while reading `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The profile or one of its keys is missing or invalid.
    #[error("`{path}`: {problem}")]
    Invalid {
        /// The file (or `environment`).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// A file's (modification time, length): re-read when either changes.
type FileStamp = (SystemTime, u64);

/// Where the agent's key comes from.
#[derive(Debug)]
pub enum KeySource {
    /// A fixed key (the environment, tests).
    Static(Arc<AgentKey>),
    /// A shared-credentials file and profile, re-read when its modification time or size changes.
    File {
        /// The file.
        path: PathBuf,
        /// The profile (`[name]`).
        profile: String,
        /// The last key read, with the file's (mtime, len) then.
        cached: Mutex<Option<(FileStamp, Arc<AgentKey>)>>,
    },
}

impl KeySource {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) from `env`, if set.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] when only one of the pair is set or the ID is malformed.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, KeyError> {
        let key = SigningCredentials::from_env(env).map_err(|e| KeyError::Invalid {
            path: PathBuf::from("environment"),
            problem: e.to_string(),
        })?;
        Ok(key.map(|k| Self::Static(Arc::new(k))))
    }

    /// A credentials file; read once now so a bad file stops the agent before it binds a port.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or lacks the profile's keys.
    pub fn file(path: impl Into<PathBuf>, profile: impl Into<String>) -> Result<Self, KeyError> {
        let source = Self::File {
            path: path.into(),
            profile: profile.into(),
            cached: Mutex::new(None),
        };
        source.current()?;
        Ok(source)
    }

    /// The key to sign with now.
    ///
    /// # Errors
    /// [`KeyError`] when the file changed into something unreadable (and nothing was read before).
    pub fn current(&self) -> Result<Arc<AgentKey>, KeyError> {
        match self {
            Self::Static(k) => Ok(Arc::clone(k)),
            Self::File {
                path,
                profile,
                cached,
            } => {
                let read_err = |source| KeyError::Read {
                    path: path.clone(),
                    source,
                };
                let meta = std::fs::metadata(path).map_err(read_err)?;
                let stamp = (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
                let mut cached = cached.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((s, k)) = cached.as_ref()
                    && *s == stamp
                {
                    return Ok(Arc::clone(k));
                }
                let text = std::fs::read_to_string(path).map_err(read_err)?;
                match SigningCredentials::from_shared_credentials(&text, profile) {
                    Ok(k) => {
                        let k = Arc::new(k);
                        *cached = Some((stamp, Arc::clone(&k)));
                        Ok(k)
                    }
                    // A half-written file: keep signing with the key we had.
                    Err(e) => match cached.as_ref() {
                        Some((_, k)) => {
                            tracing::warn!(path = %path.display(), problem = %e, "credentials file unreadable; keeping the previous key");
                            Ok(Arc::clone(k))
                        }
                        None => Err(KeyError::Invalid {
                            path: path.clone(),
                            problem: e.to_string(),
                        }),
                    },
                }
            }
        }
    }
}

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
    ) -> Result<(u16, Option<String>, Vec<u8>), SourceError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .post_once(base, path, content_type, &body, service)
                .await;
            let transient = match &result {
                Err(_) => true,
                Ok((status, _, _)) => *status >= 500,
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
    ) -> Result<(u16, Option<String>, Vec<u8>), SourceError> {
        let unavailable = |reason: String| SourceError::Unavailable { reason };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| unavailable(format!("bad URL `{url}`: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(unavailable(format!("no host in `{url}`"))),
        };
        let key = self
            .key
            .current()
            .map_err(|e| unavailable(format!("the agent's key: {e}")))?;
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
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("{service}: while reading the response: {e}")))?;
        Ok((status, error_type, bytes.to_vec()))
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
        let (status, error_type, body) = self
            .post(
                &self.config.eks_auth_endpoint,
                &path,
                "application/json",
                body,
                "eks-auth",
            )
            .await?;
        if status == 200 {
            parse_assume_role_for_pod_identity(&body)
        } else {
            Err(parse_rest_json_error(status, error_type.as_deref(), &body))
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
        let (status, _, body) = self
            .post(
                &self.config.sts_endpoint,
                "/",
                "application/x-www-form-urlencoded; charset=utf-8",
                body.into_bytes(),
                "sts",
            )
            .await?;
        let text = String::from_utf8_lossy(&body);
        if status == 200 {
            parse_assume_role_xml(&text)
        } else {
            Err(parse_query_error(status, &text))
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
    use std::path::Path;

    use super::*;

    #[test]
    fn key_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[p]\naws_access_key_id=AKIAONE\naws_secret_access_key=x\n",
        )
        .unwrap();
        let source = KeySource::file(&path, "p").unwrap();
        assert_eq!(source.current().unwrap().access_key_id.as_str(), "AKIAONE");
        std::fs::write(
            &path,
            "[p]\naws_access_key_id=AKIATWOTWO\naws_secret_access_key=y\n",
        )
        .unwrap();
        assert_eq!(
            source.current().unwrap().access_key_id.as_str(),
            "AKIATWOTWO"
        );
        std::fs::write(&path, "[p]\n").unwrap();
        assert_eq!(
            source.current().unwrap().access_key_id.as_str(),
            "AKIATWOTWO",
            "a broken rewrite keeps the previous key"
        );
    }

    #[test]
    fn env_key_errors_name_the_environment() {
        assert!(KeySource::from_env(|_| None).unwrap().is_none());
        let half = KeySource::from_env(|k| (k == "AWS_ACCESS_KEY_ID").then(|| "AKIAX".to_owned()));
        assert!(
            matches!(half, Err(KeyError::Invalid { path, .. }) if path == Path::new("environment"))
        );
        let both = KeySource::from_env(|k| {
            (k != "AWS_SESSION_TOKEN").then(|| {
                if k == "AWS_ACCESS_KEY_ID" {
                    "AKIAX"
                } else {
                    "s"
                }
                .to_owned()
            })
        });
        assert!(matches!(both, Ok(Some(KeySource::Static(_)))));
    }

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
