//! `podiam create iamserviceaccount`: the `eksctl create iamserviceaccount` of podiam. Creates the
//! role with an IRSA trust policy for one ServiceAccount, attaches policies, and prints the
//! ServiceAccount manifest with its `eks.amazonaws.com/role-arn` annotation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use podiam_server::error::ErrorKind;
use podiam_server::local::{
    CreateAssociation, CreateOpenIdConnectProvider, CreateRole, JwksOf, JwksReplaced, as_admin,
    replace_jwks,
};

use crate::exit;

#[derive(Subcommand)]
pub enum CreateCommand {
    /// An IAM role for a Kubernetes ServiceAccount (IRSA), and the ServiceAccount manifest.
    Iamserviceaccount(IamServiceAccountArgs),
    /// An EKS Pod Identity association: a role (created with the Pod Identity trust policy if it
    /// does not exist) for a ServiceAccount of a registered cluster.
    Podidentityassociation(PodIdentityAssociationArgs),
    /// An IAM OIDC provider for a cluster's issuer (IRSA); with --jwks-file for an issuer podiam
    /// cannot reach (`kubectl get --raw /openid/v1/jwks > jwks.json`).
    Oidcprovider(OidcProviderArgs),
}

#[derive(Args)]
pub struct OidcProviderArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The issuer URL: the kube-apiserver's `--service-account-issuer`.
    #[arg(long)]
    url: String,
    /// The issuer's JWKS, when podiam cannot fetch it from the issuer.
    #[arg(long)]
    jwks_file: Option<PathBuf>,
    /// Audiences accepted in tokens (`aud`).
    #[arg(long = "client-id", default_value = "sts.amazonaws.com")]
    client_ids: Vec<String>,
}

async fn create_oidc_provider(args: OidcProviderArgs) -> anyhow::Result<ExitCode> {
    let data_dir = crate::up::data_dir(args.data_dir);
    let jwks = match &args.jwks_file {
        Some(f) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read `{}`", f.display()))?,
        ),
        None => None,
    };
    let input = CreateOpenIdConnectProvider {
        url: args.url.clone(),
        client_ids: args.client_ids.clone(),
        jwks: jwks.clone(),
        ..CreateOpenIdConnectProvider::default()
    };
    let provider = match as_admin(&data_dir, async |a| a.create_oidc_provider(input).await).await {
        Err(e) if e.kind() == Some(ErrorKind::EntityAlreadyExists) => {
            return provider_registered_again(&data_dir, &args.url, jwks.as_deref()).await;
        }
        other => other?,
    };
    let arn = &provider.arn;
    let keys = if jwks.is_some() {
        "the given JWKS"
    } else {
        "the issuer's discovery document"
    };
    crate::emit(&format!("{arn}\n"))?;
    eprintln!(
        "registered {} (keys from {keys}; audiences: {})",
        args.url,
        args.client_ids.join(", ")
    );
    if jwks.is_none() {
        warn_if_unreachable(
            &args.url,
            &format!(
                "kubectl get --raw /openid/v1/jwks | podiam create oidcprovider --url {} --jwks-file /dev/stdin",
                args.url
            ),
        )
        .await;
    }
    Ok(ExitCode::from(exit::OK))
}

/// How long registration tries the issuer's discovery document and JWKS, in all.
pub const ISSUER_CHECK: std::time::Duration = std::time::Duration::from_secs(3);

/// After registering an issuer without its keys: fetches them as the server will (discovery, then
/// `jwks_uri`), and if that fails says what failed and `register`, the command that gives podiam
/// the keys instead. The registration stands: the server may reach what this machine cannot.
pub async fn warn_if_unreachable(issuer: &str, register: &str) {
    if let Err(problem) = podiam_server::jwks::check_issuer(issuer, ISSUER_CHECK).await {
        eprintln!(
            "warning: cannot fetch the keys of {issuer} from this machine: {problem}\n\
             The registration stands, but tokens from this issuer will be refused (IDPCommunicationError) unless the podiam server can reach it. If it cannot (a private API server, https://kubernetes.default.svc), give podiam the keys instead, and again after the API server's signing key changes:\n  \
             {register}"
        );
    }
}

