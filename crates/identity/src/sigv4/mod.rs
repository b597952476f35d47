//! Server-side AWS Signature Version 4 (`AWS4-HMAC-SHA256`) verification, for the
//! `Authorization` header and for presigned query strings.
//!
//! Two steps, because the secret depends on who signed:
//!
//! 1. [`SigV4Auth::parse`] reads the algorithm, credential scope, signed headers, signature,
//!    timestamp and `X-Amz-Security-Token` from a framework-neutral [`HttpRequest`];
//! 2. the server finds the secret for [`SigV4Auth::access_key_id`] (`AKIA…` from the store,
//!    `ASIA…` by opening the session token), then [`SigV4Auth::verify`] rebuilds the canonical
//!    request from the client's `SignedHeaders`, derives the signing key, compares signatures in
//!    constant time and checks the request-time window.
//!
//! Errors are typed; the server maps them to `IncompleteSignature`, `SignatureDoesNotMatch`,
//! `MissingAuthenticationToken`, `RequestExpired` and friends (see each variant).
//!
//! The client side ([`sign`], [`SigningCredentials`]) builds the same canonical request, so
//! podiam's own components sign exactly what the verifier checks; [`KeySource`] is where their
//! key comes from (the environment, or a credentials file re-read when it changes).

mod canonical;
mod client;
mod key_source;

pub use client::{
    CredentialsError, SignError, SigningCredentials, SigningParams, sign, uri_encode,
};
pub use key_source::{CredentialsFile, CurrentKey, KeyError, KeyProvider, KeySource};

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, digest, hmac};

use crate::clock::{Clock, format_amz_date, parse_amz_date, unix_seconds};
use crate::credentials::{AccessKeyId, SecretAccessKey};
use crate::encoding::{hex, unhex};

/// The only algorithm supported.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// AWS: a signed request is valid within 15 minutes of its timestamp.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// AWS: presigned URLs last at most 7 days (`X-Amz-Expires` ≤ 604,800).
pub const MAX_PRESIGNED_EXPIRES: Duration = Duration::from_secs(604_800);
/// The payload hash a client may send instead of hashing the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const TERMINATOR: &str = "aws4_request";

/// A request as the server received it, independent of any HTTP framework.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path exactly as received, still percent-encoded, without the query.
    pub path: &'a str,
    /// The raw query string without `?` (empty when there is none).
    pub query: &'a str,
    /// Headers in arrival order; names in any case. For HTTP/2, include `host` from `:authority`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

impl HttpRequest<'_> {
    fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn single_header(&self, name: &'static str) -> Result<Option<&str>, SigV4Error> {
        let mut values = self.header_values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(SigV4Error::DuplicateComponent { component: name });
        }
        Ok(first)
    }
}

/// How the canonical URI is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UriEncoding {
    /// Every service but S3: the path as sent is URI-encoded again (`%` → `%25`).
    #[default]
    Double,
    /// S3: the path is decoded, then encoded once.
    Single,
}

/// What the verifier expects besides a correct signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The region the credential scope must name (`None`: any).
    pub region: Option<String>,
    /// The services the credential scope may name (empty: any), e.g. `["sts", "iam"]`.
    pub services: Vec<String>,
    /// Canonical-URI encoding (default [`UriEncoding::Double`]).
    pub uri_encoding: UriEncoding,
    /// Remove dot segments and empty segments from the path (default on; S3 turns it off).
    pub normalize_path: bool,
    /// How far the request time may be from now (default 15 minutes).
    pub max_clock_skew: Duration,
    /// Accept `x-amz-content-sha256: UNSIGNED-PAYLOAD` (default off: STS and IAM sign bodies).
    pub allow_unsigned_payload: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            region: None,
            services: Vec::new(),
            uri_encoding: UriEncoding::Double,
            normalize_path: true,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            allow_unsigned_payload: false,
        }
    }
}

impl VerifyOptions {
    /// Options for an AWS-style (non-S3) service endpoint in `region` serving `services`.
    #[must_use]
    pub fn for_services(region: impl Into<String>, services: &[&str]) -> Self {
        Self {
            region: Some(region.into()),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }
}

/// Where the signature was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureLocation {
    /// `Authorization` header.
    Header,
    /// Presigned query string (`X-Amz-Signature`).
    Query,
}

