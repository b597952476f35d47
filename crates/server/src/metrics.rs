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
    pub action: String,
    /// `OK`, or the AWS error code.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub action: String,
    pub reason: String,
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
}

/// The codes that mean "refused" rather than "broken".
fn is_denial(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "InvalidIdentityToken"
            | "InvalidTokenException"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "IDPRejectedClaim"
    )
}

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
        Metrics {
            registry,
            requests,
            duration,
            issued,
            denials,
            store_writes,
            cache_reloads,
            audit_database_events,
        }
    }

    pub fn record(&self, service: &'static str, action: &str, code: Option<&str>, seconds: f64) {
        let code_label = code.unwrap_or("OK");
        self.requests
            .get_or_create(&RequestLabels {
                service,
                action: action.to_string(),
                code: code_label.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&ServiceLabels { service })
            .observe(seconds);
        match code {
            None if ISSUING.contains(&action) => {
                self.issued
                    .get_or_create(&ActionLabels {
                        action: action.to_string(),
                    })
                    .inc();
            }
            Some(c) if is_denial(c) => {
                self.denials
                    .get_or_create(&DenialLabels {
                        action: action.to_string(),
                        reason: c.to_string(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
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
        m.record("sts", "AssumeRoleWithWebIdentity", None, 0.001);
        m.record(
            "sts",
            "AssumeRoleWithWebIdentity",
            Some("AccessDenied"),
            0.001,
        );
        m.record("iam", "GetRole", Some("NoSuchEntity"), 0.001);
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
}
