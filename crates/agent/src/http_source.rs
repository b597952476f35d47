//! [`HttpSource`]: the real [`CredentialSource`]. Pods: EKS Auth `AssumeRoleForPodIdentity`
//! (rest-json, SigV4 service `eks-auth`). Node role: STS `AssumeRole` (awsQuery, SigV4 service
//! `sts`). Both signed with the agent's own key, which comes from a shared-credentials file
//! (re-read when it changes, so a rotated Secret is picked up) or the environment.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use podiam_identity::clock::format_amz_date;
use podiam_identity::sigv4::{
    CredentialScope, HttpRequest, VerifyOptions, sign_authorization_header,
};
use podiam_identity::{AccessKeyId, SecretAccessKey};

use crate::clock::AgentClock;
use crate::source::{CredentialSource, Credentials, PodCredentials, SourceError};
use crate::wire::{
    AssumeRoleForPodIdentityRequest, parse_assume_role_for_pod_identity, parse_assume_role_xml,
    parse_query_error, parse_rest_json_error,
};

// === the agent's key ===

/// The agent's own AWS key.
#[derive(Clone)]
pub struct AgentKey {
    /// `AKIA…` (or `ASIA…` with a session token).
    pub access_key_id: AccessKeyId,
    /// The secret.
    pub secret_access_key: SecretAccessKey,
    /// `aws_session_token`, for temporary keys.
    pub session_token: Option<String>,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

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
        let invalid = |problem: &str| KeyError::Invalid {
            path: PathBuf::from("environment"),
            problem: problem.to_owned(),
        };
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => {
                let access_key_id =
                    AccessKeyId::parse(id.trim()).map_err(|e| invalid(&e.to_string()))?;
                Ok(Some(Self::Static(Arc::new(AgentKey {
                    access_key_id,
                    secret_access_key: SecretAccessKey::new(secret.trim()),
                    session_token: env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
                }))))
            }
            _ => Err(invalid(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
            )),
        }
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
                match parse_credentials_file(&text, profile) {
                    Ok(k) => {
                        let k = Arc::new(k);
                        *cached = Some((stamp, Arc::clone(&k)));
                        Ok(k)
                    }
                    // A half-written file: keep signing with the key we had.
                    Err(problem) => match cached.as_ref() {
                        Some((_, k)) => {
                            tracing::warn!(path = %path.display(), %problem, "credentials file unreadable; keeping the previous key");
                            Ok(Arc::clone(k))
                        }
                        None => Err(KeyError::Invalid {
                            path: path.clone(),
                            problem,
                        }),
                    },
                }
            }
        }
    }
}

/// The `[profile]` section of an AWS shared-credentials file.
fn parse_credentials_file(text: &str, profile: &str) -> Result<AgentKey, String> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    let id = id.ok_or_else(|| format!("profile `{profile}` has no aws_access_key_id"))?;
    let secret =
        secret.ok_or_else(|| format!("profile `{profile}` has no aws_secret_access_key"))?;
    Ok(AgentKey {
        access_key_id: AccessKeyId::parse(&id).map_err(|e| e.to_string())?,
        secret_access_key: SecretAccessKey::new(secret),
        session_token: token.filter(|t| !t.is_empty()),
    })
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
        let time = self.clock.wall();
        let amz_date = format_amz_date(time);
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", content_type),
            ("host", &host),
            ("x-amz-date", &amz_date),
        ];
        if let Some(t) = &key.session_token {
            headers.push(("x-amz-security-token", t));
        }
        let signed: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let scope = CredentialScope {
            date: amz_date.get(..8).unwrap_or_default().to_owned(),
            region: self.config.region.clone(),
            service: service.to_owned(),
        };
        let request = HttpRequest {
            method: "POST",
            path: parsed.path(),
            query: "",
            headers: &headers,
            body,
        };
        let authorization = sign_authorization_header(
            &request,
            &key.access_key_id,
            &key.secret_access_key,
            &scope,
            &signed,
            time,
            &VerifyOptions::default(),
        )
        .map_err(|e| unavailable(format!("while signing: {e}")))?;
        let mut builder = self
            .client
            .post(parsed)
            .header("content-type", content_type)
            .header("x-amz-date", &amz_date)
            .header("authorization", authorization)
            .body(body.to_vec());
        if let Some(t) = &key.session_token {
            builder = builder.header("x-amz-security-token", t);
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
    use super::*;

    #[test]
    fn credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n\
                    # comment\n[podiam]\naws_access_key_id=AKIAPODIAM\naws_secret_access_key= s/+x \n";
        let k = parse_credentials_file(text, "podiam").unwrap();
        assert_eq!(k.access_key_id.as_str(), "AKIAPODIAM");
        assert_eq!(k.secret_access_key.expose_secret(), "s/+x");
        assert!(parse_credentials_file(text, "missing").is_err());
        assert!(
            !format!("{k:?}").contains("s/+x"),
            "Debug does not show the secret"
        );
    }

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
    fn env_key_needs_both_halves() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(KeySource::from_env(env(&[])).unwrap().is_none());
        assert!(KeySource::from_env(env(&[("AWS_ACCESS_KEY_ID", "AKIAX")])).is_err());
        assert!(
            KeySource::from_env(env(&[
                ("AWS_ACCESS_KEY_ID", "AKIAX"),
                ("AWS_SECRET_ACCESS_KEY", "s")
            ]))
            .unwrap()
            .is_some()
        );
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
