//! Web identity token verification: every algorithm, every refusal the STS must make, and a
//! cross-check against the `jsonwebtoken` crate.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on unexpected input"
)]

mod common;

use std::time::Duration;

use aws_lc_rs::signature::{self as sig, KeyPair as _};
use common::{Signer, b64, ec_jwk, jwks, keys, rsa_jwk, sign, sign_raw};
use podiam_identity::FixedClock;
use podiam_identity::jwt::{
    Jwks, JwksError, JwsAlgorithm, JwtError, JwtPart, KeyType, UnverifiedJwt, Validation,
    verify_jwt,
};
use serde_json::{Value, json};

const ISS: &str = "https://oidc.example.com/id/ABC";
const NOW: i64 = 1_700_000_000;

fn clock() -> FixedClock {
    FixedClock::at_unix(NOW.unsigned_abs())
}

fn validation() -> Validation {
    Validation::new(ISS, ["sts.amazonaws.com"])
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "sub": "system:serviceaccount:default:app",
        "aud": ["sts.amazonaws.com"],
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
        "kubernetes.io": {
            "namespace": "default",
            "serviceaccount": {"name": "app", "uid": "sa-uid"},
            "pod": {"name": "app-1", "uid": "pod-uid"},
            "node": {"name": "node-a", "uid": "node-uid"}
        }
    })
}

fn all_keys() -> Jwks {
    let k = keys();
    Jwks::from_json(&jwks(&[
        rsa_jwk(&k.rsa, "rsa", None),
        ec_jwk(&k.p256, "p256"),
        ec_jwk(&k.p384, "p384"),
        ec_jwk(&k.p521, "p521"),
    ]))
    .unwrap()
}

fn rs256(payload: &Value) -> String {
    sign(
        &json!({"alg": "RS256", "kid": "rsa"}),
        payload,
        &Signer::Rsa(&keys().rsa, &sig::RSA_PKCS1_SHA256),
    )
}

fn verify(token: &str) -> Result<podiam_identity::VerifiedJwt, JwtError> {
    verify_jwt(token, &all_keys(), &validation(), &clock())
}

#[test]
fn every_supported_algorithm_verifies() {
    let k = keys();
    let cases: Vec<(&str, &str, Signer<'_>)> = vec![
        ("RS256", "rsa", Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA256)),
        ("RS384", "rsa", Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA384)),
        ("RS512", "rsa", Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA512)),
        ("PS256", "rsa", Signer::Rsa(&k.rsa, &sig::RSA_PSS_SHA256)),
        ("PS384", "rsa", Signer::Rsa(&k.rsa, &sig::RSA_PSS_SHA384)),
        ("PS512", "rsa", Signer::Rsa(&k.rsa, &sig::RSA_PSS_SHA512)),
        ("ES256", "p256", Signer::Ec(&k.p256)),
        ("ES384", "p384", Signer::Ec(&k.p384)),
        ("ES512", "p521", Signer::Ec(&k.p521)),
    ];
    for (alg, kid, signer) in &cases {
        let token = sign(
            &json!({"alg": alg, "kid": kid, "typ": "JWT"}),
            &claims(),
            signer,
        );
        let verified = verify(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.header().alg.as_str(), *alg);
        assert_eq!(verified.header().kid.as_deref(), Some(*kid));
        assert_eq!(verified.header().typ.as_deref(), Some("JWT"));
    }
}

