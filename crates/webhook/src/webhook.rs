//! The admission handler: the cached sources, identity resolution with a direct ServiceAccount
//! lookup on a cache miss, and AdmissionReview decoding/encoding around [`mutate`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::identity::{
    Associations, ComposeRoleArn, ConfigMapMapping, ServiceAccountEntry, Sources, resolve,
};
use crate::lock::{lock, read, write};
use crate::metrics::Metrics;
use crate::mutate::{Config, Credentials, Identity, MAX_EXPIRATION_JITTER, mutate};

/// A future returned by a [`ServiceAccountLookup`].
pub type LookupFuture =
    Pin<Box<dyn Future<Output = Result<Option<BTreeMap<String, String>>, String>> + Send>>;

/// A direct read of one ServiceAccount's annotations (`GET serviceaccounts/<name>`); `Ok(None)`
/// when it does not exist.
pub trait ServiceAccountLookup: Send + Sync {
    /// Fetch `namespace/name`.
    fn get(&self, namespace: &str, name: &str) -> LookupFuture;
}

/// How long and how many direct lookups may run.
#[derive(Clone, Debug)]
pub struct LookupPolicy {
    /// How long admission waits for a lookup; zero disables lookups (upstream's behaviour).
    pub timeout: Duration,
    /// At most this many lookups at once; more wait (within `timeout`) for a slot.
    pub concurrency: usize,
}

impl Default for LookupPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            concurrency: 10,
        }
    }
}

/// Where a set of Pod Identity associations came from; admission uses their union, so each
/// source replaces only its own part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AssociationSource {
    /// `--watch-container-credentials-config`.
    File,
    /// podiam's `ListPodIdentityAssociations` (`--podiam-endpoint`).
    Podiam,
}

/// The webhook: configuration, cached sources and metrics.
pub struct Webhook {
    cfg: Config,
    compose: Option<ComposeRoleArn>,
    service_accounts: RwLock<HashMap<String, ServiceAccountEntry>>,
    config_map: ArcSwap<ConfigMapMapping>,
    associations: ArcSwap<Associations>,
    association_sources: Mutex<BTreeMap<AssociationSource, Associations>>,
    lookup: Option<Arc<dyn ServiceAccountLookup>>,
    lookup_policy: LookupPolicy,
    lookup_slots: tokio::sync::Semaphore,
    metrics: Metrics,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Webhook {
    /// A webhook with empty sources.
    pub fn new(
        cfg: Config,
        compose: Option<ComposeRoleArn>,
        lookup: Option<Arc<dyn ServiceAccountLookup>>,
        lookup_policy: LookupPolicy,
    ) -> Self {
        let slots = tokio::sync::Semaphore::new(lookup_policy.concurrency.max(1));
        Self {
            cfg,
            compose,
            service_accounts: RwLock::default(),
            config_map: ArcSwap::default(),
            associations: ArcSwap::default(),
            association_sources: Mutex::default(),
            lookup,
            lookup_policy,
            lookup_slots: slots,
            metrics: Metrics::default(),
        }
    }

    /// The flags.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn entry(&self, annotations: &BTreeMap<String, String>) -> ServiceAccountEntry {
        ServiceAccountEntry::from_annotations(annotations, &self.cfg, self.compose.as_ref())
    }

    /// A ServiceAccount was added or changed (upstream `addSA`: stored even without a role).
    pub fn apply_service_account(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) {
        let entry = self.entry(annotations);
        write(&self.service_accounts).insert(key(namespace, name), entry);
        self.metrics.set_used();
    }

    /// A ServiceAccount was deleted.
    pub fn delete_service_account(&self, namespace: &str, name: &str) {
        write(&self.service_accounts).remove(&key(namespace, name));
    }

    /// A full re-list: replace every cached ServiceAccount.
    pub fn replace_service_accounts(
        &self,
        all: impl IntoIterator<Item = (String, String, BTreeMap<String, String>)>,
    ) {
        let fresh: HashMap<_, _> = all
            .into_iter()
            .map(|(ns, name, a)| (key(&ns, &name), self.entry(&a)))
            .collect();
        *write(&self.service_accounts) = fresh;
        self.metrics.set_used();
    }

