//! Wire formats: the container-credentials JSON the SDKs read, the IMDS credential document,
//! EKS Auth's `AssumeRoleForPodIdentity` response and STS's `AssumeRole` XML.

use std::time::SystemTime;

use hyper::body::Bytes;
use podiam_identity::clock::{format_iso8601, from_unix_seconds};
use podiam_identity::rest_json::RestJsonError;
use serde::{Deserialize, Serialize};

use crate::source::{Credentials, PodCredentials, SourceError};

/// The container credentials provider's document (AWS SDKs: `AccessKeyId`, `SecretAccessKey`,
/// `Token`, `Expiration` required; `AccountId` optional).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    expiration: String,
}

/// A document that could not be encoded as JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("couldn't encode the {document}: {reason}")]
pub struct EncodeError {
    /// Which document.
    pub document: &'static str,
    /// serde_json's error.
    pub reason: String,
}

/// `doc` as JSON (`pretty`: indented, as EC2's IMDS answers).
///
/// # Errors
/// [`EncodeError`] when `doc`'s `Serialize` fails; never an empty body in its place.
pub fn encode(
    document: &'static str,
    doc: &impl Serialize,
    pretty: bool,
) -> Result<Bytes, EncodeError> {
    let encoded = if pretty {
        serde_json::to_vec_pretty(doc)
    } else {
        serde_json::to_vec(doc)
    };
    encoded.map(Bytes::from).map_err(|e| EncodeError {
        document,
        reason: e.to_string(),
    })
}

/// Renders the `/v1/credentials` body once per credential set; every cached answer reuses it.
///
/// # Errors
/// [`EncodeError`] (not expected: the document is strings only).
pub fn container_credentials_json(c: &PodCredentials) -> Result<Bytes, EncodeError> {
    let doc = ContainerCredentials {
        access_key_id: &c.credentials.access_key_id,
        secret_access_key: &c.credentials.secret_access_key,
        token: &c.credentials.session_token,
        account_id: c.account_id(),
        expiration: format_iso8601(c.credentials.expiration),
    };
    encode("container credentials document", &doc, false)
}

/// `{"code","message"}` of the container endpoint's errors.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// What [`error_json`] answers when the error itself cannot be encoded.
const UNENCODABLE_ERROR: &[u8] =
    br#"{"code":"InternalServerException","message":"couldn't encode the error"}"#;

/// An error body for the container endpoint: `{"code","message"}`. The SDKs show the body in
/// their error (botocore: "Received non 200 response (400) from container metadata: …").
#[must_use]
pub fn error_json(code: &str, message: &str) -> Bytes {
    encode("error", &ErrorBody { code, message }, false).unwrap_or_else(|e| {
        tracing::error!(error = %e, code, "answering a fixed error instead");
        Bytes::from_static(UNENCODABLE_ERROR)
    })
}

/// IMDS `iam/security-credentials/<role>` (botocore requires `AccessKeyId`, `SecretAccessKey`,
/// `Token`, `Expiration`; the rest is what EC2 answers).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

/// Renders the IMDS credential document.
///
/// # Errors
/// [`EncodeError`] (not expected: the document is strings only).
pub fn imds_credentials_json(
    c: &Credentials,
    last_updated: SystemTime,
) -> Result<Bytes, EncodeError> {
    let doc = ImdsCredentials {
        code: "Success",
        last_updated: format_iso8601(last_updated),
        kind: "AWS-HMAC",
        access_key_id: &c.access_key_id,
        secret_access_key: &c.secret_access_key,
        token: &c.session_token,
        expiration: format_iso8601(c.expiration),
    };
    encode("IMDS credentials document", &doc, true)
}

// === EKS Auth ===

