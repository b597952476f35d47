//! The credential cache: pods keyed by pod UID, the node role's credentials, single-flight
//! fetches, refresh ahead of expiry on the [`AgentClock`], a token bucket on renewals, no
//! renewals for pods that stopped asking, and static stability (a server outage is served from
//! the cache until the credentials expire).
//!
//! Trust: an entry is created only after the server accepted the token that asked for it, and a
//! cached answer goes only to a request presenting that same token (same SHA-256). A different
//! token for the same pod UID (kubelet rotated it, or someone forged it) is sent to the server
//! first; on refusal the existing entry is left alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use podiam_identity::clock::unix_seconds;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::AgentClock;
use crate::metrics::Metrics;
use crate::source::{CredentialSource, Credentials, PodCredentials, SourceError};
use crate::token::{TokenError, TokenHash, read_unverified, token_hash};
use crate::wire::{EncodeError, container_credentials_json, imds_credentials_json};

/// Cache behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cluster name sent to EKS Auth.
    pub cluster_name: String,
    /// Background renewals per second, across all pods (token bucket, burst of the same size).
    pub renewals_per_second: u32,
    /// A pod is idle, and no longer renewed, once the credentials it was last given have been
    /// expired this long without it asking again.
    pub idle_grace: Duration,
    /// Credentials with less than this left are not served (a fetch is needed).
    pub min_remaining: Duration,
    /// Refresh at half the lifetime, but no later than this after obtaining them.
    pub max_refresh_after: Duration,
    /// After a failed renewal, wait this long (at most half the remaining lifetime) to retry.
    pub retry_after_error: Duration,
    /// Most pods cached; beyond it the least recently asking pod is dropped.
    pub max_entries: usize,
    /// How often the renewal loop looks for due entries.
    pub tick: Duration,
}

impl CacheConfig {
    /// Defaults for `cluster_name`.
    #[must_use]
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            renewals_per_second: 10,
            idle_grace: Duration::from_secs(5 * 60),
            min_remaining: Duration::from_secs(15),
            max_refresh_after: Duration::from_secs(3 * 3600),
            retry_after_error: Duration::from_secs(30),
            max_entries: 20_000,
            tick: Duration::from_secs(1),
        }
    }
}

/// Why no credentials could be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The token was refused before any server call.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The server refused or could not be reached, and nothing usable was cached.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The server's credentials could not be encoded for the pod or IMDS (nothing was cached).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

// === entries ===

/// Whether a pod is still asking; shared by the successive entries of one pod.
#[derive(Debug, Default)]
struct Liveness {
    /// When the pod last presented its token (ms on the cache's timeline).
    last_presented: AtomicU64,
    /// The latest expiration among credentials actually handed to the pod (ms).
    served_until: AtomicU64,
}

/// One pod's cached credentials.
#[derive(Debug)]
pub struct PodEntry {
    /// The pod UID (from the token the server accepted).
    pub pod_uid: String,
    /// What the server answered.
    pub credentials: PodCredentials,
    body: Bytes,
    token: Arc<str>,
    token_hash: TokenHash,
    refresh_at: Instant,
    expires_at: Instant,
    /// No renewal attempt before this (ms); set while one is in flight and after a failure.
    next_attempt: AtomicU64,
    liveness: Arc<Liveness>,
}

