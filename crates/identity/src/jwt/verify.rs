//! Compact JWS parsing and verification.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::JwsAlgorithm;
use super::claims::{ClaimError, Claims};
use super::jwk::{Jwks, KeyType};
use crate::clock::{Clock, unix_seconds};
use crate::encoding::b64url_decode;

/// AWS: `WebIdentityToken` is 4 to 20,000 characters.
pub const MAX_WEB_IDENTITY_TOKEN_LEN: usize = 20_000;

/// AWS IAM grants five minutes of clock skew around `exp` (and this crate applies the same to
/// `nbf` and `iat`).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(300);

/// Which part of a compact JWS a malformation is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtPart {
    /// The whole token (segment structure).
    Token,
    /// The protected header.
    Header,
    /// The payload (claims).
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for JwtPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Token => "token",
            Self::Header => "header",
            Self::Payload => "payload",
            Self::Signature => "signature",
        })
    }
}

/// Why a token was refused. Each variant names one violation; none carries the token itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Longer than the limit (AWS: 20,000 characters).
    #[error("token is {len} characters, over the limit of {max}")]
    TokenTooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed compact JWS.
    #[error("malformed JWT {part}: {problem}")]
    Malformed {
        /// Where.
        part: JwtPart,
        /// What.
        problem: String,
    },
    /// `alg: none`: an unsigned token.
    #[error("unsigned tokens (`alg` `none`) are not accepted")]
    AlgorithmNone,
    /// An HMAC algorithm: never accepted, since the only "secret" a verifier could use is the
    /// issuer's public key (algorithm confusion).
    #[error("symmetric algorithm `{alg}` is not accepted; tokens must be signed with RSA or ECDSA")]
    SymmetricAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// An `alg` this crate does not verify, or one the [`Validation`] does not allow.
    #[error("unsupported signature algorithm `{alg}`")]
    UnsupportedAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// The header lists critical extensions (`crit`), none of which this verifier understands.
    #[error("unsupported critical header parameters `{names}`")]
    UnsupportedCriticalHeader {
        /// The `crit` names, comma separated.
        names: String,
    },
    /// No key in the JWKS has the header's `kid`. The caller may re-fetch the JWKS once.
    #[error("no key with kid `{kid}` in the issuer's JWKS")]
    UnknownKeyId {
        /// The header's `kid`.
        kid: String,
    },
    /// The key with the header's `kid` has retired (a rotated key of a local ring whose
    /// `retire_after` has passed): it no longer verifies, even a token signed before.
    #[error(
        "key `{kid}` of the issuer was retired at {retired_at} (seconds since the epoch), now is {now}"
    )]
    KeyRetired {
        /// The header's `kid`.
        kid: String,
        /// When the key stopped verifying.
        retired_at: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// No `kid` in the header and no key in the JWKS can verify `alg`.
    #[error("no key in the issuer's JWKS can verify `{alg}`")]
    NoMatchingKey {
        /// The header's `alg`.
        alg: JwsAlgorithm,
    },
    /// The key selected by `kid` cannot verify the header's `alg` (wrong `kty`, curve, or the
    /// key's own `alg`).
    #[error("key `{kid}` ({key_type}{}) cannot verify `{alg}`", key_alg.as_deref().map(|a| format!(", alg `{a}`")).unwrap_or_default())]
    KeyAlgorithmMismatch {
        /// The key's `kid`.
        kid: String,
        /// The key's type.
        key_type: KeyType,
        /// The key's own `alg`, if it has one.
        key_alg: Option<String>,
        /// The header's `alg`.
        alg: JwsAlgorithm,
    },
    /// The signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A required claim is absent.
    #[error("claim `{claim}` is missing")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// A claim has the wrong type.
    #[error(transparent)]
    InvalidClaim(#[from] ClaimError),
    /// `iss` is not the expected issuer (compared exactly).
    #[error("the `iss` claim `{got}` is not the expected issuer `{expected}` (compared exactly)")]
    IssuerMismatch {
        /// The token's `iss`.
        got: String,
        /// The expected issuer.
        expected: String,
    },
    /// No `aud` element is among the allowed audiences (an OIDC provider's client IDs).
    #[error(
        "audience {} is not among the allowed {}",
        quoted(got),
        quoted(expected)
    )]
    AudienceMismatch {
        /// The token's `aud` values.
        got: Vec<String>,
        /// The allowed audiences.
        expected: Vec<String>,
    },
    /// `exp` plus the allowed skew is in the past.
    #[error("token expired at {exp}, now is {now} (seconds since the epoch)")]
    TokenExpired {
        /// The token's `exp`.
        exp: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// `nbf` minus the allowed skew is in the future.
    #[error("token is not valid before {nbf}, now is {now} (seconds since the epoch)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// `iat` minus the allowed skew is in the future.
    #[error("token was issued in the future at {iat}, now is {now} (seconds since the epoch)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: i64,
        /// The verifier's clock.
        now: i64,
    },
}

