//! Runs AWS's SigV4 signing test suite (copied under `tests/vectors/sigv4/`, Apache-2.0, see its
//! NOTICE) through the verifier: for every header-signed and query-signed case, our canonical
//! request and string to sign equal AWS's, the signature verifies, and one-byte changes to the
//! signature, the request or the secret make it fail. The client signer, given each case's
//! unsigned request, adds exactly the headers AWS's signer added.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on unexpected input"
)]

use std::fs;
use std::path::{Path, PathBuf};

use podiam_identity::clock::format_iso8601;
use podiam_identity::sigv4::{
    HttpRequest, SigV4Auth, SigV4Error, SignatureLocation, SigningCredentials, SigningParams,
    UriEncoding, VerifyOptions, sign,
};
use podiam_identity::{AccessKeyId, FixedClock, SecretAccessKey};
use serde::Deserialize;

#[derive(Deserialize)]
struct Context {
    credentials: Credentials,
    normalize: bool,
    region: String,
    service: String,
    timestamp: String,
    #[serde(default)]
    omit_session_token: bool,
    sign_body: bool,
}

#[derive(Deserialize)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
}

/// A request read from the suite's `*.txt` files.
struct Parsed {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn read(file: &Path) -> Self {
        let text = fs::read_to_string(file).unwrap();
        let (head, body) = match text.split_once("\n\n") {
            Some((head, body)) => (head.to_owned(), body.as_bytes().to_vec()),
            None => (text.trim_end_matches('\n').to_owned(), Vec::new()),
        };
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let method = request_line.split(' ').next().unwrap().to_owned();
        // The target may contain raw spaces (get-space-unnormalized), so strip the method and
        // the protocol from the ends rather than splitting on spaces.
        let target = request_line[method.len() + 1..]
            .trim_end_matches(" HTTP/1.1")
            .to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                // Obsolete line folding: a continuation of the previous header's value.
                let last = headers.last_mut().unwrap();
                last.1.push('\n');
                last.1.push_str(line);
                continue;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_owned(), value.to_owned()));
        }
        Self {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&HttpRequest<'_>) -> R) -> R {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        f(&HttpRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &headers,
            body: &self.body,
        })
    }
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sigv4")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(suite_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("context.json").exists())
        .collect();
    cases.sort();
    cases
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

fn options_for(name: &str, context: &Context) -> VerifyOptions {
    VerifyOptions {
        region: Some(context.region.clone()),
        services: vec![context.service.clone()],
        // The suite encodes this one case's already-encoded path once (as S3 does); every other
        // case gives the signer a raw path, where single and double encoding agree.
        uri_encoding: if name == "get-space-normalized" {
            UriEncoding::Single
        } else {
            UriEncoding::Double
        },
        normalize_path: context.normalize,
        ..VerifyOptions::default()
    }
}

/// Query-signed cases whose signature does not cover the whole query, so no server-side
/// verifier can accept them as they stand.
fn query_exception(name: &str, context: &Context) -> bool {
    // `omit_session_token`: the signer appended X-Amz-Security-Token after signing (a mode some
    // IoT endpoints use); the canonical query excludes it.
    name == "post-sts-header-after" && context.omit_session_token
}

#[derive(Default)]
struct Tally {
    verified: usize,
    mutations_refused: usize,
}