impl PodEntry {
    /// The `/v1/credentials` body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// The node role's cached credentials.
#[derive(Debug)]
pub struct NodeEntry {
    /// What STS answered.
    pub credentials: Credentials,
    /// When they were obtained (IMDS `LastUpdated`).
    pub last_updated: SystemTime,
    body: Bytes,
    refresh_at: Instant,
    expires_at: Instant,
    next_attempt: AtomicU64,
}

impl NodeEntry {
    /// The IMDS `security-credentials/<role>` body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Renewals allowed per second, with a burst of the same size.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Flight = Arc<OnceCell<Result<Arc<PodEntry>, CacheError>>>;

// === impl CredentialCache ===

/// The cache. Cheap to clone (an `Arc`).
pub struct CredentialCache<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for CredentialCache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    source: S,
    config: CacheConfig,
    clock: AgentClock,
    metrics: Arc<Metrics>,
    /// The start of the cache's millisecond timeline (for atomics).
    epoch: Instant,
    pods: RwLock<HashMap<String, Arc<PodEntry>>>,
    inflight: Mutex<HashMap<TokenHash, Flight>>,
    node: RwLock<Option<Arc<NodeEntry>>>,
    node_fetch: tokio::sync::Mutex<()>,
    node_liveness: Liveness,
    bucket: Mutex<TokenBucket>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: CredentialSource> CredentialCache<S> {
    /// A cache over `source`. Call [`Self::spawn_renewals`] to refresh ahead of expiry.
    pub fn new(source: S, config: CacheConfig, clock: AgentClock, metrics: Arc<Metrics>) -> Self {
        let now = clock.now();
        Self {
            inner: Arc::new(Inner {
                source,
                bucket: Mutex::new(TokenBucket::new(config.renewals_per_second, now)),
                config,
                clock,
                metrics,
                epoch: now,
                pods: RwLock::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                node: RwLock::new(None),
                node_fetch: tokio::sync::Mutex::new(()),
                node_liveness: Liveness::default(),
            }),
        }
    }

    /// The clock the cache runs on.
    #[must_use]
    pub fn clock(&self) -> &AgentClock {
        &self.inner.clock
    }

    /// Pods with cached credentials.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .pods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no pod has cached credentials.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Credentials for the pod presenting `token`: from the cache when this exact token obtained
    /// them and they have more than [`CacheConfig::min_remaining`] left, else from the server.
    ///
    /// # Errors
    /// [`CacheError`] for a token refused locally, or the server's refusal or absence.
    pub async fn pod_credentials(&self, token: &str) -> Result<Arc<PodEntry>, CacheError> {
        let inner = &self.inner;
        let claims = read_unverified(token, unix_seconds(inner.clock.wall()))?;
        let hash = token_hash(token);
        let now = inner.clock.now();
        let cached = inner
            .pods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&claims.pod_uid)
            .cloned();
        if let Some(e) = cached
            && e.token_hash == hash
            && now + inner.config.min_remaining < e.expires_at
        {
            inner.metrics.cache_hits.inc();
            inner.mark_served(&e.liveness, now, e.expires_at);
            return Ok(e);
        }
        inner.metrics.cache_misses.inc();
        let e = self.fetch_pod(claims.pod_uid, token, hash).await?;
        inner.mark_served(&e.liveness, inner.clock.now(), e.expires_at);
        Ok(e)
    }

    /// One server call per distinct token at a time; concurrent requests share its result.
    async fn fetch_pod(
        &self,
        pod_uid: String,
        token: &str,
        hash: TokenHash,
    ) -> Result<Arc<PodEntry>, CacheError> {
        let flight = Arc::clone(
            lock(&self.inner.inflight)
                .entry(hash)
                .or_insert_with(|| Arc::new(OnceCell::new())),
        );
        let result = flight
            .get_or_init(|| async {
                let got = self
                    .inner
                    .source
                    .assume_for_pod(&self.inner.config.cluster_name, token)
                    .await;
                got.map_err(CacheError::from)
                    .and_then(|c| self.inner.insert_pod(pod_uid, Arc::from(token), hash, c))
            })
            .await
            .clone();
        let mut inflight = lock(&self.inner.inflight);
        if inflight.get(&hash).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            inflight.remove(&hash);
        }
        result
    }

    /// The node role's credentials (for IMDS): cached, renewed ahead of expiry while asked for.
    ///
    /// # Errors
    /// [`CacheError::Source`] when nothing usable is cached and the server refused or was
    /// unreachable; [`CacheError::Encode`] when its answer could not be encoded for IMDS.
    pub async fn node_credentials(&self) -> Result<Arc<NodeEntry>, CacheError> {
        let inner = &self.inner;
        if let Some(e) = inner.usable_node() {
            inner.mark_served(&inner.node_liveness, inner.clock.now(), e.expires_at);
            return Ok(e);
        }
        let _one_at_a_time = inner.node_fetch.lock().await;
        if let Some(e) = inner.usable_node() {
            inner.mark_served(&inner.node_liveness, inner.clock.now(), e.expires_at);
            return Ok(e);
        }
        let c = inner.source.node_credentials().await?;
        let e = inner.insert_node(c)?;
        inner.mark_served(&inner.node_liveness, inner.clock.now(), e.expires_at);
        Ok(e)
    }