/// `create oidcprovider` for an issuer already registered: with --jwks-file, its keys are
/// replaced (the API server changed its signing key); otherwise what to do.
async fn provider_registered_again(
    data_dir: &Path,
    url: &str,
    jwks: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let settings = podiam_server::local::settings(data_dir).await?;
    let account = settings.get("account_id").cloned().unwrap_or_default();
    let id = podiam_server::iam::provider_id(url).unwrap_or_default();
    let arn = format!("arn:aws:iam::{account}:oidc-provider/{id}");
    let Some(jwks) = jwks else {
        bail!(
            "{url} is already registered as {arn}; to give it the keys the API server signs with now, run this again with --jwks-file (`kubectl get --raw /openid/v1/jwks`)"
        );
    };
    match replace_jwks(data_dir, JwksOf::OidcProvider(&arn), url, jwks).await? {
        JwksReplaced::Yes => {
            crate::emit(&format!("{arn}\n"))?;
            eprintln!("updated the keys of {url} (from the given JWKS)");
            Ok(ExitCode::from(exit::OK))
        }
        JwksReplaced::OtherIssuer(old) => {
            bail!(
                "{arn} is registered for {old}, not {url}: delete it first with `aws iam delete-open-id-connect-provider --open-id-connect-provider-arn {arn}`"
            )
        }
        JwksReplaced::Missing => bail!("{arn} was deleted meanwhile: run this again"),
    }
}

/// Fails before anything is created when a policy to attach does not exist, saying how to make it.
async fn check_policies_exist(data_dir: &Path, arns: &[String]) -> anyhow::Result<()> {
    for arn in arns {
        if !arn.starts_with("arn:") {
            return Err(crate::hint::policy_name_for_arn(data_dir, arn).await);
        }
        match as_admin(data_dir, async |a| a.get_policy(arn)).await {
            Err(e)
                if matches!(
                    e.kind(),
                    Some(ErrorKind::NoSuchEntity | ErrorKind::InvalidInput | ErrorKind::Validation)
                ) =>
            {
                if arn.starts_with("arn:aws:iam::aws:policy/") {
                    bail!(
                        "there is no AWS managed policy `{arn}` in podiam: `aws iam list-policies --scope AWS` lists the ones it ships; nothing was created"
                    );
                }
                let name = arn.rsplit('/').next().unwrap_or(arn);
                bail!(
                    "there is no policy `{arn}`: create it first with\n  aws iam create-policy --policy-name {name} --policy-document file://policy.json\nnothing was created"
                );
            }
            other => {
                other.with_context(|| format!("cannot read the policy `{arn}`"))?;
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct PodIdentityAssociationArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A cluster registered with `podiam cluster create`.
    #[arg(long, visible_alias = "cluster-name")]
    cluster: String,
    /// The ServiceAccount's namespace.
    #[arg(long)]
    namespace: String,
    /// The ServiceAccount's name.
    #[arg(long)]
    service_account: String,
    /// The role; created with the Pod Identity trust policy if it does not exist.
    #[arg(long)]
    role_name: String,
    /// Policies to attach to the role.
    #[arg(long = "permission-policy-arns", value_name = "ARN", num_args = 1..)]
    permission_policy_arns: Vec<String>,
    /// Leave out the six `kubernetes-*`/`eks-cluster-*` session tags.
    #[arg(long)]
    disable_session_tags: bool,
}

/// AWS: "pods.eks.amazonaws.com" may `sts:AssumeRole` and `sts:TagSession`.
pub const POD_IDENTITY_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"AllowEksAuthToAssumeRoleForPodIdentity","Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;

/// `document` (a role's trust policy) with the Pod Identity statement of [`POD_IDENTITY_TRUST`]
/// added, or `None` when a statement already names `pods.eks.amazonaws.com`.
fn with_pod_identity_trust(document: &str) -> anyhow::Result<Option<String>> {
    use serde_json::Value;
    fn values(v: Option<&Value>) -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.to_ascii_lowercase()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
            _ => Vec::new(),
        }
    }
    let mut policy: Value =
        serde_json::from_str(document).context("the role's trust policy is not JSON")?;
    let statements = match policy.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    };
    // A statement that names the service already is the operator's own (maybe with conditions):
    // it is left as it is, never widened.
    let names_pods = |s: &Value| {
        values(s.get("Principal").and_then(|p| p.get("Service")))
            .iter()
            .any(|p| p == "pods.eks.amazonaws.com")
    };
    if statements.iter().any(names_pods) {
        return Ok(None);
    }
    let ours: Value = serde_json::from_str(POD_IDENTITY_TRUST)?;
    let mut added = ours["Statement"][0].clone();
    let sid = added["Sid"].clone();
    if statements.iter().any(|s| s.get("Sid") == Some(&sid))
        && let Some(o) = added.as_object_mut()
    {
        o.remove("Sid");
    }
    let mut all = statements;
    all.push(added);
    let Some(object) = policy.as_object_mut() else {
        anyhow::bail!("the role's trust policy is not a JSON object");
    };
    object.insert("Statement".into(), Value::Array(all));
    Ok(Some(serde_json::to_string(&policy)?))
}

