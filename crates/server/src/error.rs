//! AWS error codes and HTTP statuses: assigned here and only here.
//!
//! Handlers return an [`AwsError`]: a typed [`ErrorKind`] and a message that names the failed
//! check. This module alone turns a kind into the code and status an SDK matches on, per
//! protocol ([`Protocol`]): awsQuery (STS, IAM: botocore's `sts`/`iam` models, `NoSuchEntity`
//! 404, `EntityAlreadyExists` 409, …), REST-JSON for EKS (`ResourceNotFoundException`,
//! `InvalidParameterException`, …) and EKS Auth (whose `AccessDeniedException` is a 400).
//! Audit, metrics and the CLI ask the kind ([`AwsError::kind`], [`AwsError::is_denial`]), never
//! the code string.

use axum::http::StatusCode;

/// What went wrong, in AWS's terms; one kind may have a different code per protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    // === common ===
    /// A parameter failed its constraint (IAM/STS `ValidationError`).
    Validation,
    /// The request names no operation.
    MissingAction,
    /// An operation podiam does not serve.
    InvalidAction,
    /// The REST path and method name no operation.
    UnknownOperation,
    /// The policy engine refused the call.
    AccessDenied,
    /// A bug or an unexpected failure inside podiam.
    Internal,
    /// The store could not be read or written.
    ServiceFailure,
    /// The entity kept changing while the write was retried.
    ConcurrentModification,

    // === authentication (SigV4) ===
    MissingAuthenticationToken,
    SignatureDoesNotMatch,
    RequestExpired,
    IncompleteSignature,
    /// An unknown or inactive access key, or a session token that does not open.
    InvalidClientTokenId,
    /// A session token past its expiry.
    ExpiredToken,

    // === IAM ===
    NoSuchEntity,
    EntityAlreadyExists,
    MalformedPolicyDocument,
    LimitExceeded,
    DeleteConflict,
    InvalidInput,
    UnmodifiableEntity,

    // === STS ===
    /// The web identity token is not valid (signature, claims, provider).
    InvalidIdentityToken,
    /// The web identity (or pod) token is past its `exp`.
    ExpiredWebIdentityToken,
    /// The identity provider's keys could not be fetched.
    IdpCommunication,
    PackedPolicyTooLarge,

    // === EKS / EKS Auth ===
    /// EKS's `InvalidParameterException` (on awsQuery: `ValidationError`).
    InvalidParameter,
    /// EKS Auth's `InvalidRequestException` (on awsQuery: `ValidationError`).
    InvalidRequest,
    ResourceInUse,
    /// The pod's ServiceAccount token is not valid.
    InvalidToken,

    // === broker mode (an upstream STS) ===
    /// Too many requests: the upstream rate limit or upstream's own throttling.
    Throttling,
    /// A service this request depends on (the upstream STS) cannot answer now.
    ServiceUnavailable,
}

/// The wire protocol an error is rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// STS and IAM: XML `<ErrorResponse>` with `<Code>`.
    Query,
    /// EKS (clusters, pod identity associations): REST-JSON, `x-amzn-errortype`.
    Eks,
    /// EKS Auth (`AssumeRoleForPodIdentity`): REST-JSON, its own codes and statuses.
    EksAuth,
}

