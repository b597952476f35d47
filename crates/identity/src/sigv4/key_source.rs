//! Where a podiam client's own key comes from (the node agent's, the webhook's): the environment,
//! a shared-credentials file's profile re-read when the file changes, so a rotated Kubernetes
//! Secret is picked up without a restart, or a [`KeyProvider`] the caller supplies (the node
//! agent's is the AWS SDK's standard credential chain: web identity, profiles, containers, IMDS).
//!
//! This is the one place the crate reads a file: both clients need the same re-read rule, and
//! the rule is only correct next to the read it governs. No network, no clock, no logging: a
//! key kept from before comes back with the reason ([`CurrentKey::kept_because`]) for the caller
//! to log. A [`KeyProvider`] may do all three; it lives outside this crate.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::client::{CredentialsError, SigningCredentials};

/// Why a client's key could not be read.
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
    /// The file lacks the profile or one of its keys, or the key ID is malformed.
    #[error("`{path}`: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: CredentialsError,
    },
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` are half set or malformed.
    #[error("the environment: {0}")]
    Environment(CredentialsError),
    /// A [`KeyProvider`] found no usable key (no secret in the text).
    #[error("{0}")]
    Provider(String),
}

/// A key source outside this crate (the AWS credential chain), asked before every signature; it
/// caches and refreshes as it sees fit.
pub trait KeyProvider: fmt::Debug + Send + Sync {
    /// The key to sign with now.
    fn current(&self) -> Pin<Box<dyn Future<Output = Result<CurrentKey, KeyError>> + Send + '_>>;
}

/// The key to sign with now.
#[derive(Debug)]
#[must_use = "a kept key's reason is for the caller to log"]
pub struct CurrentKey {
    /// The key.
    pub key: Arc<SigningCredentials>,
    /// Why the credentials file's current contents were not used and the key read before was
    /// kept (a half-written rewrite); `None` when `key` is what the file holds now.
    pub kept_because: Option<KeyError>,
}

impl CurrentKey {
    /// `key`, read just now.
    pub fn fresh(key: Arc<SigningCredentials>) -> Self {
        Self {
            key,
            kept_because: None,
        }
    }
}

/// Where the key comes from. Clones share one file's cache.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A fixed key (the environment, tests).
    Static(Arc<SigningCredentials>),
    /// A shared-credentials file's profile, re-read when the file changes.
    File(Arc<CredentialsFile>),
    /// Someone else's (the AWS credential chain).
    Provider(Arc<dyn KeyProvider>),
}

impl KeySource {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) from `env`, if set.
    ///
    /// # Errors
    /// [`KeyError::Environment`] when only one of the pair is set or the ID is malformed.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, KeyError> {
        let key = SigningCredentials::from_env(env).map_err(KeyError::Environment)?;
        Ok(key.map(|k| Self::Static(Arc::new(k))))
    }

    /// A credentials file and profile; read once now, so a bad file stops the client before it
    /// serves anything.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or lacks the profile's keys.
    pub fn file(path: impl Into<PathBuf>, profile: impl Into<String>) -> Result<Self, KeyError> {
        let file = CredentialsFile {
            path: path.into(),
            profile: profile.into(),
            cached: Mutex::new(None),
        };
        // Nothing was read before, so no key is kept: an unusable file is an error here.
        let _first = file.current()?;
        Ok(Self::File(Arc::new(file)))
    }

    /// The key to sign with now.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read, or changed into something unusable before any
    /// key was read from it; the provider's error.
    pub async fn current(&self) -> Result<CurrentKey, KeyError> {
        match self {
            Self::Static(k) => Ok(CurrentKey::fresh(Arc::clone(k))),
            Self::File(f) => f.current(),
            Self::Provider(p) => p.current().await,
        }
    }
}

// === CredentialsFile ===

/// A file's (modification time, length): the file is re-read when either changes.
type FileStamp = (SystemTime, u64);

/// A shared-credentials file's profile and the key last read from it.
pub struct CredentialsFile {
    path: PathBuf,
    profile: String,
    cached: Mutex<Option<(FileStamp, Arc<SigningCredentials>)>>,
}

impl fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsFile")
            .field("path", &self.path)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl CredentialsFile {
    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The profile (`[name]`).
    #[must_use]
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The cached key while the file's stamp is unchanged; else the file's key, read again.
    fn current(&self) -> Result<CurrentKey, KeyError> {
        let read_err = |source| KeyError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut cached = lock(&self.cached);
        if let Some((s, k)) = cached.as_ref()
            && *s == stamp
        {
            return Ok(CurrentKey::fresh(Arc::clone(k)));
        }
        let text = std::fs::read_to_string(&self.path).map_err(read_err)?;
        match SigningCredentials::from_shared_credentials(&text, &self.profile) {
            Ok(k) => {
                let k = Arc::new(k);
                *cached = Some((stamp, Arc::clone(&k)));
                Ok(CurrentKey::fresh(k))
            }
            // A Secret being rewritten can be read half-written: keep signing with the key we
            // had rather than fail requests until the write completes.
            Err(source) => {
                let problem = KeyError::Invalid {
                    path: self.path.clone(),
                    source,
                };
                match cached.as_ref() {
                    Some((_, k)) => Ok(CurrentKey {
                        key: Arc::clone(k),
                        kept_because: Some(problem),
                    }),
                    None => Err(problem),
                }
            }
        }
    }
}

/// The cache holds no invariant a panicking holder could break: take it back from a poisoned lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
