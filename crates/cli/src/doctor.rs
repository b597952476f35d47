//! `podiam doctor`: which AWS credentials a process here gets, and why. Walks the SDKs' default
//! credential chain in their order, says which source wins and which present ones it shadows,
//! checks each present source (token readable, claims, expiry, endpoint reachable), and ends
//! with `GetCallerIdentity` through the AWS SDK for Rust's own chain.
//!
//! The orders differ, and that is the trap this command exists for:
//! - the AWS SDK for Rust (`aws-config`): environment keys, the shared profile, web identity,
//!   container credentials, IMDS;
//! - boto3/botocore (and the `aws` CLI), Java v2, JavaScript v3, PHP, Kotlin: environment keys,
//!   web identity, the shared profile, container credentials, IMDS.
//!
//! So a pod with IRSA whose image also sets `AWS_PROFILE` to a profile with keys runs as those
//! keys in a Rust program and as the role in a Python one: a least-privilege test passes as the
//! administrator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::exit;

#[derive(Args)]
pub struct DoctorArgs {
    /// Do not probe the EC2 instance metadata service (a connection attempt to
    /// 169.254.169.254, or AWS_EC2_METADATA_SERVICE_ENDPOINT).
    #[arg(long)]
    no_imds: bool,
}

/// The sources of the default chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Environment,
    WebIdentity,
    Profile,
    Container,
    Imds,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Environment => "environment keys (AWS_ACCESS_KEY_ID)",
            Source::WebIdentity => "web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN)",
            Source::Profile => "shared profile",
            Source::Container => "container credentials (AWS_CONTAINER_CREDENTIALS_*_URI)",
            Source::Imds => "EC2 instance metadata (IMDS)",
        }
    }
}

/// boto3, the `aws` CLI, Java, JavaScript, PHP, Kotlin.
const MOST_SDKS: [Source; 5] = [
    Source::Environment,
    Source::WebIdentity,
    Source::Profile,
    Source::Container,
    Source::Imds,
];
/// The AWS SDK for Rust (`aws-config`'s `DefaultCredentialsChain`).
const RUST_SDK: [Source; 5] = [
    Source::Environment,
    Source::Profile,
    Source::WebIdentity,
    Source::Container,
    Source::Imds,
];

/// One source found here, with what its checks said.
struct Found {
    source: Source,
    /// What it is (`profile podiam: keys in /…/credentials`).
    detail: String,
    /// Problems that will make it fail.
    problems: Vec<String>,
    /// Facts worth knowing (token subject, expiry).
    notes: Vec<String>,
}

/// The environment `doctor` reads: the process's, or a test's.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Largest token or credentials file read.
const MAX_FILE: u64 = 1 << 20;

fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(text)
}

/// Checks a projected ServiceAccount token file: readable, a JWT, its claims and expiry. The
/// signature is not checked here: the server does that.
fn check_token(path: &Path, want_audience: &str, now: i64, found: &mut Found) {
    let text = match read_small(path) {
        Ok(t) => t,
        Err(e) => {
            found.problems.push(e);
            return;
        }
    };
    let token = text.trim();
    let jwt = match podiam_identity::jwt::UnverifiedJwt::parse(token) {
        Ok(j) => j,
        Err(e) => {
            found
                .problems
                .push(format!("`{}` does not hold a JWT: {e}", path.display()));
            return;
        }
    };
    let claims = jwt.unverified_claims();
    found.notes.push(format!(
        "token: iss {}, sub {}, aud {}",
        claims.issuer().unwrap_or("-"),
        claims.subject().unwrap_or("-"),
        claims.audiences().join(",")
    ));
    if !claims.audiences().iter().any(|a| a == want_audience) {
        found.problems.push(format!(
            "the token's audience is not `{want_audience}` (set the projected volume's `audience`)"
        ));
    }
    match claims.expires_at() {
        Some(exp) if exp <= now => found.problems.push(format!(
            "the token expired at {} UTC: a projected token is rewritten by kubelet before it expires; by hand, `podiam token create`",
            utc(exp)
        )),
        Some(exp) => found
            .notes
            .push(format!("token expires at {} UTC (in {})", utc(exp), age(exp - now))),
        None => found.problems.push("the token has no `exp`".into()),
    }
}

fn utc(secs: i64) -> String {
    podiam_identity::clock::format_iso8601(podiam_identity::clock::from_unix_seconds(secs))
}

fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// `name = value` lines of the INI section `section` (AWS's config files; `#`/`;` comments).
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside
            && let Some((k, v)) = line.split_once('=')
            && let Some(f) = found.as_mut()
        {
            f.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    found
}

fn home_file(env: &dyn Env, var: &str, default: &str) -> PathBuf {
    env.var(var).map(PathBuf::from).unwrap_or_else(|| {
        env.var("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(default)
    })
}

/// The shared profile, if it provides credentials.
fn profile(env: &dyn Env) -> Option<Found> {
    let explicit = env.var("AWS_PROFILE");
    let name = explicit.clone().unwrap_or_else(|| "default".into());
    let credentials = home_file(env, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config = home_file(env, "AWS_CONFIG_FILE", ".aws/config");
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let mut settings = Vec::new();
    let mut places = Vec::new();
    if let Some(s) = read_small(&credentials)
        .ok()
        .and_then(|t| ini_section(&t, &name))
    {
        settings.extend(s);
        places.push(credentials.display().to_string());
    }
    if let Some(s) = read_small(&config)
        .ok()
        .and_then(|t| ini_section(&t, &config_section))
    {
        settings.extend(s);
        places.push(config.display().to_string());
    }
    let has = |k: &str| settings.iter().any(|(key, _)| key == k);
    let kind = if has("aws_access_key_id") {
        "access keys"
    } else if has("web_identity_token_file") {
        "a web identity token file"
    } else if has("role_arn") {
        "an assumed role (role_arn)"
    } else if has("credential_process") {
        "credential_process"
    } else if has("sso_session") || has("sso_start_url") {
        "IAM Identity Center (SSO)"
    } else {
        if explicit.is_some() {
            return Some(Found {
                source: Source::Profile,
                detail: format!("profile {name}"),
                problems: vec![format!(
                    "AWS_PROFILE={name}, but no credentials for it in {} or {}",
                    credentials.display(),
                    config.display()
                )],
                notes: Vec::new(),
            });
        }
        return None;
    };
    let mut found = Found {
        source: Source::Profile,
        detail: format!("profile {name}: {kind} in {}", places.join(" and ")),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    if has("aws_access_key_id") && !has("aws_secret_access_key") {
        found
            .problems
            .push("the profile has aws_access_key_id but no aws_secret_access_key".into());
    }
    if let Some((_, url)) = settings.iter().find(|(k, _)| k == "endpoint_url") {
        found.notes.push(format!("endpoint_url = {url}"));
    }
    Some(found)
}

/// Whether `host:port` of `url` accepts a TCP connection within `timeout`.
fn reachable(url: &str, timeout: Duration) -> Result<(), String> {
    use std::net::ToSocketAddrs as _;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else if url.starts_with("https://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    let addrs = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {with_port}: {e}"))?;
    let mut last = format!("no address for {with_port}");
    for addr in addrs.take(4) {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Every source present here, in no particular order.
fn survey(env: &dyn Env, probe_imds: bool, now: i64) -> Vec<Found> {
    let mut out = Vec::new();
    if env.var("AWS_ACCESS_KEY_ID").is_some() || env.var("AWS_SECRET_ACCESS_KEY").is_some() {
        let id = env.var("AWS_ACCESS_KEY_ID").unwrap_or_default();
        let mut f = Found {
            source: Source::Environment,
            detail: format!(
                "AWS_ACCESS_KEY_ID={}…{}",
                id.chars().take(4).collect::<String>(),
                if env.var("AWS_SESSION_TOKEN").is_some() {
                    " with AWS_SESSION_TOKEN"
                } else {
                    ""
                }
            ),
            problems: Vec::new(),
            notes: Vec::new(),
        };
        if id.is_empty() || env.var("AWS_SECRET_ACCESS_KEY").is_none() {
            f.problems
                .push("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set".into());
        }
        out.push(f);
    }
    if let Some(file) = env.var("AWS_WEB_IDENTITY_TOKEN_FILE") {
        let mut f = Found {
            source: Source::WebIdentity,
            detail: format!(
                "role {} with the token in {file}",
                env.var("AWS_ROLE_ARN").unwrap_or_else(|| "(none)".into())
            ),
            problems: Vec::new(),
            notes: Vec::new(),
        };
        if env.var("AWS_ROLE_ARN").is_none() {
            f.problems
                .push("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into());
        }
        check_token(Path::new(&file), "sts.amazonaws.com", now, &mut f);
        out.push(f);
    }
    if let Some(f) = profile(env) {
        out.push(f);
    }
    let container = env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|r| format!("http://169.254.170.2{r}"))
    });
    if let Some(url) = container {
        let mut f = Found {
            source: Source::Container,
            detail: url.clone(),
            problems: Vec::new(),
            notes: Vec::new(),
        };
        if let Some(file) = env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            check_token(Path::new(&file), "pods.eks.amazonaws.com", now, &mut f);
        }
        match reachable(&url, Duration::from_secs(1)) {
            Ok(()) => f.notes.push("the endpoint accepts connections".into()),
            Err(e) => f.problems.push(format!(
                "the credentials endpoint is not reachable ({e}): is the podiam agent running on this node?"
            )),
        }
        out.push(f);
    }
    let imds_disabled = env
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if probe_imds && !imds_disabled {
        let url = env
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into());
        if reachable(&url, Duration::from_millis(500)).is_ok() {
            out.push(Found {
                source: Source::Imds,
                detail: format!("{url} answers (the node's role, unless podiam's agent limits it)"),
                problems: Vec::new(),
                notes: Vec::new(),
            });
        }
    }
    out
}

