//! podiam's built-in OIDC issuer: an RS256 key ring that signs Kubernetes-style projected
//! ServiceAccount tokens and publishes its public keys the way kube-apiserver does
//! (`/.well-known/openid-configuration` and `/openid/v1/jwks`).
//!
//! Keys are persisted by the caller as PKCS#8 DER ([`IssuerKey::to_pkcs8_der`],
//! [`IssuerKey::from_pkcs8_der`]). Rotation adds a new active key and keeps the old ones published
//! until `retire_after`, when every token they signed has expired.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::{Rng, RngError, unix_seconds};
use crate::encoding::b64url_encode;
use crate::jwt::{Jwk, Jwks};

/// The path kube-apiserver serves its JWKS at, relative to the issuer.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// The discovery document path (OpenID Connect Discovery 1.0).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// An issuer key operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// aws-lc-rs could not generate a key.
    #[error("RSA key generation failed")]
    KeyGeneration,
    /// Stored key bytes are not an RSA PKCS#8 private key of 2048 bits or more.
    #[error("stored issuer key is not a usable RSA PKCS#8 key: {0}")]
    InvalidKey(String),
    /// Exporting a key failed.
    #[error("issuer key export failed")]
    Export,
    /// The ring has no key that may sign (empty, or every key is retiring).
    #[error("the issuer key ring has no active signing key")]
    NoActiveKey,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
    /// Claims could not be serialized.
    #[error("claims could not be serialized: {0}")]
    Claims(String),
    /// The RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

// === IssuerKey ===

/// One RS256 signing key with its publication window.
pub struct IssuerKey {
    kid: String,
    key_pair: RsaKeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
    created_at: SystemTime,
    retire_after: Option<SystemTime>,
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retire_after", &self.retire_after)
            .finish_non_exhaustive()
    }
}

impl IssuerKey {
    /// Generates a 2048-bit RSA key. aws-lc-rs draws the key material from its own CSPRNG
    /// (key generation cannot take an injected RNG).
    ///
    /// # Errors
    /// [`IssuerError::KeyGeneration`].
    pub fn generate(created_at: SystemTime) -> Result<Self, IssuerError> {
        let key_pair =
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| IssuerError::KeyGeneration)?;
        Self::from_key_pair(key_pair, created_at, None)
    }

    /// Loads a key persisted with [`IssuerKey::to_pkcs8_der`].
    ///
    /// # Errors
    /// [`IssuerError::InvalidKey`] when the bytes are not an RSA key of at least 2048 bits.
    pub fn from_pkcs8_der(
        der: &[u8],
        created_at: SystemTime,
        retire_after: Option<SystemTime>,
    ) -> Result<Self, IssuerError> {
        let key_pair =
            RsaKeyPair::from_pkcs8(der).map_err(|e| IssuerError::InvalidKey(e.to_string()))?;
        if key_pair.public_modulus_len() < 256 {
            return Err(IssuerError::InvalidKey(
                "modulus is shorter than 2048 bits".to_owned(),
            ));
        }
        Self::from_key_pair(key_pair, created_at, retire_after)
    }

    fn from_key_pair(
        key_pair: RsaKeyPair,
        created_at: SystemTime,
        retire_after: Option<SystemTime>,
    ) -> Result<Self, IssuerError> {
        let public = key_pair.public_key();
        let spki = public.as_der().map_err(|_| IssuerError::Export)?;
        let components = PublicKeyComponents::<Vec<u8>>::from(public);
        Ok(Self {
            kid: key_id_for_spki(spki.as_ref()),
            key_pair,
            n: components.n,
            e: components.e,
            created_at,
            retire_after,
        })
    }

    /// The private key as unencrypted PKCS#8 v1 DER, for the store. Secret.
    ///
    /// # Errors
    /// [`IssuerError::Export`].
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, IssuerError> {
        let der = self.key_pair.as_der().map_err(|_| IssuerError::Export)?;
        Ok(der.as_ref().to_vec())
    }

    /// The key ID: base64url of the SHA-256 of the public key's SubjectPublicKeyInfo DER, as
    /// kube-apiserver derives it.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When the key was created.
    #[must_use]
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// When the key stops being published, if it is retiring.
    #[must_use]
    pub fn retire_after(&self) -> Option<SystemTime> {
        self.retire_after
    }

    /// The public key as a JWKS entry.
    #[must_use]
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            use_: "sig",
            kty: "RSA",
            kid: self.kid.clone(),
            alg: "RS256",
            n: b64url_encode(&self.n),
            e: b64url_encode(&self.e),
        }
    }

    /// A verification key for this key's tokens, valid until this key's `retire_after`.
    ///
    /// # Errors
    /// [`IssuerError::InvalidKey`] if the public key cannot be parsed back (not expected).
    pub fn verification_key(&self) -> Result<Jwk, IssuerError> {
        Jwk::from_rsa_components(
            Some(self.kid.clone()),
            Some("RS256".to_owned()),
            &self.n,
            &self.e,
        )
        .map(|k| k.with_not_after(self.retire_after))
        .map_err(IssuerError::InvalidKey)
    }

    /// Signs `claims` as a compact JWS with header `{"alg":"RS256","kid":…}`.
    ///
    /// # Errors
    /// [`IssuerError::Claims`] or [`IssuerError::Signing`].
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, IssuerError> {
        let header = json!({ "alg": "RS256", "kid": self.kid });
        let header = serde_json::to_vec(&header).map_err(|e| IssuerError::Claims(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| IssuerError::Claims(e.to_string()))?;
        let mut token = b64url_encode(&header);
        token.push('.');
        token.push_str(&b64url_encode(&payload));
        let mut signature = vec![0u8; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| IssuerError::Signing)?;
        token.push('.');
        token.push_str(&b64url_encode(&signature));
        Ok(token)
    }
}

