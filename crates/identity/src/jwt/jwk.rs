//! JSON Web Key Sets (RFC 7517): RSA and EC public keys, parsed once into verification keys.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, VerificationAlgorithm};
use serde::Deserialize;

use super::JwsAlgorithm;
use crate::encoding::b64url_decode;

/// The most keys one JWKS may hold; real issuers publish a handful.
const MAX_KEYS: usize = 100;

/// The family and curve of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `kty: RSA`.
    Rsa,
    /// `kty: EC`, `crv: P-256`.
    EcP256,
    /// `kty: EC`, `crv: P-384`.
    EcP384,
    /// `kty: EC`, `crv: P-521`.
    EcP521,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA",
            Self::EcP256 => "EC P-256",
            Self::EcP384 => "EC P-384",
            Self::EcP521 => "EC P-521",
        })
    }
}

/// One public key, ready to verify the algorithms its type and `alg` allow.
#[derive(Clone)]
pub struct Jwk {
    kid: Option<String>,
    key_type: KeyType,
    alg: Option<String>,
    verifiers: Vec<(JwsAlgorithm, ParsedPublicKey)>,
    /// The key verifies only before this moment (a retired key of a local ring); `None` for
    /// keys with no end, such as every key of a fetched JWKS.
    not_after: Option<SystemTime>,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    /// The key ID, when the JWK has one.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// RSA or which EC curve.
    #[must_use]
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The JWK's own `alg`, when it restricts the key to one algorithm.
    #[must_use]
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// The key verifies tokens only before `not_after`: the retirement of a key of a local
    /// ring. The verifier compares it with its clock on every verification, so a key retires
    /// at its time without the key set being rebuilt.
    #[must_use]
    pub fn with_not_after(mut self, not_after: Option<SystemTime>) -> Self {
        self.not_after = not_after;
        self
    }

    /// When the key stops verifying, if ever.
    #[must_use]
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// Whether the key still verifies at `now`.
    #[must_use]
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_after.is_none_or(|t| now < t)
    }

    /// Whether this key may verify `alg`: the type fits and the key's `alg`, if any, is `alg`.
    #[must_use]
    pub fn supports(&self, alg: JwsAlgorithm) -> bool {
        self.verifier(alg).is_some()
    }

    pub(crate) fn verifier(&self, alg: JwsAlgorithm) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find_map(|(a, key)| (*a == alg).then_some(key))
    }

    /// An RSA key from its big-endian modulus and exponent (leading zero bytes are ignored).
    /// `alg`, when given, restricts the key to that algorithm.
    ///
    /// # Errors
    /// A description of why the key is unusable (too small, malformed, `alg` not RSA).
    pub fn from_rsa_components(
        kid: Option<String>,
        alg: Option<String>,
        n: &[u8],
        e: &[u8],
    ) -> Result<Self, String> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        // AWS and this crate's parameters accept 2048- to 8192-bit moduli.
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if bits < 2048 {
            return Err(format!("RSA modulus of {bits} bits is below 2048"));
        }
        if bits > 8192 {
            return Err(format!("RSA modulus of {bits} bits is above 8192"));
        }
        let components = signature::RsaPublicKeyComponents { n, e };
        let mut verifiers = Vec::new();
        for alg_candidate in JwsAlgorithm::ALL {
            let Some(params) = rsa_params(alg_candidate) else {
                continue;
            };
            if alg.as_deref().is_some_and(|a| a != alg_candidate.as_str()) {
                continue;
            }
            let parsed = components
                .to_parsed_public_key(params)
                .map_err(|e| format!("invalid RSA key: {e}"))?;
            verifiers.push((alg_candidate, parsed));
        }
        if verifiers.is_empty() {
            return Err(format!(
                "`alg` `{}` cannot be used with an RSA key",
                alg.as_deref().unwrap_or_default()
            ));
        }
        Ok(Self {
            kid,
            key_type: KeyType::Rsa,
            alg,
            verifiers,
            not_after: None,
        })
    }

    /// An EC key from its curve name (`P-256`, `P-384`, `P-521`) and affine coordinates, each
    /// exactly the curve's field size as RFC 7518 §6.2.1.2 requires.
    ///
    /// # Errors
    /// A description of why the key is unusable.
    pub fn from_ec_coordinates(
        kid: Option<String>,
        alg: Option<String>,
        crv: &str,
        x: &[u8],
        y: &[u8],
    ) -> Result<Self, String> {
        let (key_type, alg_for_curve, verification, size): (
            _,
            _,
            &'static dyn VerificationAlgorithm,
            _,
        ) = match crv {
            "P-256" => (
                KeyType::EcP256,
                JwsAlgorithm::Es256,
                &signature::ECDSA_P256_SHA256_FIXED,
                32,
            ),
            "P-384" => (
                KeyType::EcP384,
                JwsAlgorithm::Es384,
                &signature::ECDSA_P384_SHA384_FIXED,
                48,
            ),
            "P-521" => (
                KeyType::EcP521,
                JwsAlgorithm::Es512,
                &signature::ECDSA_P521_SHA512_FIXED,
                66,
            ),
            other => return Err(format!("unsupported curve `{other}`")),
        };
        if x.len() != size || y.len() != size {
            return Err(format!(
                "{crv} coordinates must be {size} bytes each, got {} and {}",
                x.len(),
                y.len()
            ));
        }
        if alg.as_deref().is_some_and(|a| a != alg_for_curve.as_str()) {
            return Err(format!(
                "`alg` `{}` cannot be used with a {key_type} key",
                alg.as_deref().unwrap_or_default()
            ));
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(0x04); // SEC1 uncompressed point
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let parsed = ParsedPublicKey::new(verification, &point)
            .map_err(|e| format!("invalid {crv} point: {e}"))?;
        Ok(Self {
            kid,
            key_type,
            alg,
            verifiers: vec![(alg_for_curve, parsed)],
            not_after: None,
        })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn rsa_params(alg: JwsAlgorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        JwsAlgorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        JwsAlgorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        JwsAlgorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        JwsAlgorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        JwsAlgorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        JwsAlgorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        JwsAlgorithm::Es256 | JwsAlgorithm::Es384 | JwsAlgorithm::Es512 => return None,
    })
}

