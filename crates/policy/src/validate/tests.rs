use super::*;

fn codes(doc: &str) -> Vec<&'static str> {
    validate(doc, detect_kind(doc), &Limits::default())
        .into_iter()
        .map(|f| f.code)
        .collect()
}

#[test]
fn irsa_trust_warnings() {
    let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/ABC"},
        "Action":"sts:AssumeRoleWithWebIdentity",
        "Condition":{"StringLike":{"oidc.example.com/id/ABC:sub":"system:serviceaccount:*:*"}}}]}"#;
    assert_eq!(detect_kind(wide), PolicyKind::Trust);
    assert_eq!(codes(wide), ["oidc-missing-aud", "oidc-wildcard-sub"]);
    let good = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/ABC"},
        "Action":"sts:AssumeRoleWithWebIdentity",
        "Condition":{"StringEquals":{"oidc.example.com/id/ABC:sub":"system:serviceaccount:ns:sa",
                                      "oidc.example.com/id/ABC:aud":"sts.amazonaws.com"}}}]}"#;
    assert!(codes(good).is_empty());
}

#[test]
fn identity_warnings_and_errors() {
    let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}}"#;
    assert_eq!(codes(doc), ["allow-notaction-all-resources"]);
    let doc = r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEquals":{"s3:prefix":"home/*"}}}}"#;
    assert_eq!(codes(doc), ["old-version", "wildcard-in-string-equals"]);
    let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Permit","Action":"s3:*","Resource":"*"}}"#;
    let f = validate(doc, PolicyKind::Identity, &Limits::default());
    assert_eq!(f[0].severity, Severity::Error);
    assert_eq!(f[0].path, "Statement");
    assert!(f[0].message.contains("`Permit`"));
}

/// An identity policy of one statement with this `Action` (JSON) and `Condition` (JSON).
fn identity(action: &str, condition: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":{action},"Resource":"*","Condition":{condition}}}}}"#
    )
}

fn findings(doc: &str) -> Vec<Finding> {
    validate(doc, detect_kind(doc), &Limits::default())
}

/// The document's only finding, which has this code.
fn only(doc: &str, code: &str) -> Finding {
    let mut f = findings(doc);
    assert_eq!(f.len(), 1, "{doc}: {f:?}");
    assert_eq!(f[0].code, code, "{doc}");
    f.remove(0)
}

#[test]
fn known_actions_and_wildcards_that_match_are_clean() {
    for action in [
        r#""s3:GetObject""#,
        r#""S3:getobject""#,
        r#""s3:Get*""#,
        r#""s3:*""#,
        r#""*""#,
        r#""ec2:DescribeInstances""#,
        r#"["iam:CreateRole","sts:AssumeRoleWithWebIdentity","eks:CreatePodIdentityAssociation","eks-auth:AssumeRoleForPodIdentity"]"#,
    ] {
        assert_eq!(codes(&identity(action, "{}")), [] as [&str; 0], "{action}");
    }
}

#[test]
fn unknown_service_names_the_prefix_and_the_closest() {
    let f = only(
        &identity(r#"["s3:GetObject","s3x:GetObject"]"#, "{}"),
        "unknown-service",
    );
    assert_eq!(f.path, "Statement.Action[1]");
    assert_eq!(
        f.at,
        Position {
            line: 1,
            column: 80
        }
    );
    assert!(
        f.message.contains("no AWS service has the prefix `s3x`")
            && f.message.contains("did you mean `s3:GetObject`?"),
        "{}",
        f.message
    );
}

#[test]
fn unknown_action_suggests_the_closest_only_when_close() {
    let f = only(&identity(r#""s3:GetObjet""#, "{}"), "unknown-action");
    assert_eq!(f.path, "Statement.Action");
    assert_eq!(
        f.message,
        "`s3` has no action `GetObjet`; did you mean `s3:GetObject`?"
    );
    let f = only(&identity(r#""s3:Frobnicate""#, "{}"), "unknown-action");
    assert!(!f.message.contains("did you mean"), "{}", f.message);
    // Wildcards warn only when they match nothing; NotAction is checked too.
    assert_eq!(codes(&identity(r#""s3:Gte*""#, "{}")), ["unknown-action"]);
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","NotAction":["s3:GetObject","s3:GetObjet"],"Resource":"*"}]}"#;
    assert_eq!(only(doc, "unknown-action").path, "Statement.NotAction[1]");
}

#[test]
fn condition_operator_must_fit_the_key_type() {
    let mismatch = |action: &str, condition: &str| {
        only(&identity(action, condition), "condition-type-mismatch")
    };
    let f = mismatch(
        r#""s3:GetObject""#,
        r#"{"StringEquals":{"aws:SourceIp":"10.0.0.1"}}"#,
    );
    assert_eq!(f.path, "Statement.Condition.StringEquals.aws:SourceIp");
    assert!(
        f.message.contains("`aws:SourceIp` is an IP address")
            && f.message.contains("use `IpAddress`"),
        "{}",
        f.message
    );
    mismatch(
        r#""s3:GetObject""#,
        r#"{"IpAddress":{"aws:PrincipalTag/team":"10.0.0.0/8"}}"#,
    );
    mismatch(
        r#""s3:GetObject""#,
        r#"{"DateLessThan":{"aws:username":"2030-01-01T00:00:00Z"}}"#,
    );
    mismatch(
        r#""s3:ListBucket""#,
        r#"{"NumericLessThan":{"s3:prefix":"10"}}"#,
    );
    mismatch(
        r#""s3:GetObject""#,
        r#"{"Bool":{"aws:SourceAccount":"true"}}"#,
    );
    mismatch(
        r#""s3:GetObject""#,
        r#"{"ArnLike":{"aws:SourceAccount":"arn:aws:iam::1:role/*"}}"#,
    );
    mismatch(
        r#""s3:GetObject""#,
        r#"{"NotIpAddress":{"aws:CurrentTime":"10.0.0.0/8"}}"#,
    );
}

#[test]
fn condition_operators_of_the_key_type_are_clean() {
    for condition in [
        r#"{"StringEquals":{"aws:PrincipalTag/team":"payments"}}"#,
        r#"{"StringLike":{"s3:ExistingObjectTag/x":"a*"}}"#,
        r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        r#"{"NotIpAddressIfExists":{"aws:VpcSourceIp":"10.0.0.0/8"}}"#,
        r#"{"Bool":{"aws:SecureTransport":"false"}}"#,
        r#"{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}"#,
        r#"{"DateLessThan":{"aws:EpochTime":"1700000000"},"NumericLessThan":{"aws:EpochTime":"1700000000"}}"#,
        r#"{"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}"#,
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::1:role/*"}}"#,
        // ARN keys accept string operators, and string operators on dates, numbers and
        // booleans compare text: not flagged.
        r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::1:role/*"}}"#,
        r#"{"StringEquals":{"aws:SecureTransport":"true"}}"#,
        r#"{"Null":{"aws:SourceIp":"true"}}"#,
        r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["team"]}}"#,
    ] {
        assert_eq!(
            codes(&identity(r#""s3:GetObject""#, condition)),
            [] as [&str; 0],
            "{condition}"
        );
    }
}

#[test]
fn unknown_condition_keys_of_the_statement_services() {
    let unknown = |action: &str, condition: &str| {
        only(&identity(action, condition), "unknown-condition-key").message
    };
    let m = unknown(
        r#""ec2:DescribeInstances""#,
        r#"{"StringLike":{"s3:prefix":"home/*"}}"#,
    );
    assert!(m.contains("no action of `ec2`"), "{m}");
    let m = unknown(
        r#""s3:GetObject""#,
        r#"{"IpAddress":{"aws:SoruceIp":"10.0.0.0/8"}}"#,
    );
    assert!(m.contains("did you mean `aws:SourceIp`?"), "{m}");
    // Not judged: keys of identity providers, and statements whose actions may be of any
    // service (`*`, a wildcard prefix, NotAction).
    for (action, condition) in [
        (
            r#""s3:GetObject""#,
            r#"{"StringLike":{"s3:prefix":"home/*"}}"#,
        ),
        (
            r#""sts:AssumeRole""#,
            r#"{"StringEquals":{"sts:ExternalId":"x","sts:RoleSessionName":"s","iam:ResourceTag/env":"prod"}}"#,
        ),
        (
            r#""sts:AssumeRoleWithWebIdentity""#,
            r#"{"StringEquals":{"accounts.google.com:aud":"x","oidc.example.com:sub":"y"}}"#,
        ),
        (
            r#""eks:ListPodIdentityAssociations""#,
            r#"{"StringEquals":{"eks:clusterName":"c"}}"#,
        ),
        (
            r#""iam:AttachRolePolicy""#,
            r#"{"ArnEquals":{"iam:PolicyARN":"arn:aws:iam::aws:policy/ReadOnlyAccess","iam:PermissionsBoundary":"arn:aws:iam::1:policy/b"}}"#,
        ),
        (r#""*""#, r#"{"StringLike":{"s3:prefix":"home/*"}}"#),
        (
            r#""ec2:RunInstances""#,
            r#"{"StringEquals":{"frobnicator:thing":"x"}}"#,
        ),
        (
            r#""ec2:RunInstances""#,
            r#"{"ArnEquals":{"ec2:SourceInstanceArn":"arn:aws:ec2:us-east-1:1:instance/i-1"}}"#,
        ),
    ] {
        assert_eq!(
            codes(&identity(action, condition)),
            [] as [&str; 0],
            "{action} {condition}"
        );
    }
}

#[test]
fn trust_policies_podiam_documents_are_clean() {
    let pod_identity = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"Service":"pods.eks.amazonaws.com"},
        "Action":["sts:AssumeRole","sts:TagSession"],
        "Condition":{"StringEquals":{"aws:SourceAccount":"111122223333",
            "aws:RequestTag/kubernetes-namespace":"payments"},
            "ArnLike":{"aws:SourceArn":"arn:aws:eks:us-east-1:111122223333:cluster/*"}}}]}"#;
    assert_eq!(codes(pod_identity), [] as [&str; 0]);
}
