//! `podiam up`: STS, IAM and the built-in OIDC issuer in one process, state in SQLite under the
//! data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::exit;

#[derive(Args)]
pub struct UpArgs {
    /// Where podiam keeps its state (SQLite), the audit log and the AWS config files.
    #[arg(long, env = "PODIAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:7780")]
    pub listen: SocketAddr,
    /// The account ID, fixed at first start.
    #[arg(long, default_value = "000000000000")]
    pub account_id: String,
    /// The region, fixed at first start.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// The built-in issuer's URL (`iss`), fixed at first start; by default the server's URL.
    #[arg(long)]
    pub issuer_url: Option<String>,
    /// Leave the failed check out of AccessDenied messages (it is always in the audit log).
    #[arg(long)]
    pub production: bool,
    /// EKS Auth: refuse pod tokens that name no node (`kubernetes.io.node.name`) and agents
    /// whose session is bound to no node (a token and an agent that both name one must agree
    /// either way).
    #[arg(long, env = "PODIAM_REQUIRE_NODE_BINDING")]
    pub require_node_binding: bool,
    #[command(flatten)]
    pub upstream: crate::upstream::UpstreamArgs,
    #[command(flatten)]
    pub audit: crate::audit::AuditLogArgs,
    #[command(flatten)]
    pub report: Report,
    #[command(flatten)]
    pub connections: crate::connections::ConnectionArgs,
}

/// How a started server tells a person or a CI job where it is.
#[derive(Args, Clone, Debug, Default)]
pub struct Report {
    /// `text`: the address and the `export` line to paste; `json`: one JSON object on one line
    /// (`endpoint`, `port`, `region`, `profile`, `data_dir`, `env`, …) for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also write the port served on to this file (`127.0.0.1:0` picks one) once the server
    /// answers, so that a script that started it in the background can wait for the file.
    #[arg(long, value_name = "FILE")]
    pub port_file: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// The default data directory: `$XDG_DATA_HOME/podiam` (`~/.local/share/podiam`).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("podiam")
}

pub fn data_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(default_data_dir)
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    serve(Serve {
        data_dir: data_dir(args.data_dir),
        listen: args.listen,
        account_id: args.account_id,
        region: args.region,
        issuer_url: args.issuer_url,
        production: args.production,
        require_node_binding: args.require_node_binding,
        database_url: None,
        master_key_file: None,
        tls: None,
        replica_name: None,
        upstream: args.upstream,
        audit: args.audit.options(),
        report: args.report,
        connections: args.connections.limits(),
    })
}

/// What `podiam up` and `podiam server` both start.
pub struct Serve {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub account_id: String,
    pub region: String,
    pub issuer_url: Option<String>,
    pub production: bool,
    pub require_node_binding: bool,
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    /// Certificate and key PEM files for HTTPS, re-read when they change.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// This server's name in the audit events it writes to PostgreSQL.
    pub replica_name: Option<String>,
    /// Broker mode (`--upstream-sts`).
    pub upstream: crate::upstream::UpstreamArgs,
    /// How the audit trail is kept on disk.
    pub audit: podiam_server::audit::AuditOptions,
    pub report: Report,
    pub connections: podiam_net::ConnectionLimits,
}

/// How often the certificate files are checked for a new pair (cert-manager renewals).
const TLS_RELOAD: std::time::Duration = std::time::Duration::from_secs(10);

pub fn serve(args: Serve) -> anyhow::Result<ExitCode> {
    crate::init_logging(crate::LogColour::Default);
    let upstream = args.upstream.options(&args.region)?;
    let master_key = args
        .master_key_file
        .as_deref()
        .map(podiam_store::MasterKey::from_file)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Before anything touches the directory: a second server would rewrite `aws/config` and
    // point the first one's users at its own port.
    let mut lock = podiam_server::instance::DataDirLock::acquire(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    runtime.block_on(async move {
        let tls = match &args.tls {
            Some((cert, key)) => {
                let resolver = std::sync::Arc::new(
                    podiam_webhook::tls::ReloadingCert::new(cert, key)
                        .with_context(|| format!("cannot load the TLS certificate `{}` and key `{}`", cert.display(), key.display()))?,
                );
                let config = podiam_webhook::tls::server_config(std::sync::Arc::clone(&resolver), "1.2", "")
                    .context("cannot build the TLS configuration")?;
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(TLS_RELOAD);
                    loop {
                        tick.tick().await;
                        match resolver.poll() {
                            podiam_webhook::tls::Reload::Reloaded => tracing::info!("reloaded the TLS certificate"),
                            podiam_webhook::tls::Reload::Refused(why) => {
                                tracing::warn!(%why, "kept the previous TLS certificate")
                            }
                            podiam_webhook::tls::Reload::Unchanged => {}
                        }
                    }
                });
                Some(std::sync::Arc::new(config))
            }
            None => None,
        };
        let data_dir = args.data_dir;
        let server = podiam_server::start(podiam_server::Options {
            data_dir: data_dir.clone(),
            listen: args.listen,
            account_id: args.account_id,
            region: args.region,
            issuer_url: args.issuer_url,
            explain_denials: !args.production,
            database_url: args.database_url,
            master_key,
            tls,
            replica_name: args.replica_name,
            clock: Default::default(),
            upstream,
            audit: args.audit,
            connections: args.connections,
            require_node_binding: args.require_node_binding,
        })
        .await
        .map_err(|e| start_error(e, args.listen))
        .with_context(|| format!("podiam could not start with data in `{}`", data_dir.display()))?;
        lock.publish(&server.endpoint)
            .with_context(|| format!("cannot write `{}`", lock.path().display()))?;
        // CLI writes to the store ask the server to catch up at once (read-your-writes).
        let _sync = podiam_server::instance::serve_sync(std::sync::Arc::clone(&server.shared), &data_dir)
            .map_err(|e| tracing::warn!(error = %e, "no sync socket in the data directory: CLI writes reach this server within its 1 s store poll"))
            .ok();
        let env = environment(&server, &data_dir);
        let text = match args.report.output {
            Output::Json => format!("{}\n", started_json(&server, &data_dir, &env)),
            Output::Text => started_text(&server, &data_dir, &env),
        };
        // SIGTERM (`kill`, a CI runner, Kubernetes) stops the server as Ctrl-C does, exit 0. The
        // handlers are in place before the address is printed: a signal right after it stops
        // cleanly too, instead of killing the process.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        crate::emit(&text)?;
        if let Some(file) = &args.report.port_file {
            write_port_file(file, server.addr.port())?;
        }
        // A stop writes out the audit events of the decisions already made.
        let stop = async {
            tokio::select! {
                () = received(interrupt.as_mut()) => {}
                () = received(term.as_mut()) => {}
            }
        };
        server.run_until(stop).await.context("the server stopped")?;
        Ok(ExitCode::from(exit::OK))
    })
}