// === Jwks ===

/// A key in the JWKS document that cannot verify signatures and was left out (an encryption key,
/// an unsupported type, a malformed or too-small key). Kept so operators can see why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the `keys` array.
    pub index: usize,
    /// Its `kid`, if readable.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

/// A parsed JWKS: the usable signature keys, plus the ones that were skipped and why.
#[derive(Clone, Debug, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
    skipped: Vec<SkippedKey>,
}

/// A JWKS document that cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("invalid JWKS document: {0}")]
    Malformed(String),
    /// More keys than any issuer needs.
    #[error("JWKS has {count} keys, over the limit of {MAX_KEYS}")]
    TooManyKeys {
        /// How many keys the document lists.
        count: usize,
    },
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys":[…]}`) as an OIDC issuer serves it at its `jwks_uri`.
    /// Keys that cannot verify signatures are skipped, not fatal: see [`Jwks::skipped`].
    ///
    /// # Errors
    /// [`JwksError`] when the document is not a JWKS at all.
    pub fn from_json(json: &[u8]) -> Result<Self, JwksError> {
        let raw: RawJwks = serde_json::from_slice(json)
            .map_err(|e| JwksError::Malformed(super::verify::describe_json_error(&e)))?;
        if raw.keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys {
                count: raw.keys.len(),
            });
        }
        let mut jwks = Self::default();
        for (index, value) in raw.keys.into_iter().enumerate() {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            match parse_key(value) {
                Ok(key) => jwks.keys.push(key),
                Err(reason) => jwks.skipped.push(SkippedKey { index, kid, reason }),
            }
        }
        Ok(jwks)
    }

    /// A JWKS made of already-built keys.
    #[must_use]
    pub fn from_keys(keys: Vec<Jwk>) -> Self {
        Self {
            keys,
            skipped: Vec::new(),
        }
    }

    /// The usable keys.
    #[must_use]
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// The keys left out, with reasons.
    #[must_use]
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The usable key with this `kid`.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

fn parse_key(value: serde_json::Value) -> Result<Jwk, String> {
    let raw: RawJwk = serde_json::from_value(value).map_err(|e| format!("invalid JWK: {e}"))?;
    if let Some(use_) = raw.use_.as_deref()
        && use_ != "sig"
    {
        return Err(format!("`use` is `{use_}`, not `sig`"));
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("`key_ops` does not include `verify`".to_owned());
    }
    let field = |name: &str, value: Option<&String>| -> Result<Vec<u8>, String> {
        let text = value.ok_or_else(|| format!("missing `{name}`"))?;
        b64url_decode(text).ok_or_else(|| format!("`{name}` is not base64url"))
    };
    match raw.kty.as_str() {
        "RSA" => {
            let n = field("n", raw.n.as_ref())?;
            let e = field("e", raw.e.as_ref())?;
            Jwk::from_rsa_components(raw.kid, raw.alg, &n, &e)
        }
        "EC" => {
            let crv = raw.crv.ok_or("missing `crv`")?;
            let x = field("x", raw.x.as_ref())?;
            let y = field("y", raw.y.as_ref())?;
            Jwk::from_ec_coordinates(raw.kid, raw.alg, &crv, &x, &y)
        }
        other => Err(format!("unsupported key type `{other}`")),
    }
}