fn quoted(items: &[String]) -> String {
    if items.is_empty() {
        return "(none)".to_owned();
    }
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a verified token must satisfy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    issuer: String,
    audiences: Vec<String>,
    leeway: Duration,
    algorithms: Vec<JwsAlgorithm>,
}

impl Validation {
    /// Requires `iss` to equal `issuer` exactly and some `aud` element to be in `audiences`
    /// (for STS, the OIDC provider's client-ID list), with the default 5-minute skew and every
    /// supported asymmetric algorithm allowed.
    #[must_use]
    pub fn new(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            leeway: DEFAULT_LEEWAY,
            algorithms: JwsAlgorithm::ALL.to_vec(),
        }
    }

    /// Sets the clock skew allowed on `exp`, `nbf` and `iat`.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Restricts the accepted algorithms.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = JwsAlgorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The expected issuer.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The allowed audiences.
    #[must_use]
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
}

/// The protected header fields this verifier reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwsHeader {
    /// `alg`, already checked to be a supported asymmetric algorithm.
    pub alg: JwsAlgorithm,
    /// `kid`.
    pub kid: Option<String>,
    /// `typ`, informational.
    pub typ: Option<String>,
}

/// A token split and decoded but not yet verified. Its claims must not be trusted; read only what
/// is needed to find the verifier (the `iss`).
#[derive(Clone, Debug)]
pub struct UnverifiedJwt<'a> {
    header: JwsHeader,
    claims: Claims,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> UnverifiedJwt<'a> {
    /// Parses a compact JWS of at most [`MAX_WEB_IDENTITY_TOKEN_LEN`] characters.
    ///
    /// # Errors
    /// [`JwtError`] for an oversized or malformed token, or a refused `alg`.
    pub fn parse(token: &'a str) -> Result<Self, JwtError> {
        Self::parse_with_max_len(token, MAX_WEB_IDENTITY_TOKEN_LEN)
    }

    /// Parses a compact JWS of at most `max_len` characters.
    ///
    /// # Errors
    /// [`JwtError`] for an oversized or malformed token, or a refused `alg`.
    pub fn parse_with_max_len(token: &'a str, max_len: usize) -> Result<Self, JwtError> {
        if token.len() > max_len {
            return Err(JwtError::TokenTooLarge {
                len: token.len(),
                max: max_len,
            });
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(
                JwtPart::Token,
                format!(
                    "expected 3 dot-separated segments, found {}",
                    token.split('.').count()
                ),
            ));
        };
        let header = parse_header(&decode_object(JwtPart::Header, header_b64)?)?;
        let claims = Claims::from_map(decode_object(JwtPart::Payload, payload_b64)?)?;
        let signature = b64url_decode(signature_b64)
            .ok_or_else(|| malformed(JwtPart::Signature, "invalid base64url"))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            header,
            claims,
            signing_input,
            signature,
        })
    }

    /// The protected header.
    #[must_use]
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The claims, NOT verified: only for choosing the issuer's keys.
    #[must_use]
    pub fn unverified_claims(&self) -> &Claims {
        &self.claims
    }

    /// Verifies the signature with `jwks`, then the claims under `validation` at `clock`'s time.
    ///
    /// # Errors
    /// The first [`JwtError`] found: key selection, signature, then `iss`, `aud`, `exp`, `nbf`,
    /// `iat`.
    pub fn verify(
        self,
        jwks: &Jwks,
        validation: &Validation,
        clock: &impl Clock,
    ) -> Result<VerifiedJwt, JwtError> {
        let alg = self.header.alg;
        if !validation.algorithms.contains(&alg) {
            return Err(JwtError::UnsupportedAlgorithm {
                alg: alg.as_str().to_owned(),
            });
        }
        let now = clock.now();
        let key_not_after = self.verify_signature(jwks, now)?;
        validate_claims(&self.claims, validation, unix_seconds(now))?;
        Ok(VerifiedJwt {
            header: self.header,
            claims: self.claims,
            key_not_after,
        })
    }

    /// Checks the signature with a key valid at `now`; `Ok` is that key's end of validity.
    fn verify_signature(
        &self,
        jwks: &Jwks,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, JwtError> {
        let alg = self.header.alg;
        let message = self.signing_input.as_bytes();
        if let Some(kid) = &self.header.kid {
            let key = jwks
                .find(kid)
                .ok_or_else(|| JwtError::UnknownKeyId { kid: kid.clone() })?;
            if !key.is_valid_at(now) {
                return Err(JwtError::KeyRetired {
                    kid: kid.clone(),
                    retired_at: key.not_after().map_or(0, unix_seconds),
                    now: unix_seconds(now),
                });
            }
            let verifier = key
                .verifier(alg)
                .ok_or_else(|| JwtError::KeyAlgorithmMismatch {
                    kid: kid.clone(),
                    key_type: key.key_type(),
                    key_alg: key.alg().map(str::to_owned),
                    alg,
                })?;
            return verifier
                .verify_sig(message, &self.signature)
                .map(|()| key.not_after())
                .map_err(|_| JwtError::BadSignature);
        }
        // Without `kid`, try each valid key that can verify `alg` (JWKS hold a handful).
        let mut candidates = jwks
            .keys()
            .iter()
            .filter(|k| k.is_valid_at(now))
            .filter_map(|k| k.verifier(alg).map(|v| (k, v)))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::NoMatchingKey { alg });
        }
        candidates
            .find(|(_, v)| v.verify_sig(message, &self.signature).is_ok())
            .map(|(k, _)| k.not_after())
            .ok_or(JwtError::BadSignature)
    }
}

