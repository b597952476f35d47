use std::cell::Cell;
use std::sync::OnceLock;

use super::*;
use crate::clock::{FixedClock, TestRng, from_unix_seconds};
use crate::jwt::{ObjectRef, UnverifiedJwt, Validation, verify_jwt};

const T0: i64 = 1_700_000_000;

fn key() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| {
        IssuerKey::generate(from_unix_seconds(T0))
            .unwrap()
            .to_pkcs8_der()
            .unwrap()
    })
}

fn load(created: i64) -> IssuerKey {
    IssuerKey::from_pkcs8_der(key(), from_unix_seconds(created), None).unwrap()
}

fn token_request() -> ServiceAccountToken {
    ServiceAccountToken {
        issuer: "http://127.0.0.1:7000".to_owned(),
        namespace: "payments".to_owned(),
        service_account: ObjectRef {
            name: "app".to_owned(),
            uid: "11111111-2222-4333-8444-555555555555".to_owned(),
        },
        audiences: vec!["sts.amazonaws.com".to_owned()],
        expiration: Duration::from_secs(3607),
        pod: Some(ObjectRef {
            name: "app-7d9f".to_owned(),
            uid: "pod-uid".to_owned(),
        }),
        node: Some(ObjectRef {
            name: "node-a".to_owned(),
            uid: "node-uid".to_owned(),
        }),
        jti: Some("jti-1".to_owned()),
    }
}

#[test]
fn pkcs8_round_trip_keeps_the_key_id() {
    let a = load(T0);
    let b =
        IssuerKey::from_pkcs8_der(&a.to_pkcs8_der().unwrap(), from_unix_seconds(T0), None).unwrap();
    assert_eq!(a.kid(), b.kid());
    assert_eq!(a.kid().len(), 43); // base64url of 32 bytes, unpadded
    assert_eq!(a.public_jwk(), b.public_jwk());
    assert!(!format!("{a:?}").contains("key_pair"));
    assert!(matches!(
        IssuerKey::from_pkcs8_der(b"garbage", from_unix_seconds(T0), None),
        Err(IssuerError::InvalidKey(_))
    ));
}

#[test]
fn key_id_is_the_sha256_of_the_spki() {
    let k = load(T0);
    let spki = k.key_pair.public_key().as_der().unwrap();
    let digest = digest::digest(&digest::SHA256, spki.as_ref());
    assert_eq!(k.kid(), b64url_encode(digest.as_ref()));
}

#[test]
fn jwks_document_has_kube_apiserver_shape() {
    let ring = IssuerKeyRing::new(vec![load(T0)]);
    let json = serde_json::to_string(&ring.jwks(from_unix_seconds(T0))).unwrap();
    let jwk = ring.keys()[0].public_jwk();
    assert_eq!(
        json,
        format!(
            r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"{}","alg":"RS256","n":"{}","e":"AQAB"}}]}}"#,
            jwk.kid, jwk.n
        )
    );
    // And it parses back into a verifier.
    let parsed = crate::jwt::Jwks::from_json(json.as_bytes()).unwrap();
    assert_eq!(parsed.keys().len(), 1);
    assert!(parsed.skipped().is_empty());
}

#[test]
fn discovery_document_has_kube_apiserver_shape() {
    let doc = OidcDiscovery::for_issuer("https://podiam.example:8443/");
    assert_eq!(
        serde_json::to_string(&doc).unwrap(),
        r#"{"issuer":"https://podiam.example:8443/","jwks_uri":"https://podiam.example:8443/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}"#
    );
}

#[test]
fn projected_token_claims_are_exactly_kubernetes_shape() {
    let claims = token_request().claims(from_unix_seconds(T0));
    let json = serde_json::to_string(&claims).unwrap();
    assert_eq!(
        json,
        format!(
            concat!(
                r#"{{"aud":["sts.amazonaws.com"],"exp":{exp},"iat":{iat},"iss":"http://127.0.0.1:7000","#,
                r#""jti":"jti-1","kubernetes.io":{{"namespace":"payments","#,
                r#""node":{{"name":"node-a","uid":"node-uid"}},"pod":{{"name":"app-7d9f","uid":"pod-uid"}},"#,
                r#""serviceaccount":{{"name":"app","uid":"11111111-2222-4333-8444-555555555555"}}}},"#,
                r#""nbf":{iat},"sub":"system:serviceaccount:payments:app"}}"#
            ),
            exp = T0 + 3607,
            iat = T0
        )
    );
    let minimal = ServiceAccountToken {
        pod: None,
        node: None,
        jti: None,
        ..token_request()
    };
    let claims = minimal.claims(from_unix_seconds(T0));
    assert!(!claims.contains_key("jti"));
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": "payments", "serviceaccount": {"name": "app", "uid": "11111111-2222-4333-8444-555555555555"}})
    );
}