async fn create_association(args: PodIdentityAssociationArgs) -> anyhow::Result<ExitCode> {
    let data_dir = crate::up::data_dir(args.data_dir);
    let settings = podiam_server::local::settings(&data_dir).await?;
    let account = settings.get("account_id").cloned().unwrap_or_default();
    let role_arn = format!("arn:aws:iam::{account}:role/{}", args.role_name);
    let clusters = as_admin(&data_dir, async |a| a.list_clusters()).await?;
    if !clusters.contains(&args.cluster) {
        bail!(
            "no cluster named `{}` is registered (`podiam cluster list`): register it first with\n  podiam cluster create --name {} --issuer-url URL   # or --builtin for podiam's own tokens\nnothing was created",
            args.cluster,
            args.cluster
        );
    }
    check_policies_exist(&data_dir, &args.permission_policy_arns).await?;
    match as_admin(&data_dir, async |a| a.get_role(&args.role_name)).await {
        // Moving a team from IRSA keeps its role: the Pod Identity trust joins the statements
        // the role already has (EKS Auth refuses a role that does not trust it).
        Ok(role) => match with_pod_identity_trust(&role.assume_role_policy_document)? {
            None => eprintln!(
                "using existing role {role_arn} (its trust policy names pods.eks.amazonaws.com)"
            ),
            Some(document) => {
                as_admin(&data_dir, async |a| {
                    a.update_assume_role_policy(&args.role_name, &document)
                        .await
                })
                .await
                .with_context(|| {
                    format!(
                        "could not add the Pod Identity trust to `{}`",
                        args.role_name
                    )
                })?;
                eprintln!(
                    "using existing role {role_arn}: added a trust statement for pods.eks.amazonaws.com (sts:AssumeRole, sts:TagSession) next to the ones it had"
                );
            }
        },
        Err(e) if e.kind() == Some(ErrorKind::NoSuchEntity) => {
            let input = CreateRole {
                role_name: args.role_name.clone(),
                assume_role_policy_document: POD_IDENTITY_TRUST.into(),
                description: Some(
                    "EKS Pod Identity role (podiam create podidentityassociation)".into(),
                ),
                ..CreateRole::default()
            };
            as_admin(&data_dir, async |a| a.create_role(input).await).await?;
            eprintln!("created role {role_arn} trusting pods.eks.amazonaws.com");
        }
        Err(e) => return Err(e.into()),
    }
    for arn in &args.permission_policy_arns {
        as_admin(&data_dir, async |a| {
            a.attach_role_policy(&args.role_name, arn).await
        })
        .await
        .with_context(|| format!("could not attach `{arn}` to `{}`", args.role_name))?;
    }
    let input = CreateAssociation {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        role_arn: role_arn.clone(),
        disable_session_tags: args.disable_session_tags,
        ..CreateAssociation::default()
    };
    let a = match as_admin(&data_dir, async |a| {
        a.create_association(&args.cluster, input).await
    })
    .await
    {
        Err(e) if e.kind() == Some(ErrorKind::ResourceInUse) => bail!(
            "{e}: see it with `aws eks list-pod-identity-associations --cluster-name {}`, give it another role with `aws eks update-pod-identity-association`",
            args.cluster
        ),
        other => other?,
    };
    crate::emit(&format!(
        "{}  {}/{} -> {}  ({})\n",
        a.association_id, args.namespace, args.service_account, role_arn, a.association_arn
    ))?;
    Ok(ExitCode::from(exit::OK))
}

