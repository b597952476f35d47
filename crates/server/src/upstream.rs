//! Broker mode: credentials of another AWS account's roles, from that account's STS.
//!
//! A role whose ARN names another account than podiam's own (`--account-id`) is an *upstream
//! role*. podiam verifies the pod (its token, the association) exactly as for its own roles, then
//! asks the upstream STS (`--upstream-sts`, real AWS STS in production) for the session with
//! `AssumeRole`: the pod's session tags, a `SourceIdentity` naming the pod, the association's
//! session policy. The role's trust policy in that account decides; podiam only relays.
//!
//! The broker's own AWS identity comes from the AWS SDK's default credential chain
//! (`aws-config`: environment, shared config and credentials files with `AWS_PROFILE`,
//! `credential_process` such as IAM Roles Anywhere's signing helper, web identity, container,
//! IMDS); every upstream call goes through `aws-sdk-sts` (SigV4, endpoint, error parsing).
//!
//! Upstream is a shared, throttled resource (AWS STS: about 600 requests/s per account and
//! Region, for every STS caller of the account), so:
//! - credentials are cached per (association, pod UID) until shortly before they expire, and
//!   concurrent requests for one key make one call ([`cache`]);
//! - calls are spaced by `--upstream-max-rps` ([`limiter`]); the SDK's own retries are off, so
//!   that every attempt passes the limit, and throttling is retried here with backoff within the
//!   request's time budget (`--upstream-timeout`), then answered as EKS Auth's
//!   `ThrottlingException`;
//! - while upstream cannot be reached, cached credentials are served until they expire; a pod
//!   with nothing cached gets an error that names the upstream.
//!
//! Secrets (the broker's credentials, upstream session tokens) are held in memory only and never
//! logged: [`Issued`]'s `Debug` leaves them out.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use podiam_identity::credentials::SecretAccessKey;
use serde_json::Value;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::error::AwsError;
use crate::state::Config;

pub use crate::metrics::UpstreamMetrics;

mod cache;
mod limiter;

pub(crate) use cache::{Key as CacheKey, Via};

/// Calls per pod request at most: the first attempt and two retries of throttling or a
/// transient failure.
const MAX_ATTEMPTS: u32 = 3;
/// Cached credentials with less than this left are not handed out (the SDKs would refresh them
/// at once anyway).
const MIN_SERVED: Duration = Duration::from_secs(30);
/// Credentials are fetched again this long before they expire (at most a quarter of their
/// lifetime): the SDKs refresh container credentials 15 minutes ahead.
const REFRESH_AHEAD: Duration = Duration::from_secs(15 * 60);

// === configuration ===

/// How to reach the upstream STS.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// The regional STS endpoint (`https://sts.eu-west-1.amazonaws.com`): see [`endpoint_url`].
    pub endpoint: String,
    /// The signing region.
    pub region: String,
    /// Upstream calls per second at most, across all pods.
    pub max_rps: u32,
    /// The most a pod's request spends on upstream (waiting for the rate limit, calls and
    /// retries). Below the node agent's timeout (3 s), so that it gets an answer, not a timeout.
    pub timeout: Duration,
    /// `DurationSeconds` of the sessions asked for (the role's MaxSessionDuration must allow it;
    /// a chained session is at most an hour, as AWS caps role chaining).
    pub session_duration: Duration,
    /// Send `SourceIdentity` (`<namespace>@<pod>`), which names the pod in CloudTrail and in
    /// every session chained from it.
    pub source_identity: bool,
    /// The broker's credentials; `None`: the AWS SDK's default chain.
    pub credentials: Option<aws_sdk_sts::config::SharedCredentialsProvider>,
}

