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
    /// IRSA straight to AWS, without a broker: the OIDC discovery document and JWKS of a
    /// cluster's issuer, for a static host (an S3 bucket) at --issuer-url, and the
    /// kube-apiserver flags and `aws iam create-open-id-connect-provider` command to go with them.
    OidcDocuments(OidcDocumentsArgs),
    /// Remove a cluster and its Pod Identity associations (their roles stay).
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct OidcDocumentsArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A cluster registered with `podiam cluster create` (--builtin, or --issuer-url with
    /// --jwks-file).
    #[arg(long)]
    name: String,
    /// The public https:// URL the documents will be served at (the bucket and prefix): the
    /// issuer of the cluster's tokens from now on.
    #[arg(long)]
    issuer_url: String,
    /// The directory to write `.well-known/openid-configuration` and `openid/v1/jwks` into.
    #[arg(long)]
    out: PathBuf,
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
            ClusterCommand::OidcDocuments(args) => return oidc_documents_command(args).await,
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

/// The two documents AWS reads from an issuer (IAM `CreateOpenIDConnectProvider`, then STS on
/// every `AssumeRoleWithWebIdentity`).
#[derive(Debug)]
pub struct OidcDocuments {
    /// `.well-known/openid-configuration`.
    pub discovery: String,
    /// `openid/v1/jwks`, under the issuer.
    pub jwks: String,
    pub jwks_uri: String,
}

/// The discovery document for `issuer_url` (`https://`, no query or fragment: AWS's rules for
/// an OIDC provider URL) and the JWKS, checked to be what AWS accepts: RSA keys with `kid`,
/// `n` and `e`, for RS256.
pub fn oidc_documents(issuer_url: &str, jwks: &str) -> anyhow::Result<OidcDocuments> {
    let issuer = issuer_url.trim_end_matches('/');
    let host = issuer.strip_prefix("https://").unwrap_or_default();
    if host.is_empty() || host.starts_with('/') || issuer.contains(['?', '#']) {
        bail!(
            "--issuer-url `{issuer_url}` must be an https:// URL without a query or fragment (AWS's rule for OIDC providers)"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_str(jwks).context("the cluster's JWKS is not JSON")?;
    let keys = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .filter(|k| !k.is_empty())
        .context("the cluster's JWKS has no `keys`")?;
    for (i, k) in keys.iter().enumerate() {
        let field = |name: &str| k.get(name).and_then(serde_json::Value::as_str);
        let kid = field("kid").unwrap_or_default();
        if field("kty") != Some("RSA")
            || kid.is_empty()
            || field("n").is_none()
            || field("e").is_none()
        {
            bail!(
                "key {i} (`{kid}`) of the cluster's JWKS is not an RSA key with kid, n and e: AWS verifies RS256 tokens only"
            );
        }
        if field("alg").is_some_and(|a| a != "RS256") {
            bail!(
                "key `{kid}` of the cluster's JWKS is for {}, not RS256",
                field("alg").unwrap_or_default()
            );
        }
    }
    let discovery = podiam_identity::OidcDiscovery::for_issuer(issuer);
    Ok(OidcDocuments {
        jwks_uri: discovery.jwks_uri.clone(),
        discovery: serde_json::to_string_pretty(&discovery)?,
        jwks: serde_json::to_string_pretty(&doc)?,
    })
}

async fn oidc_documents_command(args: OidcDocumentsArgs) -> anyhow::Result<ExitCode> {
    let data_dir = crate::up::data_dir(args.data_dir);
    let Some(keys) = podiam_server::local::cluster_keys(&data_dir, &args.name).await? else {
        bail!(
            "no cluster named `{}` is registered (`podiam cluster list`): register it first with\n  podiam cluster create --name {} --issuer-url URL --jwks-file jwks.json   # kubectl get --raw /openid/v1/jwks > jwks.json",
            args.name,
            args.name
        );
    };
    let Some(jwks) = &keys.jwks else {
        bail!(
            "podiam fetches the keys of cluster `{}` from {}: give it the JWKS instead, so that the documents hold the very keys the API server signs with:\n  kubectl get --raw /openid/v1/jwks | podiam cluster create --name {} --issuer-url {} --jwks-file /dev/stdin",
            args.name,
            keys.issuer_url,
            args.name,
            keys.issuer_url
        );
    };
    let docs = oidc_documents(&args.issuer_url, jwks)?;
    let issuer = args.issuer_url.trim_end_matches('/');
    let write = |rel: &str, text: &str| -> anyhow::Result<()> {
        let path = args.out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))
    };
    write(".well-known/openid-configuration", &docs.discovery)?;
    write("openid/v1/jwks", &docs.jwks)?;
    let out = args.out.display();
    let mut text = format!(
        "wrote {out}/.well-known/openid-configuration and {out}/openid/v1/jwks: serve them at {issuer} (public read, Content-Type application/json), e.g.\n  aws s3 cp {out}/ s3://BUCKET/PREFIX/ --recursive --content-type application/json\n\n"
    );
    if keys.builtin {
        text.push_str(&format!(
            "podiam's built-in issuer signs these tokens: start podiam with --issuer-url {issuer} so that they carry it as `iss`\n\n"
        ));
    } else {
        text.push_str(&format!(
            "kube-apiserver flags (the API server then issues tokens as {issuer}):\n  --service-account-issuer={issuer}\n  --service-account-jwks-uri={}\n\n",
            docs.jwks_uri
        ));
    }
    text.push_str(&format!(
        "the IAM OIDC provider in your AWS account:\n  aws iam create-open-id-connect-provider --url {issuer} --client-id-list sts.amazonaws.com\n"
    ));
    crate::emit(&text)?;
    Ok(ExitCode::from(exit::OK))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

    use std::time::SystemTime;

    use podiam_identity::{
        FixedClock, IssuerKey, IssuerKeyRing, Jwks, ServiceAccountToken, UnverifiedJwt, Validation,
    };
    use serde_json::Value;

    use super::oidc_documents;

    const URL: &str = "https://bucket.s3.eu-west-1.amazonaws.com/prod";

    #[test]
    fn the_documents_are_what_aws_requires_and_a_token_verifies_against_them() {
        let now = SystemTime::now();
        let ring = IssuerKeyRing::new(vec![IssuerKey::generate(now).unwrap()]);
        let jwks = serde_json::to_string(&ring.jwks(now)).unwrap();
        let docs = oidc_documents(&format!("{URL}/"), &jwks).unwrap();

        let d: Value = serde_json::from_str(&docs.discovery).unwrap();
        assert_eq!(d["issuer"], URL, "issuer equals the URL, without the slash");
        let jwks_uri = d["jwks_uri"].as_str().unwrap();
        assert_eq!(jwks_uri, format!("{URL}/openid/v1/jwks"));
        assert_eq!(
            d["id_token_signing_alg_values_supported"],
            serde_json::json!(["RS256"])
        );
        assert_eq!(
            d["response_types_supported"],
            serde_json::json!(["id_token"])
        );
        let j: Value = serde_json::from_str(&docs.jwks).unwrap();
        for k in j["keys"].as_array().unwrap() {
            for field in ["kid", "n", "e"] {
                assert!(
                    k[field].as_str().is_some_and(|v| !v.is_empty()),
                    "{field} in {k}"
                );
            }
            assert_eq!(k["kty"], "RSA");
        }

        // A token the cluster signs as the new issuer verifies against the written JWKS.
        let claims = ServiceAccountToken::new(URL, "ns", "sa", "sts.amazonaws.com").claims(now);
        let token = ring.sign(&claims, now).unwrap();
        let written = Jwks::from_json(docs.jwks.as_bytes()).unwrap();
        let verified = UnverifiedJwt::parse(&token)
            .unwrap()
            .verify(
                &written,
                &Validation::new(URL, ["sts.amazonaws.com".to_string()]),
                &FixedClock(now),
            )
            .unwrap();
        assert_eq!(
            verified.into_claims().subject(),
            Some("system:serviceaccount:ns:sa")
        );
        // And not against another key set.
        let other = IssuerKeyRing::new(vec![IssuerKey::generate(now).unwrap()]);
        let other =
            Jwks::from_json(serde_json::to_string(&other.jwks(now)).unwrap().as_bytes()).unwrap();
        assert!(
            UnverifiedJwt::parse(&token)
                .unwrap()
                .verify(
                    &other,
                    &Validation::new(URL, ["sts.amazonaws.com".to_string()]),
                    &FixedClock(now)
                )
                .is_err()
        );
    }

    #[test]
    fn what_aws_would_refuse_is_refused_here() {
        let rsa = r#"{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}"#;
        for url in ["http://x.example", "https://", "https://x.example/?a=b"] {
            assert!(oidc_documents(url, rsa).is_err(), "{url}");
        }
        let bad = [
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"EC","kid":"k","x":"a","y":"b"}]}"#,
            r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#,
            r#"{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB","alg":"RS512"}]}"#,
        ];
        for jwks in bad {
            assert!(oidc_documents(URL, jwks).is_err(), "{jwks}");
        }
        assert!(oidc_documents(URL, rsa).is_ok());
    }
}
