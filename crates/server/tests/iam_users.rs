//! IAM users and groups over HTTP, signed as the SDKs sign: AWS's shapes, quotas and errors, and
//! user and group policies taking part in every decision (a group grants to its members, a Deny
//! in a group beats a user's Allow, request condition keys reach the engine).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use podiam_identity::HttpRequest;
use podiam_identity::sigv4::{SigningCredentials, SigningParams, sign};
use podiam_server::{Options, Server, start};

const ACCOUNT: &str = "000000000000";

async fn server(dir: &std::path::Path) -> Server {
    start(Options {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        issuer_url: None,
        explain_denials: true,
        database_url: None,
        master_key: None,
        tls: None,
        replica_name: None,
        clock: Default::default(),
        upstream: None,
        connections: Default::default(),
    })
    .await
    .unwrap()
}

fn admin(dir: &std::path::Path) -> SigningCredentials {
    let text = std::fs::read_to_string(dir.join("aws/credentials")).unwrap();
    SigningCredentials::from_shared_credentials(&text, "podiam").unwrap()
}

/// One IAM call (awsQuery, signed for `iam`): the status and the XML body.
async fn iam(s: &Server, creds: &SigningCredentials, form: &[(&str, &str)]) -> (u16, String) {
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.append_pair("Version", "2010-05-08");
    for (k, v) in form {
        body.append_pair(k, v);
    }
    let body = body.finish();
    let host = s.addr.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let signed = sign(
        &HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams::new(creds, "us-east-1", "iam", std::time::SystemTime::now()),
    )
    .unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{}/", s.endpoint))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The call must succeed; its body.
async fn ok(s: &Server, creds: &SigningCredentials, form: &[(&str, &str)]) -> String {
    let (status, body) = iam(s, creds, form).await;
    assert_eq!(status, 200, "{form:?}: {body}");
    body
}

/// The call must fail with `code`; its message.
async fn fails(
    s: &Server,
    creds: &SigningCredentials,
    form: &[(&str, &str)],
    code: &str,
) -> String {
    let (status, body) = iam(s, creds, form).await;
    assert_ne!(status, 200, "{form:?} succeeded: {body}");
    assert_eq!(
        field(&body, "Code").as_deref(),
        Some(code),
        "{form:?}: {body}"
    );
    field(&body, "Message").unwrap_or_default()
}

/// The text of the first `<tag>` of an XML body.
fn field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..start + end].to_string())
}

/// Every `<tag>` text of an XML body.
fn fields(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    body.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split(&close).next().map(str::to_string))
        .collect()
}

/// A user with one access key; its credentials.
async fn user_with_key(s: &Server, admin: &SigningCredentials, name: &str) -> SigningCredentials {
    ok(s, admin, &[("Action", "CreateUser"), ("UserName", name)]).await;
    let body = ok(
        s,
        admin,
        &[("Action", "CreateAccessKey"), ("UserName", name)],
    )
    .await;
    SigningCredentials::from_shared_credentials(
        &format!(
            "[k]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            field(&body, "AccessKeyId").unwrap(),
            field(&body, "SecretAccessKey").unwrap()
        ),
        "k",
    )
    .unwrap()
}

fn allow(action: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"*"}}]}}"#
    )
}

fn deny(action: &str) -> String {
    allow(action).replace("Allow", "Deny")
}