impl UpstreamOptions {
    /// Defaults for `endpoint` (already resolved by [`endpoint_url`]) and `region`.
    pub fn new(endpoint: impl Into<String>, region: impl Into<String>) -> UpstreamOptions {
        UpstreamOptions {
            endpoint: endpoint.into(),
            region: region.into(),
            max_rps: 50,
            timeout: Duration::from_millis(2500),
            session_duration: Duration::from_secs(3600),
            source_identity: true,
            credentials: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamConfigError {
    #[error(
        "--upstream-sts `{0}` must be an http(s):// URL, or `aws` for the regional endpoint of --region"
    )]
    Endpoint(String),
    #[error("--region `{0}` is not an AWS Region name such as `eu-west-1`")]
    Region(String),
}

/// `--upstream-sts`: a URL as given, or `aws` for the regional AWS STS endpoint of `region`
/// (`https://sts.<region>.amazonaws.com`; `.amazonaws.com.cn` in the China Regions).
pub fn endpoint_url(arg: &str, region: &str) -> Result<String, UpstreamConfigError> {
    if arg == "aws" {
        let valid = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(UpstreamConfigError::Region(region.to_string()));
        }
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        return Ok(format!("https://sts.{region}.{suffix}"));
    }
    let rest = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(arg.trim_end_matches('/').to_string()),
        _ => Err(UpstreamConfigError::Endpoint(arg.to_string())),
    }
}

// === upstream's answers ===

/// Who the broker is upstream (`GetCallerIdentity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Credentials an upstream STS issued for a pod.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: SecretAccessKey,
    pub(crate) session_token: String,
    pub(crate) expiration: SystemTime,
    /// When podiam received them (their lifetime decides when to refresh).
    pub(crate) received: SystemTime,
    /// `AssumedRoleUser.Arn`: `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub(crate) assumed_role_arn: String,
    /// `AssumedRoleUser.AssumedRoleId`: `AROA…:SESSION`.
    pub(crate) assumed_role_id: String,
    pub(crate) session_name: String,
    /// Upstream's request IDs (two when the session was chained into a target role): CloudTrail
    /// has them.
    pub(crate) request_ids: Vec<String>,
    /// The `SourceIdentity` sent (and kept through chaining).
    pub(crate) source_identity: Option<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .field("request_ids", &self.request_ids)
            .finish_non_exhaustive()
    }
}

impl Issued {
    pub(crate) fn remaining(&self, now: SystemTime) -> Duration {
        self.expiration
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// Due for a new fetch: within [`REFRESH_AHEAD`] (a quarter of the lifetime for short ones)
    /// of expiring.
    fn refresh_due(&self, now: SystemTime) -> bool {
        let lifetime = self
            .expiration
            .duration_since(self.received)
            .unwrap_or(Duration::ZERO);
        self.remaining(now) < REFRESH_AHEAD.min(lifetime / 4)
    }
}

/// Where a pod's upstream credentials came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// From the cache.
    Hit,
    /// Fetched now.
    Miss,
    /// From the cache, after upstream could not give new ones (unreachable, throttled).
    Stale,
}

impl Served {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::Miss => "miss",
            Served::Stale => "stale",
        }
    }
}

/// What upstream answered to a failed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// Why upstream gave no credentials. [`crate::error`] decides what each is to the pod.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    #[error(
        "podiam's rate limit for upstream STS `{endpoint}` is reached ({max_rps} calls/s, --upstream-max-rps): retry shortly"
    )]
    RateLimited { endpoint: String, max_rps: u32 },
    #[error(
        "upstream STS `{endpoint}` throttled {operation} ({attempts} attempts): {code}: {message}",
        code = answer.code, message = answer.message
    )]
    Throttled {
        endpoint: String,
        operation: &'static str,
        attempts: u32,
        answer: Box<Answer>,
    },
    #[error("upstream STS `{endpoint}` cannot be reached for {operation}: {reason}")]
    Unreachable {
        endpoint: String,
        operation: &'static str,
        reason: String,
    },
    #[error("upstream STS `{endpoint}` did not answer {operation} within {timeout_ms} ms")]
    Timeout {
        endpoint: String,
        operation: &'static str,
        timeout_ms: u128,
    },
    #[error(
        "upstream STS `{endpoint}` failed {operation} (HTTP {status}): {code}: {message}",
        status = answer.status, code = answer.code, message = answer.message
    )]
    Failed {
        endpoint: String,
        operation: &'static str,
        answer: Box<Answer>,
    },
    #[error(
        "upstream STS `{endpoint}` refused {operation}{role}: {code}: {message}",
        role = role.as_deref().map(|r| format!(" of `{r}`")).unwrap_or_default(),
        code = answer.code, message = answer.message
    )]
    Refused {
        endpoint: String,
        operation: &'static str,
        role: Option<String>,
        answer: Box<Answer>,
    },
    #[error("podiam cannot call upstream STS `{endpoint}` ({operation}): {reason}")]
    Request {
        endpoint: String,
        operation: &'static str,
        reason: String,
    },
    #[error("upstream STS `{endpoint}` answered {operation} without {missing}")]
    Malformed {
        endpoint: String,
        operation: &'static str,
        missing: &'static str,
    },
}

