//! Request and resource condition keys on the calls that did not see them (issue 11, item 2):
//! managed policies, OIDC providers, EKS clusters and associations, EKS Auth; the simulator
//! seeing the context a real call would; and values XML cannot carry (issue 12, item 7).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

use serde_json::{Value, json};
use support::*;

async fn put_user_policy(s: &Server, root: &SigningCredentials, user: &str, doc: &str) {
    ok(
        s,
        root,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", user),
            ("PolicyName", "p"),
            ("PolicyDocument", doc),
        ],
    )
    .await;
}

/// `Name.member.1.Key=k`, `….Value=v` for one tag.
fn tagged<'a>(form: &[(&'a str, &'a str)], k: &'a str, v: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut f = form.to_vec();
    f.push(("Tags.member.1.Key", k));
    f.push(("Tags.member.1.Value", v));
    f
}

#[tokio::test]
async fn managed_policies_and_oidc_providers_see_their_request_and_resource_tags() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let dave = user_with_key(&s, &root, "dave").await;
    put_user_policy(
        &s,
        &root,
        "dave",
        r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["iam:CreatePolicy","iam:CreateOpenIDConnectProvider"],"Resource":"*",
         "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["team"]}}},
        {"Effect":"Deny","Action":"iam:CreatePolicy","Resource":"*",
         "Condition":{"StringEquals":{"aws:RequestTag/team":"payments"}}},
        {"Effect":"Allow","Action":"iam:GetPolicy","Resource":"*",
         "Condition":{"StringEquals":{"iam:ResourceTag/team":"web"}}},
        {"Effect":"Allow","Action":"iam:GetOpenIDConnectProvider","Resource":"*",
         "Condition":{"StringEquals":{"aws:ResourceTag/team":"web"}}}]}"#,
    )
    .await;
    let doc = allow("s3:GetObject");
    let create = |name: &'static str| {
        vec![
            ("Action", "CreatePolicy"),
            ("PolicyName", name),
            ("PolicyDocument", doc.as_str()),
        ]
    };
    // aws:RequestTag/… and aws:TagKeys reach CreatePolicy.
    let msg = fails(
        &s,
        &dave,
        &tagged(&create("a"), "team", "payments"),
        "AccessDenied",
    )
    .await;
    assert!(msg.contains("explicit deny"), "{msg}");
    fails(
        &s,
        &dave,
        &tagged(&create("b"), "owner", "dave"),
        "AccessDenied",
    )
    .await;
    let body = ok(&s, &dave, &tagged(&create("web"), "team", "web")).await;
    let web = field(&body, "Arn").unwrap();
    // iam:ResourceTag/… reaches GetPolicy: the policy's own tags decide.
    ok(&s, &dave, &[("Action", "GetPolicy"), ("PolicyArn", &web)]).await;
    let body = ok(&s, &root, &tagged(&create("db"), "team", "db")).await;
    let db = field(&body, "Arn").unwrap();
    fails(
        &s,
        &dave,
        &[("Action", "GetPolicy"), ("PolicyArn", &db)],
        "AccessDenied",
    )
    .await;

    // The same for OIDC providers.
    let provider = |url: &'static str| {
        vec![
            ("Action", "CreateOpenIDConnectProvider"),
            ("Url", url),
            ("ClientIDList.member.1", "sts.amazonaws.com"),
        ]
    };
    fails(
        &s,
        &dave,
        &tagged(&provider("https://a.example"), "owner", "dave"),
        "AccessDenied",
    )
    .await;
    let body = ok(
        &s,
        &dave,
        &tagged(&provider("https://web.example"), "team", "web"),
    )
    .await;
    let web = field(&body, "OpenIDConnectProviderArn").unwrap();
    ok(
        &s,
        &dave,
        &[
            ("Action", "GetOpenIDConnectProvider"),
            ("OpenIDConnectProviderArn", &web),
        ],
    )
    .await;
    let body = ok(
        &s,
        &root,
        &tagged(&provider("https://db.example"), "team", "db"),
    )
    .await;
    let db = field(&body, "OpenIDConnectProviderArn").unwrap();
    fails(
        &s,
        &dave,
        &[
            ("Action", "GetOpenIDConnectProvider"),
            ("OpenIDConnectProviderArn", &db),
        ],
        "AccessDenied",
    )
    .await;
}

fn denied(r: &(u16, String, Value)) -> bool {
    r.1.contains("AccessDenied")
}

