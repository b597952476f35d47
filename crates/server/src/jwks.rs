//! Keys of remote OIDC issuers: discovery (`/.well-known/openid-configuration`), then `jwks_uri`.
//!
//! Cached per issuer for an hour. A token that names an unknown `kid` forces one refetch (the
//! issuer rotated its keys), at most once per [`MIN_REFRESH`] per issuer so a stream of bad
//! tokens cannot turn podiam into a load generator against the issuer.
//!
//! A failing issuer is asked once, not once per request: one fetch at a time per issuer (the
//! requests that arrive meanwhile wait for it and take its answer), a fetch (discovery and
//! JWKS together) ends after [`TIMEOUT`], and a failure is remembered for [`FAILURE_TTL`]
//! with its error, which requests get at once until then.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podiam_identity::Jwks;

use crate::error::AwsError;

const TTL: Duration = Duration::from_secs(3600);
const MIN_REFRESH: Duration = Duration::from_secs(30);
/// The whole fetch (discovery, then JWKS) of one issuer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed fetch is answered from memory before the issuer is asked again.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Discovery documents and JWKS are a few KiB; anything near this is not one.
const MAX_DOCUMENT: usize = 1024 * 1024;

struct Entry {
    jwks: Arc<Jwks>,
    /// At the requests' time (the server's injected clock).
    fetched: SystemTime,
}

/// What one issuer's slot knows: its keys, and its last failed fetch.
#[derive(Default)]
struct Known {
    keys: Option<Entry>,
    failure: Option<Failure>,
}

struct Failure {
    /// At the requests' time.
    at: SystemTime,
    problem: String,
}

pub struct JwksCache {
    client: Option<reqwest::Client>,
    /// Bound on one whole fetch of an issuer's keys.
    timeout: Duration,
    /// One slot per issuer: a fetch holds only its issuer's slot, so a slow or dead issuer never
    /// delays the requests of another (nor the cache hits of its own, once cached).
    entries: std::sync::Mutex<HashMap<String, Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Known>>;

fn communication_error(issuer: &str, problem: impl std::fmt::Display) -> AwsError {
    AwsError::new(
        crate::error::ErrorKind::IdpCommunication,
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
        Self::with_timeout(TIMEOUT)
    }

    fn with_timeout(timeout: Duration) -> JwksCache {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent("podiam")
            .build()
            .map_err(
                |e| tracing::error!(error = %e, "cannot build the HTTP client for OIDC discovery"),
            )
            .ok();
        JwksCache {
            client,
            timeout,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The issuer's keys at `now` (the request's time); `refresh` asks for a refetch (an
    /// unknown `kid`), honoured at most once per [`MIN_REFRESH`].
    pub async fn get(
        &self,
        issuer: &str,
        refresh: bool,
        now: SystemTime,
    ) -> Result<Arc<Jwks>, AwsError> {
        let slot = {
            let mut slots = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match slots.get(issuer) {
                Some(slot) => Arc::clone(slot),
                None => Arc::clone(slots.entry(issuer.to_string()).or_default()),
            }
        };
        // One fetch at a time per issuer: concurrent requests wait for it and take its answer
        // (the keys it stored, or the failure it recorded).
        let mut known = slot.lock().await;
        let age_of = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
        if let Some(e) = known.keys.as_ref() {
            let age = age_of(e.fetched);
            if age < TTL && (!refresh || age < MIN_REFRESH) {
                return Ok(Arc::clone(&e.jwks));
            }
        }
        let fetched = match known.failure.as_ref() {
            // Failed moments ago: answer with that failure, without asking the issuer again.
            Some(f) if age_of(f.at) < FAILURE_TTL => Err(format!(
                "{} ({}s ago; podiam asks the issuer again {}s after a failure)",
                f.problem,
                age_of(f.at).as_secs(),
                FAILURE_TTL.as_secs()
            )),
            _ => {
                let fetched = match tokio::time::timeout(self.timeout, self.fetch(issuer)).await {
                    Ok(fetched) => fetched,
                    Err(_) => Err(format!("timed out (no keys within {:?})", self.timeout)),
                };
                match &fetched {
                    Ok(_) => known.failure = None,
                    Err(problem) => {
                        tracing::warn!(issuer, error = %problem, "cannot fetch the issuer's keys");
                        known.failure = Some(Failure {
                            at: now,
                            problem: problem.clone(),
                        });
                    }
                }
                fetched
            }
        };
        match fetched.map_err(|problem| communication_error(issuer, problem)) {
            Ok(jwks) => {
                let jwks = Arc::new(jwks);
                known.keys = Some(Entry {
                    jwks: Arc::clone(&jwks),
                    fetched: now,
                });
                Ok(jwks)
            }
            // Keep serving the keys we have if the issuer is briefly unreachable.
            Err(e) => match known.keys.as_ref() {
                Some(old) if age_of(old.fetched) < TTL * 24 => Ok(Arc::clone(&old.jwks)),
                _ => Err(e),
            },
        }
    }

    /// What went wrong is the `Err`: DNS, connect, TLS, timeout, HTTP status, not JSON.
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", describe(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("GET {url}: the document is over 1 MiB"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }

    async fn fetch(&self, issuer: &str) -> Result<Jwks, String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        // OpenID Connect Discovery: the document's `issuer` must be the issuer asked about.
        let declared = discovery
            .get("issuer")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if declared.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(format!("the discovery document names issuer `{declared}`"));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("the discovery document has no `jwks_uri`")?;
        let jwks = self.get_json(jwks_uri).await?;
        let text = jwks.to_string();
        let jwks = Jwks::from_json(text.as_bytes()).map_err(|e| format!("{jwks_uri}: {e}"))?;
        Ok(jwks)
    }
}

/// A transport error as what failed (DNS, connect, TLS, timeout) and the innermost cause:
/// reqwest's own text names only the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let chain = causes.join(": ").to_lowercase();
    let what = if e.is_timeout() {
        "timed out"
    } else if chain.contains("dns error") {
        "DNS lookup failed"
    } else if chain.contains("certificate") || chain.contains("tls") {
        "TLS failed"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match causes.last() {
        Some(cause) => format!("{what} ({cause})"),
        None => format!("{what} ({e})"),
    }
}

/// Fetches `issuer`'s keys once, as the server does (discovery, then `jwks_uri`), within
/// `timeout` in all; `Ok` is the number of usable keys. For the check at registration, from
/// wherever the registering command runs.
pub async fn check_issuer(issuer: &str, timeout: Duration) -> Result<usize, String> {
    let cache = JwksCache::with_timeout(timeout);
    let jwks = tokio::time::timeout(timeout, cache.fetch(issuer))
        .await
        .map_err(|_| format!("timed out (no keys within {timeout:?})"))??;
    if jwks.keys().is_empty() {
        return Err(format!(
            "the issuer's JWKS has no keys podiam can use ({} skipped)",
            jwks.skipped().len()
        ));
    }
    Ok(jwks.keys().len())
}
