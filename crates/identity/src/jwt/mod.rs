//! JWT (compact JWS) verification against a JWKS, the way STS checks a `WebIdentityToken`.
//!
//! The flow the server runs for `AssumeRoleWithWebIdentity`:
//!
//! 1. [`UnverifiedJwt::parse`] splits and decodes the token (size, base64url, JSON, `alg`),
//!    so the server can read the unverified `iss` and find the OIDC provider;
//! 2. it fetches or looks up that provider's [`Jwks`];
//! 3. [`UnverifiedJwt::verify`] selects the key by `kid`, checks the signature, then `iss`, `aud`,
//!    `exp`, `nbf` and `iat` under a [`Validation`], and returns a [`VerifiedJwt`].
//!
//! [`JwtError::UnknownKeyId`] is its own variant so the caller can re-fetch the JWKS once (the
//! issuer may have rotated its key) before giving up.
//!
//! Only asymmetric algorithms are accepted. `alg: none` and the HMAC family are refused outright:
//! a verifier that fed an RSA public key to HMAC would accept tokens "signed" with the public key
//! (algorithm confusion). Each key is parsed for the algorithm families its `kty`/`crv` allow,
//! and a header `alg` that does not fit the selected key is an error, never a fallback.
//!
//! Tokens are credentials: nothing here logs them, and no error carries the token text.

mod claims;
mod jwk;
mod verify;

pub use claims::{
    AWS_SOURCE_IDENTITY_CLAIM, AWS_TAGS_CLAIM, ClaimError, Claims, KUBERNETES_CLAIM,
    KubernetesClaims, ObjectRef, SessionTagsClaim,
};
pub use jwk::{Jwk, Jwks, JwksError, KeyType, SkippedKey};
pub(crate) use verify::describe_json_error;
pub use verify::{
    DEFAULT_LEEWAY, JwsHeader, JwtError, JwtPart, MAX_WEB_IDENTITY_TOKEN_LEN, UnverifiedJwt,
    Validation, VerifiedJwt, verify_jwt,
};

use std::fmt;

/// A JWS signature algorithm this crate verifies (RFC 7518 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// ECDSA on P-521 with SHA-512.
    Es512,
}

impl JwsAlgorithm {
    /// Every algorithm this crate verifies.
    pub const ALL: [Self; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::Es512,
    ];

    /// The `alg` header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }

    /// Parses an `alg` value (case-sensitive, as RFC 7515 requires).
    #[must_use]
    pub fn from_name(alg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == alg)
    }

    /// The key type this algorithm needs.
    #[must_use]
    pub fn key_type(self) -> KeyType {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyType::Rsa
            }
            Self::Es256 => KeyType::EcP256,
            Self::Es384 => KeyType::EcP384,
            Self::Es512 => KeyType::EcP521,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
