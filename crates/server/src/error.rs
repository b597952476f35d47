//! AWS error codes and HTTP statuses: assigned here and only here.
//!
//! Each library returns its own typed error; this module maps them to the code an SDK matches on
//! (botocore's service models are the reference: `NoSuchEntity` 404, `EntityAlreadyExists` 409, …)
//! and a message that names the failed check.

use axum::http::StatusCode;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl AwsError {
    pub fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> AwsError {
        AwsError {
            code,
            status,
            message: message.into(),
        }
    }

    /// `Sender` for 4xx, `Receiver` for 5xx, as in awsQuery error bodies.
    pub fn fault(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }

    // === common ===

    pub fn validation(message: impl Into<String>) -> AwsError {
        AwsError::new("ValidationError", StatusCode::BAD_REQUEST, message)
    }

    /// AWS's wording for a missing required parameter.
    pub fn missing(param: &str) -> AwsError {
        AwsError::validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(param)
        ))
    }

    pub fn invalid_action(action: &str) -> AwsError {
        AwsError::new(
            "InvalidAction",
            StatusCode::BAD_REQUEST,
            format!("Could not find operation {action} for version this service supports"),
        )
    }

    pub fn access_denied(message: impl Into<String>) -> AwsError {
        AwsError::new("AccessDenied", StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> AwsError {
        AwsError::new(
            "InternalFailure",
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    }

    // === IAM ===

    pub fn no_such_entity(message: impl Into<String>) -> AwsError {
        AwsError::new("NoSuchEntity", StatusCode::NOT_FOUND, message)
    }

    pub fn already_exists(message: impl Into<String>) -> AwsError {
        AwsError::new("EntityAlreadyExists", StatusCode::CONFLICT, message)
    }

    pub fn malformed_policy(message: impl Into<String>) -> AwsError {
        AwsError::new("MalformedPolicyDocument", StatusCode::BAD_REQUEST, message)
    }

    pub fn limit_exceeded(message: impl Into<String>) -> AwsError {
        AwsError::new("LimitExceeded", StatusCode::CONFLICT, message)
    }

    pub fn delete_conflict(message: impl Into<String>) -> AwsError {
        AwsError::new("DeleteConflict", StatusCode::CONFLICT, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidInput", StatusCode::BAD_REQUEST, message)
    }

    pub fn unmodifiable(message: impl Into<String>) -> AwsError {
        AwsError::new("UnmodifiableEntity", StatusCode::BAD_REQUEST, message)
    }

    pub fn service_failure(message: impl Into<String>) -> AwsError {
        AwsError::new("ServiceFailure", StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

pub fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

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
