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
}

/// How often the certificate files are checked for a new pair (cert-manager renewals).
const TLS_RELOAD: std::time::Duration = std::time::Duration::from_secs(10);

pub fn serve(args: Serve) -> anyhow::Result<ExitCode> {
    crate::init_logging();
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
        })
        .await
        .with_context(|| format!("podiam could not start with data in `{}`", data_dir.display()))?;
        let mut text = format!(
            "podiam is up at {} (account {})\n",
            server.endpoint, server.account_id
        );
        if server.first_start {
            text.push_str(&format!(
                "first start: created the administrator key, the built-in issuer and its OIDC provider in {}\n",
                data_dir.display()
            ));
        }
        text.push_str(&format!(
            "\nexport AWS_CONFIG_FILE={} AWS_SHARED_CREDENTIALS_FILE={} AWS_PROFILE=podiam\n",
            server.aws_config_file.display(),
            server.aws_credentials_file.display()
        ));
        crate::emit(&text)?;
        tokio::select! {
            r = server.wait() => r.context("the server stopped")?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::from(exit::OK))
    })
}
