//! Hot paths of STS: verifying a web identity token, sealing and opening a session token,
//! verifying a SigV4 signature. `cargo bench -p podiam-identity --bench identity`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup fails loudly"
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use podiam_identity::credentials::{AccessKeyKind, mint_access_key};
use podiam_identity::issuer::{IssuerKey, ServiceAccountToken};
use podiam_identity::jwt::{Jwks, ObjectRef, Validation, verify_jwt};
use podiam_identity::session::{
    SessionClaims, SessionKey, SessionKeyRing, SessionSource, SessionTag,
};
use podiam_identity::sigv4::{
    HttpRequest, SigV4Auth, SigningCredentials, SigningParams, VerifyOptions, sign,
};
use podiam_identity::{AccessKeyId, FixedClock, SecretAccessKey, SystemRng};

const T0: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

fn jwt(c: &mut Criterion) {
    let key = IssuerKey::generate(now()).unwrap();
    let token = key
        .sign(
            &ServiceAccountToken {
                issuer: "https://oidc.example.com/id/ABC".to_owned(),
                namespace: "payments".to_owned(),
                service_account: ObjectRef {
                    name: "app".to_owned(),
                    uid: "0f3c5a52-8f4e-4d33-9d7b-2f4b1a0f9e11".to_owned(),
                },
                audiences: vec!["sts.amazonaws.com".to_owned()],
                expiration: Duration::from_secs(86_400),
                pod: Some(ObjectRef {
                    name: "app-6d5f7c9b8-x2x9q".to_owned(),
                    uid: "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed".to_owned(),
                }),
                node: Some(ObjectRef {
                    name: "ip-10-0-1-23.ec2.internal".to_owned(),
                    uid: "6ec803af-17d0-4e25-bd4d-6f8d5d3b3c70".to_owned(),
                }),
                jti: Some("5b1e6b6c-6e07-4c55-a5e0-0b8f4d0e2f7a".to_owned()),
            }
            .claims(now()),
        )
        .unwrap();
    let jwks_json = serde_json::to_vec(&podiam_identity::issuer::JwksDocument {
        keys: vec![key.public_jwk()],
    })
    .unwrap();
    let jwks = Jwks::from_json(&jwks_json).unwrap();
    let validation = Validation::new("https://oidc.example.com/id/ABC", ["sts.amazonaws.com"]);
    let clock = FixedClock(now());
    assert!(verify_jwt(&token, &jwks, &validation, &clock).is_ok());
    c.bench_function("jwt_verify_rs256", |b| {
        b.iter(|| verify_jwt(black_box(&token), &jwks, &validation, &clock).unwrap());
    });
    // The floor under the same machine load: aws-lc-rs verifying the same signature alone.
    let der = key.to_pkcs8_der().unwrap();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
    let public = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(
        aws_lc_rs::signature::KeyPair::public_key(&pair),
    )
    .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
    .unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .unwrap();
    c.bench_function("rsa2048_verify_raw_aws_lc_rs", |b| {
        b.iter(|| {
            public
                .verify_sig(black_box(signing_input.as_bytes()), &signature)
                .unwrap();
        });
    });
    c.bench_function("jwks_parse_one_rsa_key", |b| {
        b.iter(|| Jwks::from_json(black_box(&jwks_json)).unwrap());
    });
}

fn session_claims() -> SessionClaims {
    let key = mint_access_key(AccessKeyKind::Temporary, &SystemRng).unwrap();
    SessionClaims {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        account_id: "123456789012".to_owned(),
        assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/app/botocore-session-1700000000"
            .to_owned(),
        role_arn: "arn:aws:iam::123456789012:role/app".to_owned(),
        role_id: "AROAQWERTYUIOPASDFGHJ".to_owned(),
        role_session_name: "botocore-session-1700000000".to_owned(),
        session_tags: vec![SessionTag {
            key: "kubernetes-namespace".to_owned(),
            value: "payments".to_owned(),
        }],
        transitive_tag_keys: Vec::new(),
        session_policy: None,
        session_policy_arns: Vec::new(),
        source_identity: None,
        issued_at: now(),
        expires_at: now() + Duration::from_secs(3600),
        source: SessionSource::WebIdentity {
            issuer: "https://oidc.example.com/id/ABC".to_owned(),
            subject: "system:serviceaccount:payments:app".to_owned(),
            audience: "sts.amazonaws.com".to_owned(),
            node_name: None,
        },
    }
}

fn session(c: &mut Criterion) {
    let ring =
        SessionKeyRing::new(vec![SessionKey::generate(1, &SystemRng, now()).unwrap()]).unwrap();
    let claims = session_claims();
    let token = ring.seal(&claims, &SystemRng).unwrap();
    let clock = FixedClock(now());
    c.bench_function("session_token_seal", |b| {
        b.iter(|| ring.seal(black_box(&claims), &SystemRng).unwrap());
    });
    c.bench_function("session_token_open", |b| {
        b.iter(|| ring.open(black_box(&token), &clock).unwrap());
    });
}

fn sigv4(c: &mut Criterion) {
    let credentials = SigningCredentials {
        access_key_id: AccessKeyId::parse("ASIAQWERTYUIOPASDFGH").unwrap(),
        secret_access_key: SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"),
        session_token: Some("A".repeat(700)),
    };
    let body = b"Action=GetCallerIdentity&Version=2011-06-15";
    let unsigned = [
        ("host", "sts.us-east-1.amazonaws.com"),
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
    ];
    let options = VerifyOptions::for_services("us-east-1", &["sts", "iam"]);
    let unsigned = HttpRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &unsigned,
        body,
    };
    let params = SigningParams::new(&credentials, "us-east-1", "sts", now());
    let added = sign(&unsigned, &params).unwrap();
    let mut headers: Vec<(&str, &str)> = unsigned.headers.to_vec();
    headers.extend(added.iter().map(|(n, v)| (*n, v.as_str())));
    // Sent but not signed, as the AWS SDKs do.
    headers.push(("user-agent", "aws-sdk-rust/1.3.9 os/linux lang/rust/1.95.0"));
    let request = HttpRequest {
        headers: &headers,
        ..unsigned
    };
    let secret = &credentials.secret_access_key;
    let clock = FixedClock(now());
    c.bench_function("sigv4_parse_and_verify", |b| {
        b.iter(|| {
            let auth = SigV4Auth::parse(black_box(&request)).unwrap();
            auth.verify(&request, secret, &options, &clock).unwrap();
        });
    });
}

criterion_group!(benches, jwt, session, sigv4);
criterion_main!(benches);
