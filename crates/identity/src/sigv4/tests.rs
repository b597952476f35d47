use std::time::UNIX_EPOCH;

use super::*;
use crate::clock::FixedClock;

const T0: u64 = 1_700_000_000;
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

fn secret() -> SecretAccessKey {
    SecretAccessKey::new(SECRET)
}

fn scope() -> CredentialScope {
    CredentialScope {
        date: "20231114".to_owned(),
        region: "us-east-1".to_owned(),
        service: "sts".to_owned(),
    }
}

fn time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0) // 2023-11-14T22:13:20Z
}

const BODY: &[u8] = b"Action=GetCallerIdentity&Version=2011-06-15";

/// A header-signed STS call made with this crate's signer.
fn signed(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut headers: Vec<(&'static str, String)> = vec![
        ("Host", "sts.example.com".to_owned()),
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("X-Amz-Date", format_amz_date(time())),
    ];
    headers.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let request = HttpRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &refs,
        body: BODY,
    };
    let authorization = sign_authorization_header(
        &request,
        &AccessKeyId::parse("ASIAEXAMPLEEXAMPLE00").unwrap(),
        &secret(),
        &scope(),
        &["content-type", "host", "x-amz-date"],
        time(),
        &VerifyOptions {
            allow_unsigned_payload: true,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    headers.push(("Authorization", authorization));
    headers
}

fn check(
    headers: &[(&'static str, String)],
    query: &str,
    body: &[u8],
    options: &VerifyOptions,
    now: SystemTime,
) -> Result<SigV4Auth, SigV4Error> {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let request = HttpRequest {
        method: "POST",
        path: "/",
        query,
        headers: &refs,
        body,
    };
    let auth = SigV4Auth::parse(&request)?;
    auth.verify(&request, &secret(), options, &FixedClock(now))?;
    Ok(auth)
}

fn ok(headers: &[(&'static str, String)]) -> Result<SigV4Auth, SigV4Error> {
    check(headers, "", BODY, &VerifyOptions::default(), time())
}

#[test]
fn own_signature_round_trips() {
    let auth = ok(&signed(&[])).unwrap();
    assert_eq!(auth.access_key_id.as_str(), "ASIAEXAMPLEEXAMPLE00");
    assert_eq!(auth.scope, scope());
    assert_eq!(auth.location, SignatureLocation::Header);
    assert_eq!(auth.security_token, None);
    let with_token = signed(&[("X-Amz-Security-Token", "tok+en/==")]);
    assert_eq!(
        ok(&with_token).unwrap().security_token.as_deref(),
        Some("tok+en/==")
    );
}

#[test]
fn request_time_window_is_fifteen_minutes() {
    let headers = signed(&[]);
    let options = VerifyOptions::default();
    let at = |offset: i64| {
        let t = if offset >= 0 {
            time() + Duration::from_secs(offset.unsigned_abs())
        } else {
            time() - Duration::from_secs(offset.unsigned_abs())
        };
        check(&headers, "", BODY, &options, t).map(|_| ())
    };
    assert_eq!(at(900), Ok(()));
    assert_eq!(at(-900), Ok(()));
    let t0 = i64::try_from(T0).unwrap();
    assert_eq!(
        at(901),
        Err(SigV4Error::RequestExpired {
            signed_at: t0,
            now: t0 + 901
        })
    );
    assert_eq!(
        at(-901),
        Err(SigV4Error::RequestNotYetValid {
            signed_at: t0,
            now: t0 - 901
        })
    );
}

#[test]
fn scope_checks() {
    let headers = signed(&[]);
    let wrong_region = VerifyOptions::for_services("eu-west-1", &["sts"]);
    assert_eq!(
        check(&headers, "", BODY, &wrong_region, time()).unwrap_err(),
        SigV4Error::WrongRegion {
            got: "us-east-1".to_owned(),
            expected: "eu-west-1".to_owned()
        }
    );
    let iam_only = VerifyOptions::for_services("us-east-1", &["iam"]);
    let err = check(&headers, "", BODY, &iam_only, time()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "credential should be scoped to service `iam`, not `sts`"
    );
    let both = VerifyOptions::for_services("us-east-1", &["iam", "sts"]);
    assert!(check(&headers, "", BODY, &both, time()).is_ok());
    // Scope date from another day than X-Amz-Date.
    let mut other_day = headers.clone();
    let auth = other_day.last_mut().unwrap();
    auth.1 = auth.1.replace("/20231114/", "/20231115/");
    assert!(matches!(
        ok(&other_day).unwrap_err(),
        SigV4Error::ScopeDateMismatch { .. }
    ));
}

#[test]
fn tampering_is_refused() {
    let headers = signed(&[]);
    assert_eq!(
        check(
            &headers,
            "",
            b"Action=AssumeRole&Version=2011-06-15",
            &VerifyOptions::default(),
            time()
        )
        .unwrap_err(),
        SigV4Error::SignatureDoesNotMatch
    );
    assert_eq!(
        check(
            &headers,
            "Action=Other",
            BODY,
            &VerifyOptions::default(),
            time()
        )
        .unwrap_err(),
        SigV4Error::SignatureDoesNotMatch
    );
    let mut other_host = headers.clone();
    other_host[0].1 = "evil.example.com".to_owned();
    assert_eq!(
        ok(&other_host).unwrap_err(),
        SigV4Error::SignatureDoesNotMatch
    );
    // An unsigned header may be added freely; a second value of a signed one may not.
    let mut extra = headers.clone();
    extra.push(("User-Agent", "x".to_owned()));
    assert!(ok(&extra).is_ok());
    let mut doubled = headers.clone();
    doubled.push(("content-type", "text/plain".to_owned()));
    assert_eq!(ok(&doubled).unwrap_err(), SigV4Error::SignatureDoesNotMatch);
    let missing: Vec<_> = headers
        .iter()
        .filter(|(n, _)| *n != "Content-Type")
        .cloned()
        .collect();
    assert_eq!(
        ok(&missing).unwrap_err(),
        SigV4Error::SignedHeaderMissing {
            name: "content-type".to_owned()
        }
    );
}

#[test]
fn payload_hash_header() {
    let body_hash = hex(digest::digest(&digest::SHA256, BODY).as_ref());
    let hash: &'static str = Box::leak(body_hash.into_boxed_str());
    let headers = signed(&[("x-amz-content-sha256", hash)]);
    assert!(ok(&headers).is_ok());
    let mut wrong = headers.clone();
    for (name, value) in &mut wrong {
        if *name == "x-amz-content-sha256" {
            *value = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned();
        }
    }
    assert_eq!(ok(&wrong).unwrap_err(), SigV4Error::PayloadHashMismatch);
    let unsigned = signed(&[("x-amz-content-sha256", UNSIGNED_PAYLOAD)]);
    assert_eq!(
        ok(&unsigned).unwrap_err(),
        SigV4Error::UnsignedPayloadNotAllowed {
            value: UNSIGNED_PAYLOAD.to_owned()
        }
    );
    let lenient = VerifyOptions {
        allow_unsigned_payload: true,
        ..VerifyOptions::default()
    };
    // Signed with the literal payload hash, so it verifies when allowed.
    assert!(check(&unsigned, "", BODY, &lenient, time()).is_ok());
    assert!(check(&unsigned, "", b"any body", &lenient, time()).is_ok());
    let mut streaming = unsigned.clone();
    for (name, value) in &mut streaming {
        if *name == "x-amz-content-sha256" {
            *value = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_owned();
        }
    }
    assert!(matches!(
        check(&streaming, "", BODY, &lenient, time()).unwrap_err(),
        SigV4Error::UnsignedPayloadNotAllowed { .. }
    ));
}

#[test]
fn host_must_be_signed() {
    let mut headers = signed(&[]);
    let auth = headers.last_mut().unwrap();
    auth.1 = auth
        .1
        .replace("content-type;host;x-amz-date", "content-type;x-amz-date");
    assert_eq!(ok(&headers).unwrap_err(), SigV4Error::HostNotSigned);
}

#[test]
fn missing_and_ambiguous_authentication() {
    let unsigned = vec![("Host", "sts.example.com".to_owned())];
    assert_eq!(
        ok(&unsigned).unwrap_err(),
        SigV4Error::MissingAuthentication
    );
    let headers = signed(&[]);
    assert_eq!(
        check(
            &headers,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            BODY,
            &VerifyOptions::default(),
            time()
        )
        .unwrap_err(),
        SigV4Error::AmbiguousAuthentication
    );
    let no_date: Vec<_> = headers
        .iter()
        .filter(|(n, _)| *n != "X-Amz-Date")
        .cloned()
        .collect();
    assert_eq!(
        ok(&no_date).unwrap_err(),
        SigV4Error::MissingComponent {
            component: "X-Amz-Date"
        }
    );
    let mut two_auth = headers.clone();
    two_auth.push(("authorization", AUTH.to_owned()));
    assert_eq!(
        ok(&two_auth).unwrap_err(),
        SigV4Error::DuplicateComponent {
            component: "authorization"
        }
    );
}

#[test]
fn authorization_header_parsing() {
    let parsed = parse_authorization_header(AUTH).unwrap();
    assert_eq!(parsed.access_key_id.as_str(), "AKIDEXAMPLE");
    assert_eq!(
        parsed.scope.to_string(),
        "20150830/us-east-1/iam/aws4_request"
    );
    assert_eq!(
        parsed.signed_headers,
        ["content-type", "host", "x-amz-date"]
    );
    // Components in another order and without spaces.
    let reordered = "AWS4-HMAC-SHA256 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7,SignedHeaders=host,Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request";
    assert!(parse_authorization_header(reordered).is_ok());

    let missing = |component: &'static str| SigV4Error::MissingComponent { component };
    let sig = "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
    let cred = "Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request";
    let cases: Vec<(String, SigV4Error)> = vec![
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host"),
            missing("Signature"),
        ),
        (
            format!("AWS4-HMAC-SHA256 SignedHeaders=host, {sig}"),
            missing("Credential"),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, {sig}"),
            missing("SignedHeaders"),
        ),
        ("AWS4-HMAC-SHA256".to_owned(), missing("Credential")),
        (
            format!("AWS4-HMAC-SHA256 {cred}, {cred}, SignedHeaders=host, {sig}"),
            SigV4Error::DuplicateComponent {
                component: "Credential",
            },
        ),
        (
            format!("AWS4-ECDSA-P256-SHA256 {cred}, SignedHeaders=host, {sig}"),
            SigV4Error::UnsupportedAlgorithm {
                algorithm: "AWS4-ECDSA-P256-SHA256".to_owned(),
            },
        ),
        (
            format!("AWS {cred}"),
            SigV4Error::UnsupportedAlgorithm {
                algorithm: "AWS".to_owned(),
            },
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, {sig}"),
            SigV4Error::SignedHeadersNotCanonical,
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host, {sig}"),
            SigV4Error::SignedHeadersNotCanonical,
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host, {sig}"),
            SigV4Error::SignedHeadersNotCanonical,
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;x, {sig}"),
            SigV4Error::SignedHeadersNotCanonical,
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(
            parse_authorization_header(&header),
            Err(expected),
            "{header}"
        );
    }
    let malformed = [
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam, SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/2015083/us-east-1/iam/aws4_request, SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws5_request, SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830//iam/aws4_request, SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AK-ID/20150830/us-east-1/iam/aws4_request, SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request/x, SignedHeaders=host, {sig}"
        ),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature=abc"),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5dz"
        ),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, {sig}, Extra=1"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders, {sig}"),
    ];
    for header in malformed {
        assert!(
            matches!(
                parse_authorization_header(&header),
                Err(SigV4Error::MalformedComponent { .. })
            ),
            "{header}: {:?}",
            parse_authorization_header(&header)
        );
    }
}

fn presigned_query(expires: &str, date: &str) -> String {
    format!(
        "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )
}

#[test]
fn presigned_parsing_and_expiry() {
    let host = [("Host", "sts.example.com".to_owned())];
    let refs: Vec<(&str, &str)> = host.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let parse = |query: &str| {
        SigV4Auth::parse(&HttpRequest {
            method: "GET",
            path: "/",
            query,
            headers: &refs,
            body: b"",
        })
    };
    let date = format_amz_date(time());
    let auth = parse(&presigned_query("60", &date)).unwrap();
    assert_eq!(auth.location, SignatureLocation::Query);
    assert_eq!(auth.expires, Some(Duration::from_secs(60)));
    // Expiry is checked before the signature.
    let options = VerifyOptions::default();
    let t0 = i64::try_from(T0).unwrap();
    assert_eq!(
        auth.check_time(&options, time() + Duration::from_secs(60)),
        Err(SigV4Error::PresignedExpired {
            expired_at: t0 + 60,
            now: t0 + 60
        })
    );
    assert_eq!(
        auth.check_time(&options, time() + Duration::from_secs(59)),
        Ok(())
    );
    for bad in ["0", "604801", "-1", "ten", ""] {
        assert!(
            matches!(
                parse(&presigned_query(bad, &date)),
                Err(SigV4Error::MalformedComponent {
                    component: "X-Amz-Expires",
                    ..
                })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        parse(&presigned_query("60", "20231114T221320")),
        Err(SigV4Error::MalformedComponent {
            component: "X-Amz-Date",
            ..
        })
    ));
    assert_eq!(
        parse("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        Err(SigV4Error::MissingComponent {
            component: "X-Amz-Credential"
        })
    );
    assert_eq!(
        parse(&format!(
            "{}&X-Amz-Date={date}",
            presigned_query("60", &date)
        )),
        Err(SigV4Error::DuplicateComponent {
            component: "X-Amz-Date"
        })
    );
    assert!(matches!(
        parse("X-Amz-Algorithm=AWS4-HMAC-SHA1"),
        Err(SigV4Error::UnsupportedAlgorithm { .. })
    ));
}

#[test]
fn signing_key_matches_the_aws_documentation_example() {
    // AWS General Reference, "Examples of how to derive a signing key for Signature Version 4".
    let secret = SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    let scope = CredentialScope {
        date: "20120215".to_owned(),
        region: "us-east-1".to_owned(),
        service: "iam".to_owned(),
    };
    let key = SigningKey::derive(&secret, &scope);
    // kSigning = f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d; check it by
    // signing the empty string with it and with HMAC directly.
    let expected = hmac::sign(
        &hmac::Key::new(
            hmac::HMAC_SHA256,
            &crate::encoding::unhex::<32>(
                "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d",
            )
            .unwrap(),
        ),
        b"",
    );
    assert_eq!(key.sign(b""), expected.as_ref());
    assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
}
