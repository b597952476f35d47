//! What the server's HTTP tests share: a server on a temporary data dir, its administrator's key,
//! signed awsQuery and REST-JSON calls as the SDKs make them, and small XML readers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test code; each test file uses some of these"
)]

pub use podiam_identity::HttpRequest;
pub use podiam_identity::sigv4::{SigningCredentials, SigningParams, sign};
pub use podiam_server::{Options, Server, start};
use serde_json::Value;

pub const ACCOUNT: &str = "000000000000";

pub async fn server(dir: &std::path::Path) -> Server {
    start(options(dir)).await.unwrap()
}

/// A test server's options: port 0, explained denials, SQLite in `dir`.
pub fn options(dir: &std::path::Path) -> Options {
    Options {
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
        audit: Default::default(),
        connections: Default::default(),
        require_node_binding: false,
    }
}

pub fn admin(dir: &std::path::Path) -> SigningCredentials {
    let text = std::fs::read_to_string(dir.join("aws/credentials")).unwrap();
    SigningCredentials::from_shared_credentials(&text, "podiam").unwrap()
}

/// One IAM call (awsQuery, signed for `iam`): the status and the XML body.
pub async fn iam(s: &Server, creds: &SigningCredentials, form: &[(&str, &str)]) -> (u16, String) {
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
pub async fn ok(s: &Server, creds: &SigningCredentials, form: &[(&str, &str)]) -> String {
    let (status, body) = iam(s, creds, form).await;
    assert_eq!(status, 200, "{form:?}: {body}");
    body
}

/// The call must fail with `code`; its message.
pub async fn fails(
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
pub fn field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..start + end].to_string())
}

/// Every `<tag>` text of an XML body.
pub fn fields(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    body.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split(&close).next().map(str::to_string))
        .collect()
}

/// A user with one access key; its credentials.
pub async fn user_with_key(
    s: &Server,
    admin: &SigningCredentials,
    name: &str,
) -> SigningCredentials {
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

pub fn allow(action: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"*"}}]}}"#
    )
}

pub fn deny(action: &str) -> String {
    allow(action).replace("Allow", "Deny")
}

/// A signed REST-JSON call (EKS: `eks`, EKS Auth: `eks-auth`): status, `x-amzn-errortype`, body.
pub async fn rest(
    s: &Server,
    creds: &SigningCredentials,
    method: &str,
    path: &str,
    service: &str,
    body: &Value,
) -> (u16, String, Value) {
    let host = s.addr.to_string();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let signed = sign(
        &HttpRequest {
            method,
            path,
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams::new(creds, "us-east-1", service, std::time::SystemTime::now()),
    )
    .unwrap();
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", s.endpoint))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    (
        status,
        kind,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A trust policy admitting the web identity tokens of the issuer `host` (the provider's ARN is
/// its host/path) for the ServiceAccount `sub`, audience `sts.amazonaws.com`.
pub fn web_identity_trust(host: &str, sub: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{host}")},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{host}:sub"): sub,
                format!("{host}:aud"): "sts.amazonaws.com"
            }}
        }]
    })
    .to_string()
}