    /// Number of cached ServiceAccounts.
    pub fn cached_service_accounts(&self) -> usize {
        read(&self.service_accounts).len()
    }

    /// Replace the ConfigMap mapping.
    pub fn set_config_map(&self, mapping: ConfigMapMapping) {
        self.config_map.store(Arc::new(mapping));
    }

    /// Replace the Pod Identity associations from the identities file.
    pub fn set_associations(&self, associations: Associations) {
        self.set_associations_from(AssociationSource::File, associations);
    }

    /// Replace the Pod Identity associations that came from `source`; the other sources' stay.
    pub fn set_associations_from(&self, source: AssociationSource, associations: Associations) {
        let mut sources = lock(&self.association_sources);
        sources.insert(source, associations);
        let union: Associations = sources.values().flatten().cloned().collect();
        self.associations.store(Arc::new(union));
    }

    /// Whether `namespace/service_account` has a Pod Identity association (from any source).
    pub fn has_association(&self, namespace: &str, service_account: &str) -> bool {
        self.associations
            .load()
            .contains(&(namespace.to_owned(), service_account.to_owned()))
    }

    fn cached(&self, namespace: &str, name: &str) -> Option<ServiceAccountEntry> {
        read(&self.service_accounts)
            .get(&key(namespace, name))
            .cloned()
    }

    /// Our fix for upstream #174/#194: a ServiceAccount created just before the pod may not have
    /// reached the watch yet, so read it directly, within the lookup timeout.
    async fn look_up(&self, namespace: &str, name: &str) -> Option<ServiceAccountEntry> {
        let lookup = self.lookup.as_ref()?;
        if self.lookup_policy.timeout.is_zero() {
            return None;
        }
        let fetch = async {
            let _slot = self.lookup_slots.acquire().await.ok()?;
            Some(lookup.get(namespace, name).await)
        };
        let (result, found) = match tokio::time::timeout(self.lookup_policy.timeout, fetch).await {
            Err(_) | Ok(None) => ("timeout", None),
            Ok(Some(Err(e))) => {
                tracing::warn!(namespace, name, error = %e, "direct ServiceAccount lookup failed");
                ("error", None)
            }
            Ok(Some(Ok(None))) => ("not_found", None),
            Ok(Some(Ok(Some(annotations)))) => ("found", Some(self.entry(&annotations))),
        };
        self.metrics.sa_lookup(result);
        let found = found?;
        // The watch is authoritative: keep what it delivered in the meantime.
        write(&self.service_accounts)
            .entry(key(namespace, name))
            .or_insert_with(|| found.clone());
        Some(found)
    }

