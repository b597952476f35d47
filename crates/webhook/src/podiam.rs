//! `--podiam-endpoint` / `--cluster`: EKS Pod Identity associations read from podiam's EKS API
//! (`ListPodIdentityAssociations`, `GET /clusters/{name}/pod-identity-associations`, SigV4
//! service `eks`), polled every `--podiam-sync-interval`. Each good poll replaces the
//! [`AssociationSource::Podiam`] set (the identities file's set is kept apart); a failed one keeps
//! the last good set, is logged and counted (`podiam_webhook_podiam_syncs_total{result="error"}`).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podiam_identity::rest_json::RestJsonError;
use podiam_identity::sigv4::{HttpRequest, KeyError, KeySource, SigningParams, sign, uri_encode};
use serde::Deserialize;

use crate::identity::Associations;
use crate::webhook::{AssociationSource, Webhook};

/// EKS' largest page.
const PAGE_SIZE: u32 = 100;
/// A list longer than this many pages is treated as a server bug (100,000 associations).
const MAX_PAGES: usize = 1000;

/// Why the associations could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodiamError {
    /// The signing key could not be read.
    #[error("the podiam credentials: {0}")]
    Key(#[from] KeyError),
    /// The request could not be made or its response read.
    #[error("{0}")]
    Unreachable(String),
    /// podiam answered with an error.
    #[error("podiam answered {} {}: {}", .0.status, .0.code, .0.message)]
    Refused(RestJsonError),
    /// podiam answered 200 with something that is not a ListPodIdentityAssociations response.
    #[error("podiam's answer is not a ListPodIdentityAssociations response: {0}")]
    Decode(String),
}

/// Settings for [`PodiamSource`].
#[derive(Clone, Debug)]
pub struct PodiamOptions {
    /// podiam's base URL (`--podiam-endpoint`), e.g. `https://podiam.podiam.svc:8080`.
    pub endpoint: String,
    /// The cluster whose associations are read (`--cluster`).
    pub cluster: String,
    /// Signing region (`--aws-default-region`, else `us-east-1`).
    pub region: String,
    /// How often the list is read (`--podiam-sync-interval`).
    pub interval: Duration,
    /// Per request.
    pub timeout: Duration,
    /// The key requests are signed with.
    pub key: KeySource,
}

impl PodiamOptions {
    /// Defaults (30 s interval, 10 s timeout, `us-east-1`) for `endpoint` and `cluster`.
    pub fn new(endpoint: impl Into<String>, cluster: impl Into<String>, key: KeySource) -> Self {
        Self {
            endpoint: endpoint.into(),
            cluster: cluster.into(),
            region: "us-east-1".to_owned(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            key,
        }
    }
}

/// Reads one cluster's associations from podiam.
pub struct PodiamSource {
    client: reqwest::Client,
    opts: PodiamOptions,
}

impl fmt::Debug for PodiamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodiamSource")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    associations: Vec<Summary>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    namespace: String,
    service_account: String,
}

impl PodiamSource {
    /// A source for `opts`.
    ///
    /// # Errors
    /// [`PodiamError::Unreachable`] when the HTTP client cannot be built or the endpoint is not a
    /// URL.
    pub fn new(opts: PodiamOptions) -> Result<Self, PodiamError> {
        reqwest::Url::parse(&opts.endpoint).map_err(|e| {
            PodiamError::Unreachable(format!("--podiam-endpoint `{}`: {e}", opts.endpoint))
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(opts.timeout.min(Duration::from_secs(3)))
            .timeout(opts.timeout)
            // One poll every few seconds at most: a fresh connection each time, so an outage
            // or a moved Service is seen at once.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                PodiamError::Unreachable(format!("while building the HTTP client: {e}"))
            })?;
        Ok(Self { client, opts })
    }

    /// The options.
    pub fn options(&self) -> &PodiamOptions {
        &self.opts
    }

