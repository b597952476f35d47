//! The Rust SDK's container-credentials provider (`aws_config::ecs::EcsCredentialsProvider`)
//! against a real `podiam agent`, as a pod with EKS Pod Identity uses it: `podiam up`, a cluster
//! with the built-in issuer, an association for `shop/cart`, `podiam agent` on 127.0.0.1 signing
//! with a least-privilege key (only `eks-auth:AssumeRoleForPodIdentity`) that the SDK's standard
//! chain finds in its environment, and a `pods.eks.amazonaws.com` token in a file.
//!
//! - `EcsCredentialsProvider::builder().build()` reads only `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!   and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`. aws-config 1.13 has no public way to hand the
//!   provider a static `Env` (`ProviderConfig::with_env` is crate-private), so it runs in a child
//!   process (this test binary again, one `#[ignore]`d test) whose environment is exactly those two
//!   variables.
//! - In process, the default credential chain with a static
//!   `aws_types::os_shim_internal::Env::from_slice(&[…])` holding the same two variables
//!   (`ConfigLoader::env`, aws-config's `test-util` feature) finds the container provider by itself.
//!
//! Both must see GetCallerIdentity as `arn:aws:sts::000000000000:assumed-role/<role>/eks-<cluster>-<pod>-…`.
//!
//! The `podiam` binary: `$PODIAM_BIN`, else the newest of `target/{debug,release}/podiam` (under
//! `$CARGO_TARGET_DIR` too, when set).

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
use aws_sdk_sts::config::Credentials;
use aws_types::os_shim_internal::{Env, Fs};
use podiam_interop::{
    ACCOUNT, CHILD_MARKER, REGION, admin_key, bounded, podiam_bin, podiam_cli, run_child,
};

const CLUSTER: &str = "rust-sdk";
const NAMESPACE: &str = "shop";
const SERVICE_ACCOUNT: &str = "cart";
const POD: &str = "cart-7d9f";
const POD_UID: &str = "0b6f9c1e-9d0a-4d3e-8a53-6f1f0c2b1a11";
const ROLE: &str = "cart-role";

// === the podiam binary, `podiam up` and `podiam agent` ===