/// Waits for `signal`; forever when its handler could not be installed.
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The start error, said once (the server's messages already include their cause) and, for an
/// address in use, with what to do.
fn start_error(e: podiam_server::StartError, listen: SocketAddr) -> anyhow::Error {
    use podiam_server::StartError;
    match e {
        StartError::Listen { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!(
                "{listen} is already in use (is podiam already running? `podiam up` prints its address): stop the other process, or pick another address with --listen, such as --listen 127.0.0.1:0 for any free port"
            )
        }
        e @ (StartError::Listen { .. } | StartError::DataDir { .. } | StartError::Write { .. }) => {
            anyhow::anyhow!("{e}")
        }
        e => e.into(),
    }
}

/// The variables a shell needs to use this server: the AWS files and profile, and the data
/// directory when it is not the one every other `podiam` command uses by default.
fn environment(
    server: &podiam_server::Server,
    data_dir: &std::path::Path,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "AWS_CONFIG_FILE",
            server.aws_config_file.display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            server.aws_credentials_file.display().to_string(),
        ),
        ("AWS_PROFILE", PROFILE.to_string()),
    ];
    if data_dir != default_data_dir() {
        env.push(("PODIAM_DATA_DIR", data_dir.display().to_string()));
    }
    env
}

/// The profile `podiam up` writes to `aws/config` and `aws/credentials`.
const PROFILE: &str = "podiam";

/// What a person reads: the address, what happened, and the line to paste.
fn started_text(
    server: &podiam_server::Server,
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> String {
    let mut text = format!(
        "podiam is up at {} (account {})\n",
        server.endpoint, server.account_id
    );
    if let Some(upstream) = server.shared.upstream() {
        text.push_str(&crate::upstream::banner(upstream));
    }
    if server.first_start {
        text.push_str(&format!(
            "first start: created the administrator key, the built-in issuer and its OIDC provider in {}\n",
            data_dir.display()
        ));
    }
    text.push_str(&export_line(env));
    text
}

/// What a script reads (`podiam up --output json | head -1 | jq -r .endpoint`).
fn started_json(
    server: &podiam_server::Server,
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> serde_json::Value {
    let env: serde_json::Map<String, serde_json::Value> = env
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(v.as_str())))
        .collect();
    serde_json::json!({
        "endpoint": server.endpoint,
        "port": server.addr.port(),
        "account_id": server.account_id,
        "region": server.shared.config.region,
        "profile": PROFILE,
        "data_dir": data_dir.display().to_string(),
        "aws_config_file": server.aws_config_file.display().to_string(),
        "aws_shared_credentials_file": server.aws_credentials_file.display().to_string(),
        "issuer_url": server.shared.config.issuer_url,
        "pid": std::process::id(),
        "first_start": server.first_start,
        "env": env,
    })
}

/// Written whole (a temporary file renamed), so that a reader never sees half a number.
fn write_port_file(file: &std::path::Path, port: u16) -> anyhow::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))
        .and_then(|()| std::fs::rename(&tmp, file))
        .with_context(|| format!("cannot write the port file `{}`", file.display()))
}

/// The line to paste into a shell: values quoted when they need it.
fn export_line(env: &[(&str, String)]) -> String {
    let words: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_quote(v)))
        .collect();
    format!("\nexport {}\n", words.join(" "))
}

/// `word` as one POSIX shell word: unchanged when it is plain, single-quoted otherwise.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_line_survives_a_paste_into_a_shell() {
        let line = export_line(&[
            (
                "AWS_CONFIG_FILE",
                "/home/me/.local/share/podiam/aws/config".into(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/tmp/it's here/aws/credentials".into(),
            ),
            ("AWS_PROFILE", "podiam".into()),
        ]);
        assert_eq!(
            line,
            "\nexport AWS_CONFIG_FILE=/home/me/.local/share/podiam/aws/config AWS_SHARED_CREDENTIALS_FILE='/tmp/it'\\''s here/aws/credentials' AWS_PROFILE=podiam\n"
        );
    }

    #[test]
    fn an_address_in_use_says_what_to_do_once() {
        let addr: SocketAddr = "127.0.0.1:7780".parse().unwrap();
        let e = start_error(
            podiam_server::StartError::Listen {
                addr,
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            },
            addr,
        );
        let text = format!("{e:#}");
        assert!(text.contains("--listen 127.0.0.1:0"), "{text}");
        assert_eq!(text.matches("in use").count(), 1, "{text}");
    }
}
