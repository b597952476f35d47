//! The pure security core of podiam: what STS, IAM and EKS Auth need to authenticate callers
//! and mint credentials, with no HTTP framework, no storage, no clock reads and no async runtime.
//!
//! | module | does |
//! |---|---|
//! | [`jwt`] | parse a JWKS; verify a web identity token (RS/PS/ES algorithms) and its claims |
//! | [`issuer`] | podiam's own OIDC issuer: RS256 key ring, projected-token claims, JWKS and discovery documents |
//! | [`credentials`] | mint `AKIA`/`ASIA` access keys, secrets and `AROA…` unique IDs; `DurationSeconds` rules |
//! | [`session`] | seal and open AES-256-GCM session tokens that carry a whole session |
//! | [`sigv4`] | verify SigV4 `Authorization` headers and presigned queries; sign requests as a client, with the key from the environment or a credentials file re-read when it changes (the crate's one file read) |
//! | [`rest_json`] | AWS REST-JSON error responses read as the SDKs read them, for podiam's own clients |
//! | [`clock`] | the injected [`Clock`] and [`Rng`], timestamp formatting |
//!
//! Authenticating a signed call made with temporary credentials:
//!
//! ```
//! use podiam_identity::{
//!     AccessKeyKind, FixedClock, HttpRequest, SigV4Auth, SessionKeyRing, VerifyOptions,
//! };
//!
//! fn authenticate(
//!     request: &HttpRequest<'_>,
//!     sessions: &SessionKeyRing,
//!     clock: &FixedClock,
//! ) -> Result<String, String> {
//!     let auth = SigV4Auth::parse(request).map_err(|e| e.to_string())?;
//!     if auth.access_key_id.kind() != AccessKeyKind::Temporary {
//!         return Err("look the key up in the store".into());
//!     }
//!     let token = auth.security_token.as_deref().ok_or("missing X-Amz-Security-Token")?;
//!     let session = sessions.open(token, clock).map_err(|e| e.to_string())?;
//!     // The token must belong to the key that signed (AWS: InvalidClientTokenId otherwise).
//!     if session.access_key_id != auth.access_key_id {
//!         return Err("session token belongs to another access key".into());
//!     }
//!     let options = VerifyOptions::for_services("us-east-1", &["sts", "iam"]);
//!     auth.verify(request, &session.secret_access_key, &options, clock)
//!         .map_err(|e| e.to_string())?;
//!     Ok(session.assumed_role_arn)
//! }
//! ```

pub mod clock;
pub mod credentials;
mod encoding;
pub mod issuer;
pub mod jwt;
pub mod rest_json;
pub mod rotation;
pub mod session;
pub mod sigv4;

pub use clock::{
    Clock, FixedClock, POOL_BYTES, PooledSystemRng, Rng, RngError, SystemClock, SystemRng,
};
pub use credentials::{
    AccessKey, AccessKeyId, AccessKeyKind, SecretAccessKey, TemporaryCredentials, UniqueIdPrefix,
};
pub use issuer::{IssuerKey, IssuerKeyRing, OidcDiscovery, ServiceAccountToken};
pub use jwt::{Jwks, JwtError, UnverifiedJwt, Validation, VerifiedJwt, verify_jwt};
pub use session::{OpenError, SealError, SessionClaims, SessionKey, SessionKeyRing};
pub use sigv4::{HttpRequest, SigV4Auth, SigV4Error, VerifyOptions};