fn check_case(dir: &Path, location: SignatureLocation, tally: &mut Tally) {
    let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
    let context: Context = serde_json::from_str(&read(dir, "context.json")).unwrap();
    let prefix = match location {
        SignatureLocation::Header => "header",
        SignatureLocation::Query => "query",
    };
    let request = Parsed::read(&dir.join(format!("{prefix}-signed-request.txt")));
    let options = options_for(&name, &context);
    let secret = SecretAccessKey::new(context.credentials.secret_access_key.clone());

    let auth = request
        .with(SigV4Auth::parse)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(auth.location, location, "{name}");
    assert_eq!(
        auth.access_key_id.as_str(),
        context.credentials.access_key_id
    );
    assert_eq!(format_iso8601(auth.signed_at), context.timestamp, "{name}");
    let clock = FixedClock(auth.signed_at);

    if location == SignatureLocation::Query && query_exception(&name, &context) {
        let result = request.with(|r| auth.verify(r, &secret, &options, &clock));
        assert_eq!(result, Err(SigV4Error::SignatureDoesNotMatch), "{name}");
        // Without the unsigned token parameter, the rest verifies.
        let mut stripped = Parsed::read(&dir.join("query-signed-request.txt"));
        stripped.query = stripped
            .query
            .split('&')
            .filter(|p| !p.starts_with("X-Amz-Security-Token="))
            .collect::<Vec<_>>()
            .join("&");
        let auth = stripped.with(SigV4Auth::parse).unwrap();
        stripped
            .with(|r| auth.verify(r, &secret, &options, &clock))
            .unwrap_or_else(|e| panic!("{name} (token stripped): {e}"));
        tally.verified += 1;
        return;
    }

    let canonical = request
        .with(|r| auth.canonical_request(r, &options))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        canonical,
        read(dir, &format!("{prefix}-canonical-request.txt")),
        "{name} ({prefix}): canonical request"
    );
    let string_to_sign = request.with(|r| auth.string_to_sign(r, &options)).unwrap();
    assert_eq!(
        string_to_sign,
        read(dir, &format!("{prefix}-string-to-sign.txt")),
        "{name} ({prefix}): string to sign"
    );
    assert_eq!(
        podiam_identity::sigv4::SigningKey::derive(&secret, &auth.scope)
            .sign(string_to_sign.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        read(dir, &format!("{prefix}-signature.txt")).trim(),
        "{name} ({prefix}): signature"
    );
    request
        .with(|r| auth.verify(r, &secret, &options, &clock))
        .unwrap_or_else(|e| panic!("{name} ({prefix}): {e}"));
    if let Some(token) = &context.credentials.token
        && !context.omit_session_token
    {
        assert_eq!(
            auth.security_token.as_deref(),
            Some(token.as_str()),
            "{name}"
        );
    }
    tally.verified += 1;

    // One-byte changes must all be refused.
    let mut refused = |what: &str, result: Result<(), SigV4Error>| {
        assert!(result.is_err(), "{name} ({prefix}): {what} was accepted");
        tally.mutations_refused += 1;
    };
    let mut bad_signature = auth.clone();
    bad_signature.signature[31] ^= 0x01;
    refused(
        "flipped signature bit",
        request.with(|r| bad_signature.verify(r, &secret, &options, &clock)),
    );
    let mut bad_secret = context.credentials.secret_access_key.clone().into_bytes();
    bad_secret[0] ^= 0x01;
    let bad_secret = SecretAccessKey::new(String::from_utf8(bad_secret).unwrap());
    refused(
        "changed secret",
        request.with(|r| auth.verify(r, &bad_secret, &options, &clock)),
    );
    let mut changed_method = Parsed::read(&dir.join(format!("{prefix}-signed-request.txt")));
    changed_method.method = if changed_method.method == "GET" {
        "PUT"
    } else {
        "GET"
    }
    .to_owned();
    refused(
        "changed method",
        changed_method.with(|r| auth.verify(r, &secret, &options, &clock)),
    );
    let mut changed_path = Parsed::read(&dir.join(format!("{prefix}-signed-request.txt")));
    changed_path.path.push('x');
    refused(
        "changed path",
        changed_path.with(|r| auth.verify(r, &secret, &options, &clock)),
    );
    // Change one byte of the first signed header's value.
    let signed = &auth.signed_headers[0];
    let mut changed_header = Parsed::read(&dir.join(format!("{prefix}-signed-request.txt")));
    let slot = changed_header
        .headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(signed))
        .unwrap();
    let mut bytes = slot.1.clone().into_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    slot.1 = String::from_utf8(bytes).unwrap();
    refused(
        "changed signed header",
        changed_header.with(|r| auth.verify(r, &secret, &options, &clock)),
    );
    if !request.body.is_empty() {
        let mut changed_body = Parsed::read(&dir.join(format!("{prefix}-signed-request.txt")));
        changed_body.body[0] ^= 0x01;
        refused(
            "changed body",
            changed_body.with(|r| auth.verify(r, &secret, &options, &clock)),
        );
    }
    if !request.query.is_empty() && location == SignatureLocation::Header {
        let mut changed_query = Parsed::read(&dir.join(format!("{prefix}-signed-request.txt")));
        changed_query.query.push_str("&extra=1");
        refused(
            "added query parameter",
            changed_query.with(|r| auth.verify(r, &secret, &options, &clock)),
        );
    }
}

