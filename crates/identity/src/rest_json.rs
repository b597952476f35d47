//! AWS REST-JSON (`aws.protocols#restJson1`) error responses read as the AWS SDKs read them, for
//! podiam's own clients of podiam (the node agent's EKS Auth calls, the webhook's EKS calls).
//! Pure: the caller sends the request and hands over the status, headers and body it got back,
//! whatever its HTTP framework.

/// An AWS error as a REST-JSON service answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestJsonError {
    /// The HTTP status.
    pub status: u16,
    /// The error code, e.g. `InvalidTokenException`; `Http{status}` when the response names none.
    pub code: String,
    /// The service's message; empty when it gave none.
    pub message: String,
}

/// The longest stretch of a non-JSON body kept as the message (a proxy's error page).
const MAX_TEXT_MESSAGE: usize = 200;

impl RestJsonError {
    /// The error answered with `status`, `headers` (names in any case) and `body`, by botocore's
    /// rule (`RestJSONParser._inject_error_code` over
    /// `BaseJSONParser._do_error_parse`):
    ///
    /// - AWS: the code is the `x-amzn-errortype` header, else the body's `code` (or `Code`), else
    ///   its `__type`; a value may carry more than the name, so anything from the first `:` on
    ///   (`InvalidTokenException:http://internal.amazon.com/…`) and up to the last `#`
    ///   (`aws.protocoltests.restjson#FooError`) is dropped. botocore falls back to the bare
    ///   status; ours is `Http{status}`, so it cannot be read as a count.
    /// - AWS: the message is the body's `message`, else its `Message`. A body that is not a JSON
    ///   object (a proxy's or load balancer's page) has no message field; its start is kept as
    ///   the message instead, so the log says what answered.
    #[must_use]
    pub fn parse<'h>(
        status: u16,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        body: &[u8],
    ) -> Self {
        let doc: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(body).ok();
        let field = |name: &str| {
            doc.as_ref()
                .and_then(|b| b.get(name))
                .and_then(serde_json::Value::as_str)
        };
        let header = headers
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
            .map(|(_, v)| v);
        let code = [header, field("code"), field("Code"), field("__type")]
            .into_iter()
            .flatten()
            .map(error_name)
            .find(|c| !c.is_empty())
            .map_or_else(|| format!("Http{status}"), str::to_owned);
        let message = match field("message").or_else(|| field("Message")) {
            Some(m) => m.to_owned(),
            None if doc.is_none() => String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(MAX_TEXT_MESSAGE)
                .collect(),
            None => String::new(),
        };
        Self {
            status,
            code,
            message,
        }
    }
}

/// `value` without what AWS appends or prefixes to an error's name (see [`RestJsonError::parse`]).
fn error_name(value: &str) -> &str {
    let before_colon = value.split(':').next().unwrap_or_default();
    before_colon.rsplit('#').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests;
