//! The Rust AWS SDK (`aws-config`, `aws-sdk-sts`, `aws-sdk-iam`) against a real `podiam up`.
//!
//! - Web identity: `WebIdentityTokenCredentialsProvider`, and the default credential chain with
//!   only `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ENDPOINT_URL` and `AWS_REGION` set,
//!   resolve credentials from podiam. Both read the process environment, so they run in a child
//!   process (this test binary again, one `#[ignore]`d test) with a cleared environment.
//! - Broker mode: a second `podiam up --account-id 111122223333` plays AWS; the default chain with
//!   `AWS_ENDPOINT_URL_STS` at the broker gets that account's credentials for an upstream role the
//!   ServiceAccount is bound to (`podiam create iamserviceaccount --cluster --role-arn`).
//! - AssumeRole: `AssumeRoleProvider` with the administrator's static key from
//!   `DATA_DIR/aws/credentials`, on a role whose trust policy allows the account root.
//!
//! In each case GetCallerIdentity names the assumed role and session, `iam:GetRole` is allowed and
//! `iam:ListRoles` is refused with `AccessDenied` by the role's policy.
//!
//! The `podiam` binary: `$PODIAM_BIN`, else the newest of `target/{debug,release}/podiam` (under
//! `$CARGO_TARGET_DIR` too, when set). Build it first: `cargo build -p podiam-cli`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_sdk_iam::error::ProvideErrorMetadata as _;
use aws_sdk_sts::config::Credentials;
use podiam_interop::{
    ACCOUNT, REGION, admin_key, bounded, child_env, podiam_bin, podiam_cli, run_child,
};

