use super::*;

fn full_request() -> (Vec<(String, String)>, Vec<String>, Vec<Tag>) {
    (
        vec![("team".into(), "payments".into())],
        vec!["old".into()],
        vec![Tag {
            key: "env".into(),
            value: "prod".into(),
        }],
    )
}

/// Walks every served action: with a request that holds everything, the context carries
/// exactly the keys the Service Authorization Reference documents for the action.
/// A request that holds everything a key can be read from.
fn everything<'a>(
    (tags, removed, resource_tags): &'a (Vec<(String, String)>, Vec<String>, Vec<Tag>),
) -> RequestKeys<'a> {
    RequestKeys {
        request_tags: tags,
        removed_tag_keys: removed,
        resource_tags,
        iam_resource: true,
        policy_arn: Some("arn:aws:iam::aws:policy/AdministratorAccess"),
        permissions_boundary: Some("arn:aws:iam::000000000000:policy/boundary"),
        passed_to_service: Some("pods.eks.amazonaws.com"),
        associated_resource_arn: Some("arn:aws:eks:us-east-1:000000000000:cluster/c"),
    }
}

#[test]
fn every_action_carries_exactly_its_documented_keys() {
    let request = full_request();
    let r = everything(&request);
    for action in ACTIONS {
        let names: Vec<String> = context_for(action.name, &r)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let expected: Vec<&str> = action
            .keys
            .iter()
            .flat_map(|k| match k {
                RequestTag => vec!["aws:RequestTag/team"],
                TagKeys => vec!["aws:TagKeys"],
                ResourceTag => vec!["aws:ResourceTag/env", "iam:ResourceTag/env"],
                PolicyArn => vec!["iam:PolicyARN"],
                PermissionsBoundary => vec!["iam:PermissionsBoundary"],
                PassedToService => vec!["iam:PassedToService"],
                AssociatedResourceArn => vec!["iam:AssociatedResourceArn"],
            })
            .collect();
        assert_eq!(names, expected, "{}", action.name);
    }
}

#[test]
fn the_documented_keys_of_key_actions() {
    let keys = |n: &str| action(n).map(|a| a.keys.to_vec()).unwrap_or_default();
    // AWS: iam:PolicyARN on attach/detach; iam:PermissionsBoundary where a boundary applies.
    assert!(keys("iam:AttachRolePolicy").contains(&PolicyArn));
    assert!(keys("iam:DetachRolePolicy").contains(&PolicyArn));
    assert!(keys("iam:CreateRole").contains(&PermissionsBoundary));
    assert!(keys("iam:PutRolePolicy").contains(&PermissionsBoundary));
    assert!(keys("iam:TagRole").contains(&RequestTag));
    assert!(keys("iam:UntagRole").contains(&TagKeys));
    assert!(!keys("iam:UntagRole").contains(&RequestTag));
    assert!(keys("iam:PassRole").contains(&PassedToService));
    assert!(keys("iam:GetRole") == vec![ResourceTag]);
    assert!(action("iam:NoSuchThing").is_none());
    // Tag keys: the ones set and the ones removed, as one list.
    let (tags, removed, _) = full_request();
    let ctx = context_for(
        "iam:UntagRole",
        &RequestKeys {
            request_tags: &tags,
            removed_tag_keys: &removed,
            ..RequestKeys::default()
        },
    );
    assert_eq!(
        ctx,
        vec![(
            "aws:TagKeys".to_string(),
            vec!["team".to_string(), "old".to_string()]
        )]
    );
    // EKS resources have no iam:ResourceTag.
    let t = [Tag {
        key: "k".into(),
        value: "v".into(),
    }];
    let eks = context_for(
        "eks:DescribeCluster",
        &RequestKeys {
            resource_tags: &t,
            ..RequestKeys::default()
        },
    );
    assert_eq!(
        eks,
        vec![("aws:ResourceTag/k".to_string(), vec!["v".to_string()])]
    );
}

/// Every action string the server's source authorises is in the table: a new handler cannot
/// forget its keys.
#[test]
fn every_action_the_server_names_is_in_the_table() {
    // Condition keys of these services, spelled like actions.
    const KEYS: [&str; 8] = [
        "sts:ExternalId",
        "sts:RoleSessionName",
        "sts:SourceIdentity",
        "sts:TransitiveTagKeys",
        "iam:PassedToService",
        "iam:AssociatedResourceArn",
        "iam:PolicyARN",
        "iam:PermissionsBoundary",
    ];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![src];
    let mut missing = Vec::new();
    let mut seen = 0;
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // managed.rs holds AWS managed policy documents, which name actions podiam does not serve.
            if path.extension().is_none_or(|e| e != "rs")
                || path.ends_with("actions/tests.rs")
                || path.ends_with("managed.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices('"') {
                let rest = &text[i + 1..];
                let Some(end) = rest.find('"') else { continue };
                let lit = &rest[..end];
                let Some((service, name)) = lit.split_once(':') else {
                    continue;
                };
                let is_action = matches!(service, "iam" | "sts" | "eks" | "eks-auth")
                    && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && name.chars().all(|c| c.is_ascii_alphanumeric());
                if !is_action || KEYS.contains(&lit) {
                    continue;
                }
                seen += 1;
                if action(lit).is_none() {
                    missing.push(format!("{}: {lit}", path.display()));
                }
            }
        }
    }
    assert!(seen > 40, "found only {seen} action names");
    assert!(
        missing.is_empty(),
        "actions missing from ACTIONS: {missing:#?}"
    );
}

/// `podiam policy validate` must not call an action podiam serves, or a condition key it fills
/// for one, unknown: each is in the AWS catalogue, spelled as AWS spells it.
#[test]
fn every_served_action_is_in_the_validate_catalogue() {
    let catalogue = podiam_policy::validate::catalogue::catalogue();
    let request = full_request();
    let r = everything(&request);
    for action in ACTIONS {
        let (prefix, name) = action.name.split_once(':').unwrap();
        let service = catalogue
            .service(prefix)
            .unwrap_or_else(|| panic!("no service `{prefix}` in the catalogue"));
        assert_eq!(service.action(name), Some(name), "{}", action.name);
        // `iam:ResourceTag/…` is filled only for IAM resources.
        let r = RequestKeys {
            iam_resource: prefix == "iam",
            ..r
        };
        for (key, _) in context_for(action.name, &r) {
            assert!(
                catalogue
                    .global_key(&key)
                    .or_else(|| service.key(&key))
                    .is_some(),
                "{}: key `{key}`",
                action.name
            );
        }
    }
}

#[test]
fn metrics_labels_name_only_served_actions() {
    assert_eq!(
        query_action_label(true, "AssumeRoleWithWebIdentity"),
        "AssumeRoleWithWebIdentity"
    );
    assert_eq!(
        query_action_label(true, "GetCallerIdentity"),
        "GetCallerIdentity"
    );
    assert_eq!(query_action_label(false, "CreateRole"), "CreateRole");
    assert_eq!(
        query_action_label(false, "SimulatePrincipalPolicy"),
        "SimulatePrincipalPolicy"
    );
    // The other service's names, STS permissions that are not actions, and anything else.
    assert_eq!(query_action_label(false, "AssumeRole"), "Unknown");
    assert_eq!(query_action_label(true, "CreateRole"), "Unknown");
    assert_eq!(query_action_label(true, "TagSession"), "Unknown");
    assert_eq!(query_action_label(false, "NoSuchAction1"), "Unknown");
    assert_eq!(query_action_label(false, ""), "Unknown");
}
