//! `podiam delete iamserviceaccount|podidentityassociation`: eksctl's deletes. Like eksctl,
//! deleting an IAM service account removes the role `create iamserviceaccount` made and the
//! policy attachments on it; a role made some other way is left to `aws iam delete-role`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use podiam_server::local::{Admin, LocalError, as_admin};

use crate::exit;

#[derive(Subcommand)]
pub enum DeleteCommand {
    /// The role `podiam create iamserviceaccount` made for a ServiceAccount, with its policy
    /// attachments.
    Iamserviceaccount(DeleteIamServiceAccountArgs),
    /// An EKS Pod Identity association (its role stays: other associations may use it).
    Podidentityassociation(DeleteAssociationArgs),
}

#[derive(Args)]
pub struct DeleteIamServiceAccountArgs {
    /// Where podiam keeps its state (default: `~/.local/share/podiam`).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The ServiceAccount's name.
    #[arg(long)]
    name: String,
    /// The ServiceAccount's namespace.
    #[arg(long)]
    namespace: String,
}

#[derive(Args)]
pub struct DeleteAssociationArgs {
    /// Where podiam keeps its state (default: `~/.local/share/podiam`).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The cluster the association belongs to.
    #[arg(long, visible_alias = "cluster-name")]
    cluster: String,
    /// The association's ID (`a-…`, from `podiam get podidentityassociation`).
    #[arg(long, conflicts_with_all = ["namespace", "service_account"], required_unless_present_all = ["namespace", "service_account"])]
    association_id: Option<String>,
    /// The association's namespace (with --service-account, instead of --association-id).
    #[arg(long, requires = "service_account")]
    namespace: Option<String>,
    /// The association's ServiceAccount (with --namespace).
    #[arg(long, visible_alias = "service-account-name", requires = "namespace")]
    service_account: Option<String>,
}

pub fn run(cmd: DeleteCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cmd {
            DeleteCommand::Iamserviceaccount(args) => delete_service_account(args).await,
            DeleteCommand::Podidentityassociation(args) => delete_association(args).await,
        }
    })
}

async fn delete_service_account(args: DeleteIamServiceAccountArgs) -> anyhow::Result<ExitCode> {
    let dir = crate::up::data_dir(args.data_dir);
    let subject = format!("system:serviceaccount:{}:{}", args.namespace, args.name);
    let roles = as_admin(&dir, async |a| {
        crate::get::irsa_roles(a, Some(&args.namespace), Some(&args.name))
    })
    .await?;
    let (ours, others): (Vec<_>, Vec<_>) = roles.into_iter().partition(|(_, _, r)| {
        r.description
            .as_deref()
            .is_some_and(|d| d.ends_with(crate::create::CREATED_BY))
    });
    if ours.is_empty() {
        if let Some((_, _, r)) = others.first() {
            bail!(
                "role `{}` trusts {subject} but was not made by `podiam create iamserviceaccount`, so it is left alone: delete it with `aws iam delete-role --role-name {}` (after detaching its policies)",
                r.role_name,
                r.role_name
            );
        }
        bail!(
            "no IAM service account {}/{} (`podiam get iamserviceaccount` lists them)",
            args.namespace,
            args.name
        );
    }
    for (_, _, role) in ours {
        let name = role.role_name.clone();
        as_admin(&dir, async |a| remove_role(a, &role).await)
            .await
            .with_context(|| format!("could not delete the role `{name}`"))?;
        let n = role.attached_policy_arns.len();
        eprintln!(
            "deleted role {} for {subject} ({n} polic{} detached)",
            role.arn,
            if n == 1 { "y" } else { "ies" }
        );
    }
    Ok(ExitCode::from(exit::OK))
}

/// What eksctl's stack deletion does to the role: its attachments, its inline policies, then
/// the role. Each step is the IAM operation, with its checks.
async fn remove_role(a: &Admin, role: &podiam_server::local::Role) -> Result<(), LocalError> {
    for arn in &role.attached_policy_arns {
        a.detach_role_policy(&role.role_name, arn).await?;
    }
    for policy in role.inline_policies.keys() {
        a.delete_role_policy(&role.role_name, policy).await?;
    }
    a.delete_role(&role.role_name).await
}

async fn delete_association(args: DeleteAssociationArgs) -> anyhow::Result<ExitCode> {
    let dir = crate::up::data_dir(args.data_dir);
    let id = match (&args.association_id, &args.namespace, &args.service_account) {
        (Some(id), _, _) => id.clone(),
        (None, Some(ns), Some(sa)) => {
            let found = as_admin(&dir, async |a| a.associations(&args.cluster)).await?;
            match found
                .iter()
                .find(|a| &a.namespace == ns && &a.service_account == sa)
            {
                Some(a) => a.association_id.clone(),
                None => bail!(
                    "cluster `{}` has no association for {ns}/{sa} (`podiam get podidentityassociation --cluster {}` lists them)",
                    args.cluster,
                    args.cluster
                ),
            }
        }
        _ => bail!(
            "say which association: --association-id ID, or --namespace and --service-account"
        ),
    };
    let a = as_admin(&dir, async |a| {
        a.delete_association(&args.cluster, &id).await
    })
    .await?;
    crate::emit(&format!(
        "deleted {}  {}/{} -> {}\n",
        a.association_id, a.namespace, a.service_account, a.role_arn
    ))?;
    eprintln!(
        "the role {} stays (other associations may use it); delete it with `aws iam delete-role` when nothing does",
        a.role_arn
    );
    Ok(ExitCode::from(exit::OK))
}
