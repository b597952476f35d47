//! Keys and a raw JWS signer shared by the integration tests and the benches.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on unexpected errors"
)]

use std::sync::OnceLock;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, RsaEncoding};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One RSA 2048 key and one EC key per curve, generated once per test binary.
pub struct Keys {
    pub rsa: RsaKeyPair,
    pub rsa_other: RsaKeyPair,
    pub p256: EcdsaKeyPair,
    pub p384: EcdsaKeyPair,
    pub p521: EcdsaKeyPair,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        rsa_other: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        p256: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        p384: EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
        p521: EcdsaKeyPair::generate(&signature::ECDSA_P521_SHA512_FIXED_SIGNING).unwrap(),
    })
}

/// A public RSA JWK.
pub fn rsa_jwk(key: &RsaKeyPair, kid: &str, alg: Option<&str>) -> Value {
    let c = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let mut jwk = json!({ "kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e) });
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

/// A public EC JWK (`crv` from the point size).
pub fn ec_jwk(key: &EcdsaKeyPair, kid: &str) -> Value {
    let point = key.public_key().as_ref();
    let size = (point.len() - 1) / 2;
    let crv = match size {
        32 => "P-256",
        48 => "P-384",
        _ => "P-521",
    };
    json!({
        "kty": "EC", "kid": kid, "crv": crv,
        "x": b64(&point[1..=size]), "y": b64(&point[1 + size..]),
    })
}

pub fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

pub enum Signer<'a> {
    Rsa(&'a RsaKeyPair, &'static dyn RsaEncoding),
    Ec(&'a EcdsaKeyPair),
    Hmac(&'a [u8]),
    Unsigned,
}

/// Signs arbitrary header and payload JSON (so tests can forge any header).
pub fn sign_raw(header: &[u8], payload: &[u8], signer: &Signer<'_>) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = match signer {
        Signer::Rsa(key, encoding) => {
            let mut sig = vec![0; key.public_modulus_len()];
            key.sign(*encoding, &SystemRandom::new(), input.as_bytes(), &mut sig)
                .unwrap();
            sig
        }
        Signer::Ec(key) => key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
        Signer::Hmac(secret) => {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes())
                .as_ref()
                .to_vec()
        }
        Signer::Unsigned => Vec::new(),
    };
    format!("{input}.{}", b64(&signature))
}

pub fn sign(header: &Value, payload: &Value, signer: &Signer<'_>) -> String {
    sign_raw(
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(payload).unwrap(),
        signer,
    )
}

pub fn ec_alg(key: &EcdsaKeyPair) -> &'static EcdsaSigningAlgorithm {
    key.algorithm()
}
