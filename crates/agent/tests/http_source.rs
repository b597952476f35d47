//! [`HttpSource`] as podiam sees it: the requests it sends to a stand-in EKS Auth / STS endpoint
//! on 127.0.0.1 carry a SigV4 signature that podiam's verifier accepts, for the service each
//! call names, with the session token signed when the key has one.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::time::Duration;

use podiam_agent::http_source::HttpSourceConfig;
use podiam_agent::source::{CredentialSource as _, SourceError};
use podiam_agent::{AgentClock, HttpSource};
use podiam_identity::sigv4::{
    HttpRequest, KeySource, SigV4Auth, SigningCredentials, VerifyOptions,
};
use podiam_identity::{AccessKeyId, FixedClock, SecretAccessKey};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

/// A request as it arrived on the socket.
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    /// Parses and verifies the SigV4 signature as podiam's server does.
    fn verify(&self, service: &str) -> SigV4Auth {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = HttpRequest {
            method: &self.method,
            path: &self.path,
            query: "",
            headers: &headers,
            body: &self.body,
        };
        let auth = SigV4Auth::parse(&request).unwrap();
        auth.verify(
            &request,
            &SecretAccessKey::new(SECRET),
            &VerifyOptions::for_services("us-east-1", &[service]),
            &FixedClock(auth.signed_at),
        )
        .unwrap();
        auth
    }
}

/// Accepts one connection, reads one request and answers 400 (not retried).
async fn one_request(listener: TcpListener) -> Received {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut data = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the request ended");
        data.extend_from_slice(&chunk[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let path = request_line.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the body ended");
        body.extend_from_slice(&chunk[..n]);
    }
    let answer = b"HTTP/1.1 400 Bad Request\r\nx-amzn-errortype: InvalidTokenException\r\n\
                   content-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    socket.write_all(answer).await.unwrap();
    Received {
        method,
        path,
        headers,
        body,
    }
}

async fn source(session_token: Option<&str>) -> (HttpSource, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let key = SigningCredentials {
        access_key_id: AccessKeyId::parse(if session_token.is_some() {
            "ASIAEXAMPLEEXAMPLE00"
        } else {
            "AKIAEXAMPLEEXAMPLE00"
        })
        .unwrap(),
        secret_access_key: SecretAccessKey::new(SECRET),
        session_token: session_token.map(str::to_owned),
    };
    let config = HttpSourceConfig {
        eks_auth_endpoint: endpoint.clone(),
        sts_endpoint: endpoint,
        region: "us-east-1".to_owned(),
        node_role_arn: Some("arn:aws:iam::000000000000:role/node".to_owned()),
        node_role_session_name: "podiam-agent-node-1".to_owned(),
        timeout: Duration::from_secs(5),
        attempts: 1,
    };
    let source = HttpSource::new(
        config,
        KeySource::Static(Arc::new(key)),
        AgentClock::system(),
    )
    .unwrap();
    (source, listener)
}

#[tokio::test]
async fn pod_identity_call_is_signed_for_eks_auth() {
    let (source, listener) = source(Some("session/token+==")).await;
    let server = tokio::spawn(one_request(listener));
    let result = source.assume_for_pod("dev", "eyJ.e30.sig").await;
    assert!(
        matches!(&result, Err(SourceError::Service { status: 400, code, .. }) if code == "InvalidTokenException"),
        "the stand-in's x-amzn-errortype is the error: {result:?}"
    );
    let received = server.await.unwrap();
    assert_eq!(received.method, "POST");
    assert_eq!(received.path, "/clusters/dev/assume-role-for-pod-identity");
    let auth = received.verify("eks-auth");
    assert_eq!(auth.access_key_id.as_str(), "ASIAEXAMPLEEXAMPLE00");
    assert_eq!(auth.security_token.as_deref(), Some("session/token+=="));
    assert_eq!(
        auth.signed_headers,
        ["content-type", "host", "x-amz-date", "x-amz-security-token"]
    );
}

#[tokio::test]
async fn node_role_call_is_signed_for_sts() {
    let (source, listener) = source(None).await;
    let server = tokio::spawn(one_request(listener));
    assert!(source.node_credentials().await.is_err());
    let received = server.await.unwrap();
    assert_eq!(
        (received.method.as_str(), received.path.as_str()),
        ("POST", "/")
    );
    let auth = received.verify("sts");
    assert_eq!(auth.security_token, None);
    assert_eq!(auth.signed_headers, ["content-type", "host", "x-amz-date"]);
}
