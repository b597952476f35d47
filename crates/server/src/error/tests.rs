use super::*;

#[test]
fn every_kind_has_a_code_per_protocol_and_eks_names_iam_failures_its_way() {
    for kind in ErrorKind::ALL {
        for p in [Protocol::Query, Protocol::Eks, Protocol::EksAuth] {
            let (code, status) = kind.wire(p);
            assert!(!code.is_empty(), "{kind:?} on {p:?}");
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{kind:?}"
            );
        }
    }
    let denied = AwsError::access_denied("no");
    assert_eq!(denied.code(Protocol::Query), "AccessDenied");
    assert_eq!(denied.status(Protocol::Query), StatusCode::FORBIDDEN);
    assert_eq!(denied.code(Protocol::Eks), "AccessDeniedException");
    assert_eq!(denied.status(Protocol::Eks), StatusCode::FORBIDDEN);
    // botocore eks-auth: AccessDeniedException is an HTTP 400.
    assert_eq!(denied.status(Protocol::EksAuth), StatusCode::BAD_REQUEST);
    let missing = AwsError::no_such_entity("x");
    assert_eq!(missing.code(Protocol::Eks), "ResourceNotFoundException");
    assert_eq!(
        AwsError::validation("x").code(Protocol::EksAuth),
        "InvalidRequestException"
    );
    assert_eq!(
        AwsError::invalid_parameter("x").code(Protocol::Query),
        "ValidationError"
    );
    assert_eq!(AwsError::service_failure("x").fault(), "Receiver");
    assert_eq!(AwsError::validation("x").fault(), "Sender");
}

#[test]
fn denials_are_one_rule() {
    let denials: Vec<ErrorKind> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_denial())
        .collect();
    assert!(denials.contains(&ErrorKind::AccessDenied));
    assert!(denials.contains(&ErrorKind::InvalidToken));
    assert!(denials.contains(&ErrorKind::ExpiredWebIdentityToken));
    assert!(!ErrorKind::ServiceFailure.is_denial());
    assert!(!ErrorKind::Validation.is_denial());
    assert!(!ErrorKind::IdpCommunication.is_denial());
}

/// AWS code strings are born here only: no other source file of the server spells one.
#[test]
fn aws_codes_are_spelled_only_in_this_file() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let codes = all_codes();
    assert!(codes.len() > 25, "{codes:?}");
    let mut offenders = Vec::new();
    for f in files {
        let rel = f.to_string_lossy().into_owned();
        if rel.ends_with("src/error.rs") || rel.ends_with("src/error/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for code in &codes {
            if text.contains(&format!("\"{code}\"")) {
                offenders.push(format!("{rel}: \"{code}\""));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "AWS codes outside error.rs: {offenders:#?}"
    );
}

#[test]
fn an_expired_token_says_when_in_utc_and_how_to_get_a_new_one() {
    let e = podiam_identity::jwt::JwtError::TokenExpired {
        exp: 1_700_000_000,
        now: 1_700_000_300,
    };
    for pod_identity in [false, true] {
        let err = token_error(&e, pod_identity);
        assert_eq!(err.kind(), ErrorKind::ExpiredWebIdentityToken);
        assert!(
            err.message
                .contains("it expired at 2023-11-14T22:13:20Z UTC (5m ago")
                && err
                    .message
                    .contains("server's time is 2023-11-14T22:18:20Z UTC")
                && err.message.contains("`podiam token create`")
                && err.message.contains("read the file again"),
            "{}",
            err.message
        );
    }
}