/// Parses and verifies `token` in one step.
///
/// # Errors
/// See [`UnverifiedJwt::parse`] and [`UnverifiedJwt::verify`].
pub fn verify_jwt(
    token: &str,
    jwks: &Jwks,
    validation: &Validation,
    clock: &impl Clock,
) -> Result<VerifiedJwt, JwtError> {
    UnverifiedJwt::parse(token)?.verify(jwks, validation, clock)
}

fn validate_claims(claims: &Claims, validation: &Validation, now: i64) -> Result<(), JwtError> {
    let leeway = i64::try_from(validation.leeway.as_secs()).unwrap_or(i64::MAX);
    let iss = claims
        .issuer()
        .ok_or(JwtError::MissingClaim { claim: "iss" })?;
    if iss != validation.issuer {
        return Err(JwtError::IssuerMismatch {
            got: iss.to_owned(),
            expected: validation.issuer.clone(),
        });
    }
    if claims.audiences().is_empty() {
        return Err(JwtError::MissingClaim { claim: "aud" });
    }
    if !claims
        .audiences()
        .iter()
        .any(|a| validation.audiences.contains(a))
    {
        return Err(JwtError::AudienceMismatch {
            got: claims.audiences().to_vec(),
            expected: validation.audiences.clone(),
        });
    }
    // AWS requires `exp`; the token is refused once `exp` + skew has passed.
    let exp = claims
        .expires_at()
        .ok_or(JwtError::MissingClaim { claim: "exp" })?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::TokenExpired { exp, now });
    }
    if let Some(nbf) = claims.not_before()
        && now.saturating_add(leeway) < nbf
    {
        return Err(JwtError::NotYetValid { nbf, now });
    }
    if let Some(iat) = claims.issued_at()
        && iat > now.saturating_add(leeway)
    {
        return Err(JwtError::IssuedInFuture { iat, now });
    }
    Ok(())
}

