//! Operations the CLI runs against the data directory directly (`podiam token create`,
//! `podiam issuer rotate`, `podiam create iamserviceaccount`), as typed calls: no HTTP, no XML.
//! After a write, the server serving the data directory (if any) reloads its state before the
//! operation returns ([`crate::instance::sync`]), so the very next request of any client sees it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podiam_identity::ServiceAccountToken;
use podiam_store::{Change, State, Store};

use crate::auth::{Caller, RequestFacts};
use crate::ctx::Ctx;
use crate::error::{AwsError, ErrorKind, Protocol};
use crate::issuer::{Keys, new_sealing_key, new_signing_key};
use crate::state::{Config, Shared};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "no podiam data in {0}: start the server once first (`podiam up --data-dir DIR`, or `podiam server`)"
    )]
    NotInitialised(String),
    #[error(transparent)]
    Store(#[from] podiam_store::StoreError),
    #[error(transparent)]
    Keys(#[from] crate::issuer::KeyError),
    #[error("{}: {}", .error.code(*.protocol), .error.message)]
    Aws {
        error: AwsError,
        /// The API the operation belongs to: its codes name the error.
        protocol: Protocol,
    },
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

impl LocalError {
    /// The kind of AWS error, when the operation itself was refused.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            LocalError::Aws { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

fn iam_error(error: AwsError) -> LocalError {
    LocalError::Aws {
        error,
        protocol: Protocol::Query,
    }
}

fn eks_error(error: AwsError) -> LocalError {
    LocalError::Aws {
        error,
        protocol: Protocol::Eks,
    }
}

/// The store the CLI works on: `PODIAM_DATABASE_URL` (with `PODIAM_MASTER_KEY_FILE`) when set,
/// as inside a `podiam server` pod; otherwise the SQLite file in the data directory.
async fn open(data_dir: &Path) -> Result<(Store, State), LocalError> {
    let master_key = match std::env::var_os("PODIAM_MASTER_KEY_FILE") {
        Some(f) => Some(
            podiam_store::MasterKey::from_file(Path::new(&f))
                .map_err(podiam_store::StoreError::from)?,
        ),
        None => None,
    };
    let (store, place) = match std::env::var("PODIAM_DATABASE_URL") {
        Ok(url) if !url.is_empty() => (
            Store::open(&url).await?.with_master_key(master_key),
            "the database in PODIAM_DATABASE_URL".to_string(),
        ),
        _ => {
            let db = data_dir.join("podiam.db");
            if !db.exists() {
                return Err(LocalError::NotInitialised(data_dir.display().to_string()));
            }
            // The directory's master key seals and opens its secrets (or the operator's, if
            // the server was given one).
            (
                Store::open_local(data_dir, master_key).await?,
                data_dir.display().to_string(),
            )
        }
    };
    let state = store.load().await?;
    if !state.settings.contains_key("account_id") {
        return Err(LocalError::NotInitialised(place));
    }
    Ok((store, state))
}

/// The stored settings a CLI needs: account, region, issuer URL.
pub async fn settings(data_dir: &Path) -> Result<podiam_store::Entities<String>, LocalError> {
    let (store, state) = open(data_dir).await?;
    store.close().await;
    Ok(state.settings)
}

/// Signs a Kubernetes projected ServiceAccount token with the built-in issuer's active key.
pub async fn create_token(
    data_dir: &Path,
    token: impl FnOnce(&str) -> ServiceAccountToken,
) -> Result<String, LocalError> {
    let (store, state) = open(data_dir).await?;
    store.close().await;
    let issuer = state
        .settings
        .get("issuer_url")
        .cloned()
        .unwrap_or_default();
    let keys = Keys::from_state(&state)?;
    let now = SystemTime::now();
    let claims = token(&issuer).claims(now);
    keys.issuer
        .sign(&claims, now)
        .map_err(|e| LocalError::Sign(e.to_string()))
}

/// Adds a new issuer key; the old ones stay published for `keep_old` (the longest token lifetime)
/// so tokens they signed still verify. Returns the new key ID.
pub async fn rotate_issuer(data_dir: &Path, keep_old: Duration) -> Result<String, LocalError> {
    let (store, state) = open(data_dir).await?;
    let now = now_ms();
    let new = new_signing_key(now)?;
    let mut changes = retire_all(
        &state.signing_keys,
        now,
        keep_old,
        |k| &mut k.retire_after,
        Change::SigningKey,
    );
    let kid = new.kid.clone();
    changes.push(Change::SigningKey(kid.clone(), Some(new)));
    store.apply(&changes).await?;
    store.close().await;
    sync_server(data_dir).await;
    Ok(kid)
}

/// Adds a new session-token sealing key. The others keep opening the tokens they sealed for
/// `keep_old` (the longest session). Every server seals with the new key once
/// [`podiam_identity::rotation::KEY_ACTIVATION_DELAY`] has passed, so all replicas know it first.
pub async fn rotate_session_keys(data_dir: &Path, keep_old: Duration) -> Result<u32, LocalError> {
    let (store, state) = open(data_dir).await?;
    let now = now_ms();
    let id = state
        .sealing_keys
        .values()
        .filter_map(|k| k.id.parse::<u32>().ok())
        .max()
        .map_or(1, |m| m.wrapping_add(1));
    let new = new_sealing_key(id, now)?;
    let mut changes = retire_all(
        &state.sealing_keys,
        now,
        keep_old,
        |k| &mut k.retire_after,
        Change::SealingKey,
    );
    changes.push(Change::SealingKey(id.to_string(), Some(new)));
    store.apply(&changes).await?;
    store.close().await;
    sync_server(data_dir).await;
    Ok(id)
}

/// The changes that retire every current key of a ring at `now + keep_old` and drop the keys
/// already past their retirement (no token they signed or sealed is still valid).
fn retire_all<K: Clone>(
    keys: &podiam_store::Entities<K>,
    now: i64,
    keep_old: Duration,
    retire_after: impl Fn(&mut K) -> &mut Option<i64>,
    change: impl Fn(String, Option<K>) -> Change,
) -> Vec<Change> {
    let retire = now.saturating_add(i64::try_from(keep_old.as_millis()).unwrap_or(i64::MAX / 2));
    let mut changes = Vec::new();
    for (id, key) in keys {
        let mut key = key.clone();
        let slot = retire_after(&mut key);
        match *slot {
            None => {
                *slot = Some(retire);
                changes.push(change(id.clone(), Some(key)));
            }
            Some(t) if t <= now => changes.push(change(id.clone(), None)),
            Some(_) => {}
        }
    }
    changes
}

/// Whose static JWKS [`replace_jwks`] replaces.
pub enum JwksOf<'a> {
    /// An IAM OIDC provider, by ARN.
    OidcProvider(&'a str),
    /// A cluster registered for EKS Pod Identity, by name.
    Cluster(&'a str),
}

/// What [`replace_jwks`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum JwksReplaced {
    Yes,
    /// No such provider or cluster.
    Missing,
    /// It is registered with this other issuer URL: nothing changed.
    OtherIssuer(String),
}

/// Replaces the keys given at registration for an issuer podiam cannot reach, after the cluster's
/// API server changed its signing key (registering again with the same issuer URL). A
/// compare-and-swap write: a concurrent change makes it fail.
pub async fn replace_jwks(
    data_dir: &Path,
    target: JwksOf<'_>,
    issuer_url: &str,
    jwks: &str,
) -> Result<JwksReplaced, LocalError> {
    crate::issuer::check_jwks(jwks).map_err(iam_error)?;
    let (store, state) = open(data_dir).await?;
    let same = |url: &str| url.trim_end_matches('/') == issuer_url.trim_end_matches('/');
    let write = match target {
        JwksOf::OidcProvider(arn) => state.oidc_providers.get(arn).map(|old| {
            let mut new = old.clone();
            new.static_jwks = Some(jwks.to_string());
            let write = (
                Change::OidcProvider(arn.to_string(), Some(new)),
                Change::OidcProvider(arn.to_string(), Some(old.clone())),
            );
            (old.url.clone(), write)
        }),
        JwksOf::Cluster(name) => state.clusters.get(name).map(|old| {
            let mut new = old.clone();
            new.static_jwks = Some(jwks.to_string());
            let write = (
                Change::Cluster(name.to_string(), Some(new)),
                Change::Cluster(name.to_string(), Some(old.clone())),
            );
            (old.issuer_url.clone(), write)
        }),
    };
    let result = match write {
        None => Ok(JwksReplaced::Missing),
        Some((url, _)) if !same(&url) => Ok(JwksReplaced::OtherIssuer(url)),
        Some((_, w)) => store
            .apply_checked(std::slice::from_ref(&w))
            .await
            .map(|_| JwksReplaced::Yes),
    };
    store.close().await;
    if matches!(result, Ok(JwksReplaced::Yes)) {
        sync_server(data_dir).await;
    }
    Ok(result?)
}

/// Makes the server serving `data_dir` see what was just written before the CLI reports it done.
/// The write stands if the server does not answer; the CLI says so (it sees the write within
/// its 1 s store poll).
async fn sync_server(data_dir: &Path) {
    if let Err(e) = crate::instance::sync(data_dir).await {
        eprintln!("warning: {e}");
    }
}

/// The administrator, acting on a data directory's store (or a running server's state) through
/// the same typed operations the API's adapters call: every rule and check applies.
pub struct Admin {
    shared: Arc<Shared>,
    user: podiam_store::User,
    /// The data directory whose store was opened for this handle (and is closed, and its
    /// server synced after a write, by [`Admin::close`]).
    opened: Option<std::path::PathBuf>,
    audit: crate::audit::Audit,
}

pub use crate::eks::{CreateAssociation, CreateCluster};
pub use crate::iam::{CreateOpenIdConnectProvider, CreateRole};
pub use podiam_store::{Cluster, ManagedPolicy, OidcProvider, PodIdentityAssociation, Role};

fn admin_of(state: &State) -> Option<podiam_store::User> {
    state
        .settings
        .get("admin_access_key_id")
        .and_then(|k| state.access_keys.get(k))
        .and_then(|k| state.users.get(&k.user_name.to_ascii_lowercase()))
        .cloned()
}

impl Admin {
    /// Opens the data directory as the administrator would call the API.
    pub async fn open(data_dir: &Path) -> Result<Admin, LocalError> {
        let (store, state) = open(data_dir).await?;
        let user = admin_of(&state)
            .ok_or_else(|| LocalError::NotInitialised(data_dir.display().to_string()))?;
        let setting = |k: &str| state.settings.get(k).cloned().unwrap_or_default();
        let config = Config {
            account_id: setting("account_id"),
            region: setting("region"),
            partition: "aws".into(),
            explain_denials: true,
            require_node_binding: false,
            limits: podiam_policy::Limits::default(),
            issuer_url: setting("issuer_url"),
        };
        let shared = Shared::new(config, store, state, None, crate::ServerClock::default())?;
        Ok(Admin {
            shared: Arc::new(shared),
            user,
            opened: Some(data_dir.to_path_buf()),
            audit: crate::audit::Audit::disabled(),
        })
    }

    /// Acts on a running server's own state (`podiam bench`, tests): no second connection to
    /// its store.
    pub fn on(shared: &Arc<Shared>) -> Result<Admin, LocalError> {
        let user = admin_of(&shared.snapshot())
            .ok_or_else(|| LocalError::NotInitialised("this server's store".into()))?;
        Ok(Admin {
            shared: Arc::clone(shared),
            user,
            opened: None,
            audit: crate::audit::Audit::disabled(),
        })
    }

    /// Closes the store if this handle opened it, and then, if anything was written, waits
    /// until the server serving the directory sees it.
    pub async fn close(self) {
        if let Some(dir) = &self.opened {
            self.shared.store().close().await;
            if self.shared.metrics.store_writes.get() > 0 {
                sync_server(dir).await;
            }
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            shared: &self.shared,
            caller: Some(Caller::User(self.user.clone())),
            facts: RequestFacts {
                source_ip: None,
                secure_transport: true,
                user_agent: Some("podiam-cli".into()),
                now: self.shared.clock.now_ms(),
            },
            request_id: "local",
            audit: &self.audit,
            offline: self.opened.is_some(),
        }
    }

    // === IAM ===

    pub async fn create_role(&self, input: CreateRole) -> Result<Role, LocalError> {
        crate::iam::roles::create_role(&self.ctx(), input)
            .await
            .map_err(iam_error)
    }

    pub fn get_role(&self, name: &str) -> Result<Role, LocalError> {
        crate::iam::roles::get_role(&self.ctx(), name).map_err(iam_error)
    }

    pub async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> Result<(), LocalError> {
        crate::iam::roles::attach_role_policy(&self.ctx(), role, policy_arn)
            .await
            .map_err(iam_error)
    }

    pub async fn update_assume_role_policy(
        &self,
        role: &str,
        document: &str,
    ) -> Result<(), LocalError> {
        crate::iam::roles::update_assume_role_policy(&self.ctx(), role, document)
            .await
            .map_err(iam_error)
    }

    /// Every role (`iam:ListRoles`), sorted by name.
    pub fn list_roles(&self) -> Result<Vec<Role>, LocalError> {
        let ctx = self.ctx();
        let state = self.shared.snapshot();
        ctx.check(&state, "iam:ListRoles", "*").map_err(iam_error)?;
        Ok(state.roles.values().cloned().collect())
    }

    pub async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> Result<(), LocalError> {
        crate::iam::roles::detach_role_policy(&self.ctx(), role, policy_arn)
            .await
            .map_err(iam_error)
    }

    pub async fn delete_role_policy(
        &self,
        role: &str,
        policy_name: &str,
    ) -> Result<(), LocalError> {
        crate::iam::roles::delete_role_policy(&self.ctx(), role, policy_name)
            .await
            .map_err(iam_error)
    }

    /// Refused (DeleteConflict) while policies are attached or inline policies remain.
    pub async fn delete_role(&self, role: &str) -> Result<(), LocalError> {
        crate::iam::roles::delete_role(&self.ctx(), role)
            .await
            .map_err(iam_error)
    }

    pub fn get_policy(&self, arn: &str) -> Result<ManagedPolicy, LocalError> {
        crate::iam::policies::get_policy(&self.ctx(), arn).map_err(iam_error)
    }

    pub async fn create_oidc_provider(
        &self,
        input: CreateOpenIdConnectProvider,
    ) -> Result<OidcProvider, LocalError> {
        crate::iam::oidc::create_oidc_provider(&self.ctx(), input)
            .await
            .map_err(iam_error)
    }

    pub fn get_oidc_provider(&self, arn: &str) -> Result<OidcProvider, LocalError> {
        crate::iam::oidc::get_oidc_provider(&self.ctx(), arn).map_err(iam_error)
    }

    // === EKS ===

    pub async fn create_cluster(&self, input: CreateCluster) -> Result<Cluster, LocalError> {
        crate::eks::create_cluster(&self.ctx(), input)
            .await
            .map_err(eks_error)
    }

    pub fn list_clusters(&self) -> Result<Vec<String>, LocalError> {
        crate::eks::list_clusters(&self.ctx()).map_err(eks_error)
    }

    pub fn clusters(&self) -> Result<Vec<Cluster>, LocalError> {
        crate::eks::clusters(&self.ctx()).map_err(eks_error)
    }

    /// Refused (ResourceInUse) while the cluster has associations.
    pub async fn delete_cluster(&self, name: &str) -> Result<Cluster, LocalError> {
        crate::eks::delete_cluster(&self.ctx(), name)
            .await
            .map_err(eks_error)
    }

    pub fn associations(&self, cluster: &str) -> Result<Vec<PodIdentityAssociation>, LocalError> {
        crate::eks::associations(&self.ctx(), cluster).map_err(eks_error)
    }

    pub async fn delete_association(
        &self,
        cluster: &str,
        id: &str,
    ) -> Result<PodIdentityAssociation, LocalError> {
        crate::eks::delete_association(&self.ctx(), cluster, id)
            .await
            .map_err(eks_error)
    }

    pub async fn create_association(
        &self,
        cluster: &str,
        input: CreateAssociation,
    ) -> Result<PodIdentityAssociation, LocalError> {
        crate::eks::create_association(&self.ctx(), cluster, input)
            .await
            .map_err(eks_error)
    }
}

/// Opens the data directory as the administrator, runs `op`, and closes it.
pub async fn as_admin<T>(
    data_dir: &Path,
    op: impl AsyncFnOnce(&Admin) -> Result<T, LocalError>,
) -> Result<T, LocalError> {
    let admin = Admin::open(data_dir).await?;
    let out = op(&admin).await;
    admin.close().await;
    out
}

/// Signs a projected ServiceAccount token with a running server's built-in issuer, at the
/// server's time.
pub fn sign_token_on(
    shared: &Shared,
    token: impl FnOnce(&str) -> ServiceAccountToken,
) -> Result<String, LocalError> {
    let now = shared.clock.now();
    let claims = token(&shared.config.issuer_url).claims(now);
    shared
        .keys()
        .issuer
        .sign(&claims, now)
        .map_err(|e| LocalError::Sign(e.to_string()))
}

/// The CLI's time: the system clock (the server's requests read its injected clock instead).
fn now_ms() -> i64 {
    crate::auth::millis(SystemTime::now())
}

/// A registered cluster's token keys, for `podiam cluster oidc-documents`.
#[derive(Clone, Debug)]
pub struct ClusterKeys {
    /// The issuer its tokens carry now (`iss`).
    pub issuer_url: String,
    /// Its tokens come from podiam's built-in issuer.
    pub builtin: bool,
    /// The JWKS document (the built-in issuer's published keys, or the one given at
    /// registration); `None` for an issuer whose keys podiam fetches.
    pub jwks: Option<String>,
}

/// The keys of cluster `name`; `None` when no such cluster is registered.
pub async fn cluster_keys(data_dir: &Path, name: &str) -> Result<Option<ClusterKeys>, LocalError> {
    let (store, state) = open(data_dir).await?;
    store.close().await;
    let Some(c) = state.clusters.get(name) else {
        return Ok(None);
    };
    let builtin = state.settings.get("issuer_url") == Some(&c.issuer_url);
    let jwks = if builtin {
        let doc = Keys::from_state(&state)?.issuer.jwks(SystemTime::now());
        serde_json::to_string(&doc).ok()
    } else {
        c.static_jwks.clone()
    };
    Ok(Some(ClusterKeys {
        issuer_url: c.issuer_url.clone(),
        builtin,
        jwks,
    }))
}