/// `DATE/REGION/SERVICE/aws4_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialScope {
    /// `YYYYMMDD`.
    pub date: String,
    /// e.g. `us-east-1`.
    pub region: String,
    /// e.g. `sts`.
    pub service: String,
}

impl fmt::Display for CredentialScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// Why a signed request was refused. The AWS code each usually maps to is in its docs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor `X-Amz-Algorithm` (`MissingAuthenticationToken`).
    #[error("request is not signed: no `Authorization` header or `X-Amz-Algorithm` parameter")]
    MissingAuthentication,
    /// Both an `Authorization` header and a presigned query (`InvalidRequest`/`IncompleteSignature`).
    #[error("request carries both an `Authorization` header and a presigned query")]
    AmbiguousAuthentication,
    /// An algorithm other than `AWS4-HMAC-SHA256` (`IncompleteSignature`).
    #[error("unsupported signing algorithm `{algorithm}`")]
    UnsupportedAlgorithm {
        /// What the client sent.
        algorithm: String,
    },
    /// A required part is absent (`IncompleteSignature`).
    #[error("`{component}` is missing")]
    MissingComponent {
        /// e.g. `Credential`, `SignedHeaders`, `Signature`, `X-Amz-Date`.
        component: &'static str,
    },
    /// A part appears twice (`IncompleteSignature`).
    #[error("`{component}` appears more than once")]
    DuplicateComponent {
        /// The part's name.
        component: &'static str,
    },
    /// A part is malformed (`IncompleteSignature`).
    #[error("`{component}` is malformed: {problem}")]
    MalformedComponent {
        /// The part's name.
        component: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The scope's date is not the request date's day (`SignatureDoesNotMatch`).
    #[error("credential scope date `{scope_date}` does not match request date `{request_date}`")]
    ScopeDateMismatch {
        /// `YYYYMMDD` from the scope.
        scope_date: String,
        /// `X-Amz-Date`.
        request_date: String,
    },
    /// The scope names another region (`SignatureDoesNotMatch`).
    #[error("credential should be scoped to region `{expected}`, not `{got}`")]
    WrongRegion {
        /// The scope's region.
        got: String,
        /// The expected region.
        expected: String,
    },
    /// The scope names another service (`SignatureDoesNotMatch`).
    #[error("credential should be scoped to service {}, not `{got}`", expected.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or "))]
    WrongService {
        /// The scope's service.
        got: String,
        /// The accepted services.
        expected: Vec<String>,
    },
    /// `host` is not among the signed headers (`SignatureDoesNotMatch`).
    #[error("the `host` header must be signed")]
    HostNotSigned,
    /// `SignedHeaders` is not lowercase, sorted and without repeats (`IncompleteSignature`).
    #[error("`SignedHeaders` must be lowercase, sorted and unique")]
    SignedHeadersNotCanonical,
    /// A signed header is absent from the request (`SignatureDoesNotMatch`).
    #[error("signed header `{name}` is not in the request")]
    SignedHeaderMissing {
        /// The header's name.
        name: String,
    },
    /// `x-amz-content-sha256` is not the body's hash (`SignatureDoesNotMatch`).
    #[error("`x-amz-content-sha256` does not match the body")]
    PayloadHashMismatch,
    /// `UNSIGNED-PAYLOAD` or a streaming payload where the body must be signed
    /// (`SignatureDoesNotMatch`).
    #[error("payload hash `{value}` is not accepted here; the body must be signed")]
    UnsignedPayloadNotAllowed {
        /// The `x-amz-content-sha256` value.
        value: String,
    },
    /// The request time is more than the allowed skew in the past (`RequestExpired`).
    #[error("request signed at {signed_at} is too old, now is {now} (seconds since the epoch)")]
    RequestExpired {
        /// The request's timestamp.
        signed_at: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// The request time is more than the allowed skew in the future (`RequestExpired`;
    /// AWS: "Signature not yet current").
    #[error(
        "request signed at {signed_at} is in the future, now is {now} (seconds since the epoch)"
    )]
    RequestNotYetValid {
        /// The request's timestamp.
        signed_at: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// A presigned request past `X-Amz-Date + X-Amz-Expires` (`RequestExpired`/`AccessDenied`).
    #[error("presigned request expired at {expired_at}, now is {now} (seconds since the epoch)")]
    PresignedExpired {
        /// `X-Amz-Date + X-Amz-Expires`.
        expired_at: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// The signature is wrong (`SignatureDoesNotMatch`).
    #[error("the request signature does not match the signature calculated from the secret key")]
    SignatureDoesNotMatch,
}

fn malformed(component: &'static str, problem: impl Into<String>) -> SigV4Error {
    SigV4Error::MalformedComponent {
        component,
        problem: problem.into(),
    }
}

// === parsing ===

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationHeader {
    /// The access key ID from `Credential`.
    pub access_key_id: AccessKeyId,
    /// The rest of `Credential`.
    pub scope: CredentialScope,
    /// `SignedHeaders`, split on `;`.
    pub signed_headers: Vec<String>,
    /// `Signature`, decoded from 64 hex characters.
    pub signature: [u8; 32],
}

/// Parses an `Authorization` header value:
/// `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>` (components in any order, `,` with
/// optional spaces).
///
/// # Errors
/// [`SigV4Error::UnsupportedAlgorithm`], `MissingComponent`, `DuplicateComponent`,
/// `MalformedComponent` or `SignedHeadersNotCanonical`.
pub fn parse_authorization_header(value: &str) -> Result<AuthorizationHeader, SigV4Error> {
    let value = value.trim_matches(' ');
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm {
            algorithm: truncate_for_message(algorithm),
        });
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim_matches(' ');
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| malformed("Authorization", "a component is not `Name=value`"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(malformed("Authorization", "unknown component")),
        };
        if slot.replace(value).is_some() {
            return Err(SigV4Error::DuplicateComponent {
                component: component_name(name),
            });
        }
    }
    let credential = credential.ok_or(SigV4Error::MissingComponent {
        component: "Credential",
    })?;
    let signed_headers = signed_headers.ok_or(SigV4Error::MissingComponent {
        component: "SignedHeaders",
    })?;
    let signature = signature.ok_or(SigV4Error::MissingComponent {
        component: "Signature",
    })?;
    let (access_key_id, scope) = parse_credential("Credential", credential)?;
    Ok(AuthorizationHeader {
        access_key_id,
        scope,
        signed_headers: parse_signed_headers("SignedHeaders", signed_headers)?,
        signature: parse_signature("Signature", signature)?,
    })
}

