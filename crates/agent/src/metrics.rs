//! Prometheus metrics for `/metrics` on the probe listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The agent's counters. Hot-path counters are held directly, so a cached answer costs no
/// label lookup.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Container-credential answers by HTTP status.
    pub credential_responses: Family<Labels, Counter>,
    /// Container-credential answers served from the cache.
    pub cache_hits: Counter,
    /// Container-credential requests that needed a server call.
    pub cache_misses: Counter,
    /// Background renewals by outcome (`ok`, `error`, `evicted`, `idle`, `rate_limited`).
    pub renewals: Family<Labels, Counter>,
    /// Pods with cached credentials.
    pub cache_entries: Gauge,
    /// IMDS answers by HTTP status.
    pub imds_responses: Family<Labels, Counter>,
    /// IMDS node-credential requests refused, by reason (`namespace`, `unknown_ip`).
    pub imds_denied: Family<Labels, Counter>,
    /// Listeners serving (credentials and IMDS).
    pub listeners: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podiam_agent");
        let credential_responses = Family::<Labels, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let renewals = Family::<Labels, Counter>::default();
        let cache_entries = Gauge::default();
        let imds_responses = Family::<Labels, Counter>::default();
        let imds_denied = Family::<Labels, Counter>::default();
        let listeners = Gauge::default();
        registry.register(
            "credential_responses",
            "Container credential answers by HTTP status",
            credential_responses.clone(),
        );
        registry.register(
            "cache_hits",
            "Container credential requests answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Container credential requests that called the server",
            cache_misses.clone(),
        );
        registry.register(
            "renewals",
            "Background credential renewals by outcome",
            renewals.clone(),
        );
        registry.register(
            "cache_entries",
            "Pods with cached credentials",
            cache_entries.clone(),
        );
        registry.register(
            "imds_responses",
            "IMDS answers by HTTP status",
            imds_responses.clone(),
        );
        registry.register(
            "imds_denied",
            "IMDS node-credential requests refused, by reason",
            imds_denied.clone(),
        );
        registry.register(
            "listeners",
            "Credential and IMDS listeners serving",
            listeners.clone(),
        );
        Self {
            registry,
            credential_responses,
            cache_hits,
            cache_misses,
            renewals,
            cache_entries,
            imds_responses,
            imds_denied,
            listeners,
        }
    }
}

impl Metrics {
    /// Counts one renewal outcome.
    pub fn renewal(&self, outcome: &'static str) {
        self.renewals
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// OpenMetrics text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
