use super::*;

const ROLE: &str = "arn:aws:iam::111122223333:role/s3-reader";

fn annotations(a: &[(&str, &str)]) -> BTreeMap<String, String> {
    a.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sa(a: &[(&str, &str)]) -> ServiceAccountEntry {
    ServiceAccountEntry::from_annotations(&annotations(a), &Config::default(), None)
}

fn resolve_with(
    sa: Option<&ServiceAccountEntry>,
    cm: &ConfigMapMapping,
    cc: &Associations,
) -> Option<Identity> {
    let src = Sources {
        service_account: sa,
        config_map: cm,
        associations: cc,
    };
    resolve("ns", "app", src, &Config::default())
}

#[test]
fn sa_annotations_are_parsed_like_upstream() {
    let e = sa(&[
        ("eks.amazonaws.com/role-arn", ROLE),
        ("eks.amazonaws.com/audience", "aud"),
        ("eks.amazonaws.com/sts-regional-endpoints", "T"),
        ("eks.amazonaws.com/token-expiration", "100"),
        ("other.example.com/role-arn", "ignored"),
    ]);
    assert_eq!(
        e,
        ServiceAccountEntry {
            role_arn: ROLE.into(),
            audience: Some("aud".into()),
            regional_sts: Some(true),
            token_expiration: Some(600),
            sts_endpoint: None,
        }
    );
    // Invalid values fall back to the flags.
    let e = sa(&[
        ("eks.amazonaws.com/sts-regional-endpoints", "yes"),
        ("eks.amazonaws.com/token-expiration", "1d"),
    ]);
    assert_eq!((e.regional_sts, e.token_expiration), (None, None));
}

#[test]
fn compose_role_arn() {
    let compose = ComposeRoleArn {
        partition: partition_for_region("cn-north-1").into(),
        account_id: "111122223333".into(),
    };
    let a = annotations(&[("eks.amazonaws.com/role-arn", "s3-reader")]);
    let e = ServiceAccountEntry::from_annotations(&a, &Config::default(), Some(&compose));
    assert_eq!(e.role_arn, "arn:aws-cn:iam::111122223333:role/s3-reader");
    let a = annotations(&[("eks.amazonaws.com/role-arn", ROLE)]);
    assert_eq!(
        ServiceAccountEntry::from_annotations(&a, &Config::default(), Some(&compose)).role_arn,
        ROLE
    );
    assert_eq!(partition_for_region("us-gov-west-1"), "aws-us-gov");
    assert_eq!(partition_for_region("us-isob-east-1"), "aws-iso-b");
    assert_eq!(partition_for_region("us-iso-east-1"), "aws-iso");
    assert_eq!(partition_for_region("eusc-de-east-1"), "aws-eusc");
    assert_eq!(partition_for_region("eu-west-1"), "aws");
}

#[test]
fn role_arn_check() {
    assert!(is_valid_role_arn(ROLE));
    assert!(is_valid_role_arn(
        "arn:aws-cn:iam::111122223333:role/path/to/name@x+y=z,w.v"
    ));
    assert!(!is_valid_role_arn("arn:aws:iam::11112222333:role/x"));
    assert!(!is_valid_role_arn("arn:aws:iam::111122223333:user/x"));
    assert!(!is_valid_role_arn("arn:aws:iam::111122223333:role/"));
    assert!(!is_valid_role_arn("arn:azure:iam::111122223333:role/x"));
}

#[test]
fn association_beats_role_arn() {
    let e = sa(&[
        ("eks.amazonaws.com/role-arn", ROLE),
        ("eks.amazonaws.com/token-expiration", "3600"),
    ]);
    let cc: Associations = [("ns".to_owned(), "app".to_owned())].into();
    let id = resolve_with(Some(&e), &ConfigMapMapping::new(), &cc).unwrap();
    assert_eq!(id.credentials, Credentials::ContainerCredentials);
    assert_eq!(id.token_expiration, Some(3600));
}

#[test]
fn association_without_sa_uses_fixed_defaults() {
    let cc: Associations = [("ns".to_owned(), "app".to_owned())].into();
    let id = resolve_with(None, &ConfigMapMapping::new(), &cc).unwrap();
    assert_eq!(
        (id.regional_sts, id.token_expiration),
        (Some(false), Some(86_400))
    );
}

#[test]
fn sa_without_role_is_not_mutated() {
    assert_eq!(
        resolve_with(
            Some(&sa(&[])),
            &ConfigMapMapping::new(),
            &Associations::new()
        ),
        None
    );
    assert_eq!(
        resolve_with(None, &ConfigMapMapping::new(), &Associations::new()),
        None
    );
}

#[test]
fn config_map_exact_then_wildcard_and_sa_wins() {
    let cm = parse_config_map(
        r#"{"ns/app":{"RoleARN":"arn:aws:iam::111122223333:role/exact","UseRegionalSTS":true},
            "*/app":{"rolearn":"arn:aws:iam::111122223333:role/wild","Audience":"a","TokenExpiration":1200}}"#,
    )
    .unwrap();
    let id = resolve_with(None, &cm, &Associations::new()).unwrap();
    assert_eq!(
        id.credentials,
        Credentials::WebIdentity {
            role_arn: "arn:aws:iam::111122223333:role/exact".into()
        }
    );
    assert_eq!(
        id.audience.as_deref(),
        Some(""),
        "ConfigMap audience is not defaulted"
    );
    assert_eq!(
        (id.regional_sts, id.token_expiration),
        (Some(true), Some(86_400))
    );

    let mut only_wild = cm.clone();
    only_wild.remove("ns/app");
    let id = resolve_with(Some(&sa(&[])), &only_wild, &Associations::new()).unwrap();
    assert_eq!(
        id.credentials,
        Credentials::WebIdentity {
            role_arn: "arn:aws:iam::111122223333:role/wild".into()
        }
    );
    assert_eq!(id.token_expiration, Some(1200));

    let with_role = sa(&[("eks.amazonaws.com/role-arn", ROLE)]);
    let id = resolve_with(Some(&with_role), &cm, &Associations::new()).unwrap();
    assert_eq!(
        id.credentials,
        Credentials::WebIdentity {
            role_arn: ROLE.into()
        }
    );
}

#[test]
fn config_map_errors() {
    assert!(parse_config_map("not json").is_err());
    assert!(matches!(
        parse_config_map(r#"{"noslash":{}}"#),
        Err(MappingError::BadKey(_))
    ));
}

#[test]
fn identities_file() {
    let a = parse_identities_file(r#"{"identities":[{"namespace":"ns","serviceAccount":"app"}]}"#)
        .unwrap();
    assert!(a.contains(&("ns".to_owned(), "app".to_owned())));
    assert!(parse_identities_file("  \n").unwrap().is_empty());
    assert!(parse_identities_file("{").is_err());
}

#[test]
fn the_sts_endpoint_annotation_reaches_the_irsa_identity() {
    let e = sa(&[
        ("eks.amazonaws.com/role-arn", ROLE),
        ("eks.amazonaws.com/sts-endpoint", "https://podiam:8443"),
    ]);
    assert_eq!(e.sts_endpoint.as_deref(), Some("https://podiam:8443"));
    assert!(
        ServiceAccountEntry::keys(&Config::default())
            .contains(&"eks.amazonaws.com/sts-endpoint".to_owned())
    );
    let id = resolve_with(Some(&e), &ConfigMapMapping::new(), &Associations::new()).unwrap();
    assert_eq!(id.sts_endpoint.as_deref(), Some("https://podiam:8443"));
}
