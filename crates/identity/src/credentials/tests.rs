use std::cell::Cell;

use super::*;
use crate::clock::{SystemRng, TestRng};

fn is_base32(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

#[test]
fn access_keys_have_aws_shape() {
    for rng_seed in 0..50 {
        let rng = TestRng(Cell::new(rng_seed));
        let key = mint_access_key(AccessKeyKind::Temporary, &rng).unwrap();
        let id = key.access_key_id.as_str();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("ASIA"));
        assert!(is_base32(&id[4..]), "{id}");
        assert_eq!(key.access_key_id.kind(), AccessKeyKind::Temporary);
        let secret = key.secret_access_key.expose_secret();
        assert_eq!(secret.len(), 40);
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        );
    }
    let long = mint_access_key(AccessKeyKind::LongTerm, &SystemRng).unwrap();
    assert!(long.access_key_id.as_str().starts_with("AKIA"));
    assert_eq!(long.access_key_id.kind(), AccessKeyKind::LongTerm);
    assert_eq!(
        mint_access_key(AccessKeyKind::Unknown, &SystemRng),
        Err(MintError::UnknownKind)
    );
}

#[test]
fn system_rng_keys_differ() {
    let a = mint_access_key(AccessKeyKind::Temporary, &SystemRng).unwrap();
    let b = mint_access_key(AccessKeyKind::Temporary, &SystemRng).unwrap();
    assert_ne!(a.access_key_id, b.access_key_id);
    assert_ne!(a.secret_access_key, b.secret_access_key);
}

#[test]
fn unique_ids_have_aws_shape() {
    let id = mint_unique_id(UniqueIdPrefix::Role, &SystemRng).unwrap();
    assert_eq!(id.len(), 21);
    assert!(id.starts_with("AROA"));
    assert!(is_base32(&id[4..]));
    assert!(
        mint_unique_id(UniqueIdPrefix::User, &SystemRng)
            .unwrap()
            .starts_with("AIDA")
    );
}

#[test]
fn secrets_are_not_printed() {
    let secret = SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
    let shown = format!("{secret:?}");
    assert!(!shown.contains("wJalr"), "{shown}");
}

#[test]
fn access_key_id_parse() {
    assert!(AccessKeyId::parse("AKIDEXAMPLE").is_ok());
    assert_eq!(
        AccessKeyId::parse("AKIDEXAMPLE").unwrap().kind(),
        AccessKeyKind::Unknown
    );
    assert!(AccessKeyId::parse("").is_err());
    assert!(AccessKeyId::parse("AKIA/EXAMPLE").is_err());
    assert!(AccessKeyId::parse(&"A".repeat(129)).is_err());
}

#[test]
fn duration_rules() {
    let twelve = Duration::from_secs(43_200);
    let one = Duration::from_secs(3600);
    assert_eq!(session_duration(None, one, false), Ok(one));
    assert_eq!(session_duration(None, twelve, true), Ok(one));
    assert_eq!(
        session_duration(Some(900), one, false),
        Ok(Duration::from_secs(900))
    );
    assert_eq!(
        session_duration(Some(899), twelve, false),
        Err(DurationError::BelowMinimum { requested: 899 })
    );
    assert_eq!(
        session_duration(Some(43_201), twelve, false),
        Err(DurationError::AboveMaximum { requested: 43_201 })
    );
    assert_eq!(
        session_duration(Some(7200), one, false),
        Err(DurationError::ExceedsRoleMaximum {
            requested: 7200,
            max_session_duration: 3600
        })
    );
    assert_eq!(
        session_duration(Some(7200), twelve, true),
        Err(DurationError::ExceedsRoleChainingLimit { requested: 7200 })
    );
    assert_eq!(session_duration(Some(43_200), twelve, false), Ok(twelve));
}

#[test]
fn temporary_credentials_expire_after_duration() {
    let now = crate::clock::from_unix_seconds(1_700_000_000);
    let creds = mint_temporary_credentials(&SystemRng, now, Duration::from_secs(900)).unwrap();
    assert_eq!(
        creds.expiration,
        crate::clock::from_unix_seconds(1_700_000_900)
    );
    assert_eq!(creds.access_key_id.kind(), AccessKeyKind::Temporary);
}

#[test]
fn assumed_role_arns() {
    assert_eq!(
        assumed_role_arn("arn:aws:iam::123456789012:role/path/to/demo", "TestAR").as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/demo/TestAR")
    );
    assert_eq!(
        assumed_role_arn("arn:aws:iam::123456789012:role/demo", "s").as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/demo/s")
    );
    assert_eq!(
        assumed_role_arn("arn:aws:iam::123456789012:user/demo", "s"),
        None
    );
    assert_eq!(
        assumed_role_arn("arn:aws:iam:us-east-1:123456789012:role/demo", "s"),
        None
    );
    assert_eq!(assumed_role_arn("not an arn", "s"), None);
    assert_eq!(assumed_role_id("AROAEXAMPLE", "app1"), "AROAEXAMPLE:app1");
}