fn component_name(name: &str) -> &'static str {
    match name {
        "Credential" => "Credential",
        "SignedHeaders" => "SignedHeaders",
        _ => "Signature",
    }
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(64).collect()
}

fn parse_credential(
    component: &'static str,
    value: &str,
) -> Result<(AccessKeyId, CredentialScope), SigV4Error> {
    let mut parts = value.split('/');
    let (Some(key), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed(
            component,
            "expected `ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request`",
        ));
    };
    let access_key_id = AccessKeyId::parse(key).map_err(|_| {
        malformed(
            component,
            "the access key ID is not 1 to 128 word characters",
        )
    })?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(component, "the date is not `YYYYMMDD`"));
    }
    if region.is_empty() || service.is_empty() {
        return Err(malformed(component, "the region or service is empty"));
    }
    if terminator != TERMINATOR {
        return Err(malformed(
            component,
            "the scope must end with `aws4_request`",
        ));
    }
    Ok((
        access_key_id,
        CredentialScope {
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
        },
    ))
}

fn parse_signed_headers(component: &'static str, value: &str) -> Result<Vec<String>, SigV4Error> {
    if value.is_empty() {
        return Err(malformed(component, "empty"));
    }
    let names: Vec<String> = value.split(';').map(str::to_owned).collect();
    let valid_name = |n: &String| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':')
    };
    if !names.iter().all(valid_name) || names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(SigV4Error::SignedHeadersNotCanonical);
    }
    Ok(names)
}

fn parse_signature(component: &'static str, value: &str) -> Result<[u8; 32], SigV4Error> {
    unhex::<32>(value).ok_or_else(|| malformed(component, "expected 64 hex characters"))
}

