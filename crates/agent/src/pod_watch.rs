//! The IMDS guard's source IP → namespace map from the Kubernetes API: a watch of the pods of this
//! node (`fieldSelector=spec.nodeName=NODE`) through kube-rs' watcher, which lists, then watches
//! from the list's `resourceVersion` with bookmarks, and lists again after `410 Gone`. Each change
//! replaces the [`PodIpMap`] the IMDS listener reads.
//!
//! An address is in the map only while exactly one namespace claims it:
//! - pods are kept by UID, so an IP that passes from a deleted pod to a pod of another namespace
//!   follows the pods, whatever order the events come in; while two namespaces claim it (the new
//!   pod is reported before the old one's deletion), it maps to nothing and is refused;
//! - a pod that has finished (`Succeeded`, `Failed`) gives its IP up;
//! - `hostNetwork` pods are left out: they share the node's addresses with the node and with one
//!   another, so their source IP says nothing about who is calling.
//!
//! Until the first list has arrived the map is empty and every caller is refused.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::imds::{IpNamespaces, PodIpMap, canonical_ip};

/// Most pods indexed: a node runs a few hundred at most; a field selector the API server ignored
/// (every pod of a large cluster) must not grow the agent without bound.
pub const MAX_PODS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    namespace: String,
    ips: Vec<IpAddr>,
}

/// The node's pods that own an address, by UID.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, Entry>,
    /// Pods left out because the index was full (logged once per list).
    pub dropped: usize,
}

/// A pod's key: its UID (names are reused, UIDs are not), else `namespace/name`.
fn key(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// The addresses a pod answers from, if its source IP identifies it.
fn owned_ips(pod: &Pod) -> Vec<IpAddr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.trim().parse().ok().map(canonical_ip))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

impl PodIndex {
    /// Records an added or changed pod.
    pub fn apply(&mut self, pod: &Pod) {
        let key = key(pod);
        let ips = owned_ips(pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        if ips.is_empty() || namespace.is_empty() {
            self.pods.remove(&key);
        } else if self.pods.len() < MAX_PODS || self.pods.contains_key(&key) {
            self.pods.insert(key, Entry { namespace, ips });
        } else {
            self.dropped += 1;
        }
    }

    /// Forgets a deleted pod.
    pub fn delete(&mut self, pod: &Pod) {
        self.pods.remove(&key(pod));
    }

    /// Pods indexed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is indexed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Source IP → namespace, leaving out the addresses more than one namespace claims.
    #[must_use]
    pub fn map(&self) -> IpNamespaces {
        let mut claims: HashMap<IpAddr, HashSet<&str>> = HashMap::new();
        for e in self.pods.values() {
            for ip in &e.ips {
                claims.entry(*ip).or_default().insert(e.namespace.as_str());
            }
        }
        claims
            .into_iter()
            .filter_map(|(ip, namespaces)| {
                if namespaces.len() == 1 {
                    namespaces.into_iter().next().map(|ns| (ip, ns.to_owned()))
                } else {
                    let mut names: Vec<&str> = namespaces.into_iter().collect();
                    names.sort_unstable();
                    tracing::warn!(%ip, namespaces = ?names, "IMDS: pods of several namespaces claim this address; refusing it until one is gone");
                    None
                }
            })
            .collect()
    }
}

/// Watches the pods of `node` until the stream ends (it does not: errors, `410 Gone` among them,
/// are retried with kube-rs' default backoff, relisting as needed), publishing every change to
/// `map`.
pub async fn watch_node_pods(client: Client, node: String, map: Arc<PodIpMap>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut index = PodIndex::default();
    let mut relist = PodIndex::default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist = PodIndex::default(),
            Ok(Event::InitApply(pod)) => relist.apply(&pod),
            Ok(Event::InitDone) => {
                index = std::mem::take(&mut relist);
                if index.dropped > 0 {
                    tracing::warn!(
                        dropped = index.dropped,
                        "IMDS: more than {MAX_PODS} pods on node {node}; the rest are refused"
                    );
                }
                tracing::info!(%node, pods = index.len(), "IMDS: pods of the node listed");
                map.set(index.map());
            }
            Ok(Event::Apply(pod)) => {
                index.apply(&pod);
                map.set(index.map());
            }
            Ok(Event::Delete(pod)) => {
                index.delete(&pod);
                map.set(index.map());
            }
            Err(e) => tracing::warn!(error = %e, "IMDS: pod watch error; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn pod(uid: &str, ns: &str, ips: &[&str], extra: serde_json::Value) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": ns, "uid": uid},
            "spec": {"containers": []},
            "status": {"phase": "Running", "podIP": ips.first(),
                       "podIPs": ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>()},
        });
        json_merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), &b) {
            for (k, v) in b {
                json_merge(
                    a.entry(k.clone()).or_insert(serde_json::Value::Null),
                    v.clone(),
                );
            }
        } else if !b.is_null() {
            *a = b;
        }
    }

    fn ns(index: &PodIndex, ip: &str) -> Option<String> {
        index.map().get(&ip.parse().unwrap()).cloned()
    }

    #[test]
    fn an_ip_follows_its_pods_and_is_refused_while_two_namespaces_claim_it() {
        let mut index = PodIndex::default();
        let old = pod(
            "a",
            "kube-system",
            &["10.0.0.5", "fd00::5"],
            serde_json::Value::Null,
        );
        index.apply(&old);
        assert_eq!(ns(&index, "10.0.0.5").as_deref(), Some("kube-system"));
        assert_eq!(
            ns(&index, "fd00::5").as_deref(),
            Some("kube-system"),
            "dual stack"
        );
        // The new pod is reported before the old one's deletion: nobody gets the address.
        index.apply(&pod("b", "team", &["10.0.0.5"], serde_json::Value::Null));
        assert_eq!(ns(&index, "10.0.0.5"), None);
        index.delete(&old);
        assert_eq!(ns(&index, "10.0.0.5").as_deref(), Some("team"));
        assert_eq!(ns(&index, "fd00::5"), None);
    }

    #[test]
    fn finished_and_host_network_pods_own_no_address() {
        let mut index = PodIndex::default();
        index.apply(&pod("a", "x", &["10.0.0.5"], serde_json::Value::Null));
        index.apply(&pod(
            "a",
            "x",
            &["10.0.0.5"],
            serde_json::json!({"status": {"phase": "Succeeded"}}),
        ));
        assert!(index.is_empty(), "a finished pod gives its IP up");
        index.apply(&pod(
            "h",
            "kube-system",
            &["192.168.1.10"],
            serde_json::json!({"spec": {"hostNetwork": true}}),
        ));
        assert_eq!(
            ns(&index, "192.168.1.10"),
            None,
            "the node's address says nothing"
        );
        index.apply(&pod(
            "p",
            "x",
            &[],
            serde_json::json!({"status": {"phase": "Pending"}}),
        ));
        assert!(index.is_empty(), "no IP yet");
    }

    #[test]
    fn the_index_is_bounded() {
        let mut index = PodIndex::default();
        for i in 0..MAX_PODS + 5 {
            let ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
            index.apply(&pod(&i.to_string(), "x", &[&ip], serde_json::Value::Null));
        }
        assert_eq!((index.len(), index.dropped), (MAX_PODS, 5));
    }
}