/// `{"token": …}`.
#[derive(Serialize)]
pub struct AssumeRoleForPodIdentityRequest<'a> {
    /// The pod's projected token.
    pub token: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssumeRoleForPodIdentityResponse {
    subject: Subject,
    pod_identity_association: Association,
    assumed_role_user: AssumedRoleUser,
    credentials: EksCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subject {
    namespace: String,
    service_account: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Association {
    association_id: String,
}

#[derive(Deserialize)]
struct AssumedRoleUser {
    arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EksCredentials {
    session_token: String,
    secret_access_key: String,
    access_key_id: String,
    /// botocore eks-auth: `Timestamp`, which rest-json carries as epoch seconds (possibly with a
    /// fraction).
    expiration: f64,
}

/// Parses a 200 `AssumeRoleForPodIdentity` body.
///
/// # Errors
/// [`SourceError::Unavailable`] when a required member is missing or of the wrong type.
pub fn parse_assume_role_for_pod_identity(body: &[u8]) -> Result<PodCredentials, SourceError> {
    let r: AssumeRoleForPodIdentityResponse =
        serde_json::from_slice(body).map_err(|e| SourceError::Unavailable {
            reason: format!("unreadable AssumeRoleForPodIdentity response: {e}"),
        })?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "epoch seconds fit in i64; the fraction is dropped on purpose"
    )]
    let expiration = from_unix_seconds(r.credentials.expiration.floor() as i64);
    Ok(PodCredentials {
        credentials: Credentials {
            access_key_id: r.credentials.access_key_id,
            secret_access_key: r.credentials.secret_access_key,
            session_token: r.credentials.session_token,
            expiration,
        },
        assumed_role_arn: r.assumed_role_user.arn,
        association_id: r.pod_identity_association.association_id,
        namespace: r.subject.namespace,
        service_account: r.subject.service_account,
    })
}

/// A rest-json error answer (EKS Auth), read by AWS's rule in [`RestJsonError::parse`].
#[must_use]
pub fn parse_rest_json_error<'h>(
    status: u16,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    body: &[u8],
) -> SourceError {
    let RestJsonError {
        status,
        code,
        message,
    } = RestJsonError::parse(status, headers, body);
    SourceError::Service {
        status,
        code,
        message,
    }
}

// === STS AssumeRole (awsQuery, XML) ===

/// Parses `<AssumeRoleResponse>…<Credentials>` from STS.
///
/// # Errors
/// [`SourceError::Unavailable`] when an element is missing or `Expiration` is not ISO 8601.
pub fn parse_assume_role_xml(body: &str) -> Result<Credentials, SourceError> {
    let creds = element(body, "Credentials").ok_or_else(|| unreadable("no <Credentials>"))?;
    let get = |name: &'static str| {
        element(creds, name)
            .map(xml_unescape)
            .ok_or_else(|| unreadable(name))
    };
    let expiration = get("Expiration")?;
    Ok(Credentials {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: get("SecretAccessKey")?,
        session_token: get("SessionToken")?,
        expiration: parse_iso8601(&expiration).ok_or_else(|| unreadable("Expiration"))?,
    })
}

/// An STS XML error: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[must_use]
pub fn parse_query_error(status: u16, body: &str) -> SourceError {
    SourceError::Service {
        status,
        code: element(body, "Code")
            .map(xml_unescape)
            .unwrap_or_else(|| format!("Http{status}")),
        message: element(body, "Message")
            .map(xml_unescape)
            .unwrap_or_default(),
    }
}

fn unreadable(what: &str) -> SourceError {
    SourceError::Unavailable {
        reason: format!("unreadable AssumeRole response: missing or bad `{what}`"),
    }
}

/// The text between the first `<name>` (or `<name …>`) and the following `</name>`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + xml[from..].find(&format!("<{name}"))?;
        let rest = &xml[at + 1 + name.len()..];
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                return body.find(&format!("</{name}>")).map(|end| &body[..end]);
            }
            Some(c) if c.is_whitespace() => {
                let gt = rest.find('>')?;
                let body = &rest[gt + 1..];
                return body.find(&format!("</{name}>")).map(|end| &body[..end]);
            }
            _ => from = at + 1,
        }
    }
}

