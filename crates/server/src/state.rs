//! The server's state: everything in memory for reads, written through to the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use podiam_policy::{Policy, PolicyKind};
use podiam_store::{Change, State, StateVersion, Store};

use crate::error::AwsError;
use crate::issuer::{KeyError, Keys};

/// Fixed settings of one server.
#[derive(Clone, Debug)]
pub struct Config {
    pub account_id: String,
    pub region: String,
    pub partition: String,
    /// Put the failed check into AccessDenied messages (always in the audit log).
    pub explain_denials: bool,
    /// EKS Auth refuses a pod token or an agent session bound to no node.
    pub require_node_binding: bool,
    pub limits: podiam_policy::Limits,
    /// The built-in issuer's URL (`iss` of the tokens it signs).
    pub issuer_url: String,
}

#[cfg(test)]
impl Config {
    /// Account `000000000000` in us-east-1, denials explained.
    pub(crate) fn for_tests() -> Config {
        Config {
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            partition: "aws".into(),
            explain_denials: true,
            require_node_binding: false,
            limits: podiam_policy::Limits::default(),
            issuer_url: "http://127.0.0.1".into(),
        }
    }
}

pub struct Shared {
    pub config: Config,
    store: Store,
    state: RwLock<Arc<State>>,
    /// The store version `state` is known to be (`UNKNOWN_VERSION`: not known, so the next poll
    /// reloads). Changed only under `writer`; read by the poll and the notification listener to
    /// tell this process's own writes from other writers' without reloading.
    version: AtomicI64,
    writer: tokio::sync::Mutex<()>,
    compiled: RwLock<CompiledCache>,
    /// Static JWKS documents (given at provider or cluster registration), parsed once.
    static_jwks: RwLock<HashMap<Arc<str>, Arc<podiam_identity::Jwks>>>,
    keys: RwLock<Arc<Keys>>,
    remote: crate::jwks::JwksCache,
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) verified_tokens: crate::tokens::VerifiedTokens,
    /// Where requests read their time.
    pub clock: crate::ServerClock,
    /// Broker mode: the upstream STS for roles of other accounts (set once, at start).
    upstream: std::sync::OnceLock<Arc<crate::upstream::Upstream>>,
}

/// Compiled documents by kind (index: `PolicyKindKey as usize`) and text. Looked up by `&str`,
/// so a hit copies nothing.
/// Keyed by the document's text, hashed with foldhash (randomly seeded per map): every STS call
/// looks its trust policy up here, and SipHash over a policy document cost more than the rest of
/// the lookup. The documents are written by authenticated IAM callers and the cache is bounded
/// ([`COMPILED_CACHE_MAX`]).
type CompiledCache = [HashMap<Arc<str>, Arc<Policy>, foldhash::fast::RandomState>; 3];

/// `PolicyKind` as a map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKindKey {
    Identity,
    Resource,
    Trust,
}

impl From<PolicyKind> for PolicyKindKey {
    fn from(k: PolicyKind) -> Self {
        match k {
            PolicyKind::Identity => PolicyKindKey::Identity,
            PolicyKind::Resource => PolicyKindKey::Resource,
            PolicyKind::Trust => PolicyKindKey::Trust,
        }
    }
}

/// Bound on cached compiled documents; past it the cache starts over (documents are re-parsed on
/// the next use, nothing is lost).
const COMPILED_CACHE_MAX: usize = 20_000;

/// No store version is ever negative.
const UNKNOWN_VERSION: StateVersion = -1;

