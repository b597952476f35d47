//! `podiam cluster create|list`: clusters registered for EKS Pod Identity.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use podiam_server::local::{EksOp, eks_as_admin};
use serde_json::json;

use crate::exit;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Register a cluster: where its ServiceAccount tokens' keys come from.
    Create(CreateArgs),
    /// The registered clusters.
    List(ListArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    name: String,
    /// The kube-apiserver's `--service-account-issuer` URL.
    #[arg(long, group = "keys")]
    issuer_url: Option<String>,
    /// The cluster's JWKS (`kubectl get --raw /openid/v1/jwks > jwks.json`), for an issuer podiam
    /// cannot reach; needs --issuer-url too (the tokens' `iss`).
    #[arg(long, requires = "issuer_url")]
    jwks_file: Option<PathBuf>,
    /// Tokens come from podiam's built-in issuer (`podiam token create`): laptops and tests.
    #[arg(long, group = "keys")]
    builtin: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cmd {
            ClusterCommand::Create(args) => {
                if !args.builtin && args.issuer_url.is_none() {
                    bail!("say where the cluster's keys come from: --issuer-url URL [--jwks-file F], or --builtin");
                }
                let mut body = json!({"name": args.name, "builtin": args.builtin});
                if let Some(u) = &args.issuer_url {
                    body["issuerUrl"] = json!(u);
                }
                if let Some(f) = &args.jwks_file {
                    let text = std::fs::read_to_string(f).with_context(|| format!("cannot read `{}`", f.display()))?;
                    body["jwks"] = json!(text);
                }
                let data_dir = crate::up::data_dir(args.data_dir);
                let out = eks_as_admin(&data_dir, EksOp::CreateCluster(body)).await?;
                let c = &out["cluster"];
                crate::emit(&format!(
                    "registered cluster {} ({}), tokens issued by {}\n",
                    c["name"].as_str().unwrap_or_default(),
                    c["arn"].as_str().unwrap_or_default(),
                    c["identity"]["oidc"]["issuer"].as_str().unwrap_or_default()
                ))?;
            }
            ClusterCommand::List(args) => {
                let data_dir = crate::up::data_dir(args.data_dir);
                let out = eks_as_admin(&data_dir, EksOp::ListClusters).await?;
                let mut text = String::new();
                for name in out["clusters"].as_array().into_iter().flatten() {
                    text.push_str(name.as_str().unwrap_or_default());
                    text.push('\n');
                }
                crate::emit(&text)?;
            }
        }
        Ok(ExitCode::from(exit::OK))
    })
}
