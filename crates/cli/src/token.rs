//! `podiam token create`: a ServiceAccount token from the built-in issuer, with the claims
//! kube-apiserver puts in a projected token.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use podiam_identity::ServiceAccountToken;
use podiam_identity::jwt::ObjectRef;

use crate::exit;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a signed projected ServiceAccount token (no trailing newline when redirected, as
    /// kubelet writes them: botocore rejects a token file that ends with one).
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The ServiceAccount's namespace (the `sub` is `system:serviceaccount:NS:SA`).
    #[arg(long)]
    namespace: String,
    /// The ServiceAccount's name.
    #[arg(long)]
    service_account: String,
    /// `aud`; `sts.amazonaws.com` for IRSA, `pods.eks.amazonaws.com` for Pod Identity.
    #[arg(long, default_value = "sts.amazonaws.com")]
    audience: Vec<String>,
    /// Seconds until `exp` (kubelet's IRSA default is 86400).
    #[arg(long, default_value_t = 86_400)]
    expiration: u64,
    /// Bind the token to this pod, as kubelet does (`kubernetes.io.pod.name`; with --pod-uid).
    #[arg(long, requires = "pod_uid")]
    pod_name: Option<String>,
    /// The bound pod's UID (with --pod-name).
    #[arg(long, requires = "pod_name")]
    pod_uid: Option<String>,
    /// The node the pod runs on (`kubernetes.io.node.name`).
    #[arg(long)]
    node_name: Option<String>,
}

fn uid() -> String {
    podiam_identity::issuer::random_uuid(&podiam_identity::SystemRng)
        .unwrap_or_else(|_| "00000000-0000-4000-8000-000000000000".into())
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Create(args) = cmd;
    if !(600..=4_294_967).contains(&args.expiration) {
        anyhow::bail!(
            "--expiration must be between 600 seconds (kube-apiserver's minimum) and 4294967"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let data_dir = crate::up::data_dir(args.data_dir);
    let token = runtime.block_on(podiam_server::local::create_token(&data_dir, |issuer| {
        ServiceAccountToken {
            issuer: issuer.to_string(),
            namespace: args.namespace.clone(),
            service_account: ObjectRef {
                name: args.service_account.clone(),
                uid: uid(),
            },
            audiences: args.audience.clone(),
            expiration: Duration::from_secs(args.expiration),
            pod: args.pod_name.clone().map(|name| ObjectRef {
                name,
                uid: args.pod_uid.clone().unwrap_or_default(),
            }),
            node: args
                .node_name
                .clone()
                .map(|name| ObjectRef { name, uid: uid() }),
            jti: Some(uid()),
        }
    }))?;
    let newline = if std::io::stdout().is_terminal() {
        "\n"
    } else {
        ""
    };
    crate::emit(&format!("{token}{newline}"))?;
    Ok(ExitCode::from(exit::OK))
}