impl UpstreamFailure {
    /// Upstream's request ID, when it answered.
    pub(crate) fn request_id(&self) -> Option<&str> {
        match self {
            UpstreamFailure::Throttled { answer, .. }
            | UpstreamFailure::Failed { answer, .. }
            | UpstreamFailure::Refused { answer, .. } => answer.request_id.as_deref(),
            _ => None,
        }
    }

    /// Upstream could not answer (rather than said no): cached credentials may stand in.
    fn is_outage(&self) -> bool {
        !matches!(
            self,
            UpstreamFailure::Refused { .. } | UpstreamFailure::Malformed { .. }
        )
    }
}

/// What to ask upstream for one pod.
pub(crate) struct PodSession<'a> {
    pub(crate) key: CacheKey,
    pub(crate) role_arn: &'a str,
    /// The association's `targetRoleArn`: chained into with the first session's credentials.
    pub(crate) target_role_arn: Option<&'a str>,
    pub(crate) external_id: Option<&'a str>,
    pub(crate) session_name: String,
    /// The six EKS session tags (empty when the association disables them).
    pub(crate) tags: &'a [(String, String)],
    /// The association's session policy (for the target role's session when chaining).
    pub(crate) policy: Option<&'a str>,
    pub(crate) source_identity: Option<String>,
    /// `DurationSeconds`: the request's (IRSA), or `--upstream-session-duration`.
    pub(crate) duration: Option<Duration>,
}

// === the upstream client ===

enum Status {
    Resolving,
    Resolved(CallerIdentity),
    Unresolved(String),
}

