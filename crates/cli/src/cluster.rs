//! `podiam cluster create|list|delete`: clusters registered for EKS Pod Identity.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use podiam_server::error::ErrorKind;
use podiam_server::local::{CreateCluster, JwksOf, JwksReplaced, as_admin, replace_jwks};

use crate::exit;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Register a cluster: where its ServiceAccount tokens' keys come from.
    Create(CreateArgs),
    /// The registered clusters.
    List(ListArgs),
    /// Remove a cluster and its Pod Identity associations (their roles stay).
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Where podiam keeps its state (default: `~/.local/share/podiam`).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The cluster's name.
    #[arg(long)]
    name: String,
}

#[derive(Args)]
// Say where the cluster's keys come from: --issuer-url URL [--jwks-file F], or --builtin.
#[command(group(clap::ArgGroup::new("keys").required(true)))]
pub struct CreateArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The cluster's name (EKS's `clusterName`, used by `--cluster` elsewhere).
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
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match cmd {
            ClusterCommand::Create(args) => {
                let jwks = match &args.jwks_file {
                    Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("cannot read `{}`", f.display()))?),
                    None => None,
                };
                let input = CreateCluster {
                    name: args.name.clone(),
                    builtin: args.builtin,
                    issuer_url: args.issuer_url.clone(),
                    jwks: jwks.clone(),
                    ..CreateCluster::default()
                };
                let data_dir = crate::up::data_dir(args.data_dir);
                let c = match as_admin(&data_dir, async |a| a.create_cluster(input).await).await {
                    Err(e) if e.kind() == Some(ErrorKind::ResourceInUse) => {
                        return registered_again(&data_dir, &args.name, args.issuer_url.as_deref(), jwks.as_deref()).await;
                    }
                    other => other?,
                };
                crate::emit(&format!(
                    "registered cluster {} ({}), tokens issued by {}\n",
                    c.name, c.arn, c.issuer_url
                ))?;
                if let (Some(url), None) = (&args.issuer_url, &jwks) {
                    crate::create::warn_if_unreachable(
                        url,
                        &format!(
                            "kubectl get --raw /openid/v1/jwks | podiam cluster create --name {} --issuer-url {url} --jwks-file /dev/stdin",
                            args.name
                        ),
                    )
                    .await;
                }
            }
            ClusterCommand::Delete(args) => {
                let data_dir = crate::up::data_dir(args.data_dir);
                // As `eksctl delete cluster`: what lives in the cluster goes with it.
                let (associations, c) = as_admin(&data_dir, async |a| {
                    let associations = a.associations(&args.name)?;
                    for x in &associations {
                        a.delete_association(&args.name, &x.association_id).await?;
                    }
                    Ok((associations, a.delete_cluster(&args.name).await?))
                })
                .await?;
                for x in &associations {
                    eprintln!("deleted association {} ({}/{} -> {})", x.association_id, x.namespace, x.service_account, x.role_arn);
                }
                crate::emit(&format!("deleted cluster {} ({})\n", c.name, c.arn))?;
            }
            ClusterCommand::List(args) => {
                let data_dir = crate::up::data_dir(args.data_dir);
                let names = as_admin(&data_dir, async |a| a.list_clusters()).await?;
                let mut text = String::new();
                for name in names {
                    text.push_str(&name);
                    text.push('\n');
                }
                crate::emit(&text)?;
            }
        }
        Ok(ExitCode::from(exit::OK))
    });
    // The issuer check's DNS lookup, when it timed out, still holds a blocking thread.
    runtime.shutdown_timeout(crate::create::ISSUER_CHECK);
    result
}

/// `cluster create` for a name already registered: with --jwks-file and the same issuer, the
/// cluster's keys are replaced (its API server changed its signing key); otherwise what to do.
async fn registered_again(
    data_dir: &std::path::Path,
    name: &str,
    issuer_url: Option<&str>,
    jwks: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (Some(url), Some(jwks)) = (issuer_url, jwks) else {
        bail!(
            "cluster `{name}` is already registered (`podiam cluster list`); to give it the keys its API server signs with now, run this again with --issuer-url and --jwks-file"
        );
    };
    match replace_jwks(data_dir, JwksOf::Cluster(name), url, jwks).await? {
        JwksReplaced::Yes => {
            crate::emit(&format!(
                "updated the keys of cluster {name} (tokens issued by {url})\n"
            ))?;
            Ok(ExitCode::from(exit::OK))
        }
        JwksReplaced::OtherIssuer(old) => bail!(
            "cluster `{name}` is registered with issuer {old}, not {url}: register this one under another --name"
        ),
        JwksReplaced::Missing => bail!("cluster `{name}` was deleted meanwhile: run this again"),
    }
}
