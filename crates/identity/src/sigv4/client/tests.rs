//! [`sign`] against the verifier: what the signer produces verifies, and any change to a signed
//! header, the body, the path or the query afterwards does not.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::clock::FixedClock;
use crate::sigv4::{SigV4Auth, SignatureLocation};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
const BODY: &[u8] = br#"{"token":"eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}"#;

fn time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) // 2023-11-14T22:13:20Z
}

fn credentials(token: Option<&str>) -> SigningCredentials {
    SigningCredentials {
        access_key_id: AccessKeyId::parse(if token.is_some() {
            "ASIAEXAMPLEEXAMPLE00"
        } else {
            "AKIAEXAMPLEEXAMPLE00"
        })
        .unwrap(),
        secret_access_key: SecretAccessKey::new(SECRET),
        session_token: token.map(str::to_owned),
    }
}

/// A request as the agent sends it to EKS Auth: the caller's headers, then the signer's.
struct Sent {
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Sent {
    fn request<R>(&self, f: impl FnOnce(&HttpRequest<'_>) -> R) -> R {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        f(&HttpRequest {
            method: self.method,
            path: &self.path,
            query: &self.query,
            headers: &headers,
            body: &self.body,
        })
    }

    fn verify(&self, options: &VerifyOptions) -> Result<SigV4Auth, SigV4Error> {
        self.request(|r| {
            let auth = SigV4Auth::parse(r)?;
            auth.verify(
                r,
                &SecretAccessKey::new(SECRET),
                options,
                &FixedClock(time()),
            )?;
            Ok(auth)
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn signed(params: &SigningParams<'_>) -> Sent {
    let mut sent = Sent {
        method: "POST",
        path: "/clusters/dev/assume-role-for-pod-identity".to_owned(),
        query: "a=1&b=two%20words".to_owned(),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("host".to_owned(), "127.0.0.1:8080".to_owned()),
        ],
        body: BODY.to_vec(),
    };
    let added = sent.request(|r| sign(r, params)).unwrap();
    sent.headers
        .extend(added.into_iter().map(|(n, v)| (n.to_owned(), v)));
    sent
}

fn eks_auth() -> VerifyOptions {
    VerifyOptions::for_services("us-east-1", &["eks-auth"])
}

#[test]
fn signed_request_verifies() {
    let key = credentials(None);
    let sent = signed(&SigningParams::new(&key, "us-east-1", "eks-auth", time()));
    let auth = sent.verify(&eks_auth()).unwrap();
    assert_eq!(auth.access_key_id, key.access_key_id);
    assert_eq!(auth.location, SignatureLocation::Header);
    assert_eq!(auth.signed_headers, ["content-type", "host", "x-amz-date"]);
    assert_eq!(auth.signed_at, time());
    assert_eq!(auth.security_token, None);
    assert_eq!(sent.header("x-amz-date"), Some("20231114T221320Z"));
    let names: Vec<&str> = sent.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["content-type", "host", "x-amz-date", "authorization"],
        "the signer adds x-amz-date and authorization, last"
    );
}

#[test]
fn session_token_is_sent_and_signed() {
    let key = credentials(Some("tok+en/=="));
    let sent = signed(&SigningParams::new(&key, "us-east-1", "eks-auth", time()));
    let auth = sent.verify(&eks_auth()).unwrap();
    assert_eq!(auth.security_token.as_deref(), Some("tok+en/=="));
    assert_eq!(
        auth.signed_headers,
        ["content-type", "host", "x-amz-date", "x-amz-security-token"]
    );
}

#[test]
fn content_sha256_header_is_the_body_hash() {
    let key = credentials(None);
    let sent = signed(&SigningParams {
        content_sha256_header: true,
        ..SigningParams::new(&key, "us-east-1", "eks-auth", time())
    });
    let auth = sent.verify(&eks_auth()).unwrap();
    assert!(
        auth.signed_headers
            .iter()
            .any(|h| h == "x-amz-content-sha256")
    );
    assert_eq!(
        sent.header("x-amz-content-sha256"),
        Some(hex(digest::digest(&digest::SHA256, BODY).as_ref()).as_str())
    );
}

#[test]
fn changes_after_signing_are_refused() {
    let key = credentials(Some("token"));
    let params = SigningParams::new(&key, "us-east-1", "eks-auth", time());
    let options = eks_auth();
    for (i, (name, _)) in signed(&params).headers.iter().enumerate() {
        if name == "authorization" {
            continue;
        }
        let mut sent = signed(&params);
        sent.headers[i].1.push('x');
        assert!(
            sent.verify(&options).is_err(),
            "changed `{name}` was accepted"
        );
    }
    let mut sent = signed(&params);
    sent.body[0] ^= 0x01;
    assert_eq!(
        sent.verify(&options).unwrap_err(),
        SigV4Error::SignatureDoesNotMatch,
        "changed body"
    );
    let mut sent = signed(&params);
    sent.path.push('x');
    assert!(sent.verify(&options).is_err(), "changed path");
    let mut sent = signed(&params);
    sent.query.push_str("&c=3");
    assert!(sent.verify(&options).is_err(), "added query parameter");
    let mut sent = signed(&params);
    sent.method = "PUT";
    assert!(sent.verify(&options).is_err(), "changed method");
    let sent = signed(&SigningParams {
        service: "eks",
        ..params
    });
    assert!(
        matches!(sent.verify(&options), Err(SigV4Error::WrongService { .. })),
        "signed for another service"
    );
}

#[test]
fn another_secret_does_not_verify() {
    let mut key = credentials(None);
    key.secret_access_key = SecretAccessKey::new("not the secret");
    let sent = signed(&SigningParams::new(&key, "us-east-1", "eks-auth", time()));
    assert_eq!(
        sent.verify(&eks_auth()).unwrap_err(),
        SigV4Error::SignatureDoesNotMatch
    );
}

#[test]
fn host_is_required_and_signer_headers_are_not_doubled() {
    let key = credentials(None);
    let params = SigningParams::new(&key, "us-east-1", "eks", time());
    let request = |headers: &[(&str, &str)]| {
        sign(
            &HttpRequest {
                method: "GET",
                path: "/",
                query: "",
                headers,
                body: b"",
            },
            &params,
        )
    };
    assert_eq!(
        request(&[("accept", "application/json")]),
        Err(SignError::MissingHost)
    );
    assert_eq!(
        request(&[("Host", "h"), ("X-Amz-Date", "20231114T221320Z")]),
        Err(SignError::ReservedHeader {
            name: "x-amz-date".to_owned()
        })
    );
    assert!(matches!(
        request(&[("Host", "h"), ("bad name", "v")]),
        Err(SignError::Canonical(_))
    ));
    // Names in any case are signed lowercase.
    let added = request(&[("Host", "h"), ("Accept", "application/json")]).unwrap();
    let authorization = &added.last().unwrap().1;
    assert!(
        authorization.contains("SignedHeaders=accept;host;x-amz-date,"),
        "{authorization}"
    );
}

#[test]
fn shared_credentials_profiles() {
    let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n\
                # comment\n; another\n[podiam]\naws_access_key_id=AKIAPODIAM\n\
                aws_secret_access_key= s/+x \naws_session_token = \n[next]\n\
                aws_access_key_id=AKIANEXT\n";
    let k = SigningCredentials::from_shared_credentials(text, "podiam").unwrap();
    assert_eq!(k.access_key_id.as_str(), "AKIAPODIAM");
    assert_eq!(k.secret_access_key.expose_secret(), "s/+x");
    assert_eq!(k.session_token, None, "an empty token is none");
    assert!(!format!("{k:?}").contains("s/+x"), "Debug hides the secret");
    assert_eq!(
        SigningCredentials::from_shared_credentials(text, "missing"),
        Err(CredentialsError::MissingKey {
            profile: "missing".to_owned(),
            key: "aws_access_key_id"
        })
    );
    assert_eq!(
        SigningCredentials::from_shared_credentials(text, "next")
            .unwrap_err()
            .to_string(),
        "profile `next` has no aws_secret_access_key"
    );
    let bad = "[p]\naws_access_key_id=AKIA-X\naws_secret_access_key=s\n";
    assert!(matches!(
        SigningCredentials::from_shared_credentials(bad, "p"),
        Err(CredentialsError::InvalidAccessKeyId(_))
    ));
}

#[test]
fn environment_needs_both_halves() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert_eq!(SigningCredentials::from_env(env(&[])), Ok(None));
    assert_eq!(
        SigningCredentials::from_env(env(&[("AWS_SECRET_ACCESS_KEY", "s")])),
        Err(CredentialsError::IncompleteEnvironment)
    );
    let k = SigningCredentials::from_env(env(&[
        ("AWS_ACCESS_KEY_ID", " ASIAX "),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_SESSION_TOKEN", "t"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(k.access_key_id.as_str(), "ASIAX");
    assert_eq!(k.session_token.as_deref(), Some("t"));
}

#[test]
fn uri_encode_keeps_only_unreserved() {
    assert_eq!(uri_encode("a-b_c.d~e"), "a-b_c.d~e");
    assert_eq!(uri_encode("a b/c+=ሴ"), "a%20b%2Fc%2B%3D%E1%88%B4");
}