#[tokio::test]
async fn eks_and_eks_auth_calls_see_cluster_and_association_tags() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let erin = user_with_key(&s, &root, "erin").await;
    put_user_policy(
        &s,
        &root,
        "erin",
        r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"eks:CreateCluster","Resource":"*",
         "Condition":{"StringEquals":{"aws:RequestTag/env":"dev"}}},
        {"Effect":"Allow","Resource":"*",
         "Action":["eks:DescribeCluster","eks:CreatePodIdentityAssociation","eks:ListPodIdentityAssociations","eks-auth:AssumeRoleForPodIdentity"],
         "Condition":{"StringEquals":{"aws:ResourceTag/env":"dev"}}},
        {"Effect":"Deny","Action":"eks:CreatePodIdentityAssociation","Resource":"*",
         "Condition":{"StringEquals":{"aws:RequestTag/owner":"mallory"}}},
        {"Effect":"Allow","Action":"eks:DescribePodIdentityAssociation","Resource":"*",
         "Condition":{"StringEquals":{"aws:ResourceTag/app":"web"}}},
        {"Effect":"Allow","Action":"iam:PassRole","Resource":"*"}]}"#,
    )
    .await;
    let eks = async |creds: &SigningCredentials, method: &str, path: &str, body: &Value| {
        rest(&s, creds, method, path, "eks", body).await
    };
    let cluster =
        |name: &str, env: &str| json!({"name": name, "builtin": true, "tags": {"env": env}});
    // aws:RequestTag/… reaches CreateCluster.
    let r = eks(&erin, "POST", "/clusters", &cluster("dev1", "dev")).await;
    assert_eq!(r.0, 200, "{r:?}");
    let r = eks(&erin, "POST", "/clusters", &cluster("prod1", "prod")).await;
    assert!(denied(&r), "{r:?}");
    let r = eks(&root, "POST", "/clusters", &cluster("prod2", "prod")).await;
    assert_eq!(r.0, 200, "{r:?}");
    // aws:ResourceTag/… of the cluster, decided before the lookup.
    let describe = |name: &str| format!("/clusters/{name}");
    let r = eks(&erin, "GET", &describe("dev1"), &Value::Null).await;
    assert_eq!(r.0, 200, "{r:?}");
    for name in ["prod2", "ghost"] {
        let r = eks(&erin, "GET", &describe(name), &Value::Null).await;
        assert!(denied(&r), "{name}: {r:?}");
    }
    ok(
        &s,
        &root,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "app"),
            (
                "AssumeRolePolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#,
            ),
        ],
    )
    .await;
    let role = format!("arn:aws:iam::{ACCOUNT}:role/app");
    let associate = |sa: &str, k: &str, v: &str| json!({"namespace": "default", "serviceAccount": sa, "roleArn": role, "tags": {k: v}});
    let path = |c: &str| format!("/clusters/{c}/pod-identity-associations");
    // The cluster's tags and the request's tags, on CreatePodIdentityAssociation.
    let r = eks(
        &erin,
        "POST",
        &path("dev1"),
        &associate("web", "app", "web"),
    )
    .await;
    assert_eq!(r.0, 200, "{r:?}");
    let web = r.2["association"]["associationId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = eks(
        &erin,
        "POST",
        &path("dev1"),
        &associate("m", "owner", "mallory"),
    )
    .await;
    assert!(denied(&r), "{r:?}");
    let r = eks(&erin, "POST", &path("prod2"), &associate("p", "app", "web")).await;
    assert!(denied(&r), "{r:?}");
    let r = eks(&root, "POST", &path("dev1"), &associate("db", "app", "db")).await;
    assert_eq!(r.0, 200, "{r:?}");
    let db = r.2["association"]["associationId"]
        .as_str()
        .unwrap()
        .to_string();
    // The association's own tags on DescribePodIdentityAssociation.
    let one = |id: &str| format!("/clusters/dev1/pod-identity-associations/{id}");
    let r = eks(&erin, "GET", &one(&web), &Value::Null).await;
    assert_eq!(r.0, 200, "{r:?}");
    let r = eks(&erin, "GET", &one(&db), &Value::Null).await;
    assert!(denied(&r), "{r:?}");
    let r = eks(&erin, "GET", &path("prod2"), &Value::Null).await;
    assert!(denied(&r), "{r:?}");
    // EKS Auth: the cluster's tags decide before the token is even read.
    let exchange = |c: &str| format!("/clusters/{c}/assume-role-for-pod-identity");
    let token = json!({"token": "not-a-token"});
    let r = rest(&s, &erin, "POST", &exchange("prod2"), "eks-auth", &token).await;
    assert!(denied(&r), "{r:?}");
    let r = rest(&s, &erin, "POST", &exchange("dev1"), "eks-auth", &token).await;
    assert!(!denied(&r) && r.0 >= 400, "{r:?}");
}