#[tokio::test]
async fn group_policies_grant_to_members_and_a_group_deny_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let bob = user_with_key(&s, &root, "bob").await;
    let list_roles = [("Action", "ListRoles")];

    // No policy: refused, with AWS's message.
    let msg = fails(&s, &bob, &list_roles, "AccessDenied").await;
    assert!(
        msg.contains(&format!(
            "User: arn:aws:iam::{ACCOUNT}:user/bob is not authorized to perform: iam:ListRoles"
        )),
        "{msg}"
    );
    // A group policy grants to its members, and stops when the user leaves.
    ok(
        &s,
        &root,
        &[("Action", "CreateGroup"), ("GroupName", "readers")],
    )
    .await;
    let readers = allow("iam:ListRoles");
    ok(
        &s,
        &root,
        &[
            ("Action", "PutGroupPolicy"),
            ("GroupName", "readers"),
            ("PolicyName", "list"),
            ("PolicyDocument", &readers),
        ],
    )
    .await;
    fails(&s, &bob, &list_roles, "AccessDenied").await;
    ok(
        &s,
        &root,
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "readers"),
            ("UserName", "bob"),
        ],
    )
    .await;
    ok(&s, &bob, &list_roles).await;
    ok(
        &s,
        &root,
        &[
            ("Action", "RemoveUserFromGroup"),
            ("GroupName", "readers"),
            ("UserName", "bob"),
        ],
    )
    .await;
    fails(&s, &bob, &list_roles, "AccessDenied").await;

    // A managed policy attached to the group grants too.
    ok(
        &s,
        &root,
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "readers"),
            ("UserName", "bob"),
        ],
    )
    .await;
    ok(
        &s,
        &root,
        &[
            ("Action", "DeleteGroupPolicy"),
            ("GroupName", "readers"),
            ("PolicyName", "list"),
        ],
    )
    .await;
    fails(&s, &bob, &list_roles, "AccessDenied").await;
    let iam_read = "arn:aws:iam::aws:policy/IAMReadOnlyAccess";
    ok(
        &s,
        &root,
        &[
            ("Action", "AttachGroupPolicy"),
            ("GroupName", "readers"),
            ("PolicyArn", iam_read),
        ],
    )
    .await;
    ok(&s, &bob, &list_roles).await;

    // AWS: an explicit Deny in any policy overrides any Allow, a group's over the user's own.
    ok(
        &s,
        &root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "bob"),
            ("PolicyName", "own"),
            ("PolicyDocument", &allow("iam:ListRoles")),
        ],
    )
    .await;
    ok(
        &s,
        &root,
        &[("Action", "CreateGroup"), ("GroupName", "quarantine")],
    )
    .await;
    ok(
        &s,
        &root,
        &[
            ("Action", "PutGroupPolicy"),
            ("GroupName", "quarantine"),
            ("PolicyName", "no"),
            ("PolicyDocument", &deny("iam:*")),
        ],
    )
    .await;
    ok(
        &s,
        &root,
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "quarantine"),
            ("UserName", "bob"),
        ],
    )
    .await;
    let msg = fails(&s, &bob, &list_roles, "AccessDenied").await;
    assert!(msg.contains("explicit deny"), "{msg}");

    // The simulator sees the same policies: the user's own, and its groups'.
    let bob_arn = format!("arn:aws:iam::{ACCOUNT}:user/bob");
    let sim = ok(
        &s,
        &root,
        &[
            ("Action", "SimulatePrincipalPolicy"),
            ("PolicySourceArn", &bob_arn),
            ("ActionNames.member.1", "iam:ListRoles"),
        ],
    )
    .await;
    assert_eq!(
        field(&sim, "EvalDecision").as_deref(),
        Some("explicitDeny"),
        "{sim}"
    );
    let group_arn = format!("arn:aws:iam::{ACCOUNT}:group/readers");
    let sim = ok(
        &s,
        &root,
        &[
            ("Action", "SimulatePrincipalPolicy"),
            ("PolicySourceArn", &group_arn),
            ("ActionNames.member.1", "iam:ListRoles"),
        ],
    )
    .await;
    assert_eq!(
        field(&sim, "EvalDecision").as_deref(),
        Some("allowed"),
        "{sim}"
    );
}

