//! The few things the agent reads from a pod's token before EKS Auth has verified it: the pod UID
//! (only as a cache key) and `exp` (only to refuse a token that cannot work anyway). Whether a
//! request may be served from the cache is decided by the token's SHA-256, which must equal the
//! hash of a token the server accepted.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Tokens longer than this are refused without a server call (EKS Auth's own limit is lower
/// than any projected token Kubernetes writes would reach).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The SHA-256 of a token: what the cache compares.
pub type TokenHash = [u8; 32];

/// What an unverified token says about its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedPodToken {
    /// `kubernetes.io.pod.uid`.
    pub pod_uid: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: Option<i64>,
}

/// Why a token was refused before any server call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization` header, or an empty one.
    #[error("service account token cannot be empty")]
    Empty,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("service account token is {len} bytes, more than {MAX_TOKEN_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not a JWT whose payload carries `kubernetes.io.pod.uid`.
    #[error("service account token cannot be parsed: {reason}")]
    Malformed {
        /// Why.
        reason: &'static str,
    },
    /// `exp` has passed.
    #[error("service account token expired at {exp}, it is now {now}")]
    Expired {
        /// `exp`.
        exp: i64,
        /// Now, seconds since the epoch.
        now: i64,
    },
}

#[derive(Deserialize)]
struct Payload {
    exp: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

#[derive(Deserialize)]
struct KubernetesClaim {
    pod: Option<PodRef>,
}

#[derive(Deserialize)]
struct PodRef {
    uid: Option<String>,
}

/// Reads the pod UID and `exp` from `token` without verifying anything, and checks `exp`
/// against `now` (seconds since the epoch).
///
/// # Errors
/// [`TokenError`] for an empty, oversized, malformed or expired token.
pub fn read_unverified(token: &str, now: i64) -> Result<UnverifiedPodToken, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge { len: token.len() });
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed {
            reason: "not three dot-separated segments",
        });
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed {
            reason: "payload is not base64url",
        })?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed {
        reason: "payload is not a JSON object of claims",
    })?;
    let pod_uid = payload
        .kubernetes
        .and_then(|k| k.pod)
        .and_then(|p| p.uid)
        .filter(|u| !u.is_empty())
        .ok_or(TokenError::Malformed {
            reason: "no `kubernetes.io.pod.uid` claim (not a projected pod token)",
        })?;
    if let Some(exp) = payload.exp
        && exp <= now
    {
        return Err(TokenError::Expired { exp, now });
    }
    Ok(UnverifiedPodToken {
        pod_uid,
        expires_at: payload.exp,
    })
}

/// SHA-256 of the token.
#[must_use]
pub fn token_hash(token: &str) -> TokenHash {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_pod_uid_and_exp() {
        let t =
            jwt(r#"{"exp":200,"kubernetes.io":{"namespace":"a","pod":{"name":"p","uid":"u-1"}}}"#);
        assert_eq!(
            read_unverified(&t, 100),
            Ok(UnverifiedPodToken {
                pod_uid: "u-1".into(),
                expires_at: Some(200)
            })
        );
        assert_eq!(
            read_unverified(&t, 200),
            Err(TokenError::Expired { exp: 200, now: 200 })
        );
    }

    #[test]
    fn refuses_what_is_not_a_pod_token() {
        assert_eq!(read_unverified("", 0), Err(TokenError::Empty));
        assert!(matches!(
            read_unverified("a.b", 0),
            Err(TokenError::Malformed { .. })
        ));
        assert!(matches!(
            read_unverified("a.!!.c", 0),
            Err(TokenError::Malformed { .. })
        ));
        assert!(matches!(
            read_unverified(&jwt(r#"{"sub":"x"}"#), 0),
            Err(TokenError::Malformed { .. })
        ));
        assert!(matches!(
            read_unverified(&jwt(r#"{"kubernetes.io":{"pod":{"uid":""}}}"#), 0),
            Err(TokenError::Malformed { .. })
        ));
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            read_unverified(&big, 0),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn hash_distinguishes_tokens() {
        assert_ne!(token_hash("a.b.c"), token_hash("a.b.d"));
        assert_eq!(token_hash("a.b.c"), token_hash("a.b.c"));
    }
}