/// A parsed but not yet verified SigV4 authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigV4Auth {
    /// Who claims to have signed.
    pub access_key_id: AccessKeyId,
    /// The credential scope.
    pub scope: CredentialScope,
    /// Lowercase signed header names, sorted.
    pub signed_headers: Vec<String>,
    /// The client's signature.
    pub signature: [u8; 32],
    /// `X-Amz-Date` as sent (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// `X-Amz-Date` as a time.
    pub signed_at: SystemTime,
    /// Header or presigned query.
    pub location: SignatureLocation,
    /// `X-Amz-Expires` (presigned only).
    pub expires: Option<Duration>,
    /// `X-Amz-Security-Token` (header or query), required with `ASIA…` keys.
    pub security_token: Option<String>,
}

impl SigV4Auth {
    /// Reads the SigV4 authentication of `request`, header or presigned query.
    ///
    /// # Errors
    /// [`SigV4Error`] (`MissingAuthentication` when the request is not signed at all).
    pub fn parse(request: &HttpRequest<'_>) -> Result<Self, SigV4Error> {
        let authorization = request.single_header("authorization")?;
        let pairs = canonical::query_pairs(request.query);
        let presigned = pairs.iter().any(|(n, _)| n == b"X-Amz-Algorithm");
        match (authorization, presigned) {
            (None, false) => Err(SigV4Error::MissingAuthentication),
            (Some(_), true) => Err(SigV4Error::AmbiguousAuthentication),
            (Some(value), false) => Self::parse_header_form(request, value),
            (None, true) => Self::parse_query_form(&pairs),
        }
    }

    fn parse_header_form(request: &HttpRequest<'_>, value: &str) -> Result<Self, SigV4Error> {
        let header = parse_authorization_header(value)?;
        let amz_date = request
            .single_header("x-amz-date")?
            .ok_or(SigV4Error::MissingComponent {
                component: "X-Amz-Date",
            })?
            .trim_matches(' ');
        let signed_at = parse_amz_date(amz_date)
            .ok_or_else(|| malformed("X-Amz-Date", "expected `YYYYMMDDTHHMMSSZ`"))?;
        let security_token = request
            .single_header("x-amz-security-token")?
            .map(|t| t.trim_matches(' ').to_owned());
        Ok(Self {
            access_key_id: header.access_key_id,
            scope: header.scope,
            signed_headers: header.signed_headers,
            signature: header.signature,
            amz_date: amz_date.to_owned(),
            signed_at,
            location: SignatureLocation::Header,
            expires: None,
            security_token,
        })
    }