#[tokio::test]
async fn users_and_groups_have_awss_shapes_quotas_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let alice = user_with_key(&s, &root, "alice").await;
    ok(
        &s,
        &root,
        &[
            ("Action", "CreateGroup"),
            ("GroupName", "ops"),
            ("Path", "/team/"),
        ],
    )
    .await;
    let got = ok(&s, &root, &[("Action", "GetGroup"), ("GroupName", "ops")]).await;
    assert!(field(&got, "GroupId").unwrap().starts_with("AGPA"), "{got}");
    assert_eq!(
        field(&got, "Arn").unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:group/team/ops")
    );
    fails(
        &s,
        &root,
        &[("Action", "CreateGroup"), ("GroupName", "OPS")],
        "EntityAlreadyExists",
    )
    .await;
    ok(
        &s,
        &root,
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "ops"),
            ("UserName", "alice"),
        ],
    )
    .await;
    // Again: no change.
    ok(
        &s,
        &root,
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "ops"),
            ("UserName", "alice"),
        ],
    )
    .await;
    let got = ok(&s, &root, &[("Action", "GetGroup"), ("GroupName", "ops")]).await;
    assert_eq!(fields(&got, "UserName"), ["alice"], "{got}");
    fails(
        &s,
        &root,
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "ops"),
            ("UserName", "nobody"),
        ],
        "NoSuchEntity",
    )
    .await;
    fails(
        &s,
        &root,
        &[("Action", "GetGroup"), ("GroupName", "nope")],
        "NoSuchEntity",
    )
    .await;

    // Renaming the user keeps its groups and its key; renaming the group keeps its members.
    ok(
        &s,
        &root,
        &[
            ("Action", "UpdateUser"),
            ("UserName", "alice"),
            ("NewUserName", "alicia"),
            ("NewPath", "/staff/"),
        ],
    )
    .await;
    let got = ok(&s, &root, &[("Action", "GetUser"), ("UserName", "alicia")]).await;
    assert_eq!(
        field(&got, "Arn").unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:user/staff/alicia")
    );
    fails(
        &s,
        &root,
        &[("Action", "GetUser"), ("UserName", "alice")],
        "NoSuchEntity",
    )
    .await;
    // The key follows the user: it signs as alicia now (who may not read herself).
    let msg = fails(&s, &alice, &[("Action", "GetUser")], "AccessDenied").await;
    assert!(msg.contains("user/staff/alicia"), "{msg}");
    ok(
        &s,
        &root,
        &[
            ("Action", "UpdateGroup"),
            ("GroupName", "ops"),
            ("NewGroupName", "operators"),
        ],
    )
    .await;
    let groups = ok(
        &s,
        &root,
        &[("Action", "ListGroupsForUser"), ("UserName", "alicia")],
    )
    .await;
    assert_eq!(fields(&groups, "GroupName"), ["operators"], "{groups}");
    fails(
        &s,
        &root,
        &[
            ("Action", "UpdateUser"),
            ("UserName", "alicia"),
            ("NewUserName", "podiam-admin"),
        ],
        "EntityAlreadyExists",
    )
    .await;

    // Quotas: 10 managed policies per user and per group; 2,048 characters of inline policies
    // per user and 5,120 per group.
    for (kind, name) in [("User", "alicia"), ("Group", "operators")] {
        for i in 0..10 {
            let doc = allow(&format!("iam:Get{i}"));
            let body = ok(
                &s,
                &root,
                &[
                    ("Action", "CreatePolicy"),
                    ("PolicyName", &format!("{kind}{i}")),
                    ("PolicyDocument", &doc),
                ],
            )
            .await;
            let arn = field(&body, "Arn").unwrap();
            ok(
                &s,
                &root,
                &[
                    ("Action", &format!("Attach{kind}Policy")),
                    (&format!("{kind}Name"), name),
                    ("PolicyArn", &arn),
                ],
            )
            .await;
        }
        let msg = fails(
            &s,
            &root,
            &[
                ("Action", &format!("Attach{kind}Policy")),
                (&format!("{kind}Name"), name),
                ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
            ],
            "LimitExceeded",
        )
        .await;
        assert!(msg.contains(&format!("PoliciesPer{kind}: 10")), "{msg}");
        let listed = ok(
            &s,
            &root,
            &[
                ("Action", &format!("ListAttached{kind}Policies")),
                (&format!("{kind}Name"), name),
                ("MaxItems", "4"),
            ],
        )
        .await;
        assert_eq!(fields(&listed, "PolicyArn").len(), 4);
        assert_eq!(field(&listed, "IsTruncated").as_deref(), Some("true"));
        let marker = field(&listed, "Marker").unwrap();
        let rest = ok(
            &s,
            &root,
            &[
                ("Action", &format!("ListAttached{kind}Policies")),
                (&format!("{kind}Name"), name),
                ("Marker", &marker),
                ("MaxItems", "100"),
            ],
        )
        .await;
        assert_eq!(fields(&rest, "PolicyArn").len(), 6, "{rest}");
    }
    let padded = |n: usize| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::{}"}}]}}"#,
            "a".repeat(n)
        )
    };
    ok(
        &s,
        &root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "alicia"),
            ("PolicyName", "big"),
            ("PolicyDocument", &padded(1800)),
        ],
    )
    .await;
    fails(
        &s,
        &root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "alicia"),
            ("PolicyName", "more"),
            ("PolicyDocument", &padded(100)),
        ],
        "LimitExceeded",
    )
    .await;
    // Replacing a policy counts it once.
    ok(
        &s,
        &root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "alicia"),
            ("PolicyName", "big"),
            ("PolicyDocument", &padded(1900)),
        ],
    )
    .await;
    ok(
        &s,
        &root,
        &[
            ("Action", "PutGroupPolicy"),
            ("GroupName", "operators"),
            ("PolicyName", "big"),
            ("PolicyDocument", &padded(5000)),
        ],
    )
    .await;
    fails(
        &s,
        &root,
        &[
            ("Action", "PutGroupPolicy"),
            ("GroupName", "operators"),
            ("PolicyName", "more"),
            ("PolicyDocument", &padded(100)),
        ],
        "LimitExceeded",
    )
    .await;
    fails(
        &s,
        &root,
        &[
            ("Action", "GetUserPolicy"),
            ("UserName", "alicia"),
            ("PolicyName", "nope"),
        ],
        "NoSuchEntity",
    )
    .await;

    // A policy attached to a group counts and cannot be deleted.
    let group_policy = format!("arn:aws:iam::{ACCOUNT}:policy/Group0");
    let got = ok(
        &s,
        &root,
        &[("Action", "GetPolicy"), ("PolicyArn", &group_policy)],
    )
    .await;
    assert_eq!(
        field(&got, "AttachmentCount").as_deref(),
        Some("1"),
        "{got}"
    );
    fails(
        &s,
        &root,
        &[("Action", "DeletePolicy"), ("PolicyArn", &group_policy)],
        "DeleteConflict",
    )
    .await;

    // DeleteUser and DeleteGroup refuse while anything is left, one thing at a time, as AWS.
    let alice_key = field(
        &ok(
            &s,
            &root,
            &[("Action", "ListAccessKeys"), ("UserName", "alicia")],
        )
        .await,
        "AccessKeyId",
    )
    .unwrap();
    let del_user = [("Action", "DeleteUser"), ("UserName", "alicia")];
    let del_group = [("Action", "DeleteGroup"), ("GroupName", "operators")];
    assert!(
        fails(&s, &root, &del_user, "DeleteConflict")
            .await
            .contains("access keys")
    );
    ok(
        &s,
        &root,
        &[
            ("Action", "DeleteAccessKey"),
            ("UserName", "alicia"),
            ("AccessKeyId", &alice_key),
        ],
    )
    .await;
    assert!(
        fails(&s, &root, &del_user, "DeleteConflict")
            .await
            .contains("delete policies")
    );
    ok(
        &s,
        &root,
        &[
            ("Action", "DeleteUserPolicy"),
            ("UserName", "alicia"),
            ("PolicyName", "big"),
        ],
    )
    .await;
    assert!(
        fails(&s, &root, &del_user, "DeleteConflict")
            .await
            .contains("detach all policies")
    );
    for i in 0..10 {
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/User{i}");
        ok(
            &s,
            &root,
            &[
                ("Action", "DetachUserPolicy"),
                ("UserName", "alicia"),
                ("PolicyArn", &arn),
            ],
        )
        .await;
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/Group{i}");
        ok(
            &s,
            &root,
            &[
                ("Action", "DetachGroupPolicy"),
                ("GroupName", "operators"),
                ("PolicyArn", &arn),
            ],
        )
        .await;
    }
    fails(
        &s,
        &root,
        &[
            ("Action", "DetachUserPolicy"),
            ("UserName", "alicia"),
            ("PolicyArn", &group_policy),
        ],
        "NoSuchEntity",
    )
    .await;
    assert!(
        fails(&s, &root, &del_user, "DeleteConflict")
            .await
            .contains("groups")
    );
    assert!(
        fails(&s, &root, &del_group, "DeleteConflict")
            .await
            .contains("remove users")
    );
    ok(
        &s,
        &root,
        &[
            ("Action", "RemoveUserFromGroup"),
            ("GroupName", "operators"),
            ("UserName", "alicia"),
        ],
    )
    .await;
    fails(
        &s,
        &root,
        &[
            ("Action", "RemoveUserFromGroup"),
            ("GroupName", "operators"),
            ("UserName", "alicia"),
        ],
        "NoSuchEntity",
    )
    .await;
    assert!(
        fails(&s, &root, &del_group, "DeleteConflict")
            .await
            .contains("delete policies")
    );
    ok(
        &s,
        &root,
        &[
            ("Action", "DeleteGroupPolicy"),
            ("GroupName", "operators"),
            ("PolicyName", "big"),
        ],
    )
    .await;
    ok(&s, &root, &del_group).await;
    ok(&s, &root, &del_user).await;
    let users = ok(&s, &root, &[("Action", "ListUsers")]).await;
    assert_eq!(fields(&users, "UserName"), ["podiam-admin"], "{users}");
    // 300 groups per account.
    for i in 0..300 {
        ok(
            &s,
            &root,
            &[
                ("Action", "CreateGroup"),
                ("GroupName", &format!("g{i:03}")),
            ],
        )
        .await;
    }
    let msg = fails(
        &s,
        &root,
        &[("Action", "CreateGroup"), ("GroupName", "one-more")],
        "LimitExceeded",
    )
    .await;
    assert!(msg.contains("GroupsPerAccount: 300"), "{msg}");
    let page = ok(&s, &root, &[("Action", "ListGroups"), ("MaxItems", "1000")]).await;
    assert_eq!(fields(&page, "GroupName").len(), 300);
}

