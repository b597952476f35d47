use std::cell::Cell;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::{FixedClock, SystemRng, TestRng};

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    from_unix_seconds(i64::try_from(secs).unwrap())
}

fn claims() -> SessionClaims {
    SessionClaims {
        access_key_id: AccessKeyId::parse("ASIAQWERTYUIOPASDFGH").unwrap(),
        secret_access_key: SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"),
        account_id: "123456789012".to_owned(),
        assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/app/s1".to_owned(),
        role_arn: "arn:aws:iam::123456789012:role/team/app".to_owned(),
        role_id: "AROAQWERTYUIOPASDFGHJ".to_owned(),
        role_session_name: "s1".to_owned(),
        session_tags: vec![SessionTag {
            key: "kubernetes-namespace".to_owned(),
            value: "payments".to_owned(),
        }],
        transitive_tag_keys: vec!["kubernetes-namespace".to_owned()],
        session_policy: Some(r#"{"Version":"2012-10-17","Statement":[]}"#.to_owned()),
        session_policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".to_owned()],
        source_identity: Some("alice".to_owned()),
        issued_at: at(T0),
        expires_at: at(T0 + 3600),
        source: SessionSource::WebIdentity {
            issuer: "https://oidc.example.com".to_owned(),
            subject: "system:serviceaccount:payments:app".to_owned(),
            audience: "sts.amazonaws.com".to_owned(),
            node_name: None,
        },
    }
}

fn ring() -> SessionKeyRing {
    let key = SessionKey::generate(1, &TestRng(Cell::new(7)), at(T0 - 100)).unwrap();
    SessionKeyRing::new(vec![key]).unwrap()
}

fn clock(secs: u64) -> FixedClock {
    FixedClock(at(secs))
}

#[test]
fn round_trip_keeps_every_field() {
    let ring = ring();
    let token = ring.seal(&claims(), &SystemRng).unwrap();
    assert_eq!(ring.open(&token, &clock(T0 + 10)).unwrap(), claims());
    // Two seals of the same claims differ (random nonce).
    assert_ne!(token, ring.seal(&claims(), &SystemRng).unwrap());
    // Standard base64, as AWS session tokens are.
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    );
    let pod = SessionClaims {
        source: SessionSource::PodIdentity {
            cluster_name: "c".to_owned(),
            namespace: "n".to_owned(),
            service_account: "sa".to_owned(),
            pod_name: "p".to_owned(),
            pod_uid: "u".to_owned(),
        },
        session_tags: Vec::new(),
        session_policy: None,
        ..claims()
    };
    let token = ring.seal(&pod, &SystemRng).unwrap();
    assert_eq!(ring.open(&token, &clock(T0)).unwrap(), pod);
}

/// Seals `claims` as version 1 did (JSON plaintext), with the ring's first key.
fn seal_v1(ring: &SessionKeyRing, claims: &SessionClaims) -> String {
    let key = &ring.keys()[0];
    let header = header(key.id);
    let mut blob = header.to_vec();
    blob[0] = SESSION_TOKEN_VERSION_JSON;
    let nonce = [7u8; NONCE_LEN];
    blob.extend_from_slice(&nonce);
    let mut in_out = serde_json::to_vec(claims).unwrap();
    key.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&blob[..HEADER_LEN])),
            &mut in_out,
        )
        .unwrap();
    blob.extend_from_slice(&in_out);
    b64_encode(&blob)
}

#[test]
fn version_1_tokens_still_open_and_version_2_ones_are_shorter() {
    let ring = ring();
    let v1 = seal_v1(&ring, &claims());
    assert_eq!(ring.open(&v1, &clock(T0 + 10)).unwrap(), claims());
    let v2 = ring.seal(&claims(), &SystemRng).unwrap();
    assert_eq!(b64_decode(&v2).unwrap()[0], SESSION_TOKEN_VERSION);
    // The binary layout drops the JSON's names: a third shorter for this session.
    assert!(
        v2.len() * 4 < v1.len() * 3,
        "v2 {} vs v1 {}",
        v2.len(),
        v1.len()
    );
    // The version is authenticated: a v2 payload relabelled as v1 (or the reverse) is refused.
    let mut relabelled = b64_decode(&v2).unwrap();
    relabelled[0] = SESSION_TOKEN_VERSION_JSON;
    assert_eq!(
        ring.open(&b64_encode(&relabelled), &clock(T0)),
        Err(OpenError::AuthenticationFailed)
    );
}