#[derive(Args)]
pub struct IamServiceAccountArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The ServiceAccount's name.
    #[arg(long)]
    name: String,
    /// The ServiceAccount's namespace.
    #[arg(long)]
    namespace: String,
    /// Policies to attach to the role.
    #[arg(long = "attach-policy-arn", value_name = "ARN")]
    attach_policy_arns: Vec<String>,
    /// The role's name; by default `NAMESPACE-NAME`.
    #[arg(long)]
    role_name: Option<String>,
    /// The cluster's OIDC issuer URL (its IAM OIDC provider must exist); by default podiam's
    /// built-in issuer.
    #[arg(long, conflicts_with = "role_arn")]
    issuer: Option<String>,
    /// Broker mode: a role in another AWS account (created there, with the trust policy of
    /// `podiam upstream trust-policy`) for the ServiceAccount's pods; binds the ServiceAccount
    /// of --cluster to it instead of creating a role here.
    #[arg(long, requires = "cluster", conflicts_with_all = ["role_name", "attach_policy_arns"])]
    role_arn: Option<String>,
    /// With --role-arn: a cluster registered with `podiam cluster create`.
    #[arg(long, visible_alias = "cluster-name", requires = "role_arn")]
    cluster: Option<String>,
}

/// Ends the description of the roles this command makes: `podiam delete iamserviceaccount`
/// deletes only those.
pub const CREATED_BY: &str = "(podiam create iamserviceaccount)";

pub fn role_trust_policy(account: &str, provider: &str, namespace: &str, name: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{account}:oidc-provider/{provider}")},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{provider}:sub"): format!("system:serviceaccount:{namespace}:{name}"),
                format!("{provider}:aud"): "sts.amazonaws.com",
            }}
        }]
    })
    .to_string()
}

pub fn run(cmd: CreateCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = match cmd {
        CreateCommand::Iamserviceaccount(args) => runtime.block_on(create(args)),
        CreateCommand::Podidentityassociation(args) => runtime.block_on(create_association(args)),
        CreateCommand::Oidcprovider(args) => runtime.block_on(create_oidc_provider(args)),
    };
    // The issuer check's DNS lookup, when it timed out, still holds a blocking thread.
    runtime.shutdown_timeout(ISSUER_CHECK);
    result
}

async fn create(args: IamServiceAccountArgs) -> anyhow::Result<ExitCode> {
    let data_dir = crate::up::data_dir(args.data_dir.clone());
    let settings = podiam_server::local::settings(&data_dir).await?;
    let account = settings.get("account_id").cloned().unwrap_or_default();
    if let (Some(role_arn), Some(cluster)) = (&args.role_arn, &args.cluster) {
        return bind_upstream_role(&data_dir, &account, cluster, role_arn, &args).await;
    }
    let issuer = args
        .issuer
        .or_else(|| settings.get("issuer_url").cloned())
        .unwrap_or_default();
    let Some(provider) = podiam_server::iam::provider_id(&issuer) else {
        bail!("`{issuer}` is not an issuer URL");
    };
    let provider_arn = format!("arn:aws:iam::{account}:oidc-provider/{provider}");
    match as_admin(&data_dir, async |a| a.get_oidc_provider(&provider_arn)).await {
        Err(e) if e.kind() == Some(ErrorKind::NoSuchEntity) => bail!(
            "there is no IAM OIDC provider for `{issuer}`: create it first with\n  aws iam create-open-id-connect-provider --url {issuer} --client-id-list sts.amazonaws.com"
        ),
        other => {
            other?;
        }
    }
    check_policies_exist(&data_dir, &args.attach_policy_arns).await?;
    let mut role_name = args
        .role_name
        .unwrap_or_else(|| format!("{}-{}", args.namespace, args.name));
    role_name.truncate(64);
    let trust = role_trust_policy(&account, &provider, &args.namespace, &args.name);
    let description = format!(
        "IRSA role for system:serviceaccount:{}:{} {CREATED_BY}",
        args.namespace, args.name
    );
    let input = CreateRole {
        role_name: role_name.clone(),
        assume_role_policy_document: trust,
        description: Some(description),
        ..CreateRole::default()
    };
    match as_admin(&data_dir, async |a| a.create_role(input).await).await {
        Err(e) if e.kind() == Some(ErrorKind::EntityAlreadyExists) => bail!(
            "a role named `{role_name}` already exists: pick another with --role-name, or delete it with `aws iam delete-role --role-name {role_name}`"
        ),
        other => {
            other?;
        }
    }
    for arn in &args.attach_policy_arns {
        as_admin(&data_dir, async |a| {
            a.attach_role_policy(&role_name, arn).await
        })
        .await
        .with_context(|| format!("created role `{role_name}` but could not attach `{arn}`"))?;
    }
    let role_arn = format!("arn:aws:iam::{account}:role/{role_name}");
    eprintln!(
        "created role {role_arn} for system:serviceaccount:{}:{} (issuer {issuer}); {} polic{} attached",
        args.namespace,
        args.name,
        args.attach_policy_arns.len(),
        if args.attach_policy_arns.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    emit_service_account(&args.name, &args.namespace, &role_arn)?;
    Ok(ExitCode::from(exit::OK))
}

/// The ServiceAccount manifest with its `eks.amazonaws.com/role-arn` annotation.
fn emit_service_account(name: &str, namespace: &str, role_arn: &str) -> anyhow::Result<()> {
    crate::emit(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  annotations:\n    eks.amazonaws.com/role-arn: {role_arn}\n"
    ))
}

