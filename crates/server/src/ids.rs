//! Unique IDs and access keys, minted by `podiam-identity` from the system RNG.

use podiam_identity::credentials::{MintError, mint_access_key, mint_unique_id};
use podiam_identity::{AccessKeyKind, SystemRng, UniqueIdPrefix};

use crate::error::AwsError;

fn failed(e: MintError) -> AwsError {
    AwsError::internal(format!("could not mint an identifier: {e}"))
}

/// `AROA…`, `ANPA…`, `AIDA…`, `AGPA…` (21 characters, as AWS).
pub fn unique(prefix: &str) -> Result<String, AwsError> {
    let p = match prefix {
        "AROA" => UniqueIdPrefix::Role,
        "AIDA" => UniqueIdPrefix::User,
        "AGPA" => UniqueIdPrefix::Group,
        _ => UniqueIdPrefix::ManagedPolicy,
    };
    mint_unique_id(p, &SystemRng).map_err(failed)
}

/// A long-term `AKIA…` key and its secret.
pub fn access_key() -> Result<(String, String), AwsError> {
    let k = mint_access_key(AccessKeyKind::LongTerm, &SystemRng).map_err(failed)?;
    Ok((
        k.access_key_id.as_str().to_string(),
        k.secret_access_key.expose_secret().to_string(),
    ))
}
