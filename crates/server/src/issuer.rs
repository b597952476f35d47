//! The built-in OIDC issuer (discovery and JWKS, as kube-apiserver serves them) and the key rings
//! that live in the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use podiam_identity::session::SessionKey;
use podiam_identity::{IssuerKey, IssuerKeyRing, Jwks, SessionKeyRing, SystemRng};
use podiam_store::{SealingKey, SigningKey, State};

use crate::error::AwsError;

/// The key rings, rebuilt from the state when keys change.
pub struct Keys {
    pub issuer: IssuerKeyRing,
    /// The issuer's published keys, ready for verification.
    pub jwks: Arc<Jwks>,
    pub sessions: SessionKeyRing,
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("stored issuer key `{kid}` is unusable: {problem}")]
    Issuer { kid: String, problem: String },
    #[error("stored session key `{id}` is unusable: {problem}")]
    Session { id: String, problem: String },
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

impl Keys {
    pub fn from_state(state: &State) -> Result<Keys, KeyError> {
        let mut issuer_keys = Vec::new();
        for k in state.signing_keys.values() {
            let bad = |problem: String| KeyError::Issuer {
                kid: k.kid.clone(),
                problem,
            };
            let der = b64()
                .decode(&k.private_key_pkcs8)
                .map_err(|e| bad(e.to_string()))?;
            issuer_keys.push(
                IssuerKey::from_pkcs8_der(&der, time(k.created), k.retire_after.map(time))
                    .map_err(|e| bad(e.to_string()))?,
            );
        }
        let issuer = IssuerKeyRing::new(issuer_keys);
        // Every key, each with its retirement: whether one verifies is decided per request
        // against the request's clock, not here.
        let jwks = issuer.verification_jwks().map_err(|e| KeyError::Issuer {
            kid: "(ring)".into(),
            problem: e.to_string(),
        })?;
        let mut session_keys = Vec::new();
        for k in state.sealing_keys.values() {
            let bad = |problem: String| KeyError::Session {
                id: k.id.clone(),
                problem,
            };
            let id: u32 = k.id.parse().map_err(|_| bad("id is not a number".into()))?;
            let bytes = b64().decode(&k.key).map_err(|e| bad(e.to_string()))?;
            session_keys.push(
                SessionKey::from_bytes(id, &bytes, time(k.created), k.retire_after.map(time))
                    .map_err(|e| bad(e.to_string()))?,
            );
        }
        let sessions = SessionKeyRing::new(session_keys).map_err(|e| KeyError::Session {
            id: "(ring)".into(),
            problem: e.to_string(),
        })?;
        Ok(Keys {
            issuer,
            jwks: Arc::new(jwks),
            sessions,
        })
    }
}

/// A new issuer signing key, as stored.
pub fn new_signing_key(now_ms: i64) -> Result<SigningKey, KeyError> {
    let key = IssuerKey::generate(time(now_ms)).map_err(|e| KeyError::Generate(e.to_string()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(SigningKey {
        kid: key.kid().to_string(),
        private_key_pkcs8: b64().encode(der),
        created: now_ms,
        retire_after: None,
    })
}

/// A new session-sealing key, as stored.
pub fn new_sealing_key(id: u32, now_ms: i64) -> Result<SealingKey, KeyError> {
    let key = SessionKey::generate(id, &SystemRng, time(now_ms))
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(SealingKey {
        id: id.to_string(),
        key: b64().encode(key.secret_bytes()),
        created: now_ms,
        retire_after: None,
    })
}

pub fn parse_jwks(text: &str) -> Result<Jwks, AwsError> {
    Jwks::from_json(text.as_bytes())
        .map_err(|e| AwsError::invalid_input(format!("The JWKS is not valid: {e}")))
}

/// Checks a static JWKS given at provider creation.
pub fn check_jwks(text: &str) -> Result<(), AwsError> {
    let jwks = parse_jwks(text)?;
    if jwks.keys().is_empty() {
        return Err(AwsError::invalid_input(
            "The JWKS holds no usable RSA or EC key: pass the output of `kubectl get --raw /openid/v1/jwks`",
        ));
    }
    Ok(())
}
