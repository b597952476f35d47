//! Keys of remote OIDC issuers: discovery (`/.well-known/openid-configuration`), then `jwks_uri`.
//!
//! Cached per issuer for an hour. A token that names an unknown `kid` forces one refetch (the
//! issuer rotated its keys), at most once per [`MIN_REFRESH`] per issuer so a stream of bad
//! tokens cannot turn podiam into a load generator against the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use podiam_identity::Jwks;

use crate::error::AwsError;

const TTL: Duration = Duration::from_secs(3600);
const MIN_REFRESH: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Discovery documents and JWKS are a few KiB; anything near this is not one.
const MAX_DOCUMENT: usize = 1024 * 1024;

struct Entry {
    jwks: Arc<Jwks>,
    fetched: Instant,
}

pub struct JwksCache {
    client: Option<reqwest::Client>,
    entries: tokio::sync::Mutex<HashMap<String, Entry>>,
}

fn communication_error(issuer: &str, problem: impl std::fmt::Display) -> AwsError {
    AwsError::new(
        "IDPCommunicationError",
        StatusCode::BAD_REQUEST,
        format!(
            "Couldn't retrieve verification key from your identity provider {issuer}: {problem}. If the issuer is not reachable from podiam, register the provider with its JWKS (the output of `kubectl get --raw /openid/v1/jwks`)."
        ),
    )
}

impl Default for JwksCache {
    fn default() -> Self {
        Self::new()
    }
}

impl JwksCache {
    pub fn new() -> JwksCache {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent("podiam")
            .build()
            .map_err(
                |e| tracing::error!(error = %e, "cannot build the HTTP client for OIDC discovery"),
            )
            .ok();
        JwksCache {
            client,
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The issuer's keys; `refresh` asks for a refetch (an unknown `kid`), honoured at most
    /// once per [`MIN_REFRESH`].
    pub async fn get(&self, issuer: &str, refresh: bool) -> Result<Arc<Jwks>, AwsError> {
        // One fetch at a time: concurrent requests for a cold issuer wait for the first.
        let mut entries = self.entries.lock().await;
        if let Some(e) = entries.get(issuer) {
            let age = e.fetched.elapsed();
            if age < TTL && (!refresh || age < MIN_REFRESH) {
                return Ok(Arc::clone(&e.jwks));
            }
        }
        match self.fetch(issuer).await {
            Ok(jwks) => {
                let jwks = Arc::new(jwks);
                entries.insert(
                    issuer.to_string(),
                    Entry {
                        jwks: Arc::clone(&jwks),
                        fetched: Instant::now(),
                    },
                );
                Ok(jwks)
            }
            // Keep serving the keys we have if the issuer is briefly unreachable.
            Err(e) => match entries.get(issuer) {
                Some(old) if old.fetched.elapsed() < TTL * 24 => {
                    tracing::warn!(issuer, error = %e.message, "keeping cached keys: refetch failed");
                    Ok(Arc::clone(&old.jwks))
                }
                _ => Err(e),
            },
        }
    }

    async fn get_json(&self, issuer: &str, url: &str) -> Result<serde_json::Value, AwsError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| communication_error(issuer, "no HTTP client"))?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| communication_error(issuer, format!("GET {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(communication_error(
                issuer,
                format!("GET {url} answered {}", response.status()),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| communication_error(issuer, format!("GET {url}: {e}")))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(communication_error(
                    issuer,
                    format!("GET {url}: the document is over 1 MiB"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| communication_error(issuer, format!("GET {url}: not JSON: {e}")))
    }

    async fn fetch(&self, issuer: &str) -> Result<Jwks, AwsError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(issuer, &discovery_url).await?;
        // OpenID Connect Discovery: the document's `issuer` must be the issuer asked about.
        let declared = discovery
            .get("issuer")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if declared.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(communication_error(
                issuer,
                format!("the discovery document names issuer `{declared}`"),
            ));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                communication_error(issuer, "the discovery document has no `jwks_uri`")
            })?;
        let jwks = self.get_json(issuer, jwks_uri).await?;
        let text = jwks.to_string();
        Jwks::from_json(text.as_bytes())
            .map_err(|e| communication_error(issuer, format!("{jwks_uri}: {e}")))
    }
}