#[test]
fn signed_tokens_verify_and_rotation_keeps_old_keys_published() {
    let first = load(T0);
    let old_kid = first.kid().to_owned();
    let mut ring = IssuerKeyRing::new(vec![first]);
    let now = from_unix_seconds(T0);
    let request = token_request();
    let old_token = ring.sign(&request.claims(now), now).unwrap();
    let validation = Validation::new("http://127.0.0.1:7000", ["sts.amazonaws.com"]);
    let clock = FixedClock(now);
    let verified = verify_jwt(
        &old_token,
        &ring.verification_jwks().unwrap(),
        &validation,
        &clock,
    )
    .unwrap();
    assert_eq!(verified.header().kid.as_deref(), Some(old_kid.as_str()));
    assert_eq!(
        verified
            .claims()
            .kubernetes()
            .unwrap()
            .unwrap()
            .pod
            .unwrap()
            .name,
        "app-7d9f"
    );

    let new_key = IssuerKey::generate(from_unix_seconds(T0 + 10)).unwrap();
    let new_kid = new_key.kid().to_owned();
    let retire = from_unix_seconds(T0 + 3607);
    ring.rotate(new_key, retire);
    // Published at once, signing only once every replica can have learnt it.
    let activated = from_unix_seconds(T0 + 10) + crate::rotation::KEY_ACTIVATION_DELAY;
    assert_eq!(
        ring.active(activated - std::time::Duration::from_secs(1))
            .unwrap()
            .kid(),
        old_kid
    );
    assert_eq!(ring.active(activated).unwrap().kid(), new_kid);
    let published: Vec<String> = ring.jwks(now).keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(published, [new_kid.clone(), old_kid.clone()]);
    // The old token still verifies against the published set until retirement.
    assert!(
        verify_jwt(
            &old_token,
            &ring.verification_jwks().unwrap(),
            &validation,
            &clock
        )
        .is_ok()
    );
    let new_token = ring.sign(&request.claims(now), activated).unwrap();
    assert_eq!(
        UnverifiedJwt::parse(&new_token)
            .unwrap()
            .header()
            .kid
            .as_deref(),
        Some(new_kid.as_str())
    );
    assert!(
        verify_jwt(
            &new_token,
            &ring.verification_jwks().unwrap(),
            &validation,
            &clock
        )
        .is_ok()
    );
    // The same key set refuses the old token once the verifier's clock passes retirement.
    let keys = ring.verification_jwks().unwrap();
    assert!(
        verify_jwt(
            &old_token,
            &keys,
            &validation,
            &FixedClock(retire - std::time::Duration::from_secs(1))
        )
        .is_ok()
    );
    assert!(matches!(
        verify_jwt(&old_token, &keys, &validation, &FixedClock(retire)),
        Err(crate::jwt::JwtError::KeyRetired { ref kid, .. }) if *kid == old_kid
    ));
    // After retirement the old key is no longer published, then pruned.
    let published: Vec<String> = ring.jwks(retire).keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(published, [new_kid]);
    assert_eq!(ring.prune(retire), vec![old_kid]);
    assert_eq!(ring.keys().len(), 1);
    assert!(matches!(
        IssuerKeyRing::default().sign(&json!({}), now),
        Err(IssuerError::NoActiveKey)
    ));
}

#[test]
fn uuids_are_version_4() {
    let uuid = random_uuid(&TestRng(Cell::new(1))).unwrap();
    assert_eq!(uuid.len(), 36);
    let groups: Vec<&str> = uuid.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(groups[2].starts_with('4'));
    assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
}