#[test]
fn typed_claims() {
    let mut payload = claims();
    payload["https://aws.amazon.com/tags"] = json!({
        "principal_tags": {"team": ["payments"], "env": "prod"},
        "transitive_tag_keys": ["team"]
    });
    payload["https://aws.amazon.com/source_identity"] = json!("alice");
    payload["jti"] = json!("id-1");
    let verified = verify(&rs256(&payload)).unwrap();
    let c = verified.claims();
    assert_eq!(c.issuer(), Some(ISS));
    assert_eq!(c.subject(), Some("system:serviceaccount:default:app"));
    assert_eq!(c.audiences(), ["sts.amazonaws.com"]);
    assert_eq!(c.expires_at(), Some(NOW + 3600));
    assert_eq!(c.issued_at(), Some(NOW - 10));
    assert_eq!(c.not_before(), Some(NOW - 10));
    assert_eq!(c.jwt_id(), Some("id-1"));
    let kube = c.kubernetes().unwrap().unwrap();
    assert_eq!(kube.namespace, "default");
    assert_eq!(kube.serviceaccount.name, "app");
    assert_eq!(kube.serviceaccount.uid, "sa-uid");
    assert_eq!(kube.pod.as_ref().unwrap().name, "app-1");
    assert_eq!(kube.node.as_ref().unwrap().uid, "node-uid");
    let tags = c.session_tags().unwrap().unwrap();
    assert_eq!(
        tags.principal_tags,
        [
            ("env".to_owned(), "prod".to_owned()),
            ("team".to_owned(), "payments".to_owned())
        ]
    );
    assert_eq!(tags.transitive_tag_keys, ["team"]);
    assert_eq!(c.source_identity().unwrap(), Some("alice"));
    assert_eq!(
        c.get("sub"),
        Some(&json!("system:serviceaccount:default:app"))
    );
    assert_eq!(c.as_map().len(), payload.as_object().unwrap().len());
}

#[test]
fn malformed_optional_claims_are_reported_when_read() {
    let mut payload = claims();
    payload["https://aws.amazon.com/tags"] = json!({"principal_tags": {"team": ["a", "b"]}});
    payload["kubernetes.io"] = json!({"namespace": 5});
    let verified = verify(&rs256(&payload)).unwrap();
    let err = verified.claims().session_tags().unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
    assert!(verified.claims().kubernetes().is_err());
    let without = verify(&rs256(
        &json!({"iss": ISS, "aud": "sts.amazonaws.com", "exp": NOW + 60}),
    ))
    .unwrap();
    assert_eq!(without.claims().kubernetes(), Ok(None));
    assert_eq!(without.claims().session_tags(), Ok(None));
}

#[test]
fn unsigned_and_symmetric_tokens_are_refused() {
    for alg in ["none", "None", "NONE"] {
        let token = sign(&json!({"alg": alg}), &claims(), &Signer::Unsigned);
        assert_eq!(
            verify(&token).unwrap_err(),
            JwtError::AlgorithmNone,
            "{alg}"
        );
    }
    // Algorithm confusion: HMAC keyed with the issuer's public key, as a naive verifier that
    // hands the JWK to HMAC would accept.
    let k = keys();
    let public_key_bytes = k.rsa.public_key().as_ref().to_vec();
    let jwk_n = rsa_jwk(&k.rsa, "rsa", None)["n"]
        .as_str()
        .unwrap()
        .to_owned();
    for secret in [public_key_bytes.as_slice(), jwk_n.as_bytes()] {
        for alg in ["HS256", "HS384", "HS512", "hs256"] {
            let token = sign(
                &json!({"alg": alg, "kid": "rsa"}),
                &claims(),
                &Signer::Hmac(secret),
            );
            assert_eq!(
                verify(&token).unwrap_err(),
                JwtError::SymmetricAlgorithm {
                    alg: alg.to_owned()
                }
            );
        }
    }
    for alg in ["RS1", "EdDSA", "ES256K", "rs256", ""] {
        let token = sign(
            &json!({"alg": alg, "kid": "rsa"}),
            &claims(),
            &Signer::Unsigned,
        );
        assert_eq!(
            verify(&token).unwrap_err(),
            JwtError::UnsupportedAlgorithm {
                alg: alg.to_owned()
            }
        );
    }
}

