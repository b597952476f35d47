//! Web identity tokens are untrusted input (AssumeRoleWithWebIdentity is unsigned): splitting,
//! base64url, header and claims parsing must never panic, and nothing may verify against a key
//! set the fuzzer cannot sign for.
//!
//! Shared by the libFuzzer target (`fuzz_targets/jwt_parse.rs`, nightly) and the bounded
//! replay every `cargo test` runs on stable (`crates/*/tests/fuzz_replay.rs`).

use std::sync::OnceLock;

use podiam_identity::FixedClock;
use podiam_identity::jwt::{Jwks, UnverifiedJwt, Validation};

/// A fixed RSA key (from a JWKS in the seed corpus's shape) the fuzzer has no private key for.
fn jwks() -> &'static Jwks {
    static JWKS: OnceLock<Jwks> = OnceLock::new();
    JWKS.get_or_init(|| {
        Jwks::from_json(include_bytes!("../fuzz_targets/jwt_parse_jwks.json")).unwrap_or_default()
    })
}

/// Feeds `data` through the parser; panics only on a broken property.
pub fn check(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        // Key sets are untrusted too (fetched from the issuer).
        let _ = Jwks::from_json(data);
        return;
    };
    let Ok(jwt) = UnverifiedJwt::parse(token) else {
        return;
    };
    let claims = jwt.unverified_claims();
    let _ = claims.kubernetes();
    let _ = claims.session_tags();
    let _ = claims.source_identity();
    let validation = Validation::new(
        claims.issuer().unwrap_or("https://issuer.example"),
        ["sts.amazonaws.com"],
    );
    let verified = jwt.verify(jwks(), &validation, &FixedClock::at_unix(1_700_000_000));
    assert!(
        verified.is_err(),
        "a token verified without the private key"
    );
}