#[tokio::test]
async fn calls_authorise_before_lookup_with_the_request_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let carol = user_with_key(&s, &root, "carol").await;
    ok(
        &s,
        &root,
        &[("Action", "CreateGroup"), ("GroupName", "exists")],
    )
    .await;
    // Nobody learns which users and groups exist without the right to look.
    for group in ["exists", "does-not-exist"] {
        fails(
            &s,
            &carol,
            &[("Action", "GetGroup"), ("GroupName", group)],
            "AccessDenied",
        )
        .await;
        fails(
            &s,
            &carol,
            &[("Action", "ListGroupPolicies"), ("GroupName", group)],
            "AccessDenied",
        )
        .await;
    }
    for user in ["podiam-admin", "does-not-exist"] {
        fails(
            &s,
            &carol,
            &[("Action", "ListUserPolicies"), ("UserName", user)],
            "AccessDenied",
        )
        .await;
    }
    fails(&s, &carol, &[("Action", "ListUsers")], "AccessDenied").await;

    // Tagging: aws:TagKeys and aws:RequestTag/… reach the engine; the resource's tags are
    // aws:ResourceTag/… and iam:ResourceTag/….
    let tagging = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["iam:TagUser","iam:UntagUser"],"Resource":"*",
         "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["project"]}}},
        {"Effect":"Deny","Action":"iam:TagUser","Resource":"*",
         "Condition":{"StringEquals":{"aws:RequestTag/project":"secret"}}},
        {"Effect":"Allow","Action":"iam:ListUserTags","Resource":"*",
         "Condition":{"StringEquals":{"iam:ResourceTag/project":"x"}}},
        {"Effect":"Allow","Action":"iam:AttachUserPolicy","Resource":"*"},
        {"Effect":"Deny","Action":["iam:AttachUserPolicy","iam:AttachGroupPolicy"],"Resource":"*",
         "Condition":{"ArnEquals":{"iam:PolicyARN":"arn:aws:iam::aws:policy/AdministratorAccess"}}}]}"#;
    ok(
        &s,
        &root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "carol"),
            ("PolicyName", "tagging"),
            ("PolicyDocument", tagging),
        ],
    )
    .await;
    let tag = |k: &'static str, v: &'static str| {
        [
            ("Action", "TagUser"),
            ("UserName", "carol"),
            ("Tags.member.1.Key", k),
            ("Tags.member.1.Value", v),
        ]
    };
    fails(&s, &carol, &tag("team", "payments"), "AccessDenied").await;
    fails(&s, &carol, &tag("project", "secret"), "AccessDenied").await;
    fails(
        &s,
        &carol,
        &[("Action", "ListUserTags"), ("UserName", "carol")],
        "AccessDenied",
    )
    .await;
    ok(&s, &carol, &tag("project", "x")).await;
    let tags = ok(
        &s,
        &carol,
        &[("Action", "ListUserTags"), ("UserName", "carol")],
    )
    .await;
    assert_eq!(fields(&tags, "Key"), ["project"], "{tags}");
    fails(
        &s,
        &carol,
        &[
            ("Action", "UntagUser"),
            ("UserName", "carol"),
            ("TagKeys.member.1", "team"),
        ],
        "AccessDenied",
    )
    .await;
    ok(
        &s,
        &carol,
        &[
            ("Action", "UntagUser"),
            ("UserName", "carol"),
            ("TagKeys.member.1", "project"),
        ],
    )
    .await;
    // iam:PolicyARN.
    let msg = fails(
        &s,
        &carol,
        &[
            ("Action", "AttachUserPolicy"),
            ("UserName", "carol"),
            ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
        ],
        "AccessDenied",
    )
    .await;
    assert!(msg.contains("explicit deny"), "{msg}");
    ok(
        &s,
        &carol,
        &[
            ("Action", "AttachUserPolicy"),
            ("UserName", "carol"),
            ("PolicyArn", "arn:aws:iam::aws:policy/IAMReadOnlyAccess"),
        ],
    )
    .await;
    // Renaming needs the right on the new name too.
    let rename = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:UpdateUser","Resource":"arn:aws:iam::000000000000:user/carol"}]}"#;
    ok(
        &s,
        &root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "carol"),
            ("PolicyName", "rename"),
            ("PolicyDocument", rename),
        ],
    )
    .await;
    let msg = fails(
        &s,
        &carol,
        &[
            ("Action", "UpdateUser"),
            ("UserName", "carol"),
            ("NewUserName", "caroline"),
        ],
        "AccessDenied",
    )
    .await;
    assert!(msg.contains("user/caroline"), "{msg}");
}