impl Shared {
    /// `version`: the store version `state` is at, when known (`None`: the first poll reloads).
    pub fn new(
        config: Config,
        store: Store,
        state: State,
        version: Option<StateVersion>,
        clock: crate::ServerClock,
    ) -> Result<Shared, KeyError> {
        let keys = Keys::from_state(&state)?;
        Ok(Shared {
            config,
            store,
            state: RwLock::new(Arc::new(state)),
            version: AtomicI64::new(version.unwrap_or(UNKNOWN_VERSION)),
            writer: tokio::sync::Mutex::new(()),
            compiled: RwLock::new(Default::default()),
            static_jwks: RwLock::new(HashMap::new()),
            keys: RwLock::new(Arc::new(keys)),
            remote: crate::jwks::JwksCache::new(),
            metrics: crate::metrics::Metrics::new(),
            verified_tokens: crate::tokens::VerifiedTokens::default(),
            clock,
            upstream: std::sync::OnceLock::new(),
        })
    }

    /// The store version the in-memory state is known to be at (`None`: not known).
    pub fn known_version(&self) -> Option<StateVersion> {
        Some(self.version.load(Ordering::Acquire)).filter(|v| *v != UNKNOWN_VERSION)
    }

    /// Whether a write announced with this NOTIFY payload (the version it committed) is already
    /// in memory: this process's own, or older than the state. An empty or foreign payload is
    /// not (an older podiam announced with an empty one).
    pub fn has_committed(&self, notify_payload: &str) -> bool {
        match (notify_payload.parse::<StateVersion>(), self.known_version()) {
            (Ok(v), Some(known)) => v <= known,
            _ => false,
        }
    }

    /// Re-reads the whole state from the store if another process wrote to it since the state
    /// in memory (its version differs from the one this process last committed or loaded).
    /// Returns whether it reloaded. This process's own writes cost one version read, no reload.
    pub async fn refresh(&self) -> Result<bool, AwsError> {
        let _guard = self.writer.lock().await;
        if self.known_version() == Some(self.store.version().await?) {
            return Ok(false);
        }
        let (version, fresh) = Box::pin(self.store.load_versioned()).await?;
        let changed = *self.snapshot() != fresh;
        if changed {
            self.replace(fresh);
        }
        self.version.store(version, Ordering::Release);
        if !changed {
            return Ok(false);
        }
        self.metrics.cache_reloads.inc();
        self.reload_keys()
            .map_err(|e| AwsError::service_failure(e.to_string()))?;
        Ok(true)
    }

    /// The upstream STS, in broker mode (`--upstream-sts`).
    pub fn upstream(&self) -> Option<&Arc<crate::upstream::Upstream>> {
        self.upstream.get()
    }