impl ErrorKind {
    /// The code and HTTP status an SDK of `protocol` expects for this kind.
    pub fn wire(self, protocol: Protocol) -> (&'static str, StatusCode) {
        use ErrorKind as K;
        use Protocol as P;
        match (self, protocol) {
            // EKS and EKS Auth name IAM and STS failures in their own words.
            (K::AccessDenied, P::Eks) => ("AccessDeniedException", StatusCode::FORBIDDEN),
            (K::AccessDenied, P::EksAuth) => ("AccessDeniedException", StatusCode::BAD_REQUEST),
            (
                K::Validation
                | K::InvalidInput
                | K::MalformedPolicyDocument
                | K::InvalidParameter
                | K::InvalidRequest,
                P::Eks,
            ) => ("InvalidParameterException", StatusCode::BAD_REQUEST),
            (
                K::Validation
                | K::InvalidInput
                | K::MalformedPolicyDocument
                | K::InvalidParameter
                | K::InvalidRequest,
                P::EksAuth,
            ) => ("InvalidRequestException", StatusCode::BAD_REQUEST),
            (K::NoSuchEntity, P::Eks | P::EksAuth) => {
                ("ResourceNotFoundException", StatusCode::NOT_FOUND)
            }
            (K::Internal | K::ServiceFailure, P::Eks) => {
                ("ServerException", StatusCode::INTERNAL_SERVER_ERROR)
            }
            (K::Internal | K::ServiceFailure, P::EksAuth) => {
                ("InternalServerException", StatusCode::INTERNAL_SERVER_ERROR)
            }
            (K::InvalidParameter | K::InvalidRequest, P::Query) => {
                ("ValidationError", StatusCode::BAD_REQUEST)
            }
            (K::UnknownOperation, P::Eks | P::EksAuth) => {
                ("NotFoundException", StatusCode::NOT_FOUND)
            }
            (K::UnknownOperation, P::Query) => K::InvalidAction.wire(P::Query),
            // botocore eks-auth: ThrottlingException 429, ServiceUnavailableException 503.
            (K::Throttling, P::EksAuth) => ("ThrottlingException", StatusCode::TOO_MANY_REQUESTS),
            (K::ServiceUnavailable, P::Eks | P::EksAuth) => (
                "ServiceUnavailableException",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (k, _) => k.query(),
        }
    }

    /// awsQuery's code and status (the default for kinds EKS has no word of its own for).
    fn query(self) -> (&'static str, StatusCode) {
        use ErrorKind as K;
        match self {
            K::Validation | K::InvalidParameter | K::InvalidRequest => {
                ("ValidationError", StatusCode::BAD_REQUEST)
            }
            K::MissingAction => ("MissingAction", StatusCode::BAD_REQUEST),
            K::InvalidAction | K::UnknownOperation => ("InvalidAction", StatusCode::BAD_REQUEST),
            K::AccessDenied => ("AccessDenied", StatusCode::FORBIDDEN),
            K::Internal => ("InternalFailure", StatusCode::INTERNAL_SERVER_ERROR),
            K::ServiceFailure => ("ServiceFailure", StatusCode::INTERNAL_SERVER_ERROR),
            K::ConcurrentModification => ("ConcurrentModification", StatusCode::CONFLICT),
            K::MissingAuthenticationToken => ("MissingAuthenticationToken", StatusCode::FORBIDDEN),
            K::SignatureDoesNotMatch => ("SignatureDoesNotMatch", StatusCode::FORBIDDEN),
            K::RequestExpired => ("RequestExpired", StatusCode::BAD_REQUEST),
            K::IncompleteSignature => ("IncompleteSignature", StatusCode::BAD_REQUEST),
            K::InvalidClientTokenId => ("InvalidClientTokenId", StatusCode::FORBIDDEN),
            K::ExpiredToken => ("ExpiredToken", StatusCode::FORBIDDEN),
            K::NoSuchEntity => ("NoSuchEntity", StatusCode::NOT_FOUND),
            K::EntityAlreadyExists => ("EntityAlreadyExists", StatusCode::CONFLICT),
            K::MalformedPolicyDocument => ("MalformedPolicyDocument", StatusCode::BAD_REQUEST),
            K::LimitExceeded => ("LimitExceeded", StatusCode::CONFLICT),
            K::DeleteConflict => ("DeleteConflict", StatusCode::CONFLICT),
            K::InvalidInput => ("InvalidInput", StatusCode::BAD_REQUEST),
            K::UnmodifiableEntity => ("UnmodifiableEntity", StatusCode::BAD_REQUEST),
            K::InvalidIdentityToken => ("InvalidIdentityToken", StatusCode::BAD_REQUEST),
            K::ExpiredWebIdentityToken => ("ExpiredTokenException", StatusCode::BAD_REQUEST),
            K::IdpCommunication => ("IDPCommunicationError", StatusCode::BAD_REQUEST),
            K::PackedPolicyTooLarge => ("PackedPolicyTooLarge", StatusCode::BAD_REQUEST),
            K::ResourceInUse => ("ResourceInUseException", StatusCode::CONFLICT),
            K::InvalidToken => ("InvalidTokenException", StatusCode::BAD_REQUEST),
            // STS: `Throttling` is a 400 ("Rate exceeded").
            K::Throttling => ("Throttling", StatusCode::BAD_REQUEST),
            K::ServiceUnavailable => ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// Refused rather than broken: the caller or its token was not allowed. Audit records these
    /// as `denied`, metrics count them in `podiam_denials_total`.
    pub fn is_denial(self) -> bool {
        matches!(
            self,
            ErrorKind::AccessDenied
                | ErrorKind::InvalidIdentityToken
                | ErrorKind::ExpiredWebIdentityToken
                | ErrorKind::InvalidToken
                | ErrorKind::ExpiredToken
                | ErrorKind::InvalidClientTokenId
                | ErrorKind::SignatureDoesNotMatch
        )
    }

    /// Every kind, for tests that walk them all.
    pub const ALL: [ErrorKind; 31] = [
        ErrorKind::Validation,
        ErrorKind::MissingAction,
        ErrorKind::InvalidAction,
        ErrorKind::UnknownOperation,
        ErrorKind::AccessDenied,
        ErrorKind::Internal,
        ErrorKind::ServiceFailure,
        ErrorKind::ConcurrentModification,
        ErrorKind::MissingAuthenticationToken,
        ErrorKind::SignatureDoesNotMatch,
        ErrorKind::RequestExpired,
        ErrorKind::IncompleteSignature,
        ErrorKind::InvalidClientTokenId,
        ErrorKind::ExpiredToken,
        ErrorKind::NoSuchEntity,
        ErrorKind::EntityAlreadyExists,
        ErrorKind::MalformedPolicyDocument,
        ErrorKind::LimitExceeded,
        ErrorKind::DeleteConflict,
        ErrorKind::InvalidInput,
        ErrorKind::UnmodifiableEntity,
        ErrorKind::InvalidIdentityToken,
        ErrorKind::ExpiredWebIdentityToken,
        ErrorKind::IdpCommunication,
        ErrorKind::PackedPolicyTooLarge,
        ErrorKind::InvalidParameter,
        ErrorKind::InvalidRequest,
        ErrorKind::ResourceInUse,
        ErrorKind::InvalidToken,
        ErrorKind::Throttling,
        ErrorKind::ServiceUnavailable,
    ];
}

/// A failed request: what kind of failure, and a message naming what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (code, _) = self.kind.wire(Protocol::Query);
        write!(f, "{code}: {}", self.message)
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AwsError {
        AwsError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_denial(&self) -> bool {
        self.kind.is_denial()
    }

    /// The code a client of `protocol` sees.
    pub fn code(&self, protocol: Protocol) -> &'static str {
        self.kind.wire(protocol).0
    }

    pub fn status(&self, protocol: Protocol) -> StatusCode {
        self.kind.wire(protocol).1
    }

    /// `Sender` for 4xx, `Receiver` for 5xx, as in awsQuery error bodies.
    pub fn fault(&self) -> &'static str {
        if self.status(Protocol::Query).is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }

    // === common ===

    pub fn validation(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::Validation, message)
    }

