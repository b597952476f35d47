//! The admin verbs as the user stories run them: the real binary, `podiam up` on a free port, then
//! `podiam create …`, `podiam cluster create`, `podiam audit` on its data directory. Failures must
//! leave nothing half-made and say what to do next.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on unexpected errors"
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn podiam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podiam"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PODIAM_DATABASE_URL")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podiam-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `podiam up --listen 127.0.0.1:0`, with the address from its first line.
struct Up {
    child: Child,
    addr: String,
    stdout: BufReader<std::process::ChildStdout>,
}

/// `podiam up --listen LISTEN ARGS… --data-dir DIR`, and the first line it printed.
fn spawn_up(
    dir: &Path,
    listen: &str,
    args: &[&str],
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podiam"))
        .args(["up", "--listen", listen])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PODIAM_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    (child, stdout, first)
}

fn up(dir: &Path, listen: &str) -> Up {
    let (child, stdout, first) = spawn_up(dir, listen, &[]);
    let addr = first
        .strip_prefix("podiam is up at http://")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    Up {
        child,
        addr,
        stdout,
    }
}

impl Up {
    /// Stops it as a CI runner or Kubernetes does, and returns its exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("podiam up did not stop on SIGTERM within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn get(&self, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap()
    }
}

#[test]
fn sigterm_stops_podiam_up_cleanly_and_a_busy_port_says_what_to_do() {
    let dir = scratch("sigterm");
    let server = up(&dir, "127.0.0.1:0");
    // A second `podiam up` on the same address.
    let other = scratch("sigterm-other");
    let o = podiam(&other, &["up", "--listen", &server.addr]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("already in use") && err.contains("--listen 127.0.0.1:0"),
        "{err}"
    );
    assert_eq!(err.matches("in use").count(), 1, "said twice: {err}");
    // A decision made just before the stop is in audit.log after it (the writer batches every
    // 20 ms; the stop waits for it).
    let refused = server.get(
        "/?Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=stop-test\
         &RoleArn=arn:aws:iam::000000000000:role/none&WebIdentityToken=not.a.jwt",
    );
    assert!(refused.contains("InvalidIdentityToken"), "{refused}");
    // `kill $pid; wait $pid` under `set -e` must not fail the job.
    assert_eq!(server.terminate().code(), Some(0));
    // A refusal before authentication: in the log of its own (anyone can send those).
    let audit = std::fs::read_to_string(dir.join("audit-unauthenticated.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"AssumeRoleWithWebIdentity\""),
        "the last decision is missing from audit-unauthenticated.log: {audit:?}"
    );
    // The database was closed: SQLite's write-ahead log is checkpointed and gone.
    assert!(!dir.join("podiam.db-wal").exists() && !dir.join("podiam.db-shm").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn a_missing_policy_creates_nothing_and_says_how_to_make_it() {
    let dir = scratch("policy");
    let mut server = up(&dir, "127.0.0.1:0");
    let mut rest = String::new();
    for _ in 0..3 {
        server.stdout.read_line(&mut rest).unwrap();
    }
    assert!(rest.contains("export AWS_CONFIG_FILE="), "{rest}");

    let missing = "arn:aws:iam::000000000000:policy/weasel-pod";
    let irsa = [
        "create",
        "iamserviceaccount",
        "--name",
        "weasel-eks-pod-sa",
        "--namespace",
        "weasel",
    ];
    let o = podiam(
        &dir,
        &[&irsa[..], &["--attach-policy-arn", missing]].concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "aws iam create-policy --policy-name weasel-pod --policy-document file://policy.json"
        ),
        "{}",
        stderr(&o)
    );
    // No role was left behind: the same command without the policy creates it.
    let o = podiam(&dir, &irsa);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "eks.amazonaws.com/role-arn: arn:aws:iam::000000000000:role/weasel-weasel-eks-pod-sa"
        ),
        "{}",
        stdout(&o)
    );

    // Pod Identity: an unknown cluster or policy is refused before the role is created.
    let assoc = [
        "create",
        "podidentityassociation",
        "--cluster",
        "prod",
        "--namespace",
        "payments",
        "--service-account",
        "api",
        "--role-name",
        "payments-api",
    ];
    let o = podiam(&dir, &assoc);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("podiam cluster create --name prod"),
        "{}",
        stderr(&o)
    );
    let o = podiam(&dir, &["cluster", "create", "--name", "prod", "--builtin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let no_such = "arn:aws:iam::aws:policy/AmazonS3ReadOnly";
    let o = podiam(
        &dir,
        &[&assoc[..], &["--permission-policy-arns", no_such]].concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("aws iam list-policies --scope AWS"),
        "{}",
        stderr(&o)
    );
    let read_only = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess";
    let o = podiam(
        &dir,
        &[&assoc[..], &["--permission-policy-arns", read_only]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("created role arn:aws:iam::000000000000:role/payments-api"),
        "the role was made by a failed attempt: {}",
        stderr(&o)
    );
    // The same association again says where to look.
    let o = podiam(&dir, &assoc);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("aws eks list-pod-identity-associations --cluster-name prod"),
        "{}",
        stderr(&o)
    );
    assert_eq!(server.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn registering_an_unreachable_issuer_again_replaces_its_keys() {
    let dir = scratch("jwks");
    let server = up(&dir, "127.0.0.1:0");
    let jwks = server.get("/openid/v1/jwks");
    assert!(jwks.contains("\"keys\""), "{jwks}");
    assert_eq!(server.terminate().code(), Some(0));
    let file = dir.join("jwks.json");
    std::fs::write(&file, &jwks).unwrap();
    let file = file.to_str().unwrap();
    let issuer = "https://kubernetes.default.svc";

    // IRSA: `podiam create oidcprovider`, as docs/operating.md says, then again after a key change.
    let provider = [
        "create",
        "oidcprovider",
        "--url",
        issuer,
        "--jwks-file",
        file,
    ];
    let o = podiam(&dir, &provider);
    assert!(o.status.success(), "{}", stderr(&o));
    let arn = "arn:aws:iam::000000000000:oidc-provider/kubernetes.default.svc\n";
    assert_eq!(stdout(&o), arn);
    let o = podiam(&dir, &provider);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), arn);
    assert!(stderr(&o).contains("updated the keys"), "{}", stderr(&o));
    let o = podiam(&dir, &provider[..4]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--jwks-file"), "{}", stderr(&o));

    // Pod Identity: `podiam cluster create`, the same way.
    let cluster = [
        "cluster",
        "create",
        "--name",
        "prod",
        "--issuer-url",
        issuer,
        "--jwks-file",
        file,
    ];
    let o = podiam(&dir, &cluster);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = podiam(&dir, &cluster);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("updated the keys of cluster prod"),
        "{}",
        stdout(&o)
    );
    let o = podiam(&dir, &cluster[..6]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--jwks-file"), "{}", stderr(&o));
    let mut elsewhere = cluster;
    elsewhere[5] = "https://other.example";
    let o = podiam(&dir, &elsewhere);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("registered with issuer https://kubernetes.default.svc"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audit_of_a_directory_without_podiam_data_says_so() {
    let dir = std::env::temp_dir().join(format!("podiam-admin-nothing-{}", std::process::id()));
    let o = podiam(&dir, &["audit", "--denied"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no podiam data in"), "{}", stderr(&o));
}

/// One HTTP exchange on `listener` answered with `response`, within 10 s; false if nobody came.
fn answer_once(listener: &std::net::TcpListener, response: &str) -> bool {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request).unwrap();
                s.write_all(response.as_bytes()).unwrap();
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return false,
        }
    }
}

/// A registration that succeeds without a warning.
fn registers_quietly(dir: &Path, args: &[&str]) {
    let o = podiam(dir, args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn registering_an_issuer_without_its_keys_checks_it_can_be_fetched_from_here() {
    let dir = scratch("reach");
    let server = up(&dir, "127.0.0.1:0");
    let jwks = server.get("/openid/v1/jwks");
    assert_eq!(server.terminate().code(), Some(0));
    let file = dir.join("jwks.json");
    std::fs::write(&file, &jwks).unwrap();
    let keys = ["--jwks-file", file.to_str().unwrap()];

    // Unreachable: registered all the same (exit 0), with a warning naming what failed and the
    // command that registers the keys instead.
    for (issuer, failed) in [
        ("http://127.0.0.1:1", "cannot connect"),
        ("https://issuer.invalid", "DNS lookup failed"),
    ] {
        let started = Instant::now();
        let o = podiam(&dir, &["create", "oidcprovider", "--url", issuer]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(started.elapsed() < Duration::from_secs(10));
        let id = issuer.split("://").nth(1).unwrap();
        assert_eq!(
            stdout(&o),
            format!("arn:aws:iam::000000000000:oidc-provider/{id}\n")
        );
        let err = stderr(&o);
        assert!(
            err.contains(&format!("warning: cannot fetch the keys of {issuer} from this machine"))
                && (err.contains(failed) || err.contains("timed out"))
                && err.contains(&format!(
                    "kubectl get --raw /openid/v1/jwks | podiam create oidcprovider --url {issuer} --jwks-file /dev/stdin"
                )),
            "{err}"
        );
        // That command, run now, gives the registered provider its keys.
        let o = podiam(
            &dir,
            &[&["create", "oidcprovider", "--url", issuer], &keys[..]].concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("updated the keys"), "{}", stderr(&o));

        let name = format!("c{}", id.len());
        let o = podiam(
            &dir,
            &["cluster", "create", "--name", &name, "--issuer-url", issuer],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("registered cluster"), "{}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("warning: cannot fetch the keys of {issuer} from this machine"))
                && err.contains(&format!(
                    "kubectl get --raw /openid/v1/jwks | podiam cluster create --name {name} --issuer-url {issuer} --jwks-file /dev/stdin"
                )),
            "{err}"
        );
        let o = podiam(&dir, &["cluster", "list"]);
        assert!(stdout(&o).contains(&name), "{}", stdout(&o));
    }

    // An issuer that answers, but not with a discovery document: the HTTP status is named.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let not_found = std::thread::spawn(move || {
        answer_once(
            &listener,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
    });
    let o = podiam(&dir, &["create", "oidcprovider", "--url", &issuer]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(not_found.join().unwrap(), "the issuer was not asked");
    assert!(
        stderr(&o).contains("HTTP status 404 Not Found"),
        "{}",
        stderr(&o)
    );

    // With --jwks-file, nothing is fetched: the issuer's port sees no connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    registers_quietly(
        &dir,
        &[&["create", "oidcprovider", "--url", &issuer], &keys[..]].concat(),
    );
    let cluster = [
        "cluster",
        "create",
        "--name",
        "keys-given",
        "--issuer-url",
        &issuer,
    ];
    registers_quietly(&dir, &[&cluster[..], &keys[..]].concat());
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "a registration with --jwks-file connected to the issuer"
    );

    // A reachable issuer (another podiam's built-in one): no warning.
    let other = scratch("reach-issuer");
    let issuer_server = up(&other, "127.0.0.1:0");
    let issuer = format!("http://{}", issuer_server.addr);
    registers_quietly(&dir, &["create", "oidcprovider", "--url", &issuer]);
    registers_quietly(
        &dir,
        &[
            "cluster",
            "create",
            "--name",
            "own",
            "--issuer-url",
            &issuer,
        ],
    );
    assert_eq!(issuer_server.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

/// base64url without padding, as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// POSTs an unsigned AssumeRoleWithWebIdentity and returns the whole raw response ("" when the
/// connection closed without one).
fn assume_with(addr: &str, token: &str) -> String {
    let body = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=drain\
         &RoleArn=arn:aws:iam::000000000000:role/drain&WebIdentityToken={token}"
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

#[test]
fn a_request_being_answered_when_sigterm_arrives_still_gets_its_answer() {
    let dir = scratch("drain");
    let server = up(&dir, "127.0.0.1:0");
    // An issuer that takes 1.5 s to answer anything: AssumeRoleWithWebIdentity waits on its
    // discovery document, then reports IDPCommunicationError.
    let issuer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer_url = format!("http://{}", issuer.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in issuer.incoming().take(32) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request);
                std::thread::sleep(Duration::from_millis(1500));
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    let o = podiam(&dir, &["create", "oidcprovider", "--url", &issuer_url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = podiam(
        &dir,
        &[
            "create",
            "iamserviceaccount",
            "--name",
            "sa",
            "--namespace",
            "ns",
            "--role-name",
            "drain",
            "--issuer",
            &issuer_url,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let token = format!(
        "{}.{}.c2lnbmF0dXJl",
        b64url(br#"{"alg":"RS256","kid":"k1"}"#),
        b64url(format!(r#"{{"iss":"{issuer_url}","sub":"system:serviceaccount:ns:sa","aud":["sts.amazonaws.com"],"exp":4102444800,"iat":1700000000}}"#).as_bytes())
    );
    // The running server saw the provider before the CLI returned.
    let r = assume_with(&server.addr, &token);
    assert!(r.contains("IDPCommunicationError"), "{r}");
    // A request in flight (waiting on the issuer) when SIGTERM arrives is answered, not cut.
    let addr = server.addr.clone();
    let pending = std::thread::spawn(move || {
        let started = Instant::now();
        (assume_with(&addr, &token), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.terminate().code(), Some(0));
    let (response, took) = pending.join().unwrap();
    assert!(
        response.contains("IDPCommunicationError"),
        "the request in flight got {response:?} after {took:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_irsa_service_account_is_bound_to_a_role_of_another_account() {
    let dir = scratch("irsa-upstream");
    let server = up(&dir, "127.0.0.1:0");
    let o = podiam(&dir, &["cluster", "create", "--name", "prod", "--builtin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let upstream = "arn:aws:iam::123456789012:role/payments-api";
    let bind = |role: &str, cluster: &str| {
        podiam(
            &dir,
            &[
                "create",
                "iamserviceaccount",
                "--cluster",
                cluster,
                "--namespace",
                "payments",
                "--name",
                "api",
                "--role-arn",
                role,
            ],
        )
    };
    let refused = |o: Output, says: &str| {
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    };
    // A role of podiam's own account is not what --role-arn is for; an unknown cluster neither.
    refused(
        bind("arn:aws:iam::000000000000:role/x", "prod"),
        "own account",
    );
    refused(
        bind(upstream, "staging"),
        "podiam cluster create --name staging",
    );

    let o = bind(upstream, "prod");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: api\n  namespace: payments\n  annotations:\n    eks.amazonaws.com/role-arn: {upstream}\n"
        )
    );
    assert!(stderr(&o).contains("--upstream-sts"), "{}", stderr(&o));
    // The binding is a pod identity association: a second one for the ServiceAccount is refused.
    refused(
        bind(upstream, "prod"),
        "aws eks update-pod-identity-association",
    );
    server.terminate();
}

#[test]
fn a_second_server_on_a_data_dir_is_refused_with_the_first_ones_pid_and_address() {
    let dir = scratch("lock");
    let mut first = up(&dir, "127.0.0.1:0");
    let config = std::fs::read_to_string(dir.join("aws/config")).unwrap();
    for verb in ["up", "server"] {
        let o = podiam(&dir, &[verb, "--listen", "127.0.0.1:0"]);
        assert_eq!(o.status.code(), Some(1), "{verb}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("another podiam (pid {})", first.child.id()))
                && err.contains(&format!("at http://{}", first.addr))
                && err.contains("--data-dir"),
            "{verb}: {err}"
        );
    }
    // The refused start touched nothing: the first server's users still point at it.
    assert_eq!(
        std::fs::read_to_string(dir.join("aws/config")).unwrap(),
        config
    );
    // The lock of a server that died without cleaning up is taken over.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = up(&dir, "127.0.0.1:0");
    let lock = std::fs::read_to_string(dir.join("podiam.lock")).unwrap();
    assert!(
        lock.contains(&format!("\"pid\":{}", second.child.id())),
        "{lock}"
    );
    assert_eq!(second.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_export_line_names_the_data_dir_and_every_later_command_honours_it() {
    let dir = scratch("export");
    let home = scratch("export-home");
    let mut server = up(&dir, "127.0.0.1:0");
    let mut export = String::new();
    while !export.starts_with("export ") {
        export.clear();
        server.stdout.read_line(&mut export).unwrap();
    }
    assert!(
        export.contains(&format!("PODIAM_DATA_DIR={}", dir.display())),
        "{export}"
    );
    // Pasted into a shell whose default data directory is empty, later commands use this one:
    // a token from its issuer, a role in its store.
    let pasted = format!(
        "{}\n\"$PODIAM\" token create --namespace ns --service-account sa >/dev/null && \
         \"$PODIAM\" create iamserviceaccount --namespace ns --name sa",
        export.trim()
    );
    let o = Command::new("sh")
        .args(["-c", &pasted])
        .env("PODIAM", env!("CARGO_BIN_EXE_podiam"))
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("PODIAM_DATA_DIR")
        .env_remove("PODIAM_DATABASE_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("eks.amazonaws.com/role-arn: arn:aws:iam::000000000000:role/ns-sa"),
        "{}",
        stdout(&o)
    );
    assert!(!home.join("data/podiam").exists());
    assert_eq!(server.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn podiam_up_output_json_and_port_file_give_ci_the_address_without_scraping() {
    let dir = scratch("json");
    let port_file = dir.join("port");
    let port_arg = port_file.to_str().unwrap();
    let (child, stdout, first) = spawn_up(
        &dir,
        "127.0.0.1:0",
        &["--output", "json", "--port-file", port_arg],
    );
    let started: serde_json::Value = serde_json::from_str(&first).unwrap();
    let port = started["port"].as_u64().unwrap();
    assert_eq!(started["endpoint"], format!("http://127.0.0.1:{port}"));
    assert_eq!(started["region"], "us-east-1");
    assert_eq!(started["profile"], "podiam");
    assert_eq!(started["account_id"], "000000000000");
    assert_eq!(started["env"]["AWS_PROFILE"], "podiam");
    assert_eq!(started["env"]["PODIAM_DATA_DIR"], dir.display().to_string());
    assert_eq!(
        started["env"]["AWS_CONFIG_FILE"],
        dir.join("aws/config").display().to_string()
    );
    // The port file is there once the server answers (it is written after the line above).
    let deadline = Instant::now() + Duration::from_secs(10);
    let written = loop {
        if let Ok(t) = std::fs::read_to_string(&port_file) {
            break t;
        }
        assert!(Instant::now() < deadline, "no port file");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(written, format!("{port}\n"));
    let server = Up {
        child,
        addr: format!("127.0.0.1:{port}"),
        stdout,
    };
    assert_eq!(server.get("/healthz"), "ok\n");
    assert_eq!(server.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12: another local user can read nothing of a data directory, and a copy of the database
/// alone reveals no secret.
#[test]
fn the_data_directory_is_private_and_the_database_holds_no_secret_in_the_clear() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = scratch("private");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = up(&dir, "127.0.0.1:0");
    assert_eq!(server.terminate().code(), Some(0));
    assert_eq!(mode(&dir), 0o700, "the data directory");
    assert_eq!(mode(&dir.join("aws")), 0o700);
    for name in [
        "podiam.db",
        "master.key",
        "audit.log",
        "aws/credentials",
        "aws/config",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    let credentials = std::fs::read_to_string(dir.join("aws/credentials")).unwrap();
    let secret = credentials
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap()
        .to_string();
    let db = std::fs::read(dir.join("podiam.db")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "podiam.db holds the administrator's secret key in the clear"
    );
    // Opened up to others, it is refused with the command that fixes it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = podiam(&dir, &["up", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("run `chmod 700 {}`", dir.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn oidc_documents_are_written_for_a_static_host_with_the_commands_to_go_with_them() {
    let dir = scratch("oidc-documents");
    let server = up(&dir, "127.0.0.1:0");
    let out = dir.join("site");
    let url = "https://bucket.s3.eu-west-1.amazonaws.com/prod";
    let documents = |name: &str| {
        let out = out.to_str().unwrap();
        podiam(
            &dir,
            &[
                "cluster",
                "oidc-documents",
                "--name",
                name,
                "--issuer-url",
                url,
                "--out",
                out,
            ],
        )
    };
    let o = documents("prod");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("podiam cluster create --name prod"),
        "{}",
        stderr(&o)
    );

    // The built-in issuer's keys.
    let o = podiam(&dir, &["cluster", "create", "--name", "dev", "--builtin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = documents("dev");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("--issuer-url {url}")),
        "{}",
        stdout(&o)
    );
    let read = |rel: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(rel)).unwrap()).unwrap()
    };
    assert_eq!(read(".well-known/openid-configuration")["issuer"], url);
    let jwks = std::fs::read_to_string(out.join("openid/v1/jwks")).unwrap();
    assert!(
        !read("openid/v1/jwks")["keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A cluster registered with its API server's JWKS: the kube-apiserver flags.
    let jwks_file = dir.join("cluster-jwks.json");
    std::fs::write(&jwks_file, &jwks).unwrap();
    let o = podiam(
        &dir,
        &[
            "cluster",
            "create",
            "--name",
            "prod",
            "--issuer-url",
            "https://kubernetes.default.svc",
            "--jwks-file",
            jwks_file.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = documents("prod");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for line in [
        format!("--service-account-issuer={url}"),
        format!("--service-account-jwks-uri={url}/openid/v1/jwks"),
        format!(
            "aws iam create-open-id-connect-provider --url {url} --client-id-list sts.amazonaws.com"
        ),
    ] {
        assert!(text.contains(&line), "{line} in {text}");
    }
    server.terminate();
}

/// `podiam create iamserviceaccount --namespace NS --name NAME EXTRA…`, which must succeed.
fn create_irsa(dir: &Path, namespace: &str, name: &str, extra: &[&str]) {
    let args = [
        &[
            "create",
            "iamserviceaccount",
            "--namespace",
            namespace,
            "--name",
            name,
        ][..],
        extra,
    ]
    .concat();
    let o = podiam(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `podiam token create` for a ServiceAccount of the built-in issuer.
fn token_for(dir: &Path, namespace: &str, service_account: &str) -> String {
    let args = [
        "token",
        "create",
        "--namespace",
        namespace,
        "--service-account",
        service_account,
    ];
    stdout(&podiam(dir, &args))
}

/// The command failed (exit 1) and its message says `text`.
fn fails_saying(o: &Output, text: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    assert!(stderr(o).contains(text), "{}", stderr(o));
}

/// An unsigned AssumeRoleWithWebIdentity for `role` in the running server's account.
fn assume_role(server: &Up, role: &str, token: &str) -> String {
    server.get(&format!(
        "/?Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=verbs\
         &RoleArn=arn:aws:iam::000000000000:role/{role}&WebIdentityToken={token}"
    ))
}

#[test]
fn get_and_delete_verbs_list_and_remove_what_create_made() {
    let dir = scratch("verbs");
    let server = up(&dir, "127.0.0.1:0");
    let read_only = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess";
    for name in ["web", "api"] {
        create_irsa(&dir, "shop", name, &["--attach-policy-arn", read_only]);
    }
    let o = podiam(&dir, &["get", "iamserviceaccount"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        table,
        [
            "NAMESPACE NAME ROLE",
            "shop api arn:aws:iam::000000000000:role/shop-api",
            "shop web arn:aws:iam::000000000000:role/shop-web",
        ]
    );
    let o = podiam(
        &dir,
        &["get", "iamserviceaccount", "--name", "web", "-o", "json"],
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        listed[0]["roleArn"],
        "arn:aws:iam::000000000000:role/shop-web"
    );
    assert_eq!(listed[0]["attachedPolicyArns"][0], read_only);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let o = podiam(
        &dir,
        &["get", "iamserviceaccount", "--name", "web", "-o", "yaml"],
    );
    assert!(
        stdout(&o).starts_with("- attachedPolicyArns:\n"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("  roleName: \"shop-web\"\n"),
        "{}",
        stdout(&o)
    );

    // Deleting removes the role and its attachment; the running server refuses it at once.
    let token = token_for(&dir, "shop", "web");
    let r = assume_role(&server, "shop-web", &token);
    assert!(r.contains("<AssumeRoleWithWebIdentityResult>"), "{r}");
    let delete_web = [
        "delete",
        "iamserviceaccount",
        "--namespace",
        "shop",
        "--name",
        "web",
    ];
    let o = podiam(&dir, &delete_web);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("deleted role arn:aws:iam::000000000000:role/shop-web"),
        "{}",
        stderr(&o)
    );
    assert!(
        assume_role(&server, "shop-web", &token).contains("no role"),
        "the server still has the role"
    );
    let o = podiam(&dir, &["get", "iamserviceaccount", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let o = podiam(&dir, &delete_web);
    fails_saying(&o, "podiam get iamserviceaccount");

    // Pod Identity: get, delete by namespace and ServiceAccount, and the cluster with the rest.
    let o = podiam(&dir, &["cluster", "create", "--name", "prod", "--builtin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for ns in ["pay", "cart"] {
        let o = podiam(
            &dir,
            &[
                "create",
                "podidentityassociation",
                "--cluster",
                "prod",
                "--namespace",
                ns,
                "--service-account",
                "api",
                "--role-name",
                "pods",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = podiam(
        &dir,
        &[
            "get",
            "podidentityassociation",
            "--cluster",
            "prod",
            "-o",
            "json",
        ],
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let namespaces: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["cart", "pay"]);
    let o = podiam(&dir, &["get", "cluster"]);
    assert!(
        stdout(&o).contains("prod") && stdout(&o).contains("built-in issuer"),
        "{}",
        stdout(&o)
    );
    let o = podiam(
        &dir,
        &[
            "delete",
            "podidentityassociation",
            "--cluster",
            "prod",
            "--namespace",
            "pay",
            "--service-account",
            "api",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = podiam(&dir, &["get", "podidentityassociation", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let o = podiam(&dir, &["cluster", "delete", "--name", "prod"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("deleted association"), "{}", stderr(&o));
    let o = podiam(&dir, &["get", "cluster", "-o", "json"]);
    assert_eq!(stdout(&o).trim(), "[]");
    let o = podiam(&dir, &["get", "podidentityassociation"]);
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "{}",
        stdout(&o)
    );
    assert_eq!(server.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `podiam doctor --no-imds` with only `vars` in its environment (and an empty HOME).
fn doctor(home: &Path, vars: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podiam"))
        .args(["doctor", "--no-imds"])
        .env_clear()
        .env("HOME", home)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn doctor_names_the_winning_source_the_shadowed_one_and_who_the_sdk_is() {
    let dir = scratch("doctor");
    let home = scratch("doctor-home");
    let server = up(&dir, "127.0.0.1:0");
    create_irsa(&dir, "shop", "cart", &[]);
    let token_file = dir.join("token");
    let token = token_for(&dir, "shop", "cart");
    std::fs::write(&token_file, token).unwrap();
    let web_identity = vec![
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::000000000000:role/shop-cart".to_string(),
        ),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://{}", server.addr)),
    ];
    // IRSA alone: the role, in every SDK.
    let o = doctor(&home, &web_identity);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("wins in boto3, the aws CLI, Java, JavaScript: web identity"),
        "{out}"
    );
    assert!(!out.contains("SDKs disagree"), "{out}");
    assert!(
        out.contains("GetCallerIdentity (the AWS SDK for Rust's chain): arn:aws:sts::000000000000:assumed-role/shop-cart/"),
        "{out}"
    );
    // The trap: the administrator's profile as well. boto3 would use the role; Rust the keys.
    let mut both = web_identity.clone();
    both.extend([
        (
            "AWS_CONFIG_FILE",
            dir.join("aws/config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("aws/credentials").display().to_string(),
        ),
        ("AWS_PROFILE", "podiam".to_string()),
    ]);
    let o = doctor(&home, &both);
    let out = stdout(&o);
    assert!(
        out.contains("present but shadowed: shared profile")
            && out.contains("wins in the AWS SDK for Rust: shared profile")
            && out.contains("warning: the SDKs disagree"),
        "{out}"
    );
    assert!(
        out.contains("GetCallerIdentity (the AWS SDK for Rust's chain): arn:aws:iam::000000000000:user/podiam-admin"),
        "{out}"
    );
    // Nothing at all: said, and a failure.
    let o = doctor(&home, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("none: the SDKs will find no credentials"),
        "{}",
        stdout(&o)
    );
    assert_eq!(server.terminate().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&home).unwrap();
}
