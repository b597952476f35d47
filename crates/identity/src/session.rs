//! Stateless session tokens: everything needed to authenticate a later SigV4 call made with
//! temporary credentials, sealed with AES-256-GCM so any replica can open it without a store
//! lookup.
//!
//! Wire format (then standard base64, as AWS session tokens are):
//!
//! ```text
//! version (1 byte, = 2) | key id (4 bytes, big-endian) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The plaintext is the claims in [`codec`]'s binary layout (version 2); version 1 tokens, whose
//! plaintext is JSON, are still opened.
//!
//! The version and key id travel in the clear so the opener can pick the key; both are bound into
//! the AEAD's additional data (with a domain label), so changing either fails authentication.
//! Nonces are 96 random bits from the injected [`Rng`]; keys rotate well before the 2^32 seals at
//! which random GCM nonces would start to risk a collision.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Rng, RngError, from_unix_seconds, unix_seconds};
use crate::credentials::{AccessKeyId, SecretAccessKey};
use crate::encoding::{b64_decode, b64_encode};

/// The format version this crate seals: 2, the claims in [`codec`]'s binary layout.
pub const SESSION_TOKEN_VERSION: u8 = 2;
/// The first format (the claims as JSON): still opened, so sessions issued before an upgrade
/// stay valid until they expire.
pub const SESSION_TOKEN_VERSION_JSON: u8 = 1;
/// Tokens longer than this are refused before decoding (AWS makes no promise on size; ours are
/// well under 4 KiB even with a 2,048-character session policy and 50 tags).
pub const MAX_SESSION_TOKEN_LEN: usize = 16 * 1024;

const DOMAIN: &[u8] = b"podiam-session-token";
const HEADER_LEN: usize = 1 + 4;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

// === claims ===

/// A session tag: `aws:PrincipalTag/KEY` for the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTag {
    /// Tag key (case preserved; AWS compares keys case-insensitively).
    pub key: String,
    /// Tag value.
    pub value: String,
}

/// How the session came to be: recorded for audit and for policy keys such as
/// `aws:FederatedProvider`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionSource {
    /// `AssumeRoleWithWebIdentity`.
    WebIdentity {
        /// The token's `iss`.
        issuer: String,
        /// The token's `sub`.
        subject: String,
        /// The `aud` value that matched a client ID.
        audience: String,
        /// The node of a Kubernetes token bound to a pod on a node (`kubernetes.io.node.name`,
        /// Kubernetes 1.30+), as the verified token said: the node agent's session is bound to
        /// its node, and EKS Auth exchanges only pod tokens of that node with it. Set only from
        /// a verified token, never from a request parameter or a session tag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node_name: Option<String>,
    },
    /// `AssumeRoleForPodIdentity` (EKS Auth).
    PodIdentity {
        /// The cluster name.
        cluster_name: String,
        /// The pod's namespace.
        namespace: String,
        /// The pod's ServiceAccount.
        service_account: String,
        /// The pod's name.
        pod_name: String,
        /// The pod's UID.
        pod_uid: String,
    },
    /// `AssumeRole` by a signed caller (a user, or a role session: role chaining).
    AssumeRole {
        /// The caller's ARN.
        caller_arn: String,
    },
}

/// Everything a session token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The `ASIA…` key ID the session's requests are signed with.
    pub access_key_id: AccessKeyId,
    /// The session's secret key.
    pub secret_access_key: SecretAccessKey,
    /// The role's account.
    pub account_id: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE-NAME/SESSION` (the principal ARN).
    pub assumed_role_arn: String,
    /// The role's ARN, with path (`aws:PrincipalArn`).
    pub role_arn: String,
    /// The role's unique ID (`AROA…`).
    pub role_id: String,
    /// `RoleSessionName`.
    pub role_session_name: String,
    /// Session tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_tags: Vec<SessionTag>,
    /// Keys of session tags that pass on to chained sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitive_tag_keys: Vec<String>,
    /// The inline session policy (`Policy`), as the caller sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_policy: Option<String>,
    /// Managed session policies (`PolicyArns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_policy_arns: Vec<String>,
    /// `SourceIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// When the session was issued (`aws:TokenIssueTime`).
    #[serde(with = "unix_seconds_serde")]
    pub issued_at: SystemTime,
    /// When the credentials expire.
    #[serde(with = "unix_seconds_serde")]
    pub expires_at: SystemTime,
    /// How the session was obtained.
    pub source: SessionSource,
}