    fn parse_query_form(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Self, SigV4Error> {
        let param = |name: &'static str| -> Result<Option<String>, SigV4Error> {
            let mut values = pairs.iter().filter(|(n, _)| n == name.as_bytes());
            let first = values.next();
            if values.next().is_some() {
                return Err(SigV4Error::DuplicateComponent { component: name });
            }
            first
                .map(|(_, v)| {
                    String::from_utf8(v.clone()).map_err(|_| malformed(name, "not UTF-8"))
                })
                .transpose()
        };
        let required = |name: &'static str| -> Result<String, SigV4Error> {
            param(name)?.ok_or(SigV4Error::MissingComponent { component: name })
        };
        let algorithm = required("X-Amz-Algorithm")?;
        if algorithm != ALGORITHM {
            return Err(SigV4Error::UnsupportedAlgorithm {
                algorithm: truncate_for_message(&algorithm),
            });
        }
        let (access_key_id, scope) =
            parse_credential("X-Amz-Credential", &required("X-Amz-Credential")?)?;
        let amz_date = required("X-Amz-Date")?;
        let signed_at = parse_amz_date(&amz_date)
            .ok_or_else(|| malformed("X-Amz-Date", "expected `YYYYMMDDTHHMMSSZ`"))?;
        let expires = required("X-Amz-Expires")?;
        let expires = expires
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_PRESIGNED_EXPIRES.as_secs()).contains(s))
            .ok_or_else(|| malformed("X-Amz-Expires", "expected 1 to 604800 seconds"))?;
        let signed_headers =
            parse_signed_headers("X-Amz-SignedHeaders", &required("X-Amz-SignedHeaders")?)?;
        let signature = parse_signature("X-Amz-Signature", &required("X-Amz-Signature")?)?;
        Ok(Self {
            access_key_id,
            scope,
            signed_headers,
            signature,
            amz_date,
            signed_at,
            location: SignatureLocation::Query,
            expires: Some(Duration::from_secs(expires)),
            security_token: param("X-Amz-Security-Token")?,
        })
    }

    /// Verifies the signature with `secret` and checks scope and time against `options` and
    /// `clock`.
    ///
    /// Checks run cheapest first: scope, time window, `host` signed, payload hash, then the
    /// HMAC, compared in constant time.
    ///
    /// # Errors
    /// The first [`SigV4Error`] found.
    pub fn verify(
        &self,
        request: &HttpRequest<'_>,
        secret: &SecretAccessKey,
        options: &VerifyOptions,
        clock: &impl Clock,
    ) -> Result<(), SigV4Error> {
        self.check_scope(options)?;
        self.check_time(options, clock.now())?;
        if !self.signed_headers.iter().any(|h| h == "host") {
            return Err(SigV4Error::HostNotSigned);
        }
        let string_to_sign = self.string_to_sign(request, options)?;
        let key = SigningKey::derive(secret, &self.scope);
        let expected = key.sign(string_to_sign.as_bytes());
        constant_time::verify_slices_are_equal(&expected, &self.signature)
            .map_err(|_| SigV4Error::SignatureDoesNotMatch)
    }

    fn check_scope(&self, options: &VerifyOptions) -> Result<(), SigV4Error> {
        if !self.amz_date.starts_with(&self.scope.date) {
            return Err(SigV4Error::ScopeDateMismatch {
                scope_date: self.scope.date.clone(),
                request_date: self.amz_date.clone(),
            });
        }
        if let Some(region) = &options.region
            && &self.scope.region != region
        {
            return Err(SigV4Error::WrongRegion {
                got: self.scope.region.clone(),
                expected: region.clone(),
            });
        }
        if !options.services.is_empty() && !options.services.contains(&self.scope.service) {
            return Err(SigV4Error::WrongService {
                got: self.scope.service.clone(),
                expected: options.services.clone(),
            });
        }
        Ok(())
    }

    fn check_time(&self, options: &VerifyOptions, now: SystemTime) -> Result<(), SigV4Error> {
        let signed_at = unix_seconds(self.signed_at);
        let now_s = unix_seconds(now);
        let skew = i64::try_from(options.max_clock_skew.as_secs()).unwrap_or(i64::MAX);
        if signed_at > now_s.saturating_add(skew) {
            return Err(SigV4Error::RequestNotYetValid {
                signed_at,
                now: now_s,
            });
        }
        match self.expires {
            // AWS: a presigned request is good from X-Amz-Date until X-Amz-Date + X-Amz-Expires.
            Some(expires) => {
                let expired_at =
                    signed_at.saturating_add(i64::try_from(expires.as_secs()).unwrap_or(i64::MAX));
                if now_s >= expired_at {
                    return Err(SigV4Error::PresignedExpired {
                        expired_at,
                        now: now_s,
                    });
                }
            }
            // AWS: a header-signed request must arrive within 15 minutes of its timestamp.
            None => {
                if signed_at < now_s.saturating_sub(skew) {
                    return Err(SigV4Error::RequestExpired {
                        signed_at,
                        now: now_s,
                    });
                }
            }
        }
        Ok(())
    }

    fn payload_hash(
        &self,
        request: &HttpRequest<'_>,
        options: &VerifyOptions,
    ) -> Result<String, SigV4Error> {
        let computed = || hex(digest::digest(&digest::SHA256, request.body).as_ref());
        let Some(claimed) = request.single_header("x-amz-content-sha256")? else {
            return Ok(computed());
        };
        let claimed = claimed.trim_matches(' ');
        if claimed == UNSIGNED_PAYLOAD && options.allow_unsigned_payload {
            return Ok(claimed.to_owned());
        }
        if unhex::<32>(claimed).is_none() {
            return Err(SigV4Error::UnsignedPayloadNotAllowed {
                value: truncate_for_message(claimed),
            });
        }
        if claimed != computed() {
            return Err(SigV4Error::PayloadHashMismatch);
        }
        Ok(claimed.to_owned())
    }

    /// The canonical request the client should have signed, for diagnostics. It contains the
    /// signed header values (possibly a session token): do not log it.
    ///
    /// # Errors
    /// [`SigV4Error`] when a signed header is missing or the payload hash is refused.
    pub fn canonical_request(
        &self,
        request: &HttpRequest<'_>,
        options: &VerifyOptions,
    ) -> Result<String, SigV4Error> {
        let uri = canonical::canonical_uri(request.path, options);
        let query = match self.location {
            SignatureLocation::Header => {
                canonical::canonical_query(&canonical::query_pairs(request.query), None)
            }
            SignatureLocation::Query => canonical::canonical_query(
                &canonical::query_pairs(request.query),
                Some(b"X-Amz-Signature"),
            ),
        };
        let headers = canonical::canonical_headers(request.headers, &self.signed_headers)?;
        let payload_hash = self.payload_hash(request, options)?;
        Ok(format!(
            "{}\n{uri}\n{query}\n{headers}\n{}\n{payload_hash}",
            request.method,
            self.signed_headers.join(";"),
        ))
    }

    /// The string to sign for `request`.
    ///
    /// # Errors
    /// As [`SigV4Auth::canonical_request`].
    pub fn string_to_sign(
        &self,
        request: &HttpRequest<'_>,
        options: &VerifyOptions,
    ) -> Result<String, SigV4Error> {
        let canonical_request = self.canonical_request(request, options)?;
        Ok(string_to_sign(
            &self.amz_date,
            &self.scope,
            &canonical_request,
        ))
    }
}