const NAMESPACE: &str = "interop";
const SERVICE_ACCOUNT: &str = "rust-sdk";
/// The name `podiam create iamserviceaccount` gives the role: `NAMESPACE-NAME`.
const IRSA_ROLE: &str = "interop-rust-sdk";
const READ_ROLES_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetRole","Resource":"arn:aws:iam::000000000000:role/*"}]}"#;

// === the podiam binary and a running `podiam up` ===

struct Podiam {
    bin: PathBuf,
    dir: tempfile::TempDir,
    process: Child,
    endpoint: String,
}

impl Podiam {
    /// `podiam up --listen 127.0.0.1:0` in a fresh data directory; the endpoint is on the first
    /// stdout line (`podiam is up at http://127.0.0.1:PORT (account …)`); ready when `/healthz`
    /// answers 200.
    fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// [`Podiam::start`] with more `podiam up` arguments and environment variables.
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let bin = podiam_bin();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut process = Command::new(&bin)
            .args(["up", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let stdout = process.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut podiam = Podiam {
            bin,
            dir,
            process,
            endpoint: String::new(),
        };
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "podiam up printed nothing within 20 s; log:\n{}",
                    podiam.log()
                )
            });
        assert!(
            first.starts_with("podiam is up at "),
            "unexpected first line {first:?}; log:\n{}",
            podiam.log()
        );
        podiam.endpoint = first.split_whitespace().nth(4).unwrap().to_string();
        podiam.wait_healthy(Duration::from_secs(10));
        podiam
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_healthy(&self, limit: Duration) {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + limit;
        loop {
            if healthz(&addr).is_ok_and(|ok| ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}/healthz not ready within {limit:?}; log:\n{}",
                self.endpoint,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a `podiam` command against this data directory; returns stdout.
    fn cli(&self, args: &[&str]) -> String {
        podiam_cli(&self.bin, self.data_dir(), args)
    }

    /// A projected ServiceAccount token from the built-in issuer, in a file (as kubelet writes it).
    fn token_file(&self, name: &str) -> PathBuf {
        let token = self.cli(&[
            "token",
            "create",
            "--namespace",
            NAMESPACE,
            "--service-account",
            SERVICE_ACCOUNT,
        ]);
        let path = self.data_dir().join(name);
        std::fs::write(&path, token.trim_end()).unwrap();
        path
    }

    /// The administrator's key from `DATA_DIR/aws/credentials` (profile `podiam`).
    fn admin_credentials(&self) -> Credentials {
        let (id, secret) = admin_key(self.data_dir());
        Credentials::new(id, secret, None, None, "podiam-admin")
    }

    /// SDK config for this endpoint with the given credentials.
    async fn sdk_config(&self, credentials: impl Into<Credentials>) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(credentials.into())
            .load()
            .await
    }
}

impl Drop for Podiam {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `GET /healthz` over a fresh connection: did it answer 200?
fn healthz(addr: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(&head[9..12] == b"200")
}

// === the checks every set of credentials goes through ===

/// GetCallerIdentity is the assumed role (and session, when given); GetRole is allowed;
/// ListRoles is refused with AccessDenied. Returns the caller ARN.
async fn check_role_session(
    config: &aws_config::SdkConfig,
    role: &str,
    session: Option<&str>,
) -> String {
    let sts = aws_sdk_sts::Client::new(config);
    let who = bounded("GetCallerIdentity", sts.get_caller_identity().send())
        .await
        .expect("GetCallerIdentity");
    let arn = who.arn().unwrap_or_default().to_string();
    let prefix = format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/");
    assert!(arn.starts_with(&prefix), "caller {arn}, expected {prefix}…");
    if let Some(session) = session {
        assert_eq!(arn, format!("{prefix}{session}"));
    }
    assert_eq!(who.account(), Some(ACCOUNT));

    let iam = aws_sdk_iam::Client::new(config);
    let got = bounded("GetRole", iam.get_role().role_name(role).send())
        .await
        .expect("GetRole is allowed by the role's policy");
    assert_eq!(
        got.role().map(|r| r.arn()),
        Some(format!("arn:aws:iam::{ACCOUNT}:role/{role}").as_str())
    );
    let denied = bounded("ListRoles", iam.list_roles().send())
        .await
        .expect_err("ListRoles is not in the role's policy");
    assert_eq!(denied.code(), Some("AccessDenied"), "{denied:?}");
    let message = denied.message().unwrap_or_default();
    assert!(message.contains("iam:ListRoles"), "{message}");
    arn
}

// === web identity: the explicit provider and the default chain, in child processes ===

#[tokio::test]
async fn web_identity_provider_and_default_chain_get_credentials_from_podiam() {
    let podiam = Podiam::start();
    let admin = podiam.sdk_config(podiam.admin_credentials()).await;
    let iam = aws_sdk_iam::Client::new(&admin);
    let policy = bounded(
        "CreatePolicy",
        iam.create_policy()
            .policy_name("interop-read-roles")
            .policy_document(READ_ROLES_POLICY)
            .send(),
    )
    .await
    .expect("the administrator creates a policy");
    let policy_arn = policy.policy().and_then(|p| p.arn()).unwrap().to_string();
    podiam.cli(&[
        "create",
        "iamserviceaccount",
        "--name",
        SERVICE_ACCOUNT,
        "--namespace",
        NAMESPACE,
        "--attach-policy-arn",
        &policy_arn,
    ]);
    // The running server picks up the CLI's write within its store poll interval.
    let deadline = Instant::now() + Duration::from_secs(15);
    while bounded("GetRole", iam.get_role().role_name(IRSA_ROLE).send())
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the server never saw {IRSA_ROLE}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{IRSA_ROLE}");

    let token = podiam.token_file("token-explicit");
    run_child(
        "child_web_identity_provider",
        &[
            ("AWS_ENDPOINT_URL", &podiam.endpoint),
            ("AWS_REGION", REGION),
            ("PODIAM_INTEROP_ROLE_ARN", &role_arn),
            ("PODIAM_INTEROP_TOKEN_FILE", &token.display().to_string()),
        ],
    );

    let token = podiam.token_file("token-chain");
    run_child(
        "child_default_chain",
        &[
            ("AWS_ROLE_ARN", &role_arn),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token.display().to_string()),
            ("AWS_ENDPOINT_URL", &podiam.endpoint),
            ("AWS_REGION", REGION),
        ],
    );
}

/// `WebIdentityTokenCredentialsProvider` with a static role and token file; STS endpoint and
/// region from the environment.
#[tokio::test]
#[ignore = "run by web_identity_provider_and_default_chain_get_credentials_from_podiam in a controlled environment"]
async fn child_web_identity_provider() {
    use aws_config::provider_config::ProviderConfig;
    use aws_config::web_identity_token::{
        StaticConfiguration, WebIdentityTokenCredentialsProvider,
    };
    let Some(role_arn) = child_env("PODIAM_INTEROP_ROLE_ARN") else {
        return;
    };
    let token_file = child_env("PODIAM_INTEROP_TOKEN_FILE").unwrap();
    let provider = WebIdentityTokenCredentialsProvider::builder()
        .configure(&ProviderConfig::with_default_region().await)
        .static_configuration(StaticConfiguration {
            web_identity_token_file: token_file.into(),
            role_arn,
            session_name: "rust-sdk-explicit".into(),
        })
        .build();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(provider)
        .load()
        .await;
    let arn = check_role_session(&config, IRSA_ROLE, Some("rust-sdk-explicit")).await;
    println!("web identity provider: {arn}");
}

/// The default chain, which finds `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` by itself.
#[tokio::test]
#[ignore = "run by web_identity_provider_and_default_chain_get_credentials_from_podiam in a controlled environment"]
async fn child_default_chain() {
    if child_env("AWS_ROLE_ARN").is_none() {
        return;
    }
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let arn = check_role_session(&config, IRSA_ROLE, None).await;
    println!("default chain: {arn}");
}

// === broker mode: an upstream role through the broker's STS ===

/// The account of the second podiam, which plays AWS.
const UPSTREAM: &str = "111122223333";
const UPSTREAM_ROLE: &str = "upstream-app";

#[tokio::test]
async fn the_default_chain_gets_upstream_credentials_through_a_broker() {
    let aws = Podiam::start_with(&["--account-id", UPSTREAM], &[]);
    let (key, secret) = admin_key(aws.data_dir());
    let admin = aws.sdk_config(aws.admin_credentials()).await;
    let iam = aws_sdk_iam::Client::new(&admin);
    // The trust policy `podiam upstream trust-policy` prints, for the administrator (the account
    // root) as the broker.
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{UPSTREAM}:root"}},"Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"],"Condition":{{"StringEquals":{{"aws:RequestTag/kubernetes-namespace":"{NAMESPACE}"}}}}}}]}}"#
    );
    bounded(
        "CreateRole",
        iam.create_role()
            .role_name(UPSTREAM_ROLE)
            .assume_role_policy_document(trust)
            .send(),
    )
    .await
    .expect("the upstream role");
    let broker = Podiam::start_with(
        &["--upstream-sts", &aws.endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", &key),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let role_arn = format!("arn:aws:iam::{UPSTREAM}:role/{UPSTREAM_ROLE}");
    broker.cli(&["cluster", "create", "--name", "interop", "--builtin"]);
    broker.cli(&[
        "create",
        "iamserviceaccount",
        "--cluster",
        "interop",
        "--namespace",
        NAMESPACE,
        "--name",
        SERVICE_ACCOUNT,
        "--role-arn",
        &role_arn,
    ]);
    let token = broker.token_file("token-broker");
    // The running broker picks up the CLI's binding within its store poll interval.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&broker.endpoint)
            .build(),
    );
    let jwt = std::fs::read_to_string(&token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = bounded(
        "AssumeRoleWithWebIdentity",
        sts.assume_role_with_web_identity()
            .role_arn(&role_arn)
            .role_session_name("probe")
            .web_identity_token(&jwt)
            .send(),
    )
    .await
    {
        assert!(
            Instant::now() < deadline,
            "the broker never answered: {e:?}\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run_child(
        "child_default_chain_upstream",
        &[
            ("AWS_ROLE_ARN", &role_arn),
            ("AWS_ROLE_SESSION_NAME", "rust-sdk-brokered"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token.display().to_string()),
            ("AWS_ENDPOINT_URL_STS", &broker.endpoint),
            ("AWS_REGION", REGION),
            ("PODIAM_INTEROP_AWS", &aws.endpoint),
        ],
    );
}

/// The default chain with `AWS_ENDPOINT_URL_STS` at the broker: the credentials are "AWS"'s.
#[tokio::test]
#[ignore = "run by the_default_chain_gets_upstream_credentials_through_a_broker in a controlled environment"]
async fn child_default_chain_upstream() {
    let Some(aws) = child_env("PODIAM_INTEROP_AWS") else {
        return;
    };
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let at_aws = aws_sdk_sts::config::Builder::from(&config)
        .endpoint_url(&aws)
        .build();
    let who = bounded(
        "GetCallerIdentity",
        aws_sdk_sts::Client::from_conf(at_aws)
            .get_caller_identity()
            .send(),
    )
    .await
    .expect("GetCallerIdentity against \"AWS\" with the brokered credentials");
    assert_eq!(who.account(), Some(UPSTREAM));
    assert_eq!(
        who.arn(),
        Some(
            format!("arn:aws:sts::{UPSTREAM}:assumed-role/{UPSTREAM_ROLE}/rust-sdk-brokered")
                .as_str()
        )
    );
    println!("default chain through the broker: {:?}", who.arn());
}

// === AssumeRole with the administrator's static key ===

#[tokio::test]
async fn assume_role_provider_with_the_administrators_key() {
    let podiam = Podiam::start();
    let admin = podiam.sdk_config(podiam.admin_credentials()).await;
    let iam = aws_sdk_iam::Client::new(&admin);
    let role = "interop-admin-assumed";
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    bounded(
        "CreateRole",
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(trust)
            .send(),
    )
    .await
    .expect("the administrator creates a role");
    bounded(
        "PutRolePolicy",
        iam.put_role_policy()
            .role_name(role)
            .policy_name("read-roles")
            .policy_document(READ_ROLES_POLICY)
            .send(),
    )
    .await
    .expect("the administrator puts an inline policy");

    let provider =
        aws_config::sts::AssumeRoleProvider::builder(format!("arn:aws:iam::{ACCOUNT}:role/{role}"))
            .session_name("rust-sdk-assume-role")
            .configure(&admin)
            .build_from_provider(podiam.admin_credentials())
            .await;
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&podiam.endpoint)
        .region(Region::new(REGION))
        .credentials_provider(provider)
        .load()
        .await;
    check_role_session(&config, role, Some("rust-sdk-assume-role")).await;
}