/// The report: each present source in `order`, the winner, the shadowed.
fn report(found: &[Found]) -> String {
    let mut text = String::from("credential sources present here:\n");
    if found.is_empty() {
        text.push_str("  none: the SDKs will find no credentials\n");
    }
    for f in found {
        text.push_str(&format!("  {}: {}\n", f.source.name(), f.detail));
        for n in &f.notes {
            text.push_str(&format!("      {n}\n"));
        }
        for p in &f.problems {
            text.push_str(&format!("      problem: {p}\n"));
        }
    }
    let winner = |order: &[Source]| {
        order
            .iter()
            .copied()
            .find(|s| found.iter().any(|f| f.source == *s))
    };
    let (most, rust) = (winner(&MOST_SDKS), winner(&RUST_SDK));
    if let Some(w) = most {
        text.push_str(&format!(
            "\nwins in boto3, the aws CLI, Java, JavaScript: {}\n",
            w.name()
        ));
        let shadowed: Vec<&str> = found
            .iter()
            .filter(|f| f.source != w)
            .map(|f| f.source.name())
            .collect();
        if !shadowed.is_empty() {
            text.push_str(&format!(
                "  present but shadowed: {}\n",
                shadowed.join("; ")
            ));
        }
    }
    if let (Some(m), Some(r)) = (most, rust)
        && m != r
    {
        text.push_str(&format!(
            "wins in the AWS SDK for Rust: {}\n\
             warning: the SDKs disagree. A Rust program here runs as the {}, a Python one as the {}: a least-privilege test can pass with the wrong identity. Unset what should not be used (for IRSA: unset AWS_PROFILE and AWS_ACCESS_KEY_ID in the pod).\n",
            r.name(),
            r.name(),
            m.name()
        ));
    }
    text
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let now = podiam_identity::clock::unix_seconds(SystemTime::now());
    let found = survey(&ProcessEnv, !args.no_imds, now);
    let mut text = report(&found);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let identity = runtime.block_on(caller_identity());
    let ok = match identity {
        Ok((arn, account)) => {
            text.push_str(&format!(
                "\nGetCallerIdentity (the AWS SDK for Rust's chain): {arn} (account {account})\n"
            ));
            true
        }
        Err(e) => {
            text.push_str(&format!("\nGetCallerIdentity failed: {e}\n"));
            false
        }
    };
    crate::emit(&text)?;
    let problems = found.iter().any(|f| !f.problems.is_empty());
    Ok(ExitCode::from(if ok && !problems {
        exit::OK
    } else {
        exit::ERROR
    }))
}

/// Who the AWS SDK for Rust's default chain says this process is: (ARN, account).
async fn caller_identity() -> Result<(String, String), String> {
    use aws_sdk_sts::config::BehaviorVersion;
    let work = async {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let out = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| aws_sdk_sts::error::DisplayErrorContext(&e).to_string())?;
        Ok((
            out.arn().unwrap_or("-").to_string(),
            out.account().unwrap_or("-").to_string(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .map_err(|_| "no answer within 15 s".to_string())?
}

#[cfg(test)]
mod tests;