fn string_to_sign(amz_date: &str, scope: &CredentialScope, canonical_request: &str) -> String {
    let hash = digest::digest(&digest::SHA256, canonical_request.as_bytes());
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(hash.as_ref()))
}

// === keys and signing ===

/// A derived SigV4 signing key for one secret and scope. Servers may cache it per
/// `(access key, date, region, service)`: it is valid for that day only.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
    #[must_use]
    pub fn derive(secret: &SecretAccessKey, scope: &CredentialScope) -> Self {
        let mut k_secret = Vec::with_capacity(4 + secret.expose_secret().len());
        k_secret.extend_from_slice(b"AWS4");
        k_secret.extend_from_slice(secret.expose_secret().as_bytes());
        let step = |key: &[u8], data: &str| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        };
        let k_date = step(&k_secret, &scope.date);
        let k_region = step(k_date.as_ref(), &scope.region);
        let k_service = step(k_region.as_ref(), &scope.service);
        let k_signing = step(k_service.as_ref(), TERMINATOR);
        Self(hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref()))
    }

    /// `HMAC(kSigning, string_to_sign)`.
    #[must_use]
    pub fn sign(&self, string_to_sign: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.0, string_to_sign);
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }
}

/// Signs `request` for the `Authorization` header, for clients and tests: the request must
/// already carry `x-amz-date` = [`format_amz_date`]`(time)` and every header in
/// `signed_headers` (lowercase, sorted; `host` included). Returns the header value.
///
/// # Errors
/// [`SigV4Error`] when a signed header is missing or `signed_headers` is not canonical.
pub fn sign_authorization_header(
    request: &HttpRequest<'_>,
    access_key_id: &AccessKeyId,
    secret: &SecretAccessKey,
    scope: &CredentialScope,
    signed_headers: &[&str],
    time: SystemTime,
    options: &VerifyOptions,
) -> Result<String, SigV4Error> {
    let signed_headers = parse_signed_headers("SignedHeaders", &signed_headers.join(";"))?;
    let auth = SigV4Auth {
        access_key_id: access_key_id.clone(),
        scope: scope.clone(),
        signed_headers,
        signature: [0; 32],
        amz_date: format_amz_date(time),
        signed_at: time,
        location: SignatureLocation::Header,
        expires: None,
        security_token: None,
    };
    let signature =
        SigningKey::derive(secret, scope).sign(auth.string_to_sign(request, options)?.as_bytes());
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={}",
        auth.signed_headers.join(";"),
        hex(&signature)
    ))
}

#[cfg(test)]
mod tests;