    /// The identity for a pod in `namespace` running as `service_account`, and whether the
    /// ServiceAccount (or a ConfigMap entry) was known at all.
    pub async fn identity_for(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> (Option<Identity>, bool) {
        let mut sa = self.cached(namespace, service_account);
        if sa.is_none() {
            sa = self.look_up(namespace, service_account).await;
        }
        let cm = self.config_map.load();
        let cc = self.associations.load();
        let in_cm = cm.contains_key(&key(namespace, service_account))
            || cm.contains_key(&key("*", service_account));
        let src = Sources {
            service_account: sa.as_ref(),
            config_map: &cm,
            associations: &cc,
        };
        let mut identity = resolve(namespace, service_account, src, &self.cfg);
        if let Some(id) = identity.as_mut()
            && id.credentials == Credentials::ContainerCredentials
        {
            id.expiration_jitter = random_jitter();
        }
        (identity, sa.is_some() || in_cm)
    }

    /// Answer one AdmissionReview body (already checked to be JSON) with the response body.
    ///
    /// # Errors
    /// [`EncodeError`] when the response cannot be encoded (the caller answers 500).
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let review: ReviewIn = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return respond(
                    &TypeMeta::default(),
                    "",
                    Outcome::Error(format!("couldn't decode AdmissionReview: {e}")),
                );
            }
        };
        let types = TypeMeta {
            api_version: review.api_version,
            kind: review.kind,
        };
        let Some(req) = review.request else {
            return respond(
                &types,
                "",
                Outcome::Error("bad content: AdmissionReview has no request".to_owned()),
            );
        };
        let outcome = match req.object.map(serde_json::from_value::<Pod>) {
            None => Outcome::Error("bad content: request has no object".to_owned()),
            Some(Err(e)) => Outcome::Error(format!("couldn't decode Pod: {e}")),
            Some(Ok(pod)) => self.admit(&req.namespace.unwrap_or_default(), &pod).await,
        };
        respond(&types, &req.uid, outcome)
    }

    async fn admit(&self, namespace: &str, pod: &Pod) -> Outcome {
        let namespace = if namespace.is_empty() {
            pod.metadata.namespace.as_deref().unwrap_or_default()
        } else {
            namespace
        };
        let sa_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let pod_name = pod
            .metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or_default();
        let (identity, found) = self.identity_for(namespace, sa_name).await;
        if !found {
            self.metrics.missing_sa();
        }
        let Some(identity) = identity else {
            tracing::debug!(
                pod = pod_name,
                namespace,
                service_account = sa_name,
                found,
                "pod not mutated: no identity"
            );
            return Outcome::Allow(Vec::new());
        };
        let ops = mutate(pod, &identity, &self.cfg);
        if ops.is_empty() {
            tracing::debug!(
                pod = pod_name,
                namespace,
                service_account = sa_name,
                "pod already has its identity"
            );
        } else {
            self.metrics.pod_mutated(identity.method());
            tracing::info!(
                pod = pod_name,
                namespace,
                service_account = sa_name,
                method = identity.method(),
                "pod mutated"
            );
        }
        Outcome::Allow(ops)
    }
}

/// Uniform in `0..=MAX_EXPIRATION_JITTER`, from std's randomly keyed hasher (no RNG crate needed
/// for spreading token refreshes).
fn random_jitter() -> i64 {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (r % (MAX_EXPIRATION_JITTER as u64 + 1)) as i64
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    #[serde(default)]
    uid: String,
    namespace: Option<String>,
    object: Option<Value>,
}

#[derive(Default)]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

enum Outcome {
    Allow(Vec<json_patch::PatchOperation>),
    Error(String),
}

/// The AdmissionReview response could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("couldn't encode the AdmissionReview response: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

/// The AdmissionReview response, with the request's TypeMeta echoed (upstream PR #310).
fn respond(types: &TypeMeta, uid: &str, outcome: Outcome) -> Result<Vec<u8>, EncodeError> {
    let response = match outcome {
        Outcome::Allow(ops) if ops.is_empty() => json!({ "uid": uid, "allowed": true }),
        Outcome::Allow(ops) => patched(uid, serde_json::to_vec(&ops)),
        Outcome::Error(message) => denied(uid, &message),
    };
    let review = json!({
        "apiVersion": types.api_version.as_deref().unwrap_or("admission.k8s.io/v1"),
        "kind": types.kind.as_deref().unwrap_or("AdmissionReview"),
        "response": response,
    });
    Ok(serde_json::to_vec(&review)?)
}

/// Allowed with `patch`, base64-encoded as Go encodes `[]byte`. A patch that could not be
/// encoded refuses the pod with the reason, as upstream does, rather than admit it unpatched.
fn patched(uid: &str, patch: Result<Vec<u8>, serde_json::Error>) -> Value {
    match patch {
        Ok(patch) => json!({
            "uid": uid,
            "allowed": true,
            "patch": base64::engine::general_purpose::STANDARD.encode(patch),
            "patchType": "JSONPatch",
        }),
        Err(e) => {
            tracing::error!(error = %e, uid, "couldn't encode the JSON patch; refusing the pod");
            denied(uid, &format!("couldn't encode the JSON patch: {e}"))
        }
    }
}

fn denied(uid: &str, message: &str) -> Value {
    json!({
        "uid": uid,
        "allowed": false,
        "status": { "metadata": {}, "message": message },
    })
}

#[cfg(test)]
mod tests;
