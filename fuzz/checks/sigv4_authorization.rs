//! SigV4 `Authorization` headers and presigned queries are untrusted input on every signed call:
//! parsing any bytes must return a result or a typed error, never panic; whatever parses must
//! also survive canonicalisation and verification against a fixed secret.
//!
//! Shared by the libFuzzer target (`fuzz_targets/sigv4_authorization.rs`, nightly) and the bounded
//! replay every `cargo test` runs on stable (`crates/*/tests/fuzz_replay.rs`).

use podiam_identity::sigv4::{HttpRequest, SigV4Auth, VerifyOptions, parse_authorization_header};
use podiam_identity::{FixedClock, SecretAccessKey};

/// Feeds `data` through the parser; panics only on a broken property.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_authorization_header(text);
    // The same bytes as an Authorization header and as a presigned query of a whole request.
    let (header, query) = text.split_once('\n').unwrap_or((text, text));
    let with_auth = [
        ("host", "sts.example.com"),
        ("x-amz-date", "20231114T221320Z"),
        ("authorization", header),
        ("x-amz-content-sha256", query),
    ];
    let without_auth = [("host", "sts.example.com")];
    let clock = FixedClock::at_unix(1_700_000_000);
    let secret = SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
    for (headers, query) in [(&with_auth[..], ""), (&without_auth[..], query)] {
        let request = HttpRequest {
            method: "POST",
            path: header,
            query,
            headers,
            body: data,
        };
        if let Ok(auth) = SigV4Auth::parse(&request) {
            let _ = auth.verify(&request, &secret, &VerifyOptions::default(), &clock);
        }
    }
}