mod unix_seconds_serde {
    use super::{SystemTime, from_unix_seconds, unix_seconds};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(unix_seconds(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        i64::deserialize(d).map(from_unix_seconds)
    }
}

// === keys ===

/// A session-token key ID (travels in the clear).
pub type SessionKeyId = u32;

/// One AES-256-GCM key with its lifetime.
pub struct SessionKey {
    id: SessionKeyId,
    material: [u8; KEY_LEN],
    key: LessSafeKey,
    created_at: SystemTime,
    retire_after: Option<SystemTime>,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("retire_after", &self.retire_after)
            .finish_non_exhaustive()
    }
}

/// A session key could not be made or loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    /// Stored key material is not 32 bytes.
    #[error("session key `{id}` is {len} bytes, expected 32")]
    WrongLength {
        /// The key ID.
        id: SessionKeyId,
        /// The length found.
        len: usize,
    },
    /// Two keys share an ID.
    #[error("session key ID `{id}` appears twice")]
    DuplicateId {
        /// The key ID.
        id: SessionKeyId,
    },
    /// aws-lc-rs refused the key.
    #[error("session key `{id}` was refused by the AEAD")]
    Rejected {
        /// The key ID.
        id: SessionKeyId,
    },
    /// The RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

impl SessionKey {
    /// A fresh random key.
    ///
    /// # Errors
    /// [`SessionKeyError::Rng`].
    pub fn generate(
        id: SessionKeyId,
        rng: &impl Rng,
        created_at: SystemTime,
    ) -> Result<Self, SessionKeyError> {
        let mut material = [0u8; KEY_LEN];
        rng.fill(&mut material)?;
        Self::from_bytes(id, &material, created_at, None)
    }

    /// Loads key material persisted with [`SessionKey::secret_bytes`].
    ///
    /// # Errors
    /// [`SessionKeyError::WrongLength`] or [`SessionKeyError::Rejected`].
    pub fn from_bytes(
        id: SessionKeyId,
        bytes: &[u8],
        created_at: SystemTime,
        retire_after: Option<SystemTime>,
    ) -> Result<Self, SessionKeyError> {
        let material: [u8; KEY_LEN] =
            bytes.try_into().map_err(|_| SessionKeyError::WrongLength {
                id,
                len: bytes.len(),
            })?;
        let unbound = UnboundKey::new(&AES_256_GCM, &material)
            .map_err(|_| SessionKeyError::Rejected { id })?;
        Ok(Self {
            id,
            material,
            key: LessSafeKey::new(unbound),
            created_at,
            retire_after,
        })
    }

    /// The key ID.
    #[must_use]
    pub fn id(&self) -> SessionKeyId {
        self.id
    }

    /// The raw key, for the store. Secret.
    #[must_use]
    pub fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.material
    }

    /// When the key was created.
    #[must_use]
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// From when tokens sealed with this key are refused, if it is retiring.
    #[must_use]
    pub fn retire_after(&self) -> Option<SystemTime> {
        self.retire_after
    }
}

// === errors ===

/// Sealing failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The ring has no key that may seal (empty, or every key is retiring).
    #[error("the session key ring has no active key")]
    NoActiveKey,
    /// The claims could not be serialized.
    #[error("session claims could not be serialized: {0}")]
    Serialize(String),
    /// The AEAD failed.
    #[error("session token encryption failed")]
    Encrypt,
    /// The RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// Why a session token was refused. All but [`OpenError::Expired`] mean the token was not made by