#[test]
fn key_selection() {
    let k = keys();
    let token = sign(
        &json!({"alg": "RS256", "kid": "rotated-away"}),
        &claims(),
        &Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA256),
    );
    assert_eq!(
        verify(&token).unwrap_err(),
        JwtError::UnknownKeyId {
            kid: "rotated-away".to_owned()
        }
    );
    // An RSA algorithm naming an EC key, and an EC algorithm naming the RSA key.
    let token = sign(
        &json!({"alg": "RS256", "kid": "p256"}),
        &claims(),
        &Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA256),
    );
    assert_eq!(
        verify(&token).unwrap_err(),
        JwtError::KeyAlgorithmMismatch {
            kid: "p256".to_owned(),
            key_type: KeyType::EcP256,
            key_alg: None,
            alg: JwsAlgorithm::Rs256
        }
    );
    let token = sign(
        &json!({"alg": "ES384", "kid": "p256"}),
        &claims(),
        &Signer::Ec(&k.p384),
    );
    assert!(matches!(
        verify(&token).unwrap_err(),
        JwtError::KeyAlgorithmMismatch {
            key_type: KeyType::EcP256,
            alg: JwsAlgorithm::Es384,
            ..
        }
    ));
    // A key restricted by its own `alg`.
    let restricted = Jwks::from_json(&jwks(&[rsa_jwk(&k.rsa, "rsa", Some("RS256"))])).unwrap();
    let token = sign(
        &json!({"alg": "PS256", "kid": "rsa"}),
        &claims(),
        &Signer::Rsa(&k.rsa, &sig::RSA_PSS_SHA256),
    );
    let err = verify_jwt(&token, &restricted, &validation(), &clock()).unwrap_err();
    assert!(err.to_string().contains("alg `RS256`"), "{err}");
    // Same kid, another key: the signature does not verify.
    let token = sign(
        &json!({"alg": "RS256", "kid": "rsa"}),
        &claims(),
        &Signer::Rsa(&k.rsa_other, &sig::RSA_PKCS1_SHA256),
    );
    assert_eq!(verify(&token).unwrap_err(), JwtError::BadSignature);
}

#[test]
fn tokens_without_kid_try_compatible_keys() {
    let k = keys();
    let token = sign(&json!({"alg": "ES256"}), &claims(), &Signer::Ec(&k.p256));
    assert!(verify(&token).is_ok());
    let two_rsa = Jwks::from_json(&jwks(&[
        rsa_jwk(&k.rsa_other, "a", None),
        rsa_jwk(&k.rsa, "b", None),
    ]))
    .unwrap();
    let token = sign(
        &json!({"alg": "RS256"}),
        &claims(),
        &Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA256),
    );
    assert!(verify_jwt(&token, &two_rsa, &validation(), &clock()).is_ok());
    let only_ec = Jwks::from_json(&jwks(&[ec_jwk(&k.p256, "p256")])).unwrap();
    assert_eq!(
        verify_jwt(&token, &only_ec, &validation(), &clock()).unwrap_err(),
        JwtError::NoMatchingKey {
            alg: JwsAlgorithm::Rs256
        }
    );
}