/// `--role-arn` of another account: the ServiceAccount's binding to it (a pod identity
/// association, which the server's `AssumeRoleWithWebIdentity` looks up for an upstream role),
/// and the annotated ServiceAccount.
async fn bind_upstream_role(
    data_dir: &Path,
    account: &str,
    cluster: &str,
    role_arn: &str,
    args: &IamServiceAccountArgs,
) -> anyhow::Result<ExitCode> {
    let role_account = role_arn.split(':').nth(4).unwrap_or_default();
    if !role_arn.starts_with("arn:") || !role_arn.contains(":role/") {
        bail!("--role-arn `{role_arn}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)");
    }
    if role_account == account {
        bail!(
            "--role-arn `{role_arn}` is a role of this podiam's own account {account}: --role-arn is for a role of another account (broker mode); for a role here, leave out --role-arn and --cluster (and give --role-name)"
        );
    }
    let clusters = as_admin(data_dir, async |a| a.list_clusters()).await?;
    if !clusters.iter().any(|c| c == cluster) {
        bail!(
            "no cluster named `{cluster}` is registered (`podiam cluster list`): register it first with\n  podiam cluster create --name {cluster} --issuer-url URL   # or --builtin for podiam's own tokens\nnothing was created"
        );
    }
    let input = CreateAssociation {
        namespace: args.namespace.clone(),
        service_account: args.name.clone(),
        role_arn: role_arn.to_string(),
        ..CreateAssociation::default()
    };
    let a = match as_admin(data_dir, async |a| {
        a.create_association(cluster, input).await
    })
    .await
    {
        Err(e) if e.kind() == Some(ErrorKind::ResourceInUse) => bail!(
            "{e}: see it with `aws eks list-pod-identity-associations --cluster-name {cluster}`, give it this role with `aws eks update-pod-identity-association --role-arn {role_arn}`"
        ),
        other => other?,
    };
    eprintln!(
        "bound system:serviceaccount:{}:{} of cluster {cluster} to {role_arn} ({}); podiam brokers its sessions from the upstream STS (the server must run with --upstream-sts), and its pods need AWS_ENDPOINT_URL_STS pointing at podiam (the webhook's --sts-endpoint)",
        args.namespace, args.name, a.association_id
    );
    emit_service_account(&args.name, &args.namespace, role_arn)?;
    Ok(ExitCode::from(exit::OK))
}

#[cfg(test)]
mod pod_identity_trust_tests {
    use super::*;

    const IRSA: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::000000000000:oidc-provider/k"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"k:sub":"system:serviceaccount:payments:api"}}}]}"#;

    #[test]
    fn an_irsa_role_gets_the_pod_identity_statement_next_to_its_own() {
        let out = with_pod_identity_trust(IRSA).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let statements = v["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2, "{out}");
        assert_eq!(statements[0]["Action"], "sts:AssumeRoleWithWebIdentity");
        assert_eq!(
            statements[1]["Principal"]["Service"],
            "pods.eks.amazonaws.com"
        );
        assert_eq!(
            statements[1]["Action"],
            serde_json::json!(["sts:AssumeRole", "sts:TagSession"])
        );
        // Applied again, nothing changes.
        assert_eq!(with_pod_identity_trust(&out).unwrap(), None);
    }

    #[test]
    fn a_statement_naming_the_service_is_never_widened() {
        let conditional = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":["pods.eks.amazonaws.com"]},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"aws:SourceAccount":"000000000000"}}}}"#;
        assert_eq!(with_pod_identity_trust(conditional).unwrap(), None);
        assert_eq!(with_pod_identity_trust(POD_IDENTITY_TRUST).unwrap(), None);
        assert!(with_pod_identity_trust("not json").is_err());
    }
}