    /// Every association of the cluster (all pages), as `(namespace, serviceAccount)`.
    ///
    /// # Errors
    /// [`PodiamError`] when any page cannot be read; nothing partial is returned.
    pub async fn list(&self) -> Result<Associations, PodiamError> {
        let mut out = HashSet::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.page(next.as_deref()).await?;
            out.extend(
                page.associations
                    .into_iter()
                    .map(|a| (a.namespace, a.service_account)),
            );
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(t) if next.as_deref() == Some(t.as_str()) => {
                    return Err(PodiamError::Decode(format!(
                        "nextToken `{t}` repeats the previous one"
                    )));
                }
                Some(t) => next = Some(t),
                None => return Ok(out),
            }
        }
        Err(PodiamError::Decode(format!(
            "more than {MAX_PAGES} pages of associations"
        )))
    }

    async fn page(&self, next_token: Option<&str>) -> Result<Page, PodiamError> {
        let unreachable = |e: String| PodiamError::Unreachable(e);
        let mut query = format!("maxResults={PAGE_SIZE}");
        if let Some(t) = next_token {
            query.push_str("&nextToken=");
            query.push_str(&uri_encode(t));
        }
        let url = format!(
            "{}/clusters/{}/pod-identity-associations?{query}",
            self.opts.endpoint.trim_end_matches('/'),
            uri_encode(&self.opts.cluster)
        );
        let parsed = reqwest::Url::parse(&url).map_err(|e| unreachable(format!("`{url}`: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(unreachable(format!("no host in `{url}`"))),
        };
        let current = self.opts.key.current().await?;
        if let Some(problem) = &current.kept_because {
            tracing::warn!(%problem, "the podiam credentials file is unusable; signing with the key read before");
        }
        let key = current.key;
        let headers = [("host", host.as_str())];
        let request = HttpRequest {
            method: "GET",
            path: parsed.path(),
            query: parsed.query().unwrap_or_default(),
            headers: &headers,
            body: b"",
        };
        let params = SigningParams::new(&key, &self.opts.region, "eks", SystemTime::now());
        let signature = sign(&request, &params).map_err(|e| unreachable(e.to_string()))?;
        let mut builder = self
            .client
            .get(parsed.clone())
            .header("accept", "application/json");
        for (name, value) in signature {
            builder = builder.header(name, value);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| unreachable(format!("GET {parsed}: {e}")))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(format!("GET {parsed}: while reading the response: {e}")))?;
        if status != 200 {
            let headers = headers
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
            return Err(PodiamError::Refused(RestJsonError::parse(
                status, headers, &body,
            )));
        }
        serde_json::from_slice(&body).map_err(|e| PodiamError::Decode(e.to_string()))
    }
}

/// Poll `source` forever, feeding [`AssociationSource::Podiam`]. The first poll is immediate. A
/// failed poll keeps the previous set; every failure is logged and counted.
pub async fn poll_podiam(source: PodiamSource, webhook: Arc<Webhook>) {
    let mut ticker = tokio::time::interval(source.opts.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (endpoint, cluster) = (source.opts.endpoint.clone(), source.opts.cluster.clone());
    let mut last: Option<usize> = None;
    let mut failing = false;
    loop {
        ticker.tick().await;
        match source.list().await {
            Ok(associations) => {
                let n = associations.len();
                if last != Some(n) || failing {
                    tracing::info!(
                        associations = n,
                        %endpoint,
                        %cluster,
                        "Pod Identity associations loaded from podiam"
                    );
                }
                webhook.set_associations_from(AssociationSource::Podiam, associations);
                webhook.metrics().podiam_sync(Some(n));
                last = Some(n);
                failing = false;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    %endpoint,
                    %cluster,
                    kept = last.unwrap_or_default(),
                    "cannot read Pod Identity associations from podiam; keeping the last good set"
                );
                webhook.metrics().podiam_sync(None);
                failing = true;
            }
        }
    }
}