#[test]
fn tampering_breaks_the_signature() {
    let token = rs256(&claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims();
    forged["sub"] = json!("system:serviceaccount:kube-system:admin");
    parts[1] = b64(&serde_json::to_vec(&forged).unwrap());
    assert_eq!(
        verify(&parts.join(".")).unwrap_err(),
        JwtError::BadSignature
    );
    // Every single-character change of the token is refused, never accepted, never a panic.
    let alphabet = ['A', 'b', '-', '_', '.', '='];
    for i in (0..token.len()).step_by(7) {
        for c in alphabet {
            let mut bytes = token.clone().into_bytes();
            if char::from(bytes[i]) == c {
                continue;
            }
            bytes[i] = c as u8;
            let changed = String::from_utf8(bytes).unwrap();
            assert!(verify(&changed).is_err(), "position {i} changed to {c}");
        }
    }
}

#[test]
fn malformed_tokens() {
    let good = rs256(&claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let cases: Vec<(String, JwtPart)> = vec![
        (format!("{h}.{p}"), JwtPart::Token),
        (format!("{h}.{p}.{s}.x"), JwtPart::Token),
        (String::new(), JwtPart::Token),
        (format!("!!.{p}.{s}"), JwtPart::Header),
        (format!("{}.{p}.{s}", b64(b"not json")), JwtPart::Header),
        (format!("{}.{p}.{s}", b64(b"[1,2]")), JwtPart::Header),
        (
            format!("{}.{p}.{s}", b64(br#"{"kid":"rsa"}"#)),
            JwtPart::Header,
        ),
        (
            format!("{}.{p}.{s}", b64(br#"{"alg":256}"#)),
            JwtPart::Header,
        ),
        (
            format!("{}.{p}.{s}", b64(br#"{"alg":"RS256","kid":7}"#)),
            JwtPart::Header,
        ),
        (format!("{h}==.{p}.{s}"), JwtPart::Header),
        (format!("{h}.{p}$.{s}"), JwtPart::Payload),
        (
            format!("{h}.{}.{s}", b64(b"\"a string\"")),
            JwtPart::Payload,
        ),
        (format!("{h}.{}.{s}", b64(b"{\"iss\":")), JwtPart::Payload),
        (format!("{h}.{p}.{s}+"), JwtPart::Signature),
    ];
    for (token, part) in cases {
        match verify(&token) {
            Err(JwtError::Malformed { part: got, .. }) => assert_eq!(got, part, "{token}"),
            other => panic!("{token}: {other:?}"),
        }
    }
}

#[test]
fn duplicate_members_are_refused() {
    let k = keys();
    let token = sign_raw(
        br#"{"alg":"RS256","kid":"rsa","alg":"none"}"#,
        &serde_json::to_vec(&claims()).unwrap(),
        &Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA256),
    );
    assert!(matches!(
        verify(&token).unwrap_err(),
        JwtError::Malformed { part: JwtPart::Header, problem } if problem.contains("duplicate")
    ));
    let token = sign_raw(
        br#"{"alg":"RS256","kid":"rsa"}"#,
        format!(
            r#"{{"iss":"{ISS}","aud":"x","aud":"sts.amazonaws.com","exp":{}}}"#,
            NOW + 60
        )
        .as_bytes(),
        &Signer::Rsa(&k.rsa, &sig::RSA_PKCS1_SHA256),
    );
    assert!(matches!(
        verify(&token).unwrap_err(),
        JwtError::Malformed {
            part: JwtPart::Payload,
            ..
        }
    ));
}

#[test]
fn critical_headers_are_refused() {
    let token = sign(
        &json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"], "exp": 1}),
        &claims(),
        &Signer::Rsa(&keys().rsa, &sig::RSA_PKCS1_SHA256),
    );
    assert_eq!(
        verify(&token).unwrap_err(),
        JwtError::UnsupportedCriticalHeader {
            names: "exp".to_owned()
        }
    );
}

#[test]
fn oversized_tokens() {
    let mut payload = claims();
    payload["pad"] = json!("x".repeat(20_000));
    let token = rs256(&payload);
    assert_eq!(
        verify(&token).unwrap_err(),
        JwtError::TokenTooLarge {
            len: token.len(),
            max: 20_000
        }
    );
    // Just under the limit is fine.
    let base = rs256(&claims()).len();
    let mut payload = claims();
    payload["pad"] = json!("");
    let overhead = rs256(&payload).len() - base;
    let room = (20_000 - base - overhead) * 3 / 4;
    payload["pad"] = json!("x".repeat(room - 4));
    let token = rs256(&payload);
    assert!(token.len() <= 20_000, "{}", token.len());
    assert!(verify(&token).is_ok());
    assert!(matches!(
        UnverifiedJwt::parse_with_max_len(&token, 100).unwrap_err(),
        JwtError::TokenTooLarge { max: 100, .. }
    ));
}

#[test]
fn issuer_and_audience() {
    let mut other_iss = claims();
    other_iss["iss"] = json!("https://oidc.example.com/id/ABC/");
    assert_eq!(
        verify(&rs256(&other_iss)).unwrap_err(),
        JwtError::IssuerMismatch {
            got: "https://oidc.example.com/id/ABC/".to_owned(),
            expected: ISS.to_owned()
        }
    );
    let mut no_iss = claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        verify(&rs256(&no_iss)).unwrap_err(),
        JwtError::MissingClaim { claim: "iss" }
    );
    let mut string_aud = claims();
    string_aud["aud"] = json!("sts.amazonaws.com");
    assert!(verify(&rs256(&string_aud)).is_ok());
    let mut many = claims();
    many["aud"] = json!(["other", "sts.amazonaws.com"]);
    assert!(verify(&rs256(&many)).is_ok());
    let mut wrong = claims();
    wrong["aud"] = json!(["other", "pods.eks.amazonaws.com"]);
    let err = verify(&rs256(&wrong)).unwrap_err();
    assert_eq!(
        err,
        JwtError::AudienceMismatch {
            got: vec!["other".to_owned(), "pods.eks.amazonaws.com".to_owned()],
            expected: vec!["sts.amazonaws.com".to_owned()]
        }
    );
    assert_eq!(
        err.to_string(),
        "audience `other`, `pods.eks.amazonaws.com` is not among the allowed `sts.amazonaws.com`"
    );
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verify(&rs256(&no_aud)).unwrap_err(),
        JwtError::MissingClaim { claim: "aud" }
    );
    let mut bad_aud = claims();
    bad_aud["aud"] = json!([1]);
    assert!(matches!(
        verify(&rs256(&bad_aud)).unwrap_err(),
        JwtError::InvalidClaim(_)
    ));
}

#[test]
fn time_claims_with_five_minutes_of_skew() {
    let with = |name: &str, value: Value| {
        let mut c = claims();
        c[name] = value;
        verify(&rs256(&c))
    };
    // AWS: five minutes past `exp` is still accepted, not a second more.
    assert!(with("exp", json!(NOW - 299)).is_ok());
    assert_eq!(
        with("exp", json!(NOW - 300)).unwrap_err(),
        JwtError::TokenExpired {
            exp: NOW - 300,
            now: NOW
        }
    );
    assert!(with("nbf", json!(NOW + 300)).is_ok());
    assert_eq!(
        with("nbf", json!(NOW + 301)).unwrap_err(),
        JwtError::NotYetValid {
            nbf: NOW + 301,
            now: NOW
        }
    );
    assert!(with("iat", json!(NOW + 300)).is_ok());
    assert_eq!(
        with("iat", json!(NOW + 301)).unwrap_err(),
        JwtError::IssuedInFuture {
            iat: NOW + 301,
            now: NOW
        }
    );
    for bad in [json!(1.5), json!("1700000000"), json!(null)] {
        assert!(
            matches!(
                with("exp", bad.clone()).unwrap_err(),
                JwtError::InvalidClaim(e) if e.claim == "exp"
            ),
            "{bad}"
        );
    }
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verify(&rs256(&no_exp)).unwrap_err(),
        JwtError::MissingClaim { claim: "exp" }
    );
    // Leeway is configurable.
    let strict = validation().with_leeway(Duration::ZERO);
    let mut c = claims();
    c["exp"] = json!(NOW);
    assert!(verify_jwt(&rs256(&c), &all_keys(), &strict, &clock()).is_err());
    c["exp"] = json!(NOW + 1);
    assert!(verify_jwt(&rs256(&c), &all_keys(), &strict, &clock()).is_ok());
}

#[test]
fn algorithm_allow_list() {
    let only_rs256 = validation().with_algorithms([JwsAlgorithm::Rs256]);
    let token = sign(
        &json!({"alg": "ES256", "kid": "p256"}),
        &claims(),
        &Signer::Ec(&keys().p256),
    );
    assert_eq!(
        verify_jwt(&token, &all_keys(), &only_rs256, &clock()).unwrap_err(),
        JwtError::UnsupportedAlgorithm {
            alg: "ES256".to_owned()
        }
    );
}

#[test]
fn unverified_parse_exposes_the_issuer_only_for_lookup() {
    let token = rs256(&claims());
    let unverified = UnverifiedJwt::parse(&token).unwrap();
    assert_eq!(unverified.unverified_claims().issuer(), Some(ISS));
    assert_eq!(unverified.header().kid.as_deref(), Some("rsa"));
    assert!(
        unverified
            .verify(&all_keys(), &validation(), &clock())
            .is_ok()
    );
}

#[test]
fn errors_never_carry_the_token() {
    let token = rs256(&claims());
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap().to_owned();
    let broken = [
        format!("{token}x"),
        token.replacen('.', "..", 1),
        token[..token.len() - 10].to_owned(),
    ];
    for t in &broken {
        let message = verify(t).unwrap_err().to_string();
        assert!(!message.contains(&signature[..20]), "{message}");
        assert!(!message.contains(&payload[..20]), "{message}");
    }
}

#[test]
fn jwks_parsing_skips_unusable_keys() {
    let k = keys();
    let mut small = rsa_jwk(&k.rsa, "small", None);
    small["n"] = json!(b64(&[0xc3; 128]));
    let mut wrong_len = ec_jwk(&k.p256, "short");
    wrong_len["x"] = json!(b64(&[1; 31]));
    let mut off_curve = ec_jwk(&k.p256, "off-curve");
    off_curve["y"] = json!(b64(&[1; 32]));
    let mut enc = rsa_jwk(&k.rsa, "enc", None);
    enc["use"] = json!("enc");
    let mut hs = rsa_jwk(&k.rsa, "hs", Some("HS256"));
    hs["use"] = json!("sig");
    let doc = jwks(&[
        rsa_jwk(&k.rsa, "good", None),
        small,
        wrong_len,
        off_curve,
        enc,
        hs,
        json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA"}),
        json!({"kid": "no-kty"}),
        json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
        json!({"kty": "EC", "kid": "bad-crv", "crv": "P-192", "x": "AA", "y": "AA"}),
    ]);
    let parsed = Jwks::from_json(&doc).unwrap();
    assert_eq!(parsed.keys().len(), 1);
    assert_eq!(parsed.keys()[0].kid(), Some("good"));
    assert_eq!(parsed.keys()[0].key_type(), KeyType::Rsa);
    assert!(parsed.keys()[0].supports(JwsAlgorithm::Ps512));
    assert!(!parsed.keys()[0].supports(JwsAlgorithm::Es256));
    let skipped: Vec<_> = parsed
        .skipped()
        .iter()
        .map(|s| s.kid.clone().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [
            "small",
            "short",
            "off-curve",
            "enc",
            "hs",
            "oct",
            "ed",
            "no-kty",
            "no-n",
            "bad-crv"
        ]
    );
    assert!(
        parsed.skipped()[0].reason.contains("below 2048"),
        "{:?}",
        parsed.skipped()[0]
    );
    assert!(matches!(
        Jwks::from_json(b"{}"),
        Err(JwksError::Malformed(_))
    ));
    assert!(matches!(
        Jwks::from_json(b"not json"),
        Err(JwksError::Malformed(_))
    ));
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"kty": "oct", "kid": i.to_string()}))
        .collect();
    assert_eq!(
        Jwks::from_json(&jwks(&many)).unwrap_err(),
        JwksError::TooManyKeys { count: 101 }
    );
}

/// The `jsonwebtoken` crate (the reference stack's JWT library) and this verifier agree.
#[test]
fn agrees_with_jsonwebtoken() {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, decode, encode};

    let issuer = podiam_identity::IssuerKey::generate(std::time::SystemTime::now()).unwrap();
    let der = issuer.to_pkcs8_der().unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
    );
    // jsonwebtoken signs, podiam verifies.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(issuer.kid().to_owned());
    let token = encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let jwks = Jwks::from_keys(vec![issuer.verification_key().unwrap()]);
    assert!(verify_jwt(&token, &jwks, &validation(), &clock()).is_ok());
    // podiam signs, jsonwebtoken verifies.
    let now = std::time::SystemTime::now();
    let now_s =
        i64::try_from(now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let mut fresh = claims();
    fresh["iat"] = json!(now_s);
    fresh["nbf"] = json!(now_s);
    fresh["exp"] = json!(now_s + 600);
    let ours = issuer.sign(&fresh).unwrap();
    let jwk = issuer.public_jwk();
    let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap();
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&["sts.amazonaws.com"]);
    v.set_issuer(&[ISS]);
    let data = decode::<Value>(&ours, &key, &v).unwrap();
    assert_eq!(data.claims, fresh);
    assert_eq!(data.header.kid.as_deref(), Some(issuer.kid()));
}