    /// Starts the renewal loop (every [`CacheConfig::tick`]); abort the handle to stop it.
    #[must_use]
    pub fn spawn_renewals(&self) -> JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cache.inner.config.tick);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                cache.renew_due();
            }
        })
    }

    /// One pass of the renewal loop: drop expired entries, then start renewals for due,
    /// non-idle entries, soonest expiry first, as far as the token bucket allows.
    pub fn renew_due(&self) {
        let inner = &self.inner;
        let now = inner.clock.now();
        let now_ms = inner.ms(now);
        let mut due = Vec::new();
        {
            let mut pods = inner.pods.write().unwrap_or_else(PoisonError::into_inner);
            pods.retain(|_, e| now < e.expires_at);
            inner.metrics.cache_entries.set(gauge(pods.len()));
            for e in pods.values() {
                if now >= e.refresh_at && now_ms >= e.next_attempt.load(Ordering::Relaxed) {
                    due.push(Arc::clone(e));
                }
            }
        }
        {
            let mut node = inner.node.write().unwrap_or_else(PoisonError::into_inner);
            if node.as_ref().is_some_and(|e| now >= e.expires_at) {
                *node = None;
            }
        }
        due.sort_by_key(|e| e.expires_at);
        let node_due = inner
            .node
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|e| now >= e.refresh_at && now_ms >= e.next_attempt.load(Ordering::Relaxed));
        if let Some(e) = node_due {
            if inner.is_idle(&inner.node_liveness, now) {
                // Nobody has asked since the last credentials expired: let these lapse.
                e.next_attempt
                    .store(inner.ms(e.expires_at), Ordering::Relaxed);
                inner.metrics.renewal("idle");
            } else if lock(&inner.bucket).try_take(now) {
                e.next_attempt.store(
                    inner.ms(now + inner.config.retry_after_error),
                    Ordering::Relaxed,
                );
                let cache = self.clone();
                tokio::spawn(async move { cache.renew_node(e).await });
            } else {
                inner.metrics.renewal("rate_limited");
            }
        }
        for e in due {
            if inner.is_idle(&e.liveness, now) {
                // AWS SDKs ask again before the credentials they hold expire; a pod that has not
                // is gone (or idle) and is not renewed for. Its entry lapses at expiry.
                e.next_attempt
                    .store(inner.ms(e.expires_at), Ordering::Relaxed);
                inner.metrics.renewal("idle");
                continue;
            }
            if !lock(&inner.bucket).try_take(now) {
                inner.metrics.renewal("rate_limited");
                break;
            }
            e.next_attempt.store(
                inner.ms(now + inner.config.retry_after_error),
                Ordering::Relaxed,
            );
            let cache = self.clone();
            tokio::spawn(async move { cache.renew_pod(e).await });
        }
    }

    async fn renew_pod(&self, old: Arc<PodEntry>) {
        let inner = &self.inner;
        let result = inner
            .source
            .assume_for_pod(&inner.config.cluster_name, &old.token)
            .await;
        match result {
            Ok(c) => {
                // Replace only the entry we renewed: a newer token may have replaced it meanwhile.
                let still_current = inner
                    .pods
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&old.pod_uid)
                    .is_some_and(|e| Arc::ptr_eq(e, &old));
                if !still_current {
                    inner.metrics.renewal("superseded");
                    return;
                }
                match inner.insert_pod(
                    old.pod_uid.clone(),
                    Arc::clone(&old.token),
                    old.token_hash,
                    c,
                ) {
                    Ok(_) => inner.metrics.renewal("ok"),
                    Err(e) => {
                        let wait = inner.retry_later(&old.next_attempt, old.expires_at);
                        tracing::warn!(pod_uid = %old.pod_uid, error = %e, retry_in = ?wait, "renewed credentials unusable; serving cached credentials until they expire");
                        inner.metrics.renewal("error");
                    }
                }
            }
            Err(e) if e.is_permanent() => {
                tracing::info!(pod_uid = %old.pod_uid, error = %e, "renewal refused; dropping cached credentials");
                let mut pods = inner.pods.write().unwrap_or_else(PoisonError::into_inner);
                if pods.get(&old.pod_uid).is_some_and(|e| Arc::ptr_eq(e, &old)) {
                    pods.remove(&old.pod_uid);
                }
                inner.metrics.renewal("evicted");
            }
            Err(e) => {
                let wait = inner.retry_later(&old.next_attempt, old.expires_at);
                tracing::warn!(pod_uid = %old.pod_uid, error = %e, retry_in = ?wait, "renewal failed; serving cached credentials until they expire");
                inner.metrics.renewal("error");
            }
        }
    }

    async fn renew_node(&self, old: Arc<NodeEntry>) {
        let inner = &self.inner;
        match inner.source.node_credentials().await {
            Ok(c) => match inner.insert_node(c) {
                Ok(_) => inner.metrics.renewal("ok"),
                Err(e) => {
                    let wait = inner.retry_later(&old.next_attempt, old.expires_at);
                    tracing::warn!(error = %e, retry_in = ?wait, "renewed node credentials unusable; serving cached credentials until they expire");
                    inner.metrics.renewal("error");
                }
            },
            Err(e) => {
                let wait = inner.retry_later(&old.next_attempt, old.expires_at);
                tracing::warn!(error = %e, retry_in = ?wait, "node credential renewal failed; serving cached credentials until they expire");
                inner.metrics.renewal("error");
            }
        }
    }
}