    pub(crate) fn set_upstream(&self, upstream: Arc<crate::upstream::Upstream>) {
        if self.upstream.set(upstream).is_err() {
            tracing::warn!("the upstream STS was already set");
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The issuer and session key rings.
    pub fn keys(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Rebuilds the key rings after keys changed in the state.
    pub fn reload_keys(&self) -> Result<(), KeyError> {
        let keys = Arc::new(Keys::from_state(&self.snapshot())?);
        match self.keys.write() {
            Ok(mut g) => *g = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        Ok(())
    }

    pub fn is_own_issuer(&self, url: &str) -> bool {
        url.trim_end_matches('/') == self.config.issuer_url.trim_end_matches('/')
    }

    /// The published keys of a remote issuer (OIDC discovery, then `jwks_uri`), cached; `now`
    /// is the request's time.
    pub async fn remote_jwks(
        &self,
        issuer: &str,
        refresh: bool,
        now: std::time::SystemTime,
    ) -> Result<Arc<podiam_identity::Jwks>, AwsError> {
        self.remote.get(issuer, refresh, now).await
    }

    /// A consistent snapshot of the whole state.
    pub fn snapshot(&self) -> Arc<State> {
        match self.state.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Runs one write: `decide` sees the current state and returns the changes and a result.
    /// Writes are serialised in this process and compare-and-swap in the store: if another
    /// process (a replica, the CLI) changed an entity meanwhile, the state is reloaded and
    /// `decide` runs again on it. The store is written before memory, so what a client is told
    /// succeeded survives a restart.
    pub async fn write<T>(
        &self,
        decide: impl Fn(&State) -> Result<(Vec<Change>, T), AwsError>,
    ) -> Result<T, AwsError> {
        const ATTEMPTS: usize = 5;
        let _guard = self.writer.lock().await;
        for attempt in 1..=ATTEMPTS {
            let current = self.snapshot();
            let (changes, out) = decide(&current)?;
            if changes.is_empty() {
                return Ok(out);
            }
            let checked: Vec<(Change, Change)> = changes
                .iter()
                .map(|c| (c.clone(), current.current(c)))
                .collect();
            // The store's futures (sqlx, both backends) are ~15 KB: boxed here, once, every
            // IAM and EKS handler's future stays small instead of carrying them (and the
            // awsQuery adapter's with them, which each axum wrapper moves).
            match Box::pin(self.store.apply_checked(&checked)).await {
                Ok(version) => {
                    // O(changes × log n): the maps are persistent, so the clone shares every
                    // node the changes do not touch (and readers keep the previous snapshot).
                    let mut next = (*current).clone();
                    for c in &changes {
                        next.apply(c);
                    }
                    self.replace(next);
                    // Our memory was the store at `version - 1`: with these changes it is the
                    // store at `version`, so the poll and the notification need not reload it.
                    // Otherwise another writer committed in between, and the version stays
                    // stale so that they do.
                    if self.known_version() == Some(version - 1) {
                        self.version.store(version, Ordering::Release);
                    }
                    self.metrics.store_writes.inc();
                    return Ok(out);
                }
                Err(podiam_store::StoreError::Conflict { kind, key }) if attempt < ATTEMPTS => {
                    tracing::debug!(kind, key = %key, attempt, "write conflict: reloading and deciding again");
                    let (version, fresh) = Box::pin(self.store.load_versioned()).await?;
                    self.replace(fresh);
                    self.version.store(version, Ordering::Release);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AwsError::new(
            crate::error::ErrorKind::ConcurrentModification,
            "The resource kept changing while this request was applied; retry the request",
        ))
    }

    fn replace(&self, next: State) {
        match self.state.write() {
            Ok(mut g) => *g = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
    }

    /// A static JWKS, parsed once per distinct text. The same `Arc` comes back for the same
    /// text, so tokens verified with it are remembered (the verified-token cache is tied to the
    /// key set's identity); registering new keys gives a new text, hence a new key set.
    pub fn static_jwks(&self, text: &str) -> Result<Arc<podiam_identity::Jwks>, AwsError> {
        if let Ok(cache) = self.static_jwks.read()
            && let Some(j) = cache.get(text)
        {
            return Ok(Arc::clone(j));
        }
        let jwks = Arc::new(crate::issuer::parse_jwks(text)?);
        if let Ok(mut cache) = self.static_jwks.write() {
            // A handful of clusters and providers; past this, something churns: start over.
            if cache.len() >= 1_024 {
                cache.clear();
            }
            return Ok(Arc::clone(
                cache
                    .entry(Arc::from(text))
                    .or_insert_with(|| Arc::clone(&jwks)),
            ));
        }
        Ok(jwks)
    }

    /// Parses a stored document once and keeps the compiled form.
    pub fn compiled(
        &self,
        document: &str,
        kind: PolicyKind,
        source_id: &str,
    ) -> Result<Arc<Policy>, AwsError> {
        let slot = PolicyKindKey::from(kind) as usize;
        if let Ok(cache) = self.compiled.read()
            && let Some(p) = cache[slot].get(document)
            && p.source_id == source_id
        {
            return Ok(Arc::clone(p));
        }
        let policy = Arc::new(Policy::parse(document, kind)?.with_source_id(source_id));
        if let Ok(mut cache) = self.compiled.write() {
            let map = &mut cache[slot];
            if map.len() >= COMPILED_CACHE_MAX {
                map.clear();
            }
            map.insert(Arc::from(document), Arc::clone(&policy));
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests;
