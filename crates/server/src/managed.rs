//! AWS managed policies shipped with podiam, under `arn:aws:iam::aws:policy/…` (documents as AWS
//! publishes them).

use podiam_store::{ManagedPolicy, PolicyVersion};

const POLICIES: &[(&str, &str, &str, &str)] = &[
    (
        "AdministratorAccess",
        "ANPAIWMBCKSKIEE64ZLYK",
        "v1",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "AmazonS3ReadOnlyAccess",
        "ANPAIZTJ4DXE7G6AGAE6M",
        "v3",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:Get*","s3:List*","s3:Describe*","s3-object-lambda:Get*","s3-object-lambda:List*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonS3FullAccess",
        "ANPAIFIR6V6BVTRAHWINE",
        "v2",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","s3-object-lambda:*"],"Resource":"*"}]}"#,
    ),
    (
        "IAMReadOnlyAccess",
        "ANPAJKSO7NDY4T57MWDSQ",
        "v4",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:GenerateCredentialReport","iam:GenerateServiceLastAccessedDetails","iam:Get*","iam:List*","iam:SimulateCustomPolicy","iam:SimulatePrincipalPolicy"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonSQSFullAccess",
        "ANPAI65L554VRJ33ECQS6",
        "v1",
        r#"{"Version":"2012-10-17","Statement":[{"Action":["sqs:*"],"Effect":"Allow","Resource":"*"}]}"#,
    ),
    (
        "AmazonSSMReadOnlyAccess",
        "ANPAJODSKQGGJTHRYZ5FC",
        "v1",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ssm:Describe*","ssm:Get*","ssm:List*"],"Resource":"*"}]}"#,
    ),
];

/// The shipped policies for a partition. Their creation date is fixed: AWS's are years old.
pub fn aws_managed(partition: &str) -> Vec<ManagedPolicy> {
    // 2015-02-06T18:40:00Z, when AWS created most of these.
    const CREATED: i64 = 1_423_248_000_000;
    POLICIES
        .iter()
        .map(|(name, id, version, doc)| ManagedPolicy {
            policy_name: (*name).to_string(),
            path: "/".into(),
            policy_id: (*id).to_string(),
            arn: format!("arn:{partition}:iam::aws:policy/{name}"),
            description: None,
            create_date: CREATED,
            update_date: CREATED,
            default_version_id: (*version).to_string(),
            versions: vec![PolicyVersion {
                version_id: (*version).to_string(),
                document: (*doc).to_string(),
                create_date: CREATED,
            }],
            next_version: 1 + version.trim_start_matches('v').parse::<u32>().unwrap_or(1),
            tags: Vec::new(),
            aws_managed: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_policies_parse() {
        for p in super::aws_managed("aws") {
            let v = p.default_version().unwrap();
            podiam_policy::Policy::parse(&v.document, podiam_policy::PolicyKind::Identity).unwrap();
        }
    }
}