    /// AWS's wording for a missing required parameter.
    pub fn missing(param: &str) -> AwsError {
        AwsError::validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(param)
        ))
    }

    /// An action podiam does not serve: says so, by its IAM name (`iam:ListSAMLProviders`),
    /// and where the served ones are listed. The name is the caller's: bounded and printable.
    pub fn invalid_action(service: &str, action: &str) -> AwsError {
        AwsError::new(
            ErrorKind::InvalidAction,
            format!(
                "podiam does not implement {service}:{}: README.md (\"What the server implements\") lists the operations it serves",
                crate::text::printable(action, 128)
            ),
        )
    }

    pub fn access_denied(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::AccessDenied, message)
    }

    pub fn internal(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::Internal, message)
    }

    pub fn missing_authentication() -> AwsError {
        AwsError::new(
            ErrorKind::MissingAuthenticationToken,
            "Request is missing Authentication Token",
        )
    }

    pub fn invalid_client_token(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::InvalidClientTokenId, message)
    }

    // === IAM ===

    pub fn no_such_entity(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::NoSuchEntity, message)
    }

    pub fn already_exists(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::EntityAlreadyExists, message)
    }

    pub fn malformed_policy(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::MalformedPolicyDocument, message)
    }

    pub fn limit_exceeded(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::LimitExceeded, message)
    }

    pub fn delete_conflict(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::DeleteConflict, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::InvalidInput, message)
    }

    pub fn unmodifiable(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::UnmodifiableEntity, message)
    }

    pub fn service_failure(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::ServiceFailure, message)
    }

    // === STS ===

    pub fn invalid_identity_token(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::InvalidIdentityToken, message)
    }

    pub fn packed_too_large(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::PackedPolicyTooLarge, message)
    }

    // === EKS ===

    pub fn not_found(message: impl Into<String>) -> AwsError {
        AwsError::no_such_entity(message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::InvalidParameter, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::InvalidRequest, message)
    }

    pub fn in_use(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::ResourceInUse, message)
    }

    pub fn invalid_token(message: impl Into<String>) -> AwsError {
        AwsError::new(ErrorKind::InvalidToken, message)
    }
}

pub fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

// === from the libraries' typed errors ===

impl From<podiam_store::StoreError> for AwsError {
    fn from(e: podiam_store::StoreError) -> AwsError {
        tracing::error!(error = %e, "store failure");
        AwsError::service_failure("the server could not save the change; it was not applied")
    }
}

impl From<podiam_policy::ParseError> for AwsError {
    fn from(e: podiam_policy::ParseError) -> AwsError {
        AwsError::malformed_policy(e.to_string())
    }
}

impl From<podiam_policy::SizeError> for AwsError {
    fn from(e: podiam_policy::SizeError) -> AwsError {
        AwsError::limit_exceeded(format!("Cannot exceed quota: {e}"))
    }
}

