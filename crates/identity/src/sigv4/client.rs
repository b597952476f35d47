//! The client side of SigV4, for podiam's own components that call podiam (the node agent, the
//! webhook): the key a client signs with, read from where the AWS SDKs read it (the environment,
//! a shared-credentials file's profile), and [`sign`], which adds `X-Amz-Date`,
//! `X-Amz-Security-Token`, optionally `X-Amz-Content-SHA256`, and `Authorization` to a request.
//!
//! Pure, like the verifier: the caller reads the clock and sends the request; the credentials
//! file is read by [`KeySource`](super::KeySource).

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::digest;

use super::{
    CredentialScope, HttpRequest, SigV4Error, UriEncoding, VerifyOptions, canonical,
    sign_authorization_header,
};
use crate::clock::format_amz_date;
use crate::credentials::{AccessKeyId, InvalidAccessKeyId, SecretAccessKey};
use crate::encoding::hex;

// === SigningCredentials ===

/// The AWS key a client signs with.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningCredentials {
    /// `AKIA…` (or `ASIA…` with a session token).
    pub access_key_id: AccessKeyId,
    /// The secret.
    pub secret_access_key: SecretAccessKey,
    /// `aws_session_token`, for temporary keys; sent as `X-Amz-Security-Token`.
    pub session_token: Option<String>,
}

impl fmt::Debug for SigningCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why no [`SigningCredentials`] could be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Only one of `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` is set.
    #[error("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")]
    IncompleteEnvironment,
    /// The profile lacks `aws_access_key_id` or `aws_secret_access_key` (or is absent).
    #[error("profile `{profile}` has no {key}")]
    MissingKey {
        /// The profile (`[name]`).
        profile: String,
        /// The missing key's name.
        key: &'static str,
    },
    /// The access key ID is malformed.
    #[error(transparent)]
    InvalidAccessKeyId(#[from] InvalidAccessKeyId),
}

impl SigningCredentials {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) from `env`, if set
    /// (values trimmed; an empty token counts as none).
    ///
    /// # Errors
    /// [`CredentialsError::IncompleteEnvironment`] when only one of the pair is set;
    /// [`CredentialsError::InvalidAccessKeyId`] when the ID is malformed.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, CredentialsError> {
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => Ok(Some(Self {
                access_key_id: AccessKeyId::parse(id.trim())?,
                secret_access_key: SecretAccessKey::new(secret.trim()),
                session_token: env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            })),
            _ => Err(CredentialsError::IncompleteEnvironment),
        }
    }

    /// The `[profile]` section of an AWS shared-credentials file's `text` (`key = value` lines;
    /// `#` and `;` start comments).
    ///
    /// # Errors
    /// [`CredentialsError::MissingKey`] when the profile lacks the ID or the secret;
    /// [`CredentialsError::InvalidAccessKeyId`] when the ID is malformed.
    pub fn from_shared_credentials(text: &str, profile: &str) -> Result<Self, CredentialsError> {
        let mut in_profile = false;
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_profile = name.trim() == profile;
                continue;
            }
            if !in_profile {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().to_owned();
                match k.trim() {
                    "aws_access_key_id" => id = Some(v),
                    "aws_secret_access_key" => secret = Some(v),
                    "aws_session_token" => token = Some(v),
                    _ => {}
                }
            }
        }
        let missing = |key| CredentialsError::MissingKey {
            profile: profile.to_owned(),
            key,
        };
        let id = id.ok_or_else(|| missing("aws_access_key_id"))?;
        let secret = secret.ok_or_else(|| missing("aws_secret_access_key"))?;
        Ok(Self {
            access_key_id: AccessKeyId::parse(&id)?,
            secret_access_key: SecretAccessKey::new(secret),
            session_token: token.filter(|t| !t.is_empty()),
        })
    }
}

// === sign ===