/// this service or was altered; the server answers them alike (AWS: `InvalidClientTokenId`), and
/// `Expired` as `ExpiredToken`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Longer than [`MAX_SESSION_TOKEN_LEN`].
    #[error("session token is {len} characters, over the limit of {max}")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not standard base64.
    #[error("session token is not valid base64")]
    NotBase64,
    /// Too short to hold a header, nonce and tag.
    #[error("session token is truncated ({len} bytes)")]
    Truncated {
        /// The decoded length.
        len: usize,
    },
    /// A format version this build does not know.
    #[error("session token format version `{version}` is not supported")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// No key with this ID in the ring (never existed here, or already pruned).
    #[error("session token key `{key_id}` is unknown")]
    UnknownKeyId {
        /// The key ID from the token.
        key_id: SessionKeyId,
    },
    /// The key exists but is past its `retire_after`.
    #[error("session token key `{key_id}` is retired")]
    KeyRetired {
        /// The key ID from the token.
        key_id: SessionKeyId,
    },
    /// Decryption failed: the token was altered, or sealed with another key of the same ID.
    #[error("session token failed authentication")]
    AuthenticationFailed,
    /// Authentic but unreadable (a bug or a format drift, never an attacker without the key).
    #[error("session token payload is invalid: {0}")]
    InvalidPayload(String),
    /// The credentials have expired.
    #[error("session expired at {expired_at}, now is {now} (seconds since the epoch)")]
    Expired {
        /// The session's expiry.
        expired_at: i64,
        /// The opener's clock.
        now: i64,
    },
}

// === ring ===

/// The session-token keys: seal with the newest non-retiring key, open with any key not past its
/// `retire_after`.
#[derive(Debug, Default)]
pub struct SessionKeyRing {
    keys: Vec<SessionKey>,
}