#[test]
fn every_header_and_query_case_verifies_and_one_byte_changes_fail() {
    let cases = cases();
    assert!(cases.len() >= 38, "only {} cases found", cases.len());
    let mut tally = Tally::default();
    for dir in &cases {
        check_case(dir, SignatureLocation::Header, &mut tally);
        check_case(dir, SignatureLocation::Query, &mut tally);
    }
    assert_eq!(tally.verified, cases.len() * 2);
    eprintln!(
        "sigv4 suite: {} cases, {} signatures verified, {} mutations refused",
        cases.len(),
        tally.verified,
        tally.mutations_refused
    );
}

/// The two legacy cases without a context: only their canonical URIs are consistent with the
/// signed request, and they are what double encoding is for.
#[test]
fn legacy_double_encoding_cases() {
    for name in ["double-url-encode", "double-encode-path"] {
        let dir = suite_dir().join(name);
        let request = Parsed::read(&dir.join("request.txt"));
        let expected = read(&dir, "header-canonical-request.txt");
        let expected_uri = expected.lines().nth(1).unwrap();
        let options = VerifyOptions::default();
        let auth_line = Parsed::read(&dir.join("header-signed-request.txt"));
        let mut with_auth = request.headers.clone();
        with_auth.extend(
            auth_line
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .cloned(),
        );
        let request = Parsed {
            headers: with_auth,
            ..request
        };
        let auth = request.with(SigV4Auth::parse).unwrap();
        let canonical = request
            .with(|r| auth.canonical_request(r, &options))
            .unwrap();
        assert_eq!(canonical.lines().nth(1).unwrap(), expected_uri, "{name}");
    }
    // double-url-encode is fully consistent: it verifies with the suite's usual secret.
    let dir = suite_dir().join("double-url-encode");
    let request = Parsed::read(&dir.join("header-signed-request.txt"));
    let auth = request.with(SigV4Auth::parse).unwrap();
    let secret = SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    let clock = FixedClock(auth.signed_at);
    let options = VerifyOptions::default();
    assert_eq!(
        request.with(|r| auth.string_to_sign(r, &options)).unwrap(),
        read(&dir, "header-string-to-sign.txt").trim_end()
    );
    request
        .with(|r| auth.verify(r, &secret, &options, &clock))
        .unwrap();
}

/// The signer, given `request.txt`, adds the headers AWS's signer added in
/// `header-signed-request.txt` (`X-Amz-Date`, `X-Amz-Security-Token`, `x-amz-content-sha256`
/// and `Authorization`), with the same values.
#[test]
fn signer_reproduces_every_header_signed_case() {
    let mut signed = 0;
    for dir in &cases() {
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let context: Context = serde_json::from_str(&read(dir, "context.json")).unwrap();
        if context.omit_session_token {
            // The token was added after signing, unsigned; podiam's signer always signs it.
            continue;
        }
        let unsigned = Parsed::read(&dir.join("request.txt"));
        let expected = Parsed::read(&dir.join("header-signed-request.txt"));
        let credentials = SigningCredentials {
            access_key_id: AccessKeyId::parse(&context.credentials.access_key_id).unwrap(),
            secret_access_key: SecretAccessKey::new(context.credentials.secret_access_key.clone()),
            session_token: context.credentials.token.clone(),
        };
        // The context's time, read through the verifier from AWS's X-Amz-Date.
        let time = expected.with(SigV4Auth::parse).unwrap().signed_at;
        assert_eq!(format_iso8601(time), context.timestamp, "{name}");
        let options = options_for(&name, &context);
        let params = SigningParams {
            content_sha256_header: context.sign_body,
            uri_encoding: options.uri_encoding,
            normalize_path: options.normalize_path,
            ..SigningParams::new(&credentials, &context.region, &context.service, time)
        };
        let added = unsigned
            .with(|r| sign(r, &params))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut added: Vec<(String, String)> =
            added.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let mut aws_added: Vec<(String, String)> = expected.headers[unsigned.headers.len()..]
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        assert_eq!(
            expected.headers[..unsigned.headers.len()],
            unsigned.headers[..],
            "{name}: AWS's signer only appends headers"
        );
        added.sort();
        aws_added.sort();
        assert_eq!(added, aws_added, "{name}: signed headers");
        signed += 1;
    }
    assert!(signed >= 37, "only {signed} cases signed");
}