/// How to sign: who, for which region and service, at what time.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    /// The key.
    pub credentials: &'a SigningCredentials,
    /// The credential scope's region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The credential scope's service, e.g. `sts`, `eks`, `eks-auth`.
    pub service: &'a str,
    /// The request time (`X-Amz-Date`), from the caller's clock.
    pub time: SystemTime,
    /// Also send and sign `X-Amz-Content-SHA256` (S3 requires it; other services accept it).
    pub content_sha256_header: bool,
    /// Canonical-URI encoding (default [`UriEncoding::Double`]; S3 uses single).
    pub uri_encoding: UriEncoding,
    /// Remove dot segments and empty segments from the path (default on; S3 turns it off).
    pub normalize_path: bool,
}

impl<'a> SigningParams<'a> {
    /// Parameters for an AWS-style (non-S3) service: double URI encoding, normalised path, the
    /// body hash in the canonical request only.
    #[must_use]
    pub fn new(
        credentials: &'a SigningCredentials,
        region: &'a str,
        service: &'a str,
        time: SystemTime,
    ) -> Self {
        Self {
            credentials,
            region,
            service,
            time,
            content_sha256_header: false,
            uri_encoding: UriEncoding::Double,
            normalize_path: true,
        }
    }
}

/// Why a request could not be signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// AWS: `host` must be signed, so the request must carry it.
    #[error("the request has no `host` header")]
    MissingHost,
    /// The request already carries a header the signer sets.
    #[error("the request already carries `{name}`, which the signer sets")]
    ReservedHeader {
        /// The header's lowercase name.
        name: String,
    },
    /// A header name cannot be signed (not a token).
    #[error("while signing: {0}")]
    Canonical(#[from] SigV4Error),
}

/// Headers the signer sets; a request that already has one is refused rather than signed twice.
const SET_BY_SIGNER: [&str; 4] = [
    "authorization",
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-security-token",
];

/// Signs `request` (method, path and query as they will be sent, every header to sign, `host`
/// included, and the body) with the `Authorization` header, as the AWS SDKs do: every header of
/// `request` is signed, plus `x-amz-date`, `x-amz-security-token` when the credentials carry a
/// session token, and `x-amz-content-sha256` when asked for.
///
/// Returns the headers to add to the request, lowercase, `authorization` last.
///
/// # Errors
/// [`SignError`] when `host` is missing, a header the signer sets is already present, or a
/// header name cannot be signed.
pub fn sign(
    request: &HttpRequest<'_>,
    params: &SigningParams<'_>,
) -> Result<Vec<(&'static str, String)>, SignError> {
    if !request
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        return Err(SignError::MissingHost);
    }
    if let Some((name, _)) = request
        .headers
        .iter()
        .find(|(n, _)| SET_BY_SIGNER.iter().any(|s| n.eq_ignore_ascii_case(s)))
    {
        return Err(SignError::ReservedHeader {
            name: name.to_ascii_lowercase(),
        });
    }
    let amz_date = format_amz_date(params.time);
    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if let Some(token) = &params.credentials.session_token {
        added.push(("x-amz-security-token", token.clone()));
    }
    if params.content_sha256_header {
        let hash = digest::digest(&digest::SHA256, request.body);
        added.push(("x-amz-content-sha256", hex(hash.as_ref())));
    }
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .copied()
        .chain(added.iter().map(|(n, v)| (*n, v.as_str())))
        .collect();
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let scope = CredentialScope {
        date: amz_date.get(..8).unwrap_or_default().to_owned(),
        region: params.region.to_owned(),
        service: params.service.to_owned(),
    };
    let options = VerifyOptions {
        uri_encoding: params.uri_encoding,
        normalize_path: params.normalize_path,
        ..VerifyOptions::default()
    };
    let authorization = sign_authorization_header(
        &HttpRequest {
            headers: &headers,
            ..*request
        },
        &params.credentials.access_key_id,
        &params.credentials.secret_access_key,
        &scope,
        &names,
        params.time,
        &options,
    )?;
    added.push(("authorization", authorization));
    Ok(added)
}

/// `text` URI-encoded as SigV4 canonicalises a query name or value (RFC 3986 unreserved
/// characters stay, every other byte is `%XX`), so what is sent is what is signed.
#[must_use]
pub fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    canonical::uri_encode(&mut out, text.as_bytes(), false);
    out
}

#[cfg(test)]
mod tests;
