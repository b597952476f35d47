//! Minting AWS-shaped identifiers and secrets, and the session-duration rules of `AssumeRole*`.
//!
//! Formats (AWS IAM User Guide, "IAM identifiers"): access key IDs are 20 characters, a four-letter
//! prefix (`AKIA` long-term, `ASIA` temporary) and 16 characters of the base32 alphabet
//! (`A`–`Z`, `2`–`7`); secret access keys are 40 characters of the base64 alphabet; unique IDs of
//! roles, users and policies are a prefix (`AROA`, `AIDA`, `ANPA`, …) and 17 base32 characters.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::{Rng, RngError};
use crate::encoding::{b64_encode, base32_chars};

/// Characters after the prefix in an access key ID.
const ACCESS_KEY_ID_SUFFIX_LEN: usize = 16;
/// Characters after the prefix in a unique ID (`AROA…`, `AIDA…`).
const UNIQUE_ID_SUFFIX_LEN: usize = 17;
/// Random bytes behind a 40-character base64 secret (30 bytes → exactly 40 characters, no `=`).
const SECRET_BYTES: usize = 30;

// === AccessKeyId ===

/// What an access key ID's prefix says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKeyKind {
    /// `AKIA…`: an IAM user's long-term key, looked up in the store.
    LongTerm,
    /// `ASIA…`: temporary credentials; the secret travels in the session token.
    Temporary,
    /// Any other prefix: not a key podiam ever issues.
    Unknown,
}

impl AccessKeyKind {
    /// The four-letter prefix podiam mints for this kind (`None` for [`AccessKeyKind::Unknown`]).
    #[must_use]
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            Self::LongTerm => Some("AKIA"),
            Self::Temporary => Some("ASIA"),
            Self::Unknown => None,
        }
    }
}

/// An access key ID (`AKIAIOSFODNN7EXAMPLE`). Not secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessKeyId(String);

/// An access key ID that does not fit AWS's `accessKeyIdType` (`[\w]+`, at most 128 characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access key ID `{0}` is not 1 to 128 word characters")]
pub struct InvalidAccessKeyId(pub String);

impl AccessKeyId {
    /// Accepts any ID of 1–128 word characters, as the SigV4 `Credential` may carry one; whether
    /// it exists is the caller's question ([`AccessKeyId::kind`] tells where to look).
    ///
    /// # Errors
    /// [`InvalidAccessKeyId`] for an empty, over-long or non-word ID.
    pub fn parse(id: &str) -> Result<Self, InvalidAccessKeyId> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(InvalidAccessKeyId(id.to_owned()))
        }
    }

    /// The ID as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Long-term, temporary or unknown, by prefix.
    #[must_use]
    pub fn kind(&self) -> AccessKeyKind {
        if self.0.starts_with("ASIA") {
            AccessKeyKind::Temporary
        } else if self.0.starts_with("AKIA") {
            AccessKeyKind::LongTerm
        } else {
            AccessKeyKind::Unknown
        }
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === SecretAccessKey ===

/// A secret access key. `Debug` and `Display` never show it; use
/// [`SecretAccessKey::expose_secret`] where the bytes are really needed (signing, the one
/// response that hands it out).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretAccessKey(String);

impl SecretAccessKey {
    /// Wraps an existing secret (from the store or a test).
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretAccessKey(<redacted>)")
    }
}

// === minting ===

/// A freshly minted access key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKey {
    /// `AKIA…` or `ASIA…`, 20 characters.
    pub access_key_id: AccessKeyId,
    /// 40 characters of the base64 alphabet.
    pub secret_access_key: SecretAccessKey,
}

/// Mints an access key pair of `kind` (`LongTerm` → `AKIA…`, `Temporary` → `ASIA…`).
///
/// # Errors
/// [`MintError::UnknownKind`] for [`AccessKeyKind::Unknown`]; [`MintError::Rng`] when the RNG fails.
pub fn mint_access_key(kind: AccessKeyKind, rng: &impl Rng) -> Result<AccessKey, MintError> {
    let prefix = kind.prefix().ok_or(MintError::UnknownKind)?;
    let mut id_bytes = [0u8; ACCESS_KEY_ID_SUFFIX_LEN];
    rng.fill(&mut id_bytes)?;
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut secret)?;
    Ok(AccessKey {
        access_key_id: AccessKeyId(format!("{prefix}{}", base32_chars(&id_bytes))),
        secret_access_key: SecretAccessKey(b64_encode(&secret)),
    })
}

/// The prefix of an IAM unique ID (AWS IAM User Guide, "Unique identifiers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UniqueIdPrefix {
    /// `AROA`: role.
    Role,
    /// `AIDA`: user.
    User,
    /// `AGPA`: group.
    Group,
    /// `ANPA`: managed policy.
    ManagedPolicy,
    /// `ANVA`: managed policy version.
    PolicyVersion,
    /// `AIPA`: instance profile.
    InstanceProfile,
}

impl UniqueIdPrefix {
    /// The four letters.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role => "AROA",
            Self::User => "AIDA",
            Self::Group => "AGPA",
            Self::ManagedPolicy => "ANPA",
            Self::PolicyVersion => "ANVA",
            Self::InstanceProfile => "AIPA",
        }
    }
}

/// Mints a 21-character unique ID such as a role ID (`AROA` + 17 base32 characters).
///
/// # Errors
/// [`MintError::Rng`] when the RNG fails.
pub fn mint_unique_id(prefix: UniqueIdPrefix, rng: &impl Rng) -> Result<String, MintError> {
    let mut bytes = [0u8; UNIQUE_ID_SUFFIX_LEN];
    rng.fill(&mut bytes)?;
    Ok(format!("{}{}", prefix.as_str(), base32_chars(&bytes)))
}

