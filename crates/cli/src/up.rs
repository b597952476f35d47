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
    #[command(flatten)]
    pub upstream: crate::upstream::UpstreamArgs,
    #[command(flatten)]
    pub connections: crate::connections::ConnectionArgs,
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
        database_url: None,
        master_key_file: None,
        tls: None,
        replica_name: None,
        upstream: args.upstream,
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
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    /// Certificate and key PEM files for HTTPS, re-read when they change.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// This server's name in the audit events it writes to PostgreSQL.
    pub replica_name: Option<String>,
    /// Broker mode (`--upstream-sts`).
    pub upstream: crate::upstream::UpstreamArgs,
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
            connections: args.connections,
        })
        .await
        .map_err(|e| start_error(e, args.listen))
        .with_context(|| format!("podiam could not start with data in `{}`", data_dir.display()))?;
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
        text.push_str(&export_line(&server.aws_config_file, &server.aws_credentials_file));
        // SIGTERM (`kill`, a CI runner, Kubernetes) stops the server as Ctrl-C does, exit 0. The
        // handlers are in place before the address is printed: a signal right after it stops
        // cleanly too, instead of killing the process.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        crate::emit(&text)?;
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

/// The line to paste into a shell: paths quoted when they need it.
fn export_line(config: &std::path::Path, credentials: &std::path::Path) -> String {
    format!(
        "\nexport AWS_CONFIG_FILE={} AWS_SHARED_CREDENTIALS_FILE={} AWS_PROFILE=podiam\n",
        shell_quote(&config.display().to_string()),
        shell_quote(&credentials.display().to_string())
    )
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
        let line = export_line(
            std::path::Path::new("/home/me/.local/share/podiam/aws/config"),
            std::path::Path::new("/tmp/it's here/aws/credentials"),
        );
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