/// The upstream STS, the broker's identity there, the rate limit and the credential cache.
pub struct Upstream {
    options: UpstreamOptions,
    client: aws_sdk_sts::Client,
    limiter: limiter::Limiter,
    cache: cache::Cache,
    status: RwLock<Status>,
    metrics: UpstreamMetrics,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("endpoint", &self.options.endpoint)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The client, with the broker's credentials from `options` or the default chain (read
    /// lazily, on the first call, and refreshed by the SDK before they expire).
    pub async fn connect(options: UpstreamOptions, metrics: UpstreamMetrics) -> Upstream {
        use aws_sdk_sts::config::{BehaviorVersion, Region, retry::RetryConfig, timeout};
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(options.region.clone()));
        if let Some(c) = &options.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let sdk = loader.load().await;
        let config = aws_sdk_sts::config::Builder::from(&sdk)
            .endpoint_url(options.endpoint.clone())
            // Retries are ours: each attempt must pass the rate limit.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .build(),
            )
            .build();
        Upstream {
            limiter: limiter::Limiter::new(options.max_rps),
            client: aws_sdk_sts::Client::from_conf(config),
            options,
            cache: cache::Cache::default(),
            status: RwLock::new(Status::Resolving),
            metrics,
        }
    }

    pub fn options(&self) -> &UpstreamOptions {
        &self.options
    }

    pub fn endpoint(&self) -> &str {
        &self.options.endpoint
    }

    /// The broker's upstream identity, or why it is not known (yet).
    pub fn identity(&self) -> Result<CallerIdentity, String> {
        match &*self.status.read().unwrap_or_else(PoisonError::into_inner) {
            Status::Resolved(id) => Ok(id.clone()),
            Status::Resolving => Err("not resolved yet".into()),
            Status::Unresolved(why) => Err(why.clone()),
        }
    }

    /// `GetCallerIdentity` with the broker's credentials, within `budget`; remembers the answer
    /// (readiness and the banner ask [`Upstream::identity`]).
    pub async fn resolve_identity(&self, budget: Duration) -> Result<CallerIdentity, String> {
        let deadline = Instant::now() + budget;
        let result = self
            .call("GetCallerIdentity", None, deadline, || {
                self.client.get_caller_identity().send()
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|out| match (out.account(), out.arn(), out.user_id()) {
                (Some(account), Some(arn), Some(user_id)) => Ok(CallerIdentity {
                    account: account.to_string(),
                    arn: arn.to_string(),
                    user_id: user_id.to_string(),
                }),
                _ => Err(format!(
                    "upstream STS `{}` answered GetCallerIdentity without Account, Arn and UserId",
                    self.options.endpoint
                )),
            });
        let status = match &result {
            Ok(id) => Status::Resolved(id.clone()),
            Err(why) => Status::Unresolved(why.clone()),
        };
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = status;
        result
    }

    /// Retries [`Upstream::resolve_identity`] until it succeeds (2 s, doubling to 30 s between
    /// attempts).
    pub async fn keep_resolving(self: Arc<Self>) {
        let mut pause = Duration::from_secs(2);
        while self.identity().is_err() {
            tokio::time::sleep(pause).await;
            match self.resolve_identity(Duration::from_secs(10)).await {
                Ok(id) => {
                    tracing::info!(upstream = %self.options.endpoint, account = %id.account, principal = %id.arn, "upstream identity resolved");
                }
                Err(why) => {
                    tracing::warn!(upstream = %self.options.endpoint, %why, "the broker's upstream identity is not resolved");
                }
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// A pod's credentials: cached, or from upstream (one call per key at a time).
    pub(crate) async fn pod_credentials(
        &self,
        s: &PodSession<'_>,
        now: SystemTime,
    ) -> Result<(Arc<Issued>, Served), UpstreamFailure> {
        let asked = Instant::now();
        let slot = self.cache.slot(&s.key, now);
        let mut slot = slot.lock().await;
        let served = |how: Served, i: &Arc<Issued>| {
            self.metrics.count_cache(how.as_str());
            Ok((Arc::clone(i), how))
        };
        if let Some(i) = slot.usable(now, MIN_SERVED)
            && !i.refresh_due(now)
        {
            return served(Served::Hit, i);
        }
        // A call made while this request waited for the slot failed: its answer is this one's.
        if let Some((at, f)) = &slot.failed
            && *at >= asked
        {
            return match slot.usable(now, MIN_SERVED) {
                Some(i) if f.is_outage() => served(Served::Stale, i),
                _ => Err(f.clone()),
            };
        }
        match self.assume_pod_role(s, asked + self.options.timeout).await {
            Ok(i) => {
                let i = Arc::new(i);
                slot.issued = Some(Arc::clone(&i));
                slot.failed = None;
                served(Served::Miss, &i)
            }
            Err(f) => {
                slot.failed = Some((Instant::now(), f.clone()));
                if !f.is_outage() {
                    // Upstream said no: what it gave before is not handed out again.
                    slot.issued = None;
                }
                match slot.usable(now, MIN_SERVED) {
                    Some(i) => {
                        tracing::warn!(error = %f, pod_uid = %s.key.pod_uid, "serving cached upstream credentials");
                        served(Served::Stale, i)
                    }
                    None => Err(f),
                }
            }
        }
    }

    /// `AssumeRole` of the association's role, then of its target role with the first
    /// session's credentials.
    async fn assume_pod_role(
        &self,
        s: &PodSession<'_>,
        deadline: Instant,
    ) -> Result<Issued, UpstreamFailure> {
        let duration = s.duration.unwrap_or(self.options.session_duration);
        let duration = i32::try_from(duration.as_secs()).unwrap_or(3600);
        let tags: Vec<aws_sdk_sts::types::Tag> = s
            .tags
            .iter()
            .filter_map(|(k, v)| {
                aws_sdk_sts::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .ok()
            })
            .collect();
        let transitive: Vec<String> = s.tags.iter().map(|(k, _)| k.clone()).collect();
        // AWS: with a target role, the association's policy applies to the target session.
        let first_policy = if s.target_role_arn.is_some() {
            None
        } else {
            s.policy
        };
        let first = self
            .call("AssumeRole", Some(s.role_arn), deadline, || {
                self.client
                    .assume_role()
                    .role_arn(s.role_arn)
                    .role_session_name(&s.session_name)
                    .duration_seconds(duration)
                    .set_tags((!tags.is_empty()).then(|| tags.clone()))
                    .set_transitive_tag_keys((!transitive.is_empty()).then(|| transitive.clone()))
                    .set_policy(first_policy.map(str::to_string))
                    .set_source_identity(s.source_identity.clone())
                    .send()
            })
            .await?;
        let mut request_ids: Vec<String> =
            first.request_id().map(str::to_string).into_iter().collect();
        let first = self.issued(
            first.credentials(),
            first.assumed_role_user(),
            &s.session_name,
        )?;
        let Some(target) = s.target_role_arn else {
            return Ok(Issued {
                request_ids,
                source_identity: s.source_identity.clone(),
                ..first
            });
        };
        // AWS: the session tags are transitive and the source identity persists, so the chained
        // session inherits both; passing them again would be an attempt to override them.
        let chained = aws_sdk_sts::config::Credentials::new(
            first.access_key_id.clone(),
            first.secret_access_key.expose_secret().to_string(),
            Some(first.session_token.clone()),
            Some(first.expiration),
            "podiam-broker-chain",
        );
        let second = self
            .call("AssumeRole", Some(target), deadline, || {
                self.client
                    .assume_role()
                    .role_arn(target)
                    .role_session_name(&s.session_name)
                    // AWS: a chained session lasts an hour at most.
                    .duration_seconds(duration.min(3600))
                    .set_external_id(s.external_id.map(str::to_string))
                    .set_policy(s.policy.map(str::to_string))
                    .customize()
                    .config_override(
                        aws_sdk_sts::config::Builder::default()
                            .credentials_provider(chained.clone()),
                    )
                    .send()
            })
            .await?;
        request_ids.extend(second.request_id().map(str::to_string));
        let second = self.issued(
            second.credentials(),
            second.assumed_role_user(),
            &s.session_name,
        )?;
        Ok(Issued {
            request_ids,
            source_identity: s.source_identity.clone(),
            ..second
        })
    }

    fn issued(
        &self,
        credentials: Option<&aws_sdk_sts::types::Credentials>,
        user: Option<&aws_sdk_sts::types::AssumedRoleUser>,
        session_name: &str,
    ) -> Result<Issued, UpstreamFailure> {
        let malformed = |missing| UpstreamFailure::Malformed {
            endpoint: self.options.endpoint.clone(),
            operation: "AssumeRole",
            missing,
        };
        let c = credentials.ok_or_else(|| malformed("Credentials"))?;
        let u = user.ok_or_else(|| malformed("AssumedRoleUser"))?;
        let expiration = SystemTime::try_from(*c.expiration())
            .map_err(|_| malformed("a valid Credentials.Expiration"))?;
        Ok(Issued {
            access_key_id: c.access_key_id().to_string(),
            secret_access_key: SecretAccessKey::new(c.secret_access_key()),
            session_token: c.session_token().to_string(),
            expiration,
            received: SystemTime::now(),
            assumed_role_arn: u.arn().to_string(),
            assumed_role_id: u.assumed_role_id().to_string(),
            session_name: session_name.to_string(),
            request_ids: Vec::new(),
            source_identity: None,
        })
    }

    /// One upstream operation: each attempt waits for the rate limit; throttling and transient
    /// failures are retried with backoff while `deadline` allows.
    async fn call<O, E, Fut>(
        &self,
        operation: &'static str,
        role: Option<&str>,
        deadline: Instant,
        send: impl Fn() -> Fut,
    ) -> Result<O, UpstreamFailure>
    where
        Fut: Future<Output = Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = || self.options.endpoint.clone();
        let mut last: Option<UpstreamFailure> = None;
        for attempt in 1..=MAX_ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.limiter.acquire(left).await.is_err() {
                self.metrics.rate_limited.inc();
                return Err(last.unwrap_or_else(|| UpstreamFailure::RateLimited {
                    endpoint: endpoint(),
                    max_rps: self.options.max_rps,
                }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let started = Instant::now();
            let result = tokio::time::timeout(left, send()).await;
            let seconds = started.elapsed().as_secs_f64();
            let (failure, transient) = match result {
                Ok(Ok(out)) => {
                    self.metrics.count_call(operation, "OK", seconds);
                    return Ok(out);
                }
                Err(_) => (
                    UpstreamFailure::Timeout {
                        endpoint: endpoint(),
                        operation,
                        timeout_ms: self.options.timeout.as_millis(),
                    },
                    false,
                ),
                Ok(Err(e)) => self.classify(operation, role, attempt, e),
            };
            self.metrics
                .count_call(operation, failure_label(&failure), seconds);
            if !transient || attempt == MAX_ATTEMPTS {
                return Err(failure);
            }
            let pause = backoff(attempt);
            if Instant::now() + pause >= deadline {
                return Err(failure);
            }
            tracing::debug!(operation, attempt, error = %failure, "retrying upstream");
            last = Some(failure);
            tokio::time::sleep(pause).await;
        }
        Err(last.unwrap_or_else(|| UpstreamFailure::RateLimited {
            endpoint: endpoint(),
            max_rps: self.options.max_rps,
        }))
    }

    /// An SDK error as a failure, and whether another attempt may succeed.
    fn classify<E>(
        &self,
        operation: &'static str,
        role: Option<&str>,
        attempt: u32,
        e: SdkError<E, HttpResponse>,
    ) -> (UpstreamFailure, bool)
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = self.options.endpoint.clone();
        match &e {
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let answer = Box::new(Answer {
                    status: e.raw_response().map_or(0, |r| r.status().as_u16()),
                    code: e.code().unwrap_or_default().to_string(),
                    message: e
                        .message()
                        .map_or_else(|| DisplayErrorContext(&e).to_string(), str::to_string),
                    request_id: e.request_id().map(str::to_string),
                });
                if answer.status == 429 || crate::error::is_upstream_throttling(&answer.code) {
                    (
                        UpstreamFailure::Throttled {
                            endpoint,
                            operation,
                            attempts: attempt,
                            answer,
                        },
                        true,
                    )
                } else if answer.status >= 500 {
                    (
                        UpstreamFailure::Failed {
                            endpoint,
                            operation,
                            answer,
                        },
                        true,
                    )
                } else {
                    (
                        UpstreamFailure::Refused {
                            endpoint,
                            operation,
                            role: role.map(str::to_string),
                            answer,
                        },
                        false,
                    )
                }
            }
            // Connection refused, DNS, TLS: upstream (or the way to it) is down.
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => (
                UpstreamFailure::Unreachable {
                    endpoint,
                    operation,
                    reason: causes(&e),
                },
                true,
            ),
            SdkError::TimeoutError(_) => (
                UpstreamFailure::Timeout {
                    endpoint,
                    operation,
                    timeout_ms: self.options.timeout.as_millis(),
                },
                true,
            ),
            // No broker credentials in the chain, a request the SDK would not build.
            _ => (
                UpstreamFailure::Request {
                    endpoint,
                    operation,
                    reason: causes(&e),
                },
                false,
            ),
        }
    }
}

/// An error and its sources, `: `-separated (the SDK's own rendering adds `Debug` dumps).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The `code` label of a failed call: upstream's code, or what happened on our side.
fn failure_label(f: &UpstreamFailure) -> &str {
    match f {
        UpstreamFailure::Throttled { answer, .. }
        | UpstreamFailure::Failed { answer, .. }
        | UpstreamFailure::Refused { answer, .. } => &answer.code,
        UpstreamFailure::RateLimited { .. } => "rate_limited",
        UpstreamFailure::Unreachable { .. } => "unreachable",
        UpstreamFailure::Timeout { .. } => "timeout",
        UpstreamFailure::Request { .. } => "request",
        UpstreamFailure::Malformed { .. } => "malformed",
    }
}

/// 100 ms, 200 ms, … with ±50 % jitter, so that pods throttled together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.saturating_sub(1));
    let mut b = [0u8; 1];
    let jitter = match podiam_identity::Rng::fill(&podiam_identity::SystemRng, &mut b) {
        Ok(()) => 0.5 + f64::from(b[0]) / 255.0,
        Err(_) => 1.0,
    };
    base.mul_f64(jitter)
}

// === upstream roles ===

/// The account an IAM role ARN names (`arn:PARTITION:iam::ACCOUNT:role/…`).
pub(crate) fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some("iam"), Some(""), Some(account), Some(resource))
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.len() > "role/".len()
                && resource.starts_with("role/") =>
        {
            Some(account)
        }
        _ => None,
    }
}

