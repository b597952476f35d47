//! The agent's (and the webhook's) own AWS identity from the AWS SDK for Rust's standard credential
//! chain (`aws-config`): environment variables, the shared config and credentials files with
//! `AWS_PROFILE` (`credential_process`, `source_profile`, SSO), web identity
//! (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, the DaemonSet's default), container
//! credentials, IMDS. Only the credentials come from the SDK: requests are still signed by
//! podiam's own SigV4.
//!
//! [`ChainKey`] caches what the chain answered: temporary credentials until five minutes before
//! they expire (each refresh re-reads the web identity token file kubelet rotates); credentials
//! without an expiry (a key in the environment or a profile) until the shared config or
//! credentials file changes, when the chain is built anew (the SDK parses the files once per
//! chain), so a rotated key in a mounted Secret is picked up as `--credentials-file` picks it up.
//! A failed refresh keeps the credentials it had while they are unexpired.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::Region;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use podiam_identity::credentials::{AccessKeyId, SecretAccessKey};
use podiam_identity::sigv4::{CurrentKey, KeyError, KeyProvider, SigningCredentials};

use crate::clock::AgentClock;

/// Temporary credentials are renewed this long before they expire.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// One resolution of the chain (an STS call for web identity, a process for
/// `credential_process`) gets this long.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds the chain (again, after the shared files changed).
pub type BuildChain =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = SharedCredentialsProvider> + Send>> + Send + Sync>;

/// A file's (modification time, length), or `None` when it does not exist.
type Stamp = Option<(SystemTime, u64)>;

struct Cached {
    key: Arc<SigningCredentials>,
    expires: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    chain: Option<SharedCredentialsProvider>,
    stamps: Vec<Stamp>,
    cached: Option<Cached>,
}

/// The standard chain as a [`KeyProvider`].
pub struct ChainKey {
    build: BuildChain,
    watched: Vec<PathBuf>,
    clock: AgentClock,
    state: tokio::sync::Mutex<State>,
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    /// The SDK's default chain for `region` (STS calls of web identity and profiles sign for it),
    /// watching the shared files `env` names (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`,
    /// else `~/.aws/config` and `~/.aws/credentials`). The chain itself reads the process's
    /// environment.
    #[must_use]
    pub fn standard(region: &str, clock: AgentClock, env: impl Fn(&str) -> Option<String>) -> Self {
        let home = env("HOME").map(PathBuf::from);
        let file = |var: &str, name: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
        };
        let watched = [
            file("AWS_CONFIG_FILE", "config"),
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let region = region.to_owned();
        let build: BuildChain = Box::new(move || {
            let region = Region::new(region.clone());
            Box::pin(async move {
                SharedCredentialsProvider::new(
                    DefaultCredentialsChain::builder()
                        .region(region)
                        .build()
                        .await,
                )
            })
        });
        Self::new(build, watched, clock)
    }

    /// A chain made by `build`, rebuilt when one of `watched` changes.
    #[must_use]
    pub fn new(build: BuildChain, watched: Vec<PathBuf>, clock: AgentClock) -> Self {
        Self {
            build,
            watched,
            clock,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    fn stamps(&self) -> Vec<Stamp> {
        self.watched
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            })
            .collect()
    }

    /// The key to sign with now (one caller resolves; the others wait for its answer).
    ///
    /// # Errors
    /// [`KeyError::Provider`] when the chain found nothing and no unexpired key is kept.
    pub async fn resolve(&self) -> Result<CurrentKey, KeyError> {
        let mut state = self.state.lock().await;
        let stamps = self.stamps();
        if state.chain.is_none() || state.stamps != stamps {
            if state.chain.is_some() {
                tracing::info!(files = ?self.watched, "the shared AWS config or credentials file changed; reading it again");
            }
            state.chain = Some((self.build)().await);
            state.stamps = stamps;
            // A key read from the old files may be one that was rotated away.
            if state.cached.as_ref().is_some_and(|c| c.expires.is_none()) {
                state.cached = None;
            }
        }
        let now = self.clock.wall();
        if let Some(c) = &state.cached
            && c.expires.is_none_or(|e| now + REFRESH_AHEAD < e)
        {
            return Ok(CurrentKey::fresh(Arc::clone(&c.key)));
        }
        let Some(chain) = state.chain.clone() else {
            return Err(KeyError::Provider("no credential chain".to_owned()));
        };
        let answer = match tokio::time::timeout(RESOLVE_TIMEOUT, chain.provide_credentials()).await
        {
            Ok(Ok(c)) => convert(&c),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())),
        };
        match answer {
            Ok(fresh) => {
                let key = Arc::clone(&fresh.key);
                state.cached = Some(fresh);
                Ok(CurrentKey::fresh(key))
            }
            Err(why) => {
                let problem = KeyError::Provider(format!("the AWS credential chain: {why}"));
                match &state.cached {
                    Some(c) if c.expires.is_none_or(|e| now < e) => Ok(CurrentKey {
                        key: Arc::clone(&c.key),
                        kept_because: Some(problem),
                    }),
                    _ => Err(problem),
                }
            }
        }
    }
}

impl KeyProvider for ChainKey {
    fn current(&self) -> Pin<Box<dyn Future<Output = Result<CurrentKey, KeyError>> + Send + '_>> {
        Box::pin(self.resolve())
    }
}

fn convert(c: &aws_credential_types::Credentials) -> Result<Cached, String> {
    let id = AccessKeyId::parse(c.access_key_id())
        .map_err(|e| format!("the chain's access key ID: {e}"))?;
    Ok(Cached {
        key: Arc::new(SigningCredentials {
            access_key_id: id,
            secret_access_key: SecretAccessKey::new(c.secret_access_key()),
            session_token: c.session_token().map(str::to_owned),
        }),
        expires: c.expiry(),
    })
}

/// The error and its causes, `: `-separated (the SDK's top-level messages say little).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    for _ in 0..8 {
        let Some(c) = cause else { break };
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests;
