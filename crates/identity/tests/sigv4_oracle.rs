//! Differential test: requests signed by the AWS SDK for Rust's signer (`aws-sigv4`) verify with
//! podiam's verifier, header-signed and presigned, with and without session tokens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on unexpected input"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation as SdkLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use podiam_identity::sigv4::{
    HttpRequest, SigV4Auth, SigV4Error, SignatureLocation, VerifyOptions,
};
use podiam_identity::{FixedClock, SecretAccessKey};
use proptest::prelude::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Case {
    method: &'static str,
    path: String,
    query: String,
    body: Vec<u8>,
    token: Option<String>,
    region: &'static str,
    service: &'static str,
    location: SdkLocation,
    time: SystemTime,
}

/// Signs `case` with aws-sigv4, then verifies it with podiam.
fn sign_and_verify(case: &Case) -> Result<SigV4Auth, SigV4Error> {
    let credentials = Credentials::new("AKIDEXAMPLE", SECRET, case.token.clone(), None, "test");
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = case.location;
    settings.expires_in = Some(Duration::from_secs(900));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(case.region)
        .name(case.service)
        .time(case.time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let uri = if case.query.is_empty() {
        format!("https://sts.example.com{}", case.path)
    } else {
        format!("https://sts.example.com{}?{}", case.path, case.query)
    };
    let base_headers = [
        ("host", "sts.example.com"),
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
    ];
    let request = SignableRequest::new(
        case.method,
        &uri,
        base_headers.iter().copied(),
        SignableBody::Bytes(&case.body),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut headers: Vec<(String, String)> = base_headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    headers.extend(
        instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned())),
    );
    let mut query = case.query.clone();
    for (name, value) in instructions.params() {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{name}={}", encode(value)));
    }
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let http = HttpRequest {
        method: case.method,
        path: &case.path,
        query: &query,
        headers: &header_refs,
        body: &case.body,
    };
    let auth = SigV4Auth::parse(&http)?;
    let options = VerifyOptions::for_services(case.region, &["sts", "iam"]);
    auth.verify(
        &http,
        &SecretAccessKey::new(SECRET),
        &options,
        &FixedClock(case.time + Duration::from_secs(60)),
    )?;
    Ok(auth)
}

fn sts_case(location: SdkLocation, token: Option<String>) -> Case {
    Case {
        method: "POST",
        path: "/".to_owned(),
        query: String::new(),
        body: b"Action=GetCallerIdentity&Version=2011-06-15".to_vec(),
        token,
        region: "us-east-1",
        service: "sts",
        location,
        time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

#[test]
fn sdk_signed_sts_calls_verify() {
    for location in [SdkLocation::Headers, SdkLocation::QueryParams] {
        for token in [None, Some("FQoGZXIvYXdzE+/token==".to_owned())] {
            let case = sts_case(location, token.clone());
            let auth = sign_and_verify(&case)
                .unwrap_or_else(|e| panic!("{location:?} token={}: {e}", token.is_some()));
            assert_eq!(auth.security_token, token);
            assert_eq!(
                auth.location,
                match location {
                    SdkLocation::Headers => SignatureLocation::Header,
                    _ => SignatureLocation::Query,
                }
            );
        }
    }
}

fn path_segment() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9._~ !$&'()*+,;=:@%ሴ-]{0,12}").unwrap()
}

fn param() -> impl Strategy<Value = (String, String)> {
    (
        proptest::string::string_regex("[a-zA-Z0-9._~ +/=&?ሴ-]{1,10}").unwrap(),
        proptest::string::string_regex("[a-zA-Z0-9._~ +/=&?%ሴ-]{0,16}").unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_requests_signed_by_the_sdk_verify(
        segments in proptest::collection::vec(path_segment(), 0..4),
        params in proptest::collection::vec(param(), 0..4),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        presigned in any::<bool>(),
        with_token in any::<bool>(),
        post in any::<bool>(),
        service in prop_oneof![Just("sts"), Just("iam")],
    ) {
        // The SDK signs the path it is given as the wire path (double encoding), so give it
        // a properly encoded one, without dot segments (which it would normalise away and an
        // HTTP client would not send).
        let path = format!(
            "/{}",
            segments
                .iter()
                .map(|s| encode(s))
                .filter(|s| s != "." && s != "..")
                .collect::<Vec<_>>()
                .join("/")
        );
        let query = params
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let case = Case {
            method: if post { "POST" } else { "GET" },
            path,
            query,
            body,
            token: with_token.then(|| "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH".to_owned()),
            region: "eu-west-1",
            service,
            location: if presigned { SdkLocation::QueryParams } else { SdkLocation::Headers },
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let result = sign_and_verify(&case);
        prop_assert!(result.is_ok(), "{:?} for {} {}?{}", result, case.method, case.path, case.query);
    }
}