/// A role of another account than podiam's own: its sessions come from upstream.
pub(crate) fn is_upstream_role(config: &Config, arn: &str) -> bool {
    role_account(arn).is_some_and(|a| a != config.account_id)
}

/// An association may name an upstream role only when podiam brokers to an upstream STS (or
/// when that is not known here: the CLI on a data directory).
pub(crate) fn check_upstream_role(ctx: &Ctx<'_>, arn: &str) -> Result<(), AwsError> {
    let shared = ctx.shared;
    let account = role_account(arn).unwrap_or_default();
    if shared.upstream().is_some() || ctx.offline {
        return Ok(());
    }
    Err(AwsError::invalid_parameter(format!(
        "Role {arn} is in account {account}, not in this podiam's account {own}: roles of another account get their sessions from that account's STS, which needs broker mode; start the server with --upstream-sts URL (or --upstream-sts aws, the regional AWS STS of --region)",
        own = shared.config.account_id
    )))
}

/// A role and its target role are both podiam's or both upstream: a session of one cannot
/// assume a role of the other.
pub(crate) fn check_chain(
    config: &Config,
    role: &str,
    target: Option<&str>,
) -> Result<(), AwsError> {
    match target {
        Some(t) if is_upstream_role(config, role) != is_upstream_role(config, t) => {
            Err(AwsError::invalid_parameter(format!(
                "targetRoleArn {t} and roleArn {role} must both be roles of this podiam's account {own}, or both of upstream accounts",
                own = config.account_id
            )))
        }
        _ => Ok(()),
    }
}