impl SessionKeyRing {
    /// A ring from stored keys (any order).
    ///
    /// # Errors
    /// [`SessionKeyError::DuplicateId`].
    pub fn new(mut keys: Vec<SessionKey>) -> Result<Self, SessionKeyError> {
        keys.sort_by_key(|k| (k.created_at, k.id));
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(SessionKeyError::DuplicateId { id: key.id });
            }
        }
        Ok(Self { keys })
    }

    /// All keys, oldest first.
    #[must_use]
    pub fn keys(&self) -> &[SessionKey] {
        &self.keys
    }

    /// An ID no key in the ring uses (one above the highest).
    #[must_use]
    pub fn next_key_id(&self) -> SessionKeyId {
        self.keys
            .iter()
            .map(|k| k.id)
            .max()
            .map_or(1, |id| id.wrapping_add(1))
    }

    /// The sealing key at `now` (see [`crate::rotation`]): the newest valid key known for at
    /// least [`crate::rotation::KEY_ACTIVATION_DELAY`], so every replica can open what it seals.
    #[must_use]
    pub fn active(&self, now: SystemTime) -> Option<&SessionKey> {
        crate::rotation::active(&self.keys, now, |k| k.created_at, |k| k.retire_after)
    }

    /// Adds `new_key` as the sealing key and marks the others to retire at `retire_old_after`
    /// (now + the longest session, 12 hours, so every token they sealed can still be opened
    /// until it expires).
    ///
    /// # Errors
    /// [`SessionKeyError::DuplicateId`] when `new_key`'s ID is taken.
    pub fn rotate(
        &mut self,
        new_key: SessionKey,
        retire_old_after: SystemTime,
    ) -> Result<(), SessionKeyError> {
        if self.keys.iter().any(|k| k.id == new_key.id) {
            return Err(SessionKeyError::DuplicateId { id: new_key.id });
        }
        for key in &mut self.keys {
            if key.retire_after.is_none() {
                key.retire_after = Some(retire_old_after);
            }
        }
        self.keys.push(new_key);
        self.keys.sort_by_key(|k| (k.created_at, k.id));
        Ok(())
    }

    /// Drops keys past `retire_after`; returns their IDs (for the store).
    pub fn prune(&mut self, now: SystemTime) -> Vec<SessionKeyId> {
        let mut removed = Vec::new();
        self.keys.retain(|k| {
            let keep = k.retire_after.is_none_or(|t| t > now);
            if !keep {
                removed.push(k.id);
            }
            keep
        });
        removed
    }

    /// Seals `claims` into a session token with the key active when the session was issued.
    ///
    /// # Errors
    /// [`SealError`].
    pub fn seal(&self, claims: &SessionClaims, rng: &impl Rng) -> Result<String, SealError> {
        let key = self
            .active(claims.issued_at)
            .ok_or(SealError::NoActiveKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)?;
        let header = header(key.id);
        // One buffer: header, nonce, then the claims, encrypted in place, then the tag.
        let mut blob = Vec::with_capacity(HEADER_LEN + NONCE_LEN + 512 + TAG_LEN);
        blob.extend_from_slice(&header);
        blob.extend_from_slice(&nonce);
        codec::encode_into(claims, &mut blob)
            .map_err(|e| SealError::Serialize(format!("{} is too long", e.0)))?;
        let tag = key
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&header)),
                &mut blob[HEADER_LEN + NONCE_LEN..],
            )
            .map_err(|_| SealError::Encrypt)?;
        blob.extend_from_slice(tag.as_ref());
        Ok(b64_encode(&blob))
    }

    /// Opens a session token and checks its expiry against `clock`.
    ///
    /// # Errors
    /// [`OpenError`] naming why the token is refused; never panics on any input.
    pub fn open(&self, token: &str, clock: &impl Clock) -> Result<SessionClaims, OpenError> {
        if token.len() > MAX_SESSION_TOKEN_LEN {
            return Err(OpenError::TooLarge {
                len: token.len(),
                max: MAX_SESSION_TOKEN_LEN,
            });
        }
        let blob = b64_decode(token).ok_or(OpenError::NotBase64)?;
        if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(OpenError::Truncated { len: blob.len() });
        }
        let (header, rest) = blob.split_at(HEADER_LEN);
        let version = header[0];
        if version != SESSION_TOKEN_VERSION && version != SESSION_TOKEN_VERSION_JSON {
            return Err(OpenError::UnsupportedVersion { version });
        }
        let key_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(OpenError::UnknownKeyId { key_id })?;
        let now = clock.now();
        if key.retire_after.is_some_and(|t| t <= now) {
            return Err(OpenError::KeyRetired { key_id });
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| OpenError::Truncated { len: blob.len() })?;
        let mut in_out = sealed.to_vec();
        let plaintext = key
            .key
            .open_in_place(nonce, Aad::from(aad(header)), &mut in_out)
            .map_err(|_| OpenError::AuthenticationFailed)?;
        let claims: SessionClaims = if version == SESSION_TOKEN_VERSION {
            codec::decode(plaintext).map_err(OpenError::InvalidPayload)?
        } else {
            serde_json::from_slice(plaintext)
                .map_err(|e| OpenError::InvalidPayload(crate::jwt::describe_json_error(&e)))?
        };
        if now >= claims.expires_at {
            return Err(OpenError::Expired {
                expired_at: unix_seconds(claims.expires_at),
                now: unix_seconds(now),
            });
        }
        Ok(claims)
    }
}

fn header(key_id: SessionKeyId) -> [u8; HEADER_LEN] {
    let id = key_id.to_be_bytes();
    [SESSION_TOKEN_VERSION, id[0], id[1], id[2], id[3]]
}

/// The associated data: the domain, then the header (on the stack: it is made per token).
fn aad(header: &[u8]) -> [u8; DOMAIN.len() + HEADER_LEN] {
    let mut aad = [0u8; DOMAIN.len() + HEADER_LEN];
    aad[..DOMAIN.len()].copy_from_slice(DOMAIN);
    // The header is always HEADER_LEN bytes (a token's first bytes, split off at that length).
    for (dst, src) in aad[DOMAIN.len()..].iter_mut().zip(header) {
        *dst = *src;
    }
    aad
}

mod codec;

#[cfg(test)]
mod tests;