impl<S> Inner<S> {
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// After a failed renewal, the next attempt comes after `retry_after_error`, but at the
    /// latest halfway to expiry, so short-lived credentials still get further attempts before
    /// they lapse. Returns the wait.
    fn retry_later(&self, next_attempt: &AtomicU64, expires_at: Instant) -> Duration {
        let now = self.clock.now();
        let wait = self
            .config
            .retry_after_error
            .min(expires_at.saturating_duration_since(now) / 2);
        next_attempt.store(self.ms(now + wait), Ordering::Relaxed);
        wait
    }

    fn mark_served(&self, l: &Liveness, now: Instant, expires_at: Instant) {
        l.last_presented.store(self.ms(now), Ordering::Relaxed);
        l.served_until
            .fetch_max(self.ms(expires_at), Ordering::Relaxed);
    }

    fn is_idle(&self, l: &Liveness, now: Instant) -> bool {
        let served_until = l.served_until.load(Ordering::Relaxed);
        let grace = u64::try_from(self.config.idle_grace.as_millis()).unwrap_or(u64::MAX);
        self.ms(now) > served_until.saturating_add(grace)
    }

    /// When to refresh credentials obtained now that expire at `expires_at`, or an error when
    /// they are too short-lived to serve.
    fn schedule(&self, expiration: SystemTime) -> Result<(Instant, Instant), SourceError> {
        let now = self.clock.now();
        let expires_at = self.clock.instant_at(expiration);
        let lifetime = expires_at.saturating_duration_since(now);
        if lifetime <= self.config.min_remaining {
            return Err(SourceError::Unavailable {
                reason: format!("the server issued credentials that expire in {lifetime:?}"),
            });
        }
        let refresh_at = now + (lifetime / 2).min(self.config.max_refresh_after);
        Ok((refresh_at, expires_at))
    }

    fn insert_pod(
        &self,
        pod_uid: String,
        token: Arc<str>,
        token_hash: TokenHash,
        credentials: PodCredentials,
    ) -> Result<Arc<PodEntry>, CacheError> {
        let (refresh_at, expires_at) = self.schedule(credentials.credentials.expiration)?;
        let body = container_credentials_json(&credentials)?;
        let mut pods = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        let liveness = match pods.get(&pod_uid) {
            Some(e) => Arc::clone(&e.liveness),
            None => {
                if pods.len() >= self.config.max_entries {
                    let quietest = pods
                        .iter()
                        .min_by_key(|(_, e)| e.liveness.last_presented.load(Ordering::Relaxed))
                        .map(|(k, _)| k.clone());
                    if let Some(k) = quietest {
                        pods.remove(&k);
                    }
                }
                Arc::new(Liveness::default())
            }
        };
        tracing::debug!(pod_uid = %pod_uid, namespace = %credentials.namespace, service_account = %credentials.service_account, association_id = %credentials.association_id, "credentials cached");
        let entry = Arc::new(PodEntry {
            body,
            pod_uid: pod_uid.clone(),
            credentials,
            token,
            token_hash,
            refresh_at,
            expires_at,
            next_attempt: AtomicU64::new(0),
            liveness,
        });
        pods.insert(pod_uid, Arc::clone(&entry));
        self.metrics.cache_entries.set(gauge(pods.len()));
        Ok(entry)
    }

    fn usable_node(&self) -> Option<Arc<NodeEntry>> {
        let now = self.clock.now();
        self.node
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|e| now + self.config.min_remaining < e.expires_at)
    }

    fn insert_node(&self, credentials: Credentials) -> Result<Arc<NodeEntry>, CacheError> {
        let (refresh_at, expires_at) = self.schedule(credentials.expiration)?;
        let last_updated = self.clock.wall();
        let entry = Arc::new(NodeEntry {
            body: imds_credentials_json(&credentials, last_updated)?,
            credentials,
            last_updated,
            refresh_at,
            expires_at,
            next_attempt: AtomicU64::new(0),
        });
        *self.node.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&entry));
        Ok(entry)
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