/// `SourceIdentity` for a pod: `<namespace>@<pod>`, within AWS's pattern `[\w+=,.@-]*` and 64
/// characters (a long pod name is cut). Namespace first, so that `StringLike` on
/// `aws:SourceIdentity` with `<namespace>@*` matches a namespace's pods.
pub(crate) fn source_identity(namespace: &str, pod: &str) -> String {
    let allowed = |c: &char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c);
    let mut s: String = namespace.chars().filter(allowed).collect();
    s.push('@');
    s.extend(pod.chars().filter(allowed));
    s.truncate(64);
    s
}

// === the trust policy for an upstream role ===

/// The principal a trust policy names for the broker: an assumed-role session is named by its
/// role (`arn:aws:sts::A:assumed-role/R/S` → `arn:aws:iam::A:role/R`; a role with a path needs
/// the path added, which GetCallerIdentity does not tell), anything else by its ARN.
pub fn trust_principal(caller_arn: &str) -> String {
    let parts: Vec<&str> = caller_arn.splitn(6, ':').collect();
    if let [arn, partition, "sts", "", account, resource] = parts.as_slice()
        && let Some(rest) = resource.strip_prefix("assumed-role/")
        && let Some((role, _session)) = rest.split_once('/')
    {
        return format!("{arn}:{partition}:iam::{account}:role/{role}");
    }
    caller_arn.to_string()
}

