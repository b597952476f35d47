//! Prometheus metrics, named after upstream's where there is one (OpenMetrics adds `_total` to
//! counters): `pod_identity_webhook_pod_count_total{method}`,
//! `pod_identity_webhook_missing_sa_count_total`, `pod_identity_webhook_used`,
//! `http_request_count_total{verb,path,code}`; plus ours: the request latency histogram in
//! seconds, direct ServiceAccount lookups by result, certificate reloads by result, and the
//! podiam association sync (`podiam_webhook_podiam_syncs_total{result}`,
//! `podiam_webhook_podiam_associations`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// All the webhook's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    pod_count: Family<Labels, Counter>,
    missing_sa: Counter,
    used: Gauge,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    sa_lookups: Family<Labels, Counter>,
    cert_reloads: Family<Labels, Counter>,
    podiam_syncs: Family<Labels, Counter>,
    podiam_associations: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let pod_count = Family::<Labels, Counter>::default();
        registry.register(
            "pod_identity_webhook_pod_count",
            "Pods mutated, by credential method",
            pod_count.clone(),
        );
        let missing_sa = Counter::default();
        registry.register(
            "pod_identity_webhook_missing_sa_count",
            "Pods whose ServiceAccount was in neither the cache nor the API server",
            missing_sa.clone(),
        );
        let used = Gauge::default();
        registry.register(
            "pod_identity_webhook_used",
            "1 once any ServiceAccount has been seen",
            used.clone(),
        );
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_request_count",
            "HTTP requests by verb, path and status code",
            requests.clone(),
        );
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~1.6 s
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "podiam_webhook_request_duration_seconds",
            "Time to answer a request, by path",
            latency.clone(),
        );
        let sa_lookups = Family::<Labels, Counter>::default();
        registry.register(
            "podiam_webhook_serviceaccount_lookups",
            "Direct ServiceAccount GETs after a cache miss, by result",
            sa_lookups.clone(),
        );
        let cert_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "podiam_webhook_certificate_reloads",
            "Certificate file changes, by result",
            cert_reloads.clone(),
        );
        let podiam_syncs = Family::<Labels, Counter>::default();
        registry.register(
            "podiam_webhook_podiam_syncs",
            "Polls of podiam's ListPodIdentityAssociations, by result (ok, error)",
            podiam_syncs.clone(),
        );
        let podiam_associations = Gauge::default();
        registry.register(
            "podiam_webhook_podiam_associations",
            "Pod Identity associations from the last good podiam sync",
            podiam_associations.clone(),
        );
        Self {
            registry,
            pod_count,
            missing_sa,
            used,
            requests,
            latency,
            sa_lookups,
            cert_reloads,
            podiam_syncs,
            podiam_associations,
        }
    }
}

impl Metrics {
    /// A pod was mutated with `method` (`sts_web_identity` or `container_credentials`).
    pub fn pod_mutated(&self, method: &'static str) {
        self.pod_count
            .get_or_create(&vec![("method", method.to_owned())])
            .inc();
    }

    /// The pod's ServiceAccount could not be found at all.
    pub fn missing_sa(&self) {
        self.missing_sa.inc();
    }

    /// Some ServiceAccount was cached.
    pub fn set_used(&self) {
        self.used.set(1);
    }

    /// One HTTP request answered.
    pub fn request(&self, verb: &str, path: &str, code: u16, seconds: f64) {
        let path = match path {
            "/mutate" | "/healthz" | "/metrics" => path.to_owned(),
            _ => "other".to_owned(),
        };
        self.requests
            .get_or_create(&vec![
                ("verb", verb.to_owned()),
                ("path", path.clone()),
                ("code", code.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("path", path)])
            .observe(seconds);
    }

    /// A direct ServiceAccount lookup finished with `result` (`found`, `not_found`, `error`, `timeout`).
    pub fn sa_lookup(&self, result: &'static str) {
        self.sa_lookups
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// A certificate poll found changed files (`reloaded` or `refused`).
    pub fn cert_reload(&self, result: &'static str) {
        self.cert_reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// A poll of podiam's associations finished: `Some(n)` with `n` associations, `None` when it
    /// failed (the previous set is kept).
    pub fn podiam_sync(&self, associations: Option<usize>) {
        let result = if associations.is_some() {
            "ok"
        } else {
            "error"
        };
        self.podiam_syncs
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
        if let Some(n) = associations {
            self.podiam_associations
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
