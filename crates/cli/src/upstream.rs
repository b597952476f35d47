//! Broker mode on the command line: the `--upstream-*` flags of `podiam up` and `podiam server`,
//! and `podiam upstream trust-policy`, which prints the trust policy the real role needs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use podiam_server::upstream::{
    Upstream, UpstreamOptions, endpoint_url, trust_policy, trust_principal,
};

use crate::exit;

fn duration(s: &str) -> Result<Duration, String> {
    podiam_webhook::flags::parse_go_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration like 500ms, 10s or 1h"))
}

/// The `--upstream-*` flags (broker mode).
#[derive(Args, Clone, Debug)]
pub struct UpstreamArgs {
    /// Broker mode: roles of other accounts than --account-id get their sessions from this STS
    /// (`https://sts.eu-west-1.amazonaws.com`; `aws`: the regional AWS STS of --region), with
    /// the broker's credentials from the AWS SDK's default chain (environment, AWS_PROFILE,
    /// credential_process, web identity, container, IMDS).
    #[arg(long, env = "PODIAM_UPSTREAM_STS")]
    pub upstream_sts: Option<String>,
    /// Upstream calls per second at most, across all pods (AWS STS allows about 600/s per
    /// account and Region, for every STS caller of the account).
    #[arg(long, env = "PODIAM_UPSTREAM_MAX_RPS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_max_rps: u32,
    /// The most a pod's request spends on upstream (rate limit, calls, retries); keep it below
    /// the node agent's --server-timeout.
    #[arg(long, env = "PODIAM_UPSTREAM_TIMEOUT", default_value = "2500ms", value_parser = duration)]
    pub upstream_timeout: Duration,
    /// DurationSeconds of upstream sessions (the role's MaxSessionDuration must allow it).
    #[arg(long, env = "PODIAM_UPSTREAM_SESSION_DURATION", default_value = "1h", value_parser = duration)]
    pub upstream_session_duration: Duration,
    /// Do not send SourceIdentity (`<namespace>@<pod>`) upstream.
    #[arg(long, env = "PODIAM_UPSTREAM_NO_SOURCE_IDENTITY")]
    pub upstream_no_source_identity: bool,
}

impl UpstreamArgs {
    /// The server's upstream options, `None` without `--upstream-sts`.
    pub fn options(&self, region: &str) -> anyhow::Result<Option<UpstreamOptions>> {
        let Some(arg) = &self.upstream_sts else {
            return Ok(None);
        };
        let secs = self.upstream_session_duration.as_secs();
        if !(900..=43_200).contains(&secs) {
            anyhow::bail!(
                "--upstream-session-duration must be between 15m and 12h (AWS DurationSeconds 900-43200)"
            );
        }
        if self.upstream_timeout < Duration::from_millis(100) {
            anyhow::bail!("--upstream-timeout must be at least 100ms");
        }
        let mut o = UpstreamOptions::new(endpoint_url(arg, region)?, region);
        o.max_rps = self.upstream_max_rps;
        o.timeout = self.upstream_timeout;
        o.session_duration = self.upstream_session_duration;
        o.source_identity = !self.upstream_no_source_identity;
        Ok(Some(o))
    }
}

/// The banner line of a broker: who it is upstream, or why that is not known.
pub fn banner(upstream: &Upstream) -> String {
    match upstream.identity() {
        Ok(id) => format!(
            "upstream STS {}: account {}, principal {}\n",
            upstream.endpoint(),
            id.account,
            id.arn
        ),
        Err(why) => format!(
            "upstream STS {}: the broker's identity is not resolved ({why}); /readyz fails until it is\n",
            upstream.endpoint()
        ),
    }
}

#[derive(Subcommand)]
pub enum UpstreamCommand {
    /// Print the trust policy for a role in the upstream account: this broker's principal may
    /// assume it, tag the session and set its source identity, for the pods of one cluster (and
    /// namespace, and ServiceAccount).
    TrustPolicy(TrustPolicyArgs),
}

#[derive(Args)]
pub struct TrustPolicyArgs {
    /// The cluster's name in podiam (the `eks-cluster-name` session tag).
    #[arg(long, visible_alias = "cluster-name")]
    cluster: String,
    /// Only pods of this namespace (`kubernetes-namespace`).
    #[arg(long)]
    namespace: Option<String>,
    /// Only pods of this ServiceAccount (`kubernetes-service-account`).
    #[arg(long)]
    service_account: Option<String>,
    /// The upstream STS, as given to the server.
    #[arg(long, env = "PODIAM_UPSTREAM_STS", default_value = "aws")]
    upstream_sts: String,
    /// The region of the upstream STS (`aws` picks its regional endpoint).
    #[arg(long, env = "PODIAM_REGION", default_value = "us-east-1")]
    region: String,
    /// The broker's principal, instead of asking upstream (GetCallerIdentity with the broker's
    /// credentials from the default chain): needed for a role with a path.
    #[arg(long)]
    principal: Option<String>,
    /// Leave out `sts:SetSourceIdentity` (a server run with --upstream-no-source-identity).
    #[arg(long)]
    no_source_identity: bool,
}

pub fn run(cmd: UpstreamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UpstreamCommand::TrustPolicy(a) => trust(a),
    }
}

fn trust(a: TrustPolicyArgs) -> anyhow::Result<ExitCode> {
    let principal = match a.principal {
        Some(p) => p,
        None => {
            let endpoint = endpoint_url(&a.upstream_sts, &a.region)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let id = runtime.block_on(async {
                let upstream = Upstream::connect(
                    UpstreamOptions::new(endpoint.clone(), a.region.clone()),
                    Default::default(),
                )
                .await;
                upstream.resolve_identity(Duration::from_secs(15)).await
            });
            let id = id.map_err(|why| {
                anyhow::anyhow!(
                    "cannot learn the broker's principal from upstream STS `{endpoint}`: {why}; run this with the broker's AWS credentials (AWS_PROFILE, …) or give --principal ARN"
                )
            })?;
            let principal = trust_principal(&id.arn);
            if principal != id.arn {
                eprintln!(
                    "the broker is the role session {}: trusting its role {principal} (add the role's path if it has one)",
                    id.arn
                );
            }
            principal
        }
    };
    let policy = trust_policy(
        &principal,
        &a.cluster,
        a.namespace.as_deref(),
        a.service_account.as_deref(),
        !a.no_source_identity,
    );
    crate::emit(&format!("{}\n", serde_json::to_string_pretty(&policy)?))?;
    Ok(ExitCode::from(exit::OK))
}