fn key_id_for_spki(spki_der: &[u8]) -> String {
    b64url_encode(digest::digest(&digest::SHA256, spki_der).as_ref())
}

/// A public RSA key as kube-apiserver publishes it, fields in its order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// Always `RSA`.
    pub kty: &'static str,
    /// The key ID.
    pub kid: String,
    /// Always `RS256`.
    pub alg: &'static str,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
}

/// A JWKS document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JwksDocument {
    /// The published keys.
    pub keys: Vec<PublicJwk>,
}

// === IssuerKeyRing ===

/// The issuer's keys: one active signer (see [`IssuerKeyRing::active`]) and the others
/// published until their `retire_after`.
#[derive(Debug, Default)]
pub struct IssuerKeyRing {
    keys: Vec<IssuerKey>,
}

impl IssuerKeyRing {
    /// A ring of keys loaded from the store (any order).
    #[must_use]
    pub fn new(mut keys: Vec<IssuerKey>) -> Self {
        keys.sort_by_key(|k| k.created_at);
        Self { keys }
    }

    /// All keys, oldest first.
    #[must_use]
    pub fn keys(&self) -> &[IssuerKey] {
        &self.keys
    }

    /// The signing key at `now` (see [`crate::rotation`]): the newest valid key published for
    /// at least [`crate::rotation::KEY_ACTIVATION_DELAY`].
    #[must_use]
    pub fn active(&self, now: SystemTime) -> Option<&IssuerKey> {
        crate::rotation::active(&self.keys, now, |k| k.created_at, |k| k.retire_after)
    }

    /// Adds `new_key` as the active key and marks every other non-retiring key to retire at
    /// `retire_old_after` (now + the longest token lifetime, so tokens they signed stay
    /// verifiable until they expire).
    pub fn rotate(&mut self, new_key: IssuerKey, retire_old_after: SystemTime) {
        for key in &mut self.keys {
            if key.retire_after.is_none() {
                key.retire_after = Some(retire_old_after);
            }
        }
        self.keys.push(new_key);
        self.keys.sort_by_key(|k| k.created_at);
    }

    /// Drops keys whose `retire_after` has passed; returns their key IDs (for the store).
    pub fn prune(&mut self, now: SystemTime) -> Vec<String> {
        let mut removed = Vec::new();
        self.keys.retain(|k| {
            let keep = k.retire_after.is_none_or(|t| t > now);
            if !keep {
                removed.push(k.kid.clone());
            }
            keep
        });
        removed
    }

    fn published(&self, now: SystemTime) -> impl Iterator<Item = &IssuerKey> {
        self.keys
            .iter()
            .filter(move |k| k.retire_after.is_none_or(|t| t > now))
    }

    /// The JWKS to serve at `now`: every key not yet past `retire_after`, newest first.
    #[must_use]
    pub fn jwks(&self, now: SystemTime) -> JwksDocument {
        let mut keys: Vec<_> = self.published(now).map(IssuerKey::public_jwk).collect();
        keys.reverse();
        JwksDocument { keys }
    }

    /// Every key of the ring, ready to verify this issuer's tokens without a JSON round trip.
    /// Each key carries its `retire_after` ([`Jwk::not_after`]), which the verifier compares
    /// with the time of each verification: a key retires at its moment, not at the next
    /// rebuild of this set.
    ///
    /// # Errors
    /// [`IssuerError::InvalidKey`] (not expected for keys this ring holds).
    pub fn verification_jwks(&self) -> Result<Jwks, IssuerError> {
        let keys = self
            .keys
            .iter()
            .map(IssuerKey::verification_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Jwks::from_keys(keys))
    }

    /// Signs `claims` with the key active at `now`.
    ///
    /// # Errors
    /// [`IssuerError::NoActiveKey`], or a signing error.
    pub fn sign(&self, claims: &impl Serialize, now: SystemTime) -> Result<String, IssuerError> {
        self.active(now)
            .ok_or(IssuerError::NoActiveKey)?
            .sign(claims)
    }
}