#[test]
fn the_binary_payload_refuses_every_truncation_and_trailing_bytes() {
    let bytes = codec::encode(&claims()).unwrap();
    assert_eq!(codec::decode(&bytes).unwrap(), claims());
    for n in 0..bytes.len() {
        assert!(
            codec::decode(&bytes[..n]).is_err(),
            "a prefix of {n} bytes decoded"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        codec::decode(&longer).unwrap_err(),
        "1 bytes after the claims"
    );
    // A string over 65,535 bytes cannot be sealed (the caller's limits keep far below it).
    let huge = SessionClaims {
        session_policy: Some("x".repeat(70_000)),
        ..claims()
    };
    assert!(matches!(
        ring().seal(&huge, &SystemRng),
        Err(SealError::Serialize(m)) if m.contains("session_policy")
    ));
}

#[test]
fn expiry_is_checked_against_the_clock() {
    let ring = ring();
    let token = ring.seal(&claims(), &SystemRng).unwrap();
    assert!(ring.open(&token, &clock(T0 + 3599)).is_ok());
    assert_eq!(
        ring.open(&token, &clock(T0 + 3600)),
        Err(OpenError::Expired {
            expired_at: i64::try_from(T0 + 3600).unwrap(),
            now: i64::try_from(T0 + 3600).unwrap()
        })
    );
}

#[test]
fn every_flipped_bit_is_refused() {
    let ring = ring();
    let token = ring.seal(&claims(), &SystemRng).unwrap();
    let blob = b64_decode(&token).unwrap();
    for i in 0..blob.len() {
        let mut changed = blob.clone();
        changed[i] ^= 0x01;
        let result = ring.open(&b64_encode(&changed), &clock(T0));
        let expected = match i {
            0 => OpenError::UnsupportedVersion {
                version: SESSION_TOKEN_VERSION ^ 1,
            },
            1..=3 => OpenError::UnknownKeyId {
                key_id: u32::from_be_bytes([changed[1], changed[2], changed[3], changed[4]]),
            },
            4 => OpenError::UnknownKeyId { key_id: 0 },
            _ => OpenError::AuthenticationFailed,
        };
        assert_eq!(result, Err(expected), "byte {i}");
    }
}

#[test]
fn truncation_is_refused() {
    let ring = ring();
    let token = ring.seal(&claims(), &SystemRng).unwrap();
    let blob = b64_decode(&token).unwrap();
    for len in 0..blob.len() {
        let result = ring.open(&b64_encode(&blob[..len]), &clock(T0));
        if len < HEADER_LEN + NONCE_LEN + TAG_LEN {
            assert_eq!(result, Err(OpenError::Truncated { len }), "{len}");
        } else {
            assert_eq!(result, Err(OpenError::AuthenticationFailed), "{len}");
        }
    }
    // Base64 cut mid-quantum is not base64.
    assert_eq!(
        ring.open(&token[..token.len() - 1], &clock(T0)),
        Err(OpenError::NotBase64)
    );
}

#[test]
fn wrong_unknown_and_retired_keys() {
    let ring = ring();
    let token = ring.seal(&claims(), &SystemRng).unwrap();
    // Same ID, other material.
    let impostor = SessionKeyRing::new(vec![
        SessionKey::generate(1, &TestRng(Cell::new(8)), at(T0)).unwrap(),
    ])
    .unwrap();
    assert_eq!(
        impostor.open(&token, &clock(T0)),
        Err(OpenError::AuthenticationFailed)
    );
    let other_id = SessionKeyRing::new(vec![
        SessionKey::generate(2, &TestRng(Cell::new(7)), at(T0)).unwrap(),
    ])
    .unwrap();
    assert_eq!(
        other_id.open(&token, &clock(T0)),
        Err(OpenError::UnknownKeyId { key_id: 1 })
    );
    // Re-labelling the key ID (so the opener picks key 2 with key 1's material) fails too:
    // the ID is in the additional data.
    let same_material = SessionKeyRing::new(vec![
        SessionKey::from_bytes(2, ring.keys()[0].secret_bytes(), at(T0), None).unwrap(),
    ])
    .unwrap();
    let mut blob = b64_decode(&token).unwrap();
    blob[4] = 2;
    assert_eq!(
        same_material.open(&b64_encode(&blob), &clock(T0)),
        Err(OpenError::AuthenticationFailed)
    );
    assert_eq!(
        SessionKeyRing::default().seal(&claims(), &SystemRng),
        Err(SealError::NoActiveKey)
    );
}

#[test]
fn rotation_seals_with_the_new_key_and_opens_old_tokens_until_retired() {
    let mut ring = ring();
    let old_token = ring.seal(&claims(), &SystemRng).unwrap();
    let next = ring.next_key_id();
    assert_eq!(next, 2);
    let new_key = SessionKey::generate(next, &SystemRng, at(T0)).unwrap();
    let retire = at(T0 + 43_200);
    ring.rotate(new_key, retire).unwrap();
    // The new key opens tokens at once but seals only after the activation delay, so that no
    // replica receives a token sealed with a key it has not loaded yet.
    let activated = at(T0) + crate::rotation::KEY_ACTIVATION_DELAY;
    assert_eq!(ring.active(at(T0)).unwrap().id(), 1);
    assert_eq!(
        b64_decode(&ring.seal(&claims(), &SystemRng).unwrap()).unwrap()[4],
        1
    );
    assert_eq!(ring.active(activated).unwrap().id(), 2);
    assert_eq!(ring.keys()[0].retire_after(), Some(retire));
    let later = SessionClaims {
        issued_at: activated,
        ..claims()
    };
    let new_token = ring.seal(&later, &SystemRng).unwrap();
    assert_eq!(b64_decode(&new_token).unwrap()[4], 2);
    assert!(ring.open(&old_token, &clock(T0 + 10)).is_ok());
    assert!(ring.open(&new_token, &clock(T0 + 10)).is_ok());
    // Long-lived claims show the retirement rather than the expiry.
    let long = SessionClaims {
        expires_at: at(T0 + 100_000),
        ..claims()
    };
    let mut ring2 = SessionKeyRing::new(vec![
        SessionKey::from_bytes(1, ring.keys()[0].secret_bytes(), at(T0 - 100), None).unwrap(),
    ])
    .unwrap();
    let long_token = ring2.seal(&long, &SystemRng).unwrap();
    ring2
        .rotate(SessionKey::generate(2, &SystemRng, at(T0)).unwrap(), retire)
        .unwrap();
    assert_eq!(
        ring2.open(&long_token, &FixedClock(retire)),
        Err(OpenError::KeyRetired { key_id: 1 })
    );
    assert_eq!(ring2.prune(retire + Duration::from_secs(1)), vec![1]);
    assert_eq!(
        ring2.open(&long_token, &FixedClock(retire)),
        Err(OpenError::UnknownKeyId { key_id: 1 })
    );
    assert_eq!(
        ring2.rotate(SessionKey::generate(2, &SystemRng, at(T0)).unwrap(), retire),
        Err(SessionKeyError::DuplicateId { id: 2 })
    );
}

#[test]
fn key_loading() {
    assert_eq!(
        SessionKey::from_bytes(3, &[0; 31], at(T0), None).map(|_| ()),
        Err(SessionKeyError::WrongLength { id: 3, len: 31 })
    );
    let a = SessionKey::generate(1, &SystemRng, at(T0)).unwrap();
    let b = SessionKey::generate(1, &SystemRng, at(T0)).unwrap();
    assert_eq!(
        SessionKeyRing::new(vec![a, b]).map(|_| ()),
        Err(SessionKeyError::DuplicateId { id: 1 })
    );
    let key = SessionKey::generate(9, &SystemRng, at(T0)).unwrap();
    assert!(!format!("{key:?}").contains(&format!("{:?}", key.secret_bytes())));
}

#[test]
fn oversized_and_wrong_version() {
    let ring = ring();
    let huge = "A".repeat(MAX_SESSION_TOKEN_LEN + 1);
    assert_eq!(
        ring.open(&huge, &clock(T0)),
        Err(OpenError::TooLarge {
            len: MAX_SESSION_TOKEN_LEN + 1,
            max: MAX_SESSION_TOKEN_LEN
        })
    );
    let mut blob = b64_decode(&ring.seal(&claims(), &SystemRng).unwrap()).unwrap();
    blob[0] = 3;
    assert_eq!(
        ring.open(&b64_encode(&blob), &clock(T0)),
        Err(OpenError::UnsupportedVersion { version: 3 })
    );
}

fn arb_source() -> impl Strategy<Value = SessionSource> {
    let s = || ".{0,40}";
    prop_oneof![
        (s(), s(), s(), proptest::option::of(s())).prop_map(
            |(issuer, subject, audience, node_name)| SessionSource::WebIdentity {
                issuer,
                subject,
                audience,
                node_name,
            }
        ),
        (s(), s(), s(), s(), s()).prop_map(
            |(cluster_name, namespace, service_account, pod_name, pod_uid)| {
                SessionSource::PodIdentity {
                    cluster_name,
                    namespace,
                    service_account,
                    pod_name,
                    pod_uid,
                }
            }
        ),
        s().prop_map(|caller_arn| SessionSource::AssumeRole { caller_arn }),
    ]
}

fn arb_claims() -> impl Strategy<Value = SessionClaims> {
    let s = || ".{0,60}";
    let strings = || proptest::collection::vec(".{0,20}", 0..5);
    (
        (s(), s(), s(), s(), s(), ".{0,20}"),
        proptest::collection::vec((".{0,20}", ".{0,30}"), 0..6),
        strings(),
        proptest::option::of(".{0,200}"),
        strings(),
        proptest::option::of(s()),
        (-10_000_000_000i64..10_000_000_000, 0i64..100_000),
        arb_source(),
    )
        .prop_map(
            |(
                (account_id, assumed_role_arn, role_arn, role_id, role_session_name, secret),
                tags,
                transitive_tag_keys,
                session_policy,
                session_policy_arns,
                source_identity,
                (issued, duration),
                source,
            )| SessionClaims {
                access_key_id: AccessKeyId::parse("ASIAQWERTYUIOPASDFGH").unwrap(),
                secret_access_key: SecretAccessKey::new(secret),
                account_id,
                assumed_role_arn,
                role_arn,
                role_id,
                role_session_name,
                session_tags: tags
                    .into_iter()
                    .map(|(key, value)| SessionTag { key, value })
                    .collect(),
                transitive_tag_keys,
                session_policy,
                session_policy_arns,
                source_identity,
                issued_at: from_unix_seconds(issued),
                expires_at: from_unix_seconds(issued + duration),
                source,
            },
        )
}

proptest! {
    /// Any session, whatever its text (multi-byte, control characters, empty), comes back from
    /// the binary payload exactly as sealed.
    #[test]
    fn binary_payload_round_trips(c in arb_claims()) {
        let bytes = codec::encode(&c).unwrap();
        prop_assert_eq!(codec::decode(&bytes).unwrap(), c);
    }

    #[test]
    fn garbage_never_panics(input in ".{0,400}") {
        let _ = ring().open(&input, &clock(T0));
    }

    #[test]
    fn garbage_blobs_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = bytes;
        if !bytes.is_empty() {
            bytes[0] = SESSION_TOKEN_VERSION;
        }
        if bytes.len() >= 5 {
            bytes[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        prop_assert!(ring().open(&b64_encode(&bytes), &clock(T0)).is_err());
    }
}