/// `(action, resource, decision)` of each simulation result.
fn results(body: &str) -> Vec<(String, String, String)> {
    body.split("<EvalActionName>")
        .skip(1)
        .map(|r| {
            let r = format!("<EvalActionName>{r}");
            (
                field(&r, "EvalActionName").unwrap(),
                field(&r, "EvalResourceName").unwrap(),
                field(&r, "EvalDecision").unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_simulator_sees_the_context_a_real_call_would_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    for (name, team) in [("svc", "payments"), ("other", "db")] {
        let create = [
            ("Action", "CreateRole"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", trust),
        ];
        ok(&s, &root, &tagged(&create, "team", team)).await;
    }
    let frank = user_with_key(&s, &root, "frank").await;
    ok(
        &s,
        &root,
        &[
            ("Action", "TagUser"),
            ("UserName", "frank"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "payments"),
        ],
    )
    .await;
    put_user_policy(
        &s,
        &root,
        "frank",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetRole","Resource":"*",
          "Condition":{"StringEquals":{"aws:ResourceTag/team":"${aws:PrincipalTag/team}"}}}]}"#,
    )
    .await;
    // The real calls.
    ok(&s, &frank, &[("Action", "GetRole"), ("RoleName", "svc")]).await;
    fails(
        &s,
        &frank,
        &[("Action", "GetRole"), ("RoleName", "other")],
        "AccessDenied",
    )
    .await;
    // The simulator agrees with no ContextEntries: the principal's and the resource's tags are
    // what the store holds, as in the real call.
    let svc = format!("arn:aws:iam::{ACCOUNT}:role/svc");
    let other = format!("arn:aws:iam::{ACCOUNT}:role/other");
    let frank_arn = format!("arn:aws:iam::{ACCOUNT}:user/frank");
    let simulate = vec![
        ("Action", "SimulatePrincipalPolicy"),
        ("PolicySourceArn", frank_arn.as_str()),
        ("ActionNames.member.1", "iam:GetRole"),
        ("ResourceArns.member.1", svc.as_str()),
        ("ResourceArns.member.2", other.as_str()),
    ];
    let body = ok(&s, &root, &simulate).await;
    let got = results(&body);
    assert_eq!(
        got,
        [
            ("iam:GetRole".into(), svc.clone(), "allowed".into()),
            ("iam:GetRole".into(), other.clone(), "implicitDeny".into()),
        ],
        "{body}"
    );
    // What the request supplies wins over what the store holds.
    let mut supplied = simulate.clone();
    supplied.extend([
        (
            "ContextEntries.member.1.ContextKeyName",
            "aws:ResourceTag/team",
        ),
        ("ContextEntries.member.1.ContextKeyType", "string"),
        (
            "ContextEntries.member.1.ContextKeyValues.member.1",
            "payments",
        ),
    ]);
    let body = ok(&s, &root, &supplied).await;
    assert!(results(&body).iter().all(|r| r.2 == "allowed"), "{body}");

    // Pages of MaxItems, in action-major order, with a Marker; the pages cover every pair once.
    let mut paged = simulate.clone();
    paged.extend([
        ("ActionNames.member.2", "iam:ListRoles"),
        ("ActionNames.member.3", "iam:TagRole"),
        ("MaxItems", "4"),
    ]);
    let first = ok(&s, &root, &paged).await;
    assert_eq!(results(&first).len(), 4, "{first}");
    assert_eq!(field(&first, "IsTruncated").as_deref(), Some("true"));
    let marker = field(&first, "Marker").unwrap();
    let mut next = paged.clone();
    next.push(("Marker", &marker));
    let second = ok(&s, &root, &next).await;
    assert_eq!(field(&second, "IsTruncated").as_deref(), Some("false"));
    let all: Vec<_> = results(&first)
        .into_iter()
        .chain(results(&second))
        .collect();
    assert_eq!(all.len(), 6);
    assert_eq!(all[5].0, "iam:TagRole");
    assert_eq!(all[5].1, other);

    // Bounds: a Marker podiam did not write, MaxItems out of range, too many actions.
    let mut bad = paged.clone();
    bad.push(("Marker", "nonsense"));
    let msg = fails(&s, &root, &bad, "InvalidInput").await;
    assert!(msg.contains("Marker"), "{msg}");
    let mut bad = simulate.clone();
    bad.push(("MaxItems", "0"));
    fails(&s, &root, &bad, "ValidationError").await;
    let names: Vec<String> = (1..=1001)
        .map(|i| format!("ActionNames.member.{i}"))
        .collect();
    let get_role = allow("iam:GetRole");
    let mut many: Vec<(&str, &str)> = vec![
        ("Action", "SimulateCustomPolicy"),
        ("PolicyInputList.member.1", &get_role),
    ];
    for n in &names {
        many.push((n.as_str(), "iam:GetRole"));
    }
    let msg = fails(&s, &root, &many, "InvalidInput").await;
    assert!(msg.contains("ActionNames"), "{msg}");
}

#[tokio::test]
async fn control_characters_are_refused_and_never_break_the_xml() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let root = admin(dir.path());
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    ok(
        &s,
        &root,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "r"),
            ("AssumeRolePolicyDocument", trust),
        ],
    )
    .await;
    let msg = fails(
        &s,
        &root,
        &[
            ("Action", "UpdateRole"),
            ("RoleName", "r"),
            ("Description", "hello\u{1}"),
        ],
        "ValidationError",
    )
    .await;
    assert!(
        msg.contains("Description") && msg.contains("U+0001"),
        "{msg}"
    );
    // Tabs and newlines are text, and stay.
    ok(
        &s,
        &root,
        &[
            ("Action", "UpdateRole"),
            ("RoleName", "r"),
            ("Description", "two\tlines\nhere"),
        ],
    )
    .await;
    let body = ok(&s, &root, &[("Action", "ListRoles")]).await;
    assert!(
        !body
            .bytes()
            .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n')),
        "{body:?}"
    );
    assert!(body.contains("two\tlines\nhere"), "{body}");
}