/// Minting failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// [`AccessKeyKind::Unknown`] has no prefix to mint.
    #[error("cannot mint an access key of unknown kind")]
    UnknownKind,
}

// === session duration ===

/// AWS: `DurationSeconds` is at least 900 seconds.
pub const MIN_SESSION_DURATION: Duration = Duration::from_secs(900);
/// AWS: `DurationSeconds` is at most 43,200 seconds (12 hours).
pub const MAX_SESSION_DURATION: Duration = Duration::from_secs(43_200);
/// AWS: without `DurationSeconds` a session lasts one hour.
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(3600);
/// AWS: a role assumed with role-session credentials (role chaining) lasts at most one hour.
pub const ROLE_CHAINING_MAX_DURATION: Duration = Duration::from_secs(3600);

/// A requested `DurationSeconds` that AWS would refuse (all map to `ValidationError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Below 900 seconds.
    #[error("DurationSeconds `{requested}` is below the minimum of 900")]
    BelowMinimum {
        /// The requested seconds.
        requested: u64,
    },
    /// Above 43,200 seconds.
    #[error("DurationSeconds `{requested}` is above the maximum of 43200")]
    AboveMaximum {
        /// The requested seconds.
        requested: u64,
    },
    /// Above the role's `MaxSessionDuration`.
    #[error(
        "the requested DurationSeconds `{requested}` exceeds the MaxSessionDuration set for this role ({max_session_duration})"
    )]
    ExceedsRoleMaximum {
        /// The requested seconds.
        requested: u64,
        /// The role's `MaxSessionDuration` in seconds.
        max_session_duration: u64,
    },
    /// Above one hour while role chaining.
    #[error(
        "the requested DurationSeconds `{requested}` exceeds the 1 hour session limit for roles assumed by role chaining"
    )]
    ExceedsRoleChainingLimit {
        /// The requested seconds.
        requested: u64,
    },
}

/// Applies AWS's rules to a requested `DurationSeconds`: 900–43,200, default 3,600, at most the
/// role's `MaxSessionDuration`, and at most one hour when the caller is itself a role session.
///
/// # Errors
/// The [`DurationError`] naming the rule that failed.
pub fn session_duration(
    requested_seconds: Option<u64>,
    max_session_duration: Duration,
    role_chaining: bool,
) -> Result<Duration, DurationError> {
    let Some(requested) = requested_seconds else {
        // AWS: one hour when absent; a role's MaxSessionDuration is never below one hour.
        return Ok(DEFAULT_SESSION_DURATION);
    };
    if requested < MIN_SESSION_DURATION.as_secs() {
        return Err(DurationError::BelowMinimum { requested });
    }
    if requested > MAX_SESSION_DURATION.as_secs() {
        return Err(DurationError::AboveMaximum { requested });
    }
    if role_chaining && requested > ROLE_CHAINING_MAX_DURATION.as_secs() {
        return Err(DurationError::ExceedsRoleChainingLimit { requested });
    }
    if requested > max_session_duration.as_secs() {
        return Err(DurationError::ExceedsRoleMaximum {
            requested,
            max_session_duration: max_session_duration.as_secs(),
        });
    }
    Ok(Duration::from_secs(requested))
}

/// Temporary credentials as `AssumeRole*` returns them (the session token is sealed separately
/// by [`crate::session::SessionKeyRing::seal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporaryCredentials {
    /// `ASIA…`.
    pub access_key_id: AccessKeyId,
    /// 40 base64 characters.
    pub secret_access_key: SecretAccessKey,
    /// When the session was issued (`aws:TokenIssueTime`).
    pub issued_at: SystemTime,
    /// `issued_at + duration`.
    pub expiration: SystemTime,
}

/// Mints `ASIA…` credentials valid for `duration` from `issued_at`.
///
/// # Errors
/// [`MintError::Rng`] when the RNG fails.
pub fn mint_temporary_credentials(
    rng: &impl Rng,
    issued_at: SystemTime,
    duration: Duration,
) -> Result<TemporaryCredentials, MintError> {
    let key = mint_access_key(AccessKeyKind::Temporary, rng)?;
    Ok(TemporaryCredentials {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        issued_at,
        expiration: issued_at + duration,
    })
}

// === ARNs of role sessions ===

/// The assumed-role ARN of a session: `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE-NAME/SESSION`.
/// AWS drops the role's path here (the role ARN keeps it). `None` when `role_arn` is not an IAM
/// role ARN.
#[must_use]
pub fn assumed_role_arn(role_arn: &str, role_session_name: &str) -> Option<String> {
    let role = RoleArnParts::parse(role_arn)?;
    Some(format!(
        "arn:{}:sts::{}:assumed-role/{}/{role_session_name}",
        role.partition, role.account, role.name
    ))
}

/// The `AssumedRoleId` (and `aws:userid`) of a session: `ROLE-ID:SESSION`.
#[must_use]
pub fn assumed_role_id(role_id: &str, role_session_name: &str) -> String {
    format!("{role_id}:{role_session_name}")
}

struct RoleArnParts<'a> {
    partition: &'a str,
    account: &'a str,
    name: &'a str,
}

impl<'a> RoleArnParts<'a> {
    fn parse(arn: &'a str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (scheme, partition, service, region, account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let path_and_name = resource.strip_prefix("role/")?;
        let name = path_and_name.rsplit('/').next()?;
        let ok = scheme == "arn"
            && !partition.is_empty()
            && service == "iam"
            && region.is_empty()
            && !account.is_empty()
            && !name.is_empty();
        ok.then_some(Self {
            partition,
            account,
            name,
        })
    }
}

#[cfg(test)]
mod tests;