/// A child process whose stdout lines are delivered on a channel; killed on drop.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining until the process exits, so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // After the receiver is gone, keep draining.
                let _ = tx.send(line);
            }
        });
        Self { child, lines, log }
    }

    fn next_line(&self, limit: Duration) -> String {
        self.lines.recv_timeout(limit).unwrap_or_else(|_| {
            panic!(
                "no output within {limit:?}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Podiam {
    bin: PathBuf,
    dir: tempfile::TempDir,
    _server: Process,
    endpoint: String,
}

impl Podiam {
    /// `podiam up --listen 127.0.0.1:0`; the endpoint is on its first stdout line.
    fn start() -> Self {
        let bin = podiam_bin();
        let dir = tempfile::tempdir().unwrap();
        let server = Process::spawn(
            Command::new(&bin)
                .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path()),
            dir.path().join("server.log"),
        );
        let first = server.next_line(Duration::from_secs(20));
        assert!(first.starts_with("podiam is up at "), "{first:?}");
        let endpoint = first.split_whitespace().nth(4).unwrap().to_string();
        let addr = endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !http_get(&addr, "/healthz", None).is_ok_and(|(s, _)| s == 200) {
            assert!(
                Instant::now() < deadline,
                "{endpoint}/healthz never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            bin,
            dir,
            _server: server,
            endpoint,
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a `podiam` command against this data directory; returns stdout.
    fn cli(&self, args: &[&str]) -> String {
        podiam_cli(&self.bin, self.data_dir(), args)
    }

    /// The administrator's key from `DATA_DIR/aws/credentials` (profile `podiam`).
    fn admin_credentials(&self) -> Credentials {
        let (id, secret) = admin_key(self.data_dir());
        Credentials::new(id, secret, None, None, "podiam-admin")
    }

    /// `podiam agent` on 127.0.0.1 (ephemeral ports) for `CLUSTER`, with the least-privilege key
    /// `agent` (docs/operating.md's agent user: `eks-auth:AssumeRoleForPodIdentity` only) in
    /// its environment, where the AWS SDK's standard chain finds it; returns it and its
    /// credentials URL.
    fn agent(&self, agent: &Credentials) -> (Process, String) {
        let agent = Process::spawn(
            Command::new(&self.bin)
                .args([
                    "agent",
                    "--cluster-name",
                    CLUSTER,
                    "--server",
                    &self.endpoint,
                    "--listen",
                    "127.0.0.1:0",
                    "--probe-listen",
                    "127.0.0.1:0",
                ])
                .env_remove("AWS_PROFILE")
                .env("AWS_ACCESS_KEY_ID", agent.access_key_id())
                .env("AWS_SECRET_ACCESS_KEY", agent.secret_access_key())
                .env("AWS_EC2_METADATA_DISABLED", "true"),
            self.data_dir().join("agent.log"),
        );
        let mut credentials = None;
        loop {
            let line = agent.next_line(Duration::from_secs(20));
            if line == "podiam agent ready" {
                break;
            }
            if let Some(url) = line.strip_prefix("credentials ") {
                credentials = Some(url.to_string());
            }
        }
        (
            agent,
            credentials.expect("the agent printed its credentials URL"),
        )
    }
}

/// One HTTP/1.1 GET over a fresh connection: status and body.
fn http_get(addr: &str, path: &str, authorization: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// GetCallerIdentity with `config` is the pod's role session; GetRole (the attached policy)
/// is allowed. Returns the caller ARN.
async fn check_pod_session(config: &aws_config::SdkConfig) -> String {
    let sts = aws_sdk_sts::Client::new(config);
    let who = bounded("GetCallerIdentity", sts.get_caller_identity().send())
        .await
        .expect("GetCallerIdentity with the container credentials");
    let arn = who.arn().unwrap_or_default().to_string();
    let prefix = format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/eks-{CLUSTER}-{POD}-");
    assert!(arn.starts_with(&prefix), "caller {arn}, expected {prefix}…");
    assert!(arn.len() > prefix.len(), "{arn}: no session suffix");
    assert_eq!(who.account(), Some(ACCOUNT));
    let iam = aws_sdk_iam::Client::new(config);
    bounded("GetRole", iam.get_role().role_name(ROLE).send())
        .await
        .expect("GetRole is allowed by the association's policy");
    arn
}

#[tokio::test]
async fn container_provider_gets_the_pod_role_from_podiam_agent() {
    let podiam = Podiam::start();
    let admin = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&podiam.endpoint)
        .region(Region::new(REGION))
        .credentials_provider(podiam.admin_credentials())
        .load()
        .await;
    let policy = bounded(
        "CreatePolicy",
        aws_sdk_iam::Client::new(&admin)
            .create_policy()
            .policy_name("cart-read-roles")
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetRole","Resource":"*"}]}"#,
            )
            .send(),
    )
    .await
    .expect("the administrator creates a policy");
    let policy_arn = policy.policy().and_then(|p| p.arn()).unwrap().to_string();
    podiam.cli(&["cluster", "create", "--name", CLUSTER, "--builtin"]);
    podiam.cli(&[
        "create",
        "podidentityassociation",
        "--cluster",
        CLUSTER,
        "--namespace",
        NAMESPACE,
        "--service-account",
        SERVICE_ACCOUNT,
        "--role-name",
        ROLE,
        "--permission-policy-arns",
        &policy_arn,
    ]);
    let token = podiam.cli(&[
        "token",
        "create",
        "--namespace",
        NAMESPACE,
        "--service-account",
        SERVICE_ACCOUNT,
        "--audience",
        "pods.eks.amazonaws.com",
        "--pod-name",
        POD,
        "--pod-uid",
        POD_UID,
    ]);
    let token = token.trim_end();
    // As kubelet writes it: no trailing newline (a header value cannot end in one).
    let token_file = podiam.data_dir().join("eks-pod-identity-token");
    std::fs::write(&token_file, token).unwrap();
    let token_file = token_file.display().to_string();

    // The agent's own identity: a user allowed only the exchange, never the administrator.
    let iam = aws_sdk_iam::Client::new(&admin);
    bounded("CreateUser", iam.create_user().user_name("agent").send())
        .await
        .expect("the agent's user");
    bounded(
        "PutUserPolicy",
        iam.put_user_policy()
            .user_name("agent")
            .policy_name("exchange-only")
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"eks-auth:AssumeRoleForPodIdentity","Resource":"*"}]}"#,
            )
            .send(),
    )
    .await
    .expect("the agent's policy");
    let key = bounded(
        "CreateAccessKey",
        iam.create_access_key().user_name("agent").send(),
    )
    .await
    .expect("the agent's key");
    let key = key.access_key().unwrap();
    let agent_key = Credentials::new(
        key.access_key_id(),
        key.secret_access_key(),
        None,
        None,
        "agent",
    );
    let (_agent, credentials_url) = podiam.agent(&agent_key);
    // The running server sees the CLI's writes within its store poll; until then the agent
    // passes on ResourceNotFoundException.
    let agent_addr = credentials_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(&agent_addr, "/v1/credentials", Some(token)).unwrap();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never served the pod: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. EcsCredentialsProvider itself, in a child whose whole environment is the two variables
    //    (and where to find podiam for the check).
    let out = run_child(
        "child_ecs_credentials_provider",
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &credentials_url),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file),
            ("PODIAM_INTEROP_ENDPOINT", &podiam.endpoint),
        ],
    );
    assert!(
        out.contains("EcsCredentialsProvider: arn:aws:sts::"),
        "{out}"
    );

    // 2. The default chain, in process, with a static environment of just those two variables.
    let env = Env::from_slice(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            credentials_url.as_str(),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.as_str(),
        ),
    ]);
    let config = aws_config::defaults(BehaviorVersion::latest())
        .env(env)
        .fs(Fs::real())
        .endpoint_url(&podiam.endpoint)
        .region(Region::new(REGION))
        .load()
        .await;
    let arn = check_pod_session(&config).await;
    println!("default chain with a static Env: {arn}");
}

/// `EcsCredentialsProvider::builder().build()`: the URI and token file from the (child's)
/// environment; the credentials it returns make GetCallerIdentity the pod's role session.
#[tokio::test]
#[ignore = "run by container_provider_gets_the_pod_role_from_podiam_agent in a controlled environment"]
async fn child_ecs_credentials_provider() {
    if std::env::var(CHILD_MARKER).is_err() {
        return;
    }
    let endpoint = std::env::var("PODIAM_INTEROP_ENDPOINT").unwrap();
    let provider = aws_config::ecs::EcsCredentialsProvider::builder().build();
    let credentials = bounded("EcsCredentialsProvider", provider.credentials())
        .await
        .expect("the container provider resolves credentials from podiam agent");
    assert!(
        credentials.access_key_id().starts_with("ASIA"),
        "{credentials:?}"
    );
    assert!(credentials.session_token().is_some());
    let expiry = credentials.expiry().expect("container credentials expire");
    assert!(expiry > std::time::SystemTime::now());
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new(REGION))
        .credentials_provider(provider)
        .load()
        .await;
    let arn = check_pod_session(&config).await;
    println!("EcsCredentialsProvider: {arn}");
}
