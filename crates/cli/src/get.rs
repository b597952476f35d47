//! `podiam get iamserviceaccount|podidentityassociation|cluster`: eksctl's listings, as a table
//! or as JSON/YAML for scripts. Read through the server's typed operations on the data
//! directory, as the administrator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use podiam_server::local::{Admin, Role, as_admin};
use serde_json::{Value, json};

use crate::exit;

#[derive(Subcommand)]
pub enum GetCommand {
    /// IAM roles for ServiceAccounts (IRSA): roles whose trust policy names one ServiceAccount.
    #[command(visible_alias = "iamserviceaccounts")]
    Iamserviceaccount(GetIamServiceAccountArgs),
    /// EKS Pod Identity associations, of one cluster or of all.
    #[command(visible_alias = "podidentityassociations")]
    Podidentityassociation(GetAssociationArgs),
    /// Clusters registered for EKS Pod Identity, and where their keys come from.
    #[command(visible_alias = "clusters")]
    Cluster(GetClusterArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// A JSON array of objects.
    Json,
    /// A YAML list of maps.
    Yaml,
}

#[derive(Args)]
pub struct Common {
    /// Where podiam keeps its state (default: `~/.local/share/podiam`).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How to print the list.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Args)]
pub struct GetIamServiceAccountArgs {
    #[command(flatten)]
    common: Common,
    /// Only ServiceAccounts in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only the ServiceAccount with this name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
pub struct GetAssociationArgs {
    #[command(flatten)]
    common: Common,
    /// Only this cluster's associations (default: every registered cluster's).
    #[arg(long, visible_alias = "cluster-name")]
    cluster: Option<String>,
    /// Only associations in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only associations of this ServiceAccount.
    #[arg(long, visible_alias = "service-account-name")]
    service_account: Option<String>,
}

#[derive(Args)]
pub struct GetClusterArgs {
    #[command(flatten)]
    common: Common,
    /// Only the cluster with this name.
    #[arg(long)]
    name: Option<String>,
}

/// The ServiceAccounts (`namespace`, `name`) a trust policy lets assume the role with a web
/// identity: the `StringEquals` values of `<issuer>:sub` that name exactly one ServiceAccount.
pub fn irsa_subjects(role: &Role) -> Vec<(String, String)> {
    let Ok(doc) = serde_json::from_str::<Value>(&role.assume_role_policy_document) else {
        return Vec::new();
    };
    let statements = match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for s in &statements {
        let web_identity = match &s["Action"] {
            Value::String(a) => a == "sts:AssumeRoleWithWebIdentity",
            Value::Array(a) => a.iter().any(|a| a == "sts:AssumeRoleWithWebIdentity"),
            _ => false,
        };
        if s["Effect"] != "Allow" || !web_identity {
            continue;
        }
        let Some(equals) = s["Condition"]["StringEquals"].as_object() else {
            continue;
        };
        for (key, value) in equals {
            if !key.ends_with(":sub") {
                continue;
            }
            let values = match value {
                Value::String(v) => vec![v.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for v in values {
                if let Some((ns, name)) = v
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|r| r.split_once(':'))
                    && !ns.is_empty()
                    && !name.is_empty()
                    && !name.contains(':')
                {
                    out.push((ns.to_string(), name.to_string()));
                }
            }
        }
    }
    out
}

/// The IRSA roles of ServiceAccounts, with the ServiceAccount each names, filtered.
pub fn irsa_roles(
    admin: &Admin,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<(String, String, Role)>, podiam_server::local::LocalError> {
    let mut out = Vec::new();
    for role in admin.list_roles()? {
        for (ns, sa) in irsa_subjects(&role) {
            if namespace.is_none_or(|n| n == ns) && name.is_none_or(|n| n == sa) {
                out.push((ns, sa, role.clone()));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1, &a.2.role_name).cmp(&(&b.0, &b.1, &b.2.role_name)));
    Ok(out)
}

pub fn run(cmd: GetCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (output, listing) = match cmd {
            GetCommand::Iamserviceaccount(args) => {
                let dir = crate::up::data_dir(args.common.data_dir);
                (
                    args.common.output,
                    service_accounts(&dir, &args.namespace, &args.name).await?,
                )
            }
            GetCommand::Podidentityassociation(args) => {
                let dir = crate::up::data_dir(args.common.data_dir);
                let filter = (args.cluster, args.namespace, args.service_account);
                (args.common.output, associations(&dir, filter).await?)
            }
            GetCommand::Cluster(args) => {
                let dir = crate::up::data_dir(args.common.data_dir);
                (
                    args.common.output,
                    clusters(&dir, args.name.as_deref()).await?,
                )
            }
        };
        if listing.items.is_empty() && output == Format::Table {
            eprintln!("no {} found", listing.what);
            return Ok(ExitCode::from(exit::OK));
        }
        crate::emit(&render(&listing, output))?;
        Ok(ExitCode::from(exit::OK))
    })
}

async fn service_accounts(
    dir: &Path,
    namespace: &Option<String>,
    name: &Option<String>,
) -> anyhow::Result<Listing> {
    let found = as_admin(dir, async |a| {
        irsa_roles(a, namespace.as_deref(), name.as_deref())
    })
    .await?;
    let items = found
        .into_iter()
        .map(|(ns, sa, r)| {
            json!({
                "namespace": ns,
                "name": sa,
                "roleName": r.role_name,
                "roleArn": r.arn,
                "attachedPolicyArns": r.attached_policy_arns,
            })
        })
        .collect();
    Ok(Listing {
        what: "IAM service accounts",
        columns: &[
            ("NAMESPACE", "namespace"),
            ("NAME", "name"),
            ("ROLE ARN", "roleArn"),
            ("POLICIES", "attachedPolicyArns"),
        ],
        items,
    })
}

async fn associations(
    dir: &Path,
    (cluster, namespace, service_account): (Option<String>, Option<String>, Option<String>),
) -> anyhow::Result<Listing> {
    let found = as_admin(dir, async |a| {
        let names = match &cluster {
            Some(c) => vec![c.clone()],
            None => a.list_clusters()?,
        };
        let mut all = Vec::new();
        for c in names {
            all.extend(a.associations(&c)?);
        }
        Ok(all)
    })
    .await?;
    let items = found
        .into_iter()
        .filter(|a| namespace.as_deref().is_none_or(|n| a.namespace == n))
        .filter(|a| {
            service_account
                .as_deref()
                .is_none_or(|s| a.service_account == s)
        })
        .map(|a| {
            json!({
                "clusterName": a.cluster_name,
                "namespace": a.namespace,
                "serviceAccount": a.service_account,
                "roleArn": a.role_arn,
                "associationId": a.association_id,
                "associationArn": a.association_arn,
                "disableSessionTags": a.disable_session_tags,
            })
        })
        .collect();
    Ok(Listing {
        what: "pod identity associations",
        columns: &[
            ("CLUSTER", "clusterName"),
            ("ASSOCIATION ID", "associationId"),
            ("NAMESPACE", "namespace"),
            ("SERVICE ACCOUNT", "serviceAccount"),
            ("ROLE ARN", "roleArn"),
        ],
        items,
    })
}

async fn clusters(dir: &Path, name: Option<&str>) -> anyhow::Result<Listing> {
    let found = as_admin(dir, async |a| a.clusters()).await?;
    let settings = podiam_server::local::settings(dir).await?;
    let builtin = settings.get("issuer_url").map(|u| u.trim_end_matches('/'));
    let items = found
        .into_iter()
        .filter(|c| name.is_none_or(|n| c.name == n))
        .map(|c| {
            let keys = if c.static_jwks.is_some() {
                "static JWKS"
            } else if builtin == Some(c.issuer_url.trim_end_matches('/')) {
                "built-in issuer"
            } else {
                "discovery"
            };
            json!({
                "name": c.name,
                "arn": c.arn,
                "issuerUrl": c.issuer_url,
                "keys": keys,
            })
        })
        .collect();
    Ok(Listing {
        what: "clusters",
        columns: &[
            ("NAME", "name"),
            ("ISSUER", "issuerUrl"),
            ("KEYS", "keys"),
            ("ARN", "arn"),
        ],
        items,
    })
}

/// What `get` prints: objects, and the columns a table shows of them.
pub struct Listing {
    /// In "no … found".
    what: &'static str,
    /// (header, key) per column.
    columns: &'static [(&'static str, &'static str)],
    items: Vec<Value>,
}

fn render(listing: &Listing, format: Format) -> String {
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&listing.items).unwrap_or_default()
        ),
        Format::Yaml => yaml(&Value::Array(listing.items.clone()), 0),
        Format::Table => table(listing),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(listing: &Listing) -> String {
    let rows: Vec<Vec<String>> = listing
        .items
        .iter()
        .map(|item| {
            listing
                .columns
                .iter()
                .map(|(_, k)| cell(&item[*k]))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = listing
        .columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(listing.columns.iter().map(|(h, _)| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// YAML of a JSON value: block style, every string double-quoted (JSON's escaping is YAML's).
fn yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match v {
        Value::Array(a) if a.is_empty() => format!("{pad}[]\n"),
        Value::Object(o) if o.is_empty() => format!("{pad}{{}}\n"),
        Value::Array(a) => a
            .iter()
            .map(|item| {
                let body = yaml(item, indent + 2);
                // `- ` takes the place of the item's own indentation on its first line.
                format!("{pad}- {}", body.trim_start())
            })
            .collect(),
        // Keys in sorted order whatever serde_json's map keeps (its `preserve_order` feature
        // is on in some builds of the workspace and off in others).
        Value::Object(o) => {
            let mut entries: Vec<(&String, &Value)> = o.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            entries
                .into_iter()
                .map(|(k, item)| match item {
                    Value::Array(a) if !a.is_empty() => {
                        format!("{pad}{k}:\n{}", yaml(item, indent + 2))
                    }
                    Value::Object(m) if !m.is_empty() => {
                        format!("{pad}{k}:\n{}", yaml(item, indent + 2))
                    }
                    _ => format!("{pad}{k}: {}", yaml(item, 0)),
                })
                .collect()
        }
        scalar => format!("{pad}{scalar}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_of_a_list_of_maps_is_block_style_and_quoted() {
        let v = json!([{"name": "a:b", "policies": ["x", "y"], "empty": [], "n": 1}]);
        assert_eq!(
            yaml(&v, 0),
            "- empty: []\n  n: 1\n  name: \"a:b\"\n  policies:\n    - \"x\"\n    - \"y\"\n"
        );
    }

    fn role(trust: &str) -> Role {
        Role {
            role_name: "r".into(),
            path: "/".into(),
            role_id: "AROA".into(),
            arn: "arn:aws:iam::000000000000:role/r".into(),
            create_date: 0,
            assume_role_policy_document: trust.into(),
            description: None,
            max_session_duration: 3_600,
            permissions_boundary_arn: None,
            tags: Vec::new(),
            inline_policies: Default::default(),
            attached_policy_arns: Vec::new(),
            last_used: None,
        }
    }

    #[test]
    fn the_sub_condition_names_the_service_account() {
        let trust =
            crate::create::role_trust_policy("000000000000", "127.0.0.1:7780", "weasel", "pod-sa");
        assert_eq!(
            irsa_subjects(&role(&trust)),
            vec![("weasel".to_string(), "pod-sa".to_string())]
        );
        let wildcard = r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringLike":{"x:sub":"system:serviceaccount:*:*"}}}}"#;
        assert!(irsa_subjects(&role(wildcard)).is_empty());
    }
}