/// A SigV4 failure as the code SDKs expect.
impl From<&podiam_identity::SigV4Error> for AwsError {
    fn from(e: &podiam_identity::SigV4Error) -> AwsError {
        use podiam_identity::SigV4Error as E;
        match e {
            E::MissingAuthentication => AwsError::missing_authentication(),
            E::SignatureDoesNotMatch => AwsError::new(
                ErrorKind::SignatureDoesNotMatch,
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ),
            E::RequestExpired { .. }
            | E::RequestNotYetValid { .. }
            | E::PresignedExpired { .. } => AwsError::new(
                ErrorKind::RequestExpired,
                format!("Request has expired: {e}"),
            ),
            _ => AwsError::new(ErrorKind::IncompleteSignature, e.to_string()),
        }
    }
}

/// When an expired token expired, in UTC, and how to get a new one.
fn expired_advice(exp: i64, now: i64) -> String {
    use podiam_identity::clock::{format_iso8601, from_unix_seconds};
    let ago = now.saturating_sub(exp).max(0);
    let ago = match ago {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    };
    format!(
        "it expired at {} UTC ({ago} ago, the server's time is {} UTC). Get a new token: in a pod, kubelet rewrites the projected token file before it expires, so read the file again on each call (the AWS SDKs do); by hand, `podiam token create`",
        format_iso8601(from_unix_seconds(exp)),
        format_iso8601(from_unix_seconds(now))
    )
}

/// A web identity token (STS) or a pod's ServiceAccount token (EKS Auth) that failed
/// verification, naming the failed check.
pub fn token_error(e: &podiam_identity::jwt::JwtError, pod_identity: bool) -> AwsError {
    use podiam_identity::jwt::JwtError as E;
    match (e, pod_identity) {
        (E::TokenExpired { exp, now }, false) => AwsError::new(
            ErrorKind::ExpiredWebIdentityToken,
            format!("Token expired: {e}; {}", expired_advice(*exp, *now)),
        ),
        (E::TokenExpired { exp, now }, true) => AwsError::new(
            ErrorKind::ExpiredWebIdentityToken,
            format!("The token is expired: {e}; {}", expired_advice(*exp, *now)),
        ),
        (E::AudienceMismatch { .. }, false) => {
            AwsError::invalid_identity_token(format!("Incorrect token audience: {e}"))
        }
        (E::TokenTooLarge { .. }, false) => AwsError::validation(format!(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: {e}"
        )),
        (_, false) => {
            AwsError::invalid_identity_token(format!("The web identity token is not valid: {e}"))
        }
        (_, true) => AwsError::invalid_token(format!("The token is not valid: {e}")),
    }
}

// === broker mode ===

/// Codes an upstream STS throttles with (STS's `Throttling`, and the words other AWS APIs and
/// proxies use for the same).
pub(crate) fn is_upstream_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException"
    )
}

/// What an upstream STS failure is to the pod that asked: upstream's trust-policy refusal is
/// the pod's denial; throttling stays throttling; an outage, or the broker's own credentials
/// refused, is the service being unavailable (not the pod's fault, retry later); a request
/// upstream found invalid (duration over the role's maximum, a malformed session policy) is
/// the association's. Each message names the upstream.
impl From<&crate::upstream::UpstreamFailure> for AwsError {
    fn from(f: &crate::upstream::UpstreamFailure) -> AwsError {
        use crate::upstream::UpstreamFailure as F;
        let message = f.to_string();
        let kind = match f {
            F::RateLimited { .. } | F::Throttled { .. } => ErrorKind::Throttling,
            F::Unreachable { .. } | F::Timeout { .. } | F::Failed { .. } | F::Request { .. } => {
                ErrorKind::ServiceUnavailable
            }
            F::Malformed { .. } => ErrorKind::Internal,
            F::Refused { answer, .. } => match answer.code.as_str() {
                "AccessDenied" | "AccessDeniedException" => ErrorKind::AccessDenied,
                "ValidationError"
                | "MalformedPolicyDocument"
                | "PackedPolicyTooLarge"
                | "InvalidParameterValue" => ErrorKind::InvalidRequest,
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "ExpiredToken"
                | "RequestExpired"
                | "UnrecognizedClientException"
                | "RegionDisabledException" => {
                    return AwsError::new(
                        ErrorKind::ServiceUnavailable,
                        format!("the broker's own AWS credentials were refused: {message}"),
                    );
                }
                _ => ErrorKind::Internal,
            },
        };
        AwsError::new(kind, message)
    }
}

/// The codes of every kind, per protocol (the grep test uses them).
pub fn all_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = ErrorKind::ALL
        .iter()
        .flat_map(|k| [Protocol::Query, Protocol::Eks, Protocol::EksAuth].map(|p| k.wire(p).0))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

#[cfg(test)]
mod tests;
