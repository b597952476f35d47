//! Web identity tokens whose signature has been verified, by SHA-256 of the token.
//!
//! A pod's SDK presents the same projected token on every refresh until kubelet rotates it, so the
//! RSA verification (the largest cost of AssumeRoleWithWebIdentity) need not be repeated. An entry
//! is used only with the very key set that verified it (a rotated or removed key invalidates it),
//! and the time and audience claims are checked again on every use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use podiam_identity::Jwks;
use podiam_identity::jwt::{Claims, JwtError};

/// Bound on remembered tokens; past it, expired entries go, then everything.
const MAX_ENTRIES: usize = 65_536;
/// AWS allows five minutes of clock skew.
const LEEWAY_SECONDS: i64 = 300;

struct Entry {
    jwks: Arc<Jwks>,
    claims: Arc<Claims>,
    exp: i64,
    key_not_after: Option<SystemTime>,
}

/// A cache hit.
pub struct Verified {
    pub claims: Arc<Claims>,
    jwks: Arc<Jwks>,
    /// When the key that verified the token retires, if it does.
    key_not_after: Option<SystemTime>,
}

impl Verified {
    /// Whether `current` is the very key set that verified the token (not merely an equal one:
    /// any reload of the keys starts over) and the key that verified it has not retired by
    /// `now` (the request's time).
    pub fn is_current(&self, current: &Arc<Jwks>, now: SystemTime) -> bool {
        Arc::ptr_eq(&self.jwks, current) && self.key_not_after.is_none_or(|t| now < t)
    }
}

#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

pub fn fingerprint(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl VerifiedTokens {
    /// The claims of a token verified earlier, and the key set that verified it: the caller
    /// uses them only if that is still the provider's current key set ([`Verified::is_current`]).
    pub fn get(&self, fingerprint: &[u8; 32]) -> Option<Verified> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(fingerprint)?;
        Some(Verified {
            claims: Arc::clone(&e.claims),
            jwks: Arc::clone(&e.jwks),
            key_not_after: e.key_not_after,
        })
    }

    /// Remembers a verification by `jwks`, whose verifying key retires at `key_not_after`.
    pub fn put(
        &self,
        fingerprint: [u8; 32],
        jwks: &Arc<Jwks>,
        key_not_after: Option<SystemTime>,
        claims: Arc<Claims>,
        now: i64,
    ) {
        let Some(exp) = claims.expires_at() else {
            return;
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.retain(|_, e| e.exp + LEEWAY_SECONDS > now);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(
                fingerprint,
                Entry {
                    jwks: Arc::clone(jwks),
                    claims,
                    exp,
                    key_not_after,
                },
            );
        }
    }
}

/// The checks that depend on time and on the provider's client IDs, which a cached signature
/// does not settle: as the verifier applies them.
pub fn recheck(claims: &Claims, audiences: &[String], now: i64) -> Result<(), JwtError> {
    if !claims.audiences().iter().any(|a| audiences.contains(a)) {
        return Err(JwtError::AudienceMismatch {
            got: claims.audiences().to_vec(),
            expected: audiences.to_vec(),
        });
    }
    let exp = claims.expires_at().unwrap_or(i64::MIN);
    if now >= exp.saturating_add(LEEWAY_SECONDS) {
        return Err(JwtError::TokenExpired { exp, now });
    }
    if let Some(nbf) = claims.not_before()
        && now.saturating_add(LEEWAY_SECONDS) < nbf
    {
        return Err(JwtError::NotYetValid { nbf, now });
    }
    Ok(())
}