/// A trust policy document, its members in the order people write them.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrustPolicy {
    version: &'static str,
    statement: Vec<TrustStatement>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct TrustStatement {
    sid: &'static str,
    effect: &'static str,
    principal: BTreeMap<&'static str, String>,
    action: Vec<&'static str>,
    condition: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl TrustPolicy {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The trust policy an upstream role needs so that this broker may assume it for the pods of
/// `cluster` (and of one namespace / ServiceAccount when given): the session tags the broker
/// must send are conditions, so that even a compromised broker mints only sessions the role's
/// owner allowed.
pub fn trust_policy(
    principal: &str,
    cluster: &str,
    namespace: Option<&str>,
    service_account: Option<&str>,
    source_identity: bool,
) -> TrustPolicy {
    let mut action = vec!["sts:AssumeRole", "sts:TagSession"];
    if source_identity {
        action.push("sts:SetSourceIdentity");
    }
    let mut equals = BTreeMap::new();
    equals.insert(
        "aws:RequestTag/eks-cluster-name".to_string(),
        cluster.to_string(),
    );
    if let Some(ns) = namespace {
        equals.insert(
            "aws:RequestTag/kubernetes-namespace".to_string(),
            ns.to_string(),
        );
    }
    if let Some(sa) = service_account {
        equals.insert(
            "aws:RequestTag/kubernetes-service-account".to_string(),
            sa.to_string(),
        );
    }
    TrustPolicy {
        version: "2012-10-17",
        statement: vec![TrustStatement {
            sid: "PodiamBroker",
            effect: "Allow",
            principal: BTreeMap::from([("AWS", principal.to_string())]),
            action,
            condition: BTreeMap::from([("StringEquals", equals)]),
        }],
    }
}

#[cfg(test)]
mod tests;