// === Kubernetes projected tokens ===

/// The claims of a projected ServiceAccount token, built as kube-apiserver builds them
/// (`pkg/serviceaccount/claims.go`): `aud` (always an array), `exp`, `iat`, `iss`, `jti`,
/// `kubernetes.io {namespace, node, pod, serviceaccount}`, `nbf = iat`,
/// `sub = system:serviceaccount:NS:SA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// The issuer URL (`iss`).
    pub issuer: String,
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name and UID.
    pub service_account: crate::jwt::ObjectRef,
    /// `aud` values (STS expects `sts.amazonaws.com`; Pod Identity `pods.eks.amazonaws.com`).
    pub audiences: Vec<String>,
    /// `exp - iat` (kube-apiserver's `expirationSeconds`, 3607 s for the default token).
    pub expiration: Duration,
    /// The bound pod.
    pub pod: Option<crate::jwt::ObjectRef>,
    /// The pod's node.
    pub node: Option<crate::jwt::ObjectRef>,
    /// `jti` (kube-apiserver 1.29+ writes a random UUID); see [`random_uuid`].
    pub jti: Option<String>,
}

impl ServiceAccountToken {
    /// A token of ServiceAccount `namespace/name` for `audience`, valid an hour, bound to no pod
    /// or node (set those fields for a pod's token).
    #[must_use]
    pub fn new(issuer: &str, namespace: &str, name: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            namespace: namespace.to_owned(),
            service_account: crate::jwt::ObjectRef {
                name: name.to_owned(),
                uid: String::new(),
            },
            audiences: vec![audience.to_owned()],
            expiration: Duration::from_secs(3600),
            pod: None,
            node: None,
            jti: None,
        }
    }

    /// The `sub` claim: `system:serviceaccount:NAMESPACE:NAME`.
    #[must_use]
    pub fn subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account.name
        )
    }

    /// The claims object for a token issued at `now`.
    #[must_use]
    pub fn claims(&self, now: SystemTime) -> Map<String, Value> {
        let iat = unix_seconds(now);
        let exp = iat.saturating_add(i64::try_from(self.expiration.as_secs()).unwrap_or(i64::MAX));
        let mut kubernetes = Map::new();
        kubernetes.insert("namespace".into(), Value::String(self.namespace.clone()));
        if let Some(node) = &self.node {
            kubernetes.insert("node".into(), json!({ "name": node.name, "uid": node.uid }));
        }
        if let Some(pod) = &self.pod {
            kubernetes.insert("pod".into(), json!({ "name": pod.name, "uid": pod.uid }));
        }
        kubernetes.insert(
            "serviceaccount".into(),
            json!({ "name": self.service_account.name, "uid": self.service_account.uid }),
        );
        let mut claims = Map::new();
        claims.insert("aud".into(), json!(self.audiences));
        claims.insert("exp".into(), json!(exp));
        claims.insert("iat".into(), json!(iat));
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        if let Some(jti) = &self.jti {
            claims.insert("jti".into(), Value::String(jti.clone()));
        }
        claims.insert("kubernetes.io".into(), Value::Object(kubernetes));
        claims.insert("nbf".into(), json!(iat));
        claims.insert("sub".into(), Value::String(self.subject()));
        claims
    }
}

/// A random (version 4) UUID in its canonical lowercase form, for `jti` and object UIDs.
///
/// # Errors
/// [`RngError`].
pub fn random_uuid(rng: &impl Rng) -> Result<String, RngError> {
    let mut b = [0u8; 16];
    rng.fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::encoding::hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

// === discovery ===

/// The OIDC discovery document kube-apiserver serves at `/.well-known/openid-configuration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OidcDiscovery {
    /// The issuer URL; must equal the tokens' `iss`.
    pub issuer: String,
    /// Where the JWKS is served.
    pub jwks_uri: String,
    /// `["id_token"]`.
    pub response_types_supported: Vec<String>,
    /// `["public"]`.
    pub subject_types_supported: Vec<String>,
    /// `["RS256"]`.
    pub id_token_signing_alg_values_supported: Vec<String>,
}

impl OidcDiscovery {
    /// The document for `issuer` with its JWKS at `jwks_uri`.
    #[must_use]
    pub fn new(issuer: impl Into<String>, jwks_uri: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_uri: jwks_uri.into(),
            response_types_supported: vec!["id_token".to_owned()],
            subject_types_supported: vec!["public".to_owned()],
            id_token_signing_alg_values_supported: vec!["RS256".to_owned()],
        }
    }

    /// The document for an issuer that serves its JWKS at `ISSUER/openid/v1/jwks`, as
    /// kube-apiserver does.
    #[must_use]
    pub fn for_issuer(issuer: &str) -> Self {
        let jwks_uri = format!("{}{JWKS_PATH}", issuer.trim_end_matches('/'));
        Self::new(issuer, jwks_uri)
    }
}

#[cfg(test)]
mod tests;
