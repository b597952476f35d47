//! Operations the CLI runs against the data directory directly (`podiam token create`,
//! `podiam issuer rotate`, `podiam create iamserviceaccount`). A running server notices the
//! writes within a couple of seconds.

use std::path::Path;
use std::time::{Duration, SystemTime};

use podiam_identity::ServiceAccountToken;
use podiam_store::{Change, State, Store};

use crate::auth::{Caller, RequestFacts};
use crate::error::AwsError;
use crate::issuer::{Keys, new_sealing_key, new_signing_key};
use crate::query::Params;
use crate::state::{Config, Shared};
use crate::{Ctx, now_ms};

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
    #[error("{code}: {message}")]
    Aws { code: &'static str, message: String },
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

impl From<AwsError> for LocalError {
    fn from(e: AwsError) -> Self {
        LocalError::Aws {
            code: e.code,
            message: e.message,
        }
    }
}

/// The store the CLI works on: `PODIAM_DATABASE_URL` (with `PODIAM_MASTER_KEY_FILE`) when set,
/// as inside a `podiam server` pod; otherwise the SQLite file in the data directory.
async fn open(data_dir: &Path) -> Result<(Store, State), LocalError> {
    let (store, place) = match std::env::var("PODIAM_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let master_key = match std::env::var_os("PODIAM_MASTER_KEY_FILE") {
                Some(f) => Some(
                    podiam_store::MasterKey::from_file(Path::new(&f))
                        .map_err(podiam_store::StoreError::from)?,
                ),
                None => None,
            };
            (
                Store::open(&url).await?.with_master_key(master_key),
                "the database in PODIAM_DATABASE_URL".to_string(),
            )
        }
        _ => {
            let db = data_dir.join("podiam.db");
            if !db.exists() {
                return Err(LocalError::NotInitialised(data_dir.display().to_string()));
            }
            (
                Store::open_sqlite(&db).await?,
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
pub async fn settings(
    data_dir: &Path,
) -> Result<std::collections::BTreeMap<String, String>, LocalError> {
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
    Ok(id)
}

/// The changes that retire every current key of a ring at `now + keep_old` and drop the keys
/// already past their retirement (no token they signed or sealed is still valid).
fn retire_all<K: Clone>(
    keys: &std::collections::BTreeMap<String, K>,
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
    crate::issuer::check_jwks(jwks)?;
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
            .map(|()| JwksReplaced::Yes),
    };
    store.close().await;
    Ok(result?)
}

/// An EKS operation the CLI runs as the administrator.
pub enum EksOp {
    CreateCluster(serde_json::Value),
    ListClusters,
    CreateAssociation {
        cluster: String,
        body: serde_json::Value,
    },
}

/// Opens the data directory as the administrator would call the API.
async fn admin_shared(data_dir: &Path) -> Result<(Store, Shared, podiam_store::User), LocalError> {
    let (store, state) = open(data_dir).await?;
    let admin = state
        .settings
        .get("admin_access_key_id")
        .and_then(|k| state.access_keys.get(k))
        .and_then(|k| state.users.get(&k.user_name.to_ascii_lowercase()))
        .cloned()
        .ok_or_else(|| LocalError::NotInitialised(data_dir.display().to_string()))?;
    let setting = |k: &str| state.settings.get(k).cloned().unwrap_or_default();
    let config = Config {
        account_id: setting("account_id"),
        region: setting("region"),
        partition: "aws".into(),
        explain_denials: true,
        limits: podiam_policy::Limits::default(),
        issuer_url: setting("issuer_url"),
    };
    let shared = Shared::new(config, store.clone(), state)?;
    Ok((store, shared, admin))
}

fn admin_ctx<'a>(
    shared: &'a Shared,
    admin: podiam_store::User,
    audit: &'a crate::audit::Audit,
) -> Ctx<'a> {
    Ctx {
        shared,
        caller: Some(Caller::User(admin)),
        facts: RequestFacts {
            source_ip: None,
            secure_transport: true,
            user_agent: Some("podiam-cli".into()),
            now: now_ms(),
        },
        request_id: "local",
        audit,
    }
}

/// Runs one EKS operation as the administrator against the data directory.
pub async fn eks_as_admin(data_dir: &Path, op: EksOp) -> Result<serde_json::Value, LocalError> {
    let (store, shared, admin) = admin_shared(data_dir).await?;
    let audit = crate::audit::Audit::disabled();
    let ctx = admin_ctx(&shared, admin, &audit);
    let out = match op {
        EksOp::CreateCluster(body) => crate::eks::create_cluster(&ctx, &body).await,
        EksOp::ListClusters => crate::eks::list_clusters(&ctx),
        EksOp::CreateAssociation { cluster, body } => {
            crate::eks::create_association(&ctx, &cluster, &body).await
        }
    };
    store.close().await;
    Ok(out.map_err(|e| crate::eks::rest_error(e, false))?)
}

/// Runs one IAM action as the administrator against the data directory.
pub async fn iam_as_admin(
    data_dir: &Path,
    action: &str,
    params: &[(&str, &str)],
) -> Result<String, LocalError> {
    let (store, shared, admin) = admin_shared(data_dir).await?;
    let out = run_iam(&shared, admin, action, params).await;
    store.close().await;
    out
}

/// Runs one IAM action as the administrator on a running server's own state (`podiam bench`,
/// tests): no second connection to its store.
pub async fn iam_on(
    shared: &Shared,
    action: &str,
    params: &[(&str, &str)],
) -> Result<String, LocalError> {
    let state = shared.snapshot();
    let admin = state
        .settings
        .get("admin_access_key_id")
        .and_then(|k| state.access_keys.get(k))
        .and_then(|k| state.users.get(&k.user_name.to_ascii_lowercase()))
        .cloned()
        .ok_or_else(|| LocalError::NotInitialised("this server's store".into()))?;
    run_iam(shared, admin, action, params).await
}

async fn run_iam(
    shared: &Shared,
    admin: podiam_store::User,
    action: &str,
    params: &[(&str, &str)],
) -> Result<String, LocalError> {
    let audit = crate::audit::Audit::disabled();
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action)
        .append_pair("Version", "2010-05-08");
    for (k, v) in params {
        form.append_pair(k, v);
    }
    let params = Params::parse(form.finish().as_bytes());
    let ctx = admin_ctx(shared, admin, &audit);
    Ok(crate::iam::handle(&ctx, action, &params).await?)
}

/// Signs a projected ServiceAccount token with a running server's built-in issuer.
pub fn sign_token_on(
    shared: &Shared,
    token: impl FnOnce(&str) -> ServiceAccountToken,
) -> Result<String, LocalError> {
    let now = SystemTime::now();
    let claims = token(&shared.config.issuer_url).claims(now);
    shared
        .keys()
        .issuer
        .sign(&claims, now)
        .map_err(|e| LocalError::Sign(e.to_string()))
}