fn xml_unescape(s: &str) -> String {
    s.trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` (AWS XML timestamps) to a wall time.
#[must_use]
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r)?.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = &b[19..b.len() - 1];
    if !(frac.is_empty() || (frac[0] == b'.' && frac[1..].iter().all(u8::is_ascii_digit))) {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy.rem_euclid(400);
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(from_unix_seconds(days * 86_400 + h * 3600 + mi * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use podiam_identity::clock::unix_seconds;

    #[test]
    fn eks_auth_response_as_botocore_models_it() {
        let body = br#"{"subject":{"namespace":"ns","serviceAccount":"sa"},
            "audience":"pods.eks.amazonaws.com",
            "podIdentityAssociation":{"associationArn":"arn:aws:eks:us-east-1:111122223333:podidentityassociation/c/a-1","associationId":"a-1"},
            "assumedRoleUser":{"arn":"arn:aws:sts::111122223333:assumed-role/R/eks-c-p-u","assumeRoleId":"AROAX:eks-c-p-u"},
            "credentials":{"sessionToken":"tok","secretAccessKey":"sec","accessKeyId":"ASIAX","expiration":1700000000}}"#;
        let c = parse_assume_role_for_pod_identity(body).unwrap();
        assert_eq!(c.account_id(), Some("111122223333"));
        assert_eq!(unix_seconds(c.credentials.expiration), 1_700_000_000);
        let json: serde_json::Value =
            serde_json::from_slice(&container_credentials_json(&c).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"AccessKeyId":"ASIAX","SecretAccessKey":"sec","Token":"tok",
                "AccountId":"111122223333","Expiration":"2023-11-14T22:13:20Z"})
        );
        assert!(parse_assume_role_for_pod_identity(br#"{"subject":{}}"#).is_err());
    }

    /// A document whose `Serialize` fails, as a map with non-string keys does in JSON.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap as _;
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(&(1, 2), "tuple key")?;
            map.end()
        }
    }

    #[test]
    fn an_unencodable_document_is_an_error_not_an_empty_body() {
        for pretty in [false, true] {
            let e = encode("test document", &Unencodable, pretty).unwrap_err();
            assert_eq!(e.document, "test document");
            assert!(
                e.to_string()
                    .starts_with("couldn't encode the test document: "),
                "{e}"
            );
        }
        let fixed: serde_json::Value = serde_json::from_slice(UNENCODABLE_ERROR).unwrap();
        assert_eq!(fixed["code"], "InternalServerException");
        let body: serde_json::Value = serde_json::from_slice(&error_json("C", "m\"")).unwrap();
        assert_eq!(body, serde_json::json!({"code": "C", "message": "m\""}));
    }

    #[test]
    fn rest_json_errors() {
        let e = parse_rest_json_error(
            400,
            [(
                "x-amzn-errortype",
                "InvalidTokenException:http://internal.amazon.com/",
            )],
            br#"{"message":"bad"}"#,
        );
        assert_eq!(
            e,
            SourceError::Service {
                status: 400,
                code: "InvalidTokenException".into(),
                message: "bad".into()
            }
        );
        assert!(e.is_permanent());
        let e = parse_rest_json_error(429, [], br#"{"__type":"x#ThrottlingException"}"#);
        assert!(matches!(&e, SourceError::Service { code, .. } if code == "ThrottlingException"));
        assert!(!e.is_permanent());
    }

    #[test]
    fn sts_assume_role_xml() {
        let xml = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
          <AssumeRoleResult><Credentials><AccessKeyId>ASIAN</AccessKeyId>
          <SecretAccessKey>s/+=</SecretAccessKey><SessionToken>a&amp;b</SessionToken>
          <Expiration>2019-11-09T13:34:41Z</Expiration></Credentials>
          <AssumedRoleUser><Arn>x</Arn></AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>"#;
        let c = parse_assume_role_xml(xml).unwrap();
        assert_eq!(c.access_key_id, "ASIAN");
        assert_eq!(c.secret_access_key, "s/+=");
        assert_eq!(c.session_token, "a&b");
        assert_eq!(format_iso8601(c.expiration), "2019-11-09T13:34:41Z");
        let e = parse_query_error(
            403,
            "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>",
        );
        assert!(matches!(e, SourceError::Service { code, .. } if code == "AccessDenied"));
    }

    #[test]
    fn iso8601() {
        assert_eq!(
            parse_iso8601("1970-01-01T00:00:00Z").map(unix_seconds),
            Some(0)
        );
        assert_eq!(
            parse_iso8601("2024-02-29T12:00:00.123Z").map(unix_seconds),
            Some(1_709_208_000)
        );
        assert_eq!(parse_iso8601("2024-02-29 12:00:00Z"), None);
        assert_eq!(parse_iso8601("2024-13-01T00:00:00Z"), None);
    }
}