/// A token whose signature and claims were verified.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedJwt {
    header: JwsHeader,
    claims: Claims,
    key_not_after: Option<SystemTime>,
}

impl VerifiedJwt {
    /// When the key that verified the token stops verifying ([`crate::jwt::Jwk::not_after`]): a caller
    /// that remembers the verification must not use it past this moment.
    #[must_use]
    pub fn key_not_after(&self) -> Option<SystemTime> {
        self.key_not_after
    }

    /// The protected header.
    #[must_use]
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The verified claims.
    #[must_use]
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The verified claims, owned.
    #[must_use]
    pub fn into_claims(self) -> Claims {
        self.claims
    }
}

// === decoding ===

fn malformed(part: JwtPart, problem: impl Into<String>) -> JwtError {
    JwtError::Malformed {
        part,
        problem: problem.into(),
    }
}

/// Describes a JSON error by kind and position only, so no token content leaks into messages.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "invalid JSON",
        Category::Data => "unexpected JSON value",
        Category::Eof => "truncated JSON",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

fn decode_object(part: JwtPart, segment: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = b64url_decode(segment).ok_or_else(|| malformed(part, "invalid base64url"))?;
    let object: StrictObject = serde_json::from_slice(&bytes).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE_MEMBER) {
            malformed(part, "duplicate member name")
        } else {
            malformed(part, describe_json_error(&e))
        }
    })?;
    Ok(object.0)
}

const DUPLICATE_MEMBER: &str = "duplicate member";

/// A JSON object that refuses duplicate member names: RFC 7515 §5.2 lets a parser reject them,
/// and taking the last one (serde_json's default) invites parser differentials such as a second
/// `alg` or `aud` that another component reads differently.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom(DUPLICATE_MEMBER));
                    }
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

fn parse_header(header: &Map<String, Value>) -> Result<JwsHeader, JwtError> {
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(malformed(JwtPart::Header, "`alg` is not a string")),
        None => return Err(malformed(JwtPart::Header, "missing `alg`")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgorithmNone);
    }
    if matches!(
        alg.to_ascii_uppercase().as_str(),
        "HS256" | "HS384" | "HS512"
    ) {
        return Err(JwtError::SymmetricAlgorithm { alg: alg.clone() });
    }
    let alg = JwsAlgorithm::from_name(alg)
        .ok_or_else(|| JwtError::UnsupportedAlgorithm { alg: alg.clone() })?;
    // RFC 7515 §4.1.11: a recipient must reject a token whose `crit` names extensions it does
    // not understand; this verifier understands none.
    if let Some(crit) = header.get("crit") {
        let names = match crit {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "?".to_owned(),
        };
        return Err(JwtError::UnsupportedCriticalHeader { names });
    }
    let optional_string = |name: &str| -> Result<Option<String>, JwtError> {
        match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(malformed(
                JwtPart::Header,
                format!("`{name}` is not a string"),
            )),
        }
    };
    Ok(JwsHeader {
        alg,
        kid: optional_string("kid")?,
        typ: optional_string("typ")?,
    })
}
