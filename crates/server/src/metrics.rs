//! Prometheus metrics at `GET /metrics` (OpenMetrics text), as `docs/operating.md` lists them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: &'static str,
    pub action: &'static str,
    /// `OK`, or the AWS error code.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub action: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCallLabels {
    pub operation: &'static str,
    /// `OK`, upstream's error code, or what failed on this side (`unreachable`, `timeout`, …).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

/// Broker mode: calls to the upstream STS and the upstream credential cache.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub calls: Family<UpstreamCallLabels, Counter>,
    pub duration: Family<OperationLabels, Histogram>,
    /// `hit`, `miss` (fetched), `stale` (served from the cache while upstream failed).
    pub cache: Family<ResultLabels, Counter>,
    /// Pod requests refused by `--upstream-max-rps` before any call.
    pub rate_limited: Counter,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        UpstreamMetrics {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            cache: Family::default(),
            rate_limited: Counter::default(),
        }
    }
}

impl UpstreamMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "upstream_calls",
            "Calls to the upstream STS, by operation and result code",
            self.calls.clone(),
        );
        registry.register(
            "upstream_call_duration_seconds",
            "Time an upstream STS call took",
            self.duration.clone(),
        );
        registry.register(
            "upstream_cache",
            "Pod requests for upstream credentials, by where the credentials came from",
            self.cache.clone(),
        );
        registry.register(
            "upstream_rate_limited",
            "Pod requests refused by the upstream rate limit (--upstream-max-rps)",
            self.rate_limited.clone(),
        );
    }

    pub(crate) fn count_call(&self, operation: &'static str, code: &str, seconds: f64) {
        self.calls
            .get_or_create(&UpstreamCallLabels {
                operation,
                code: code.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&OperationLabels { operation })
            .observe(seconds);
    }

    pub(crate) fn count_cache(&self, result: &'static str) {
        self.cache.get_or_create(&ResultLabels { result }).inc();
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<ServiceLabels, Histogram>,
    pub issued: Family<ActionLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    pub store_writes: Counter,
    pub cache_reloads: Counter,
    /// Audit events sent to the database: `written`, `failed` (after retries), `dropped` (the
    /// queue was full). Every one of them is in `audit.log` either way.
    pub audit_database_events: Family<ResultLabels, Counter>,
    pub upstream: UpstreamMetrics,
    /// The series every successful issuing call adds to, looked up in their families once
    /// (the handles share the families' counters): a family lookup is a lock shared by every
    /// worker and a SipHash of the labels, three of them per call otherwise.
    issuing_ok: [std::sync::OnceLock<IssuingSeries>; ISSUING.len()],
    /// `request_duration_seconds` by service, looked up once per service.
    durations: [std::sync::OnceLock<Histogram>; SERVICES.len()],
}

/// The `OK` request counter and the issued counter of one issuing action (of one service).
#[derive(Debug)]
struct IssuingSeries {
    service: &'static str,
    requests: Counter,
    issued: Counter,
}

/// The services the server answers as (the `service` label).
const SERVICES: [&str; 4] = ["sts", "iam", "eks", "eks-auth"];

const ISSUING: [&str; 3] = [
    "AssumeRoleWithWebIdentity",
    "AssumeRole",
    "AssumeRoleForPodIdentity",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("podiam");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by service, action and AWS code",
            requests.clone(),
        );
        let duration = Family::<ServiceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer an API request",
            duration.clone(),
        );
        let issued = Family::<ActionLabels, Counter>::default();
        registry.register(
            "sts_credentials_issued",
            "Temporary credentials issued",
            issued.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "sts_denials",
            "Requests refused, by action and AWS code",
            denials.clone(),
        );
        let store_writes = Counter::default();
        registry.register(
            "store_writes",
            "Writes committed to the store",
            store_writes.clone(),
        );
        let cache_reloads = Counter::default();
        registry.register(
            "cache_reloads",
            "Reloads of the in-memory state after writes elsewhere",
            cache_reloads.clone(),
        );
        let audit_database_events = Family::<ResultLabels, Counter>::default();
        registry.register(
            "audit_database_events",
            "Audit events sent to the database, by result (all of them are in audit.log)",
            audit_database_events.clone(),
        );
        let upstream = UpstreamMetrics::default();
        upstream.register(&mut registry);
        Metrics {
            upstream,
            registry,
            requests,
            duration,
            issued,
            denials,
            store_writes,
            cache_reloads,
            audit_database_events,
            issuing_ok: Default::default(),
            durations: Default::default(),
        }
    }

    /// One answered request: `failure` is the code the client saw and whether it was a denial
    /// ([`crate::error::ErrorKind::is_denial`]). Every label is a static string (the served
    /// action's name, an error code of the enum): no allocation per request, and a finite set
    /// of series whatever the callers send.
    pub fn record(
        &self,
        service: &'static str,
        action: &'static str,
        failure: Option<(&'static str, bool)>,
        seconds: f64,
    ) {
        let code = failure.map(|(c, _)| c);
        match SERVICES.iter().position(|s| *s == service) {
            Some(i) => self.durations[i]
                .get_or_init(|| {
                    self.duration
                        .get_or_create(&ServiceLabels { service })
                        .clone()
                })
                .observe(seconds),
            None => self
                .duration
                .get_or_create(&ServiceLabels { service })
                .observe(seconds),
        }
        if code.is_none()
            && let Some(i) = ISSUING.iter().position(|a| *a == action)
        {
            let series = self.issuing_ok[i].get_or_init(|| IssuingSeries {
                service,
                requests: self
                    .requests
                    .get_or_create(&RequestLabels {
                        service,
                        action,
                        code: "OK",
                    })
                    .clone(),
                issued: self.issued.get_or_create(&ActionLabels { action }).clone(),
            });
            if series.service == service {
                series.requests.inc();
                series.issued.inc();
                return;
            }
        }
        self.requests
            .get_or_create(&RequestLabels {
                service,
                action,
                code: code.unwrap_or("OK"),
            })
            .inc();
        match code {
            None if ISSUING.contains(&action) => {
                self.issued.get_or_create(&ActionLabels { action }).inc();
            }
            Some(c) if failure.is_some_and(|(_, denial)| denial) => {
                self.denials
                    .get_or_create(&DenialLabels { action, reason: c })
                    .inc();
            }
            _ => {}
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_issues_and_denials() {
        let m = Metrics::new();
        use crate::error::{AwsError, Protocol};
        let denied = AwsError::access_denied("no");
        let missing = AwsError::no_such_entity("no");
        let failure = |e: &AwsError| Some((e.code(Protocol::Query), e.is_denial()));
        m.record("sts", "AssumeRoleWithWebIdentity", None, 0.001);
        m.record("sts", "AssumeRoleWithWebIdentity", failure(&denied), 0.001);
        m.record("iam", "GetRole", failure(&missing), 0.001);
        let text = m.render();
        assert!(text.contains("podiam_requests_total{service=\"sts\",action=\"AssumeRoleWithWebIdentity\",code=\"OK\"} 1"), "{text}");
        assert!(
            text.contains(
                "podiam_sts_credentials_issued_total{action=\"AssumeRoleWithWebIdentity\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("podiam_sts_denials_total{action=\"AssumeRoleWithWebIdentity\",reason=\"AccessDenied\"} 1"), "{text}");
        assert!(!text.contains("reason=\"NoSuchEntity\""), "{text}");
        assert!(
            text.contains("podiam_request_duration_seconds_count{service=\"iam\"} 1"),
            "{text}"
        );
    }

    /// The cached handles of the success path count in the families `/metrics` shows, and an
    /// issuing action's name under another service still gets its own series.
    #[test]
    fn the_success_path_handles_are_the_families_series() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.record("sts", "AssumeRole", None, 0.001);
        }
        m.record("iam", "AssumeRole", None, 0.001);
        m.record("eks-auth", "AssumeRoleForPodIdentity", None, 0.001);
        m.record("custom", "GetRole", None, 0.001);
        let text = m.render();
        for line in [
            "podiam_requests_total{service=\"sts\",action=\"AssumeRole\",code=\"OK\"} 3",
            "podiam_requests_total{service=\"iam\",action=\"AssumeRole\",code=\"OK\"} 1",
            "podiam_sts_credentials_issued_total{action=\"AssumeRole\"} 4",
            "podiam_sts_credentials_issued_total{action=\"AssumeRoleForPodIdentity\"} 1",
            "podiam_request_duration_seconds_count{service=\"sts\"} 3",
            "podiam_request_duration_seconds_count{service=\"eks-auth\"} 1",
            "podiam_request_duration_seconds_count{service=\"custom\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
