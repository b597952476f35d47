//! Feeding the [`Webhook`]: a kube-rs watch of ServiceAccounts (cluster-wide), an optional watch
//! of the `pod-identity-webhook` ConfigMap, a poll of the container-credentials identities file,
//! and the direct ServiceAccount GET used on a cache miss.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::identity::{
    CONFIG_MAP_NAME, ServiceAccountEntry, parse_config_map, parse_identities_file,
};
use crate::webhook::{LookupFuture, ServiceAccountLookup, Webhook};

/// Only our annotations, so the cache holds a few strings per ServiceAccount (upstream PR #301).
fn our_annotations(webhook: &Webhook, sa: &ServiceAccount) -> BTreeMap<String, String> {
    let keys = ServiceAccountEntry::keys(webhook.config());
    sa.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn names(sa: &ServiceAccount) -> (String, String) {
    (
        sa.metadata.namespace.clone().unwrap_or_default(),
        sa.metadata.name.clone().unwrap_or_default(),
    )
}

/// Watch every ServiceAccount until the stream ends (it does not: errors are retried with
/// kube-rs' default backoff).
pub async fn watch_service_accounts(client: Client, webhook: Arc<Webhook>) {
    let api: Api<ServiceAccount> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(sa)) => {
                let (ns, name) = names(&sa);
                relist.push((ns, name, our_annotations(&webhook, &sa)));
            }
            Ok(Event::InitDone) => {
                let n = relist.len();
                webhook.replace_service_accounts(std::mem::take(&mut relist));
                tracing::info!(service_accounts = n, "ServiceAccount cache synced");
            }
            Ok(Event::Apply(sa)) => {
                let (ns, name) = names(&sa);
                webhook.apply_service_account(&ns, &name, &our_annotations(&webhook, &sa));
            }
            Ok(Event::Delete(sa)) => {
                let (ns, name) = names(&sa);
                webhook.delete_service_account(&ns, &name);
            }
            Err(e) => tracing::warn!(error = %e, "ServiceAccount watch error; retrying"),
        }
    }
}

/// `--watch-config-map`: the `pod-identity-webhook` ConfigMap in `namespace`.
pub async fn watch_config_map(client: Client, namespace: String, webhook: Arc<Webhook>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP_NAME}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(cm) | Event::InitApply(cm)) => {
                let config = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("config"))
                    .map(String::as_str)
                    .unwrap_or("{}");
                match parse_config_map(config) {
                    Ok(mapping) => webhook.set_config_map(mapping),
                    // upstream keeps the previous mapping on a bad update.
                    Err(e) => tracing::warn!(error = %e, "ignoring ConfigMap update"),
                }
            }
            // upstream has no delete handler and keeps stale entries; a deleted ConfigMap maps nothing.
            Ok(Event::Delete(_)) => webhook.set_config_map(Default::default()),
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => tracing::warn!(error = %e, "ConfigMap watch error; retrying"),
        }
    }
}

/// `--watch-container-credentials-config`: poll the identities file. A missing or empty file
/// clears the associations; one that does not parse keeps the previous ones.
pub async fn poll_identities_file(path: PathBuf, interval: Duration, webhook: Arc<Webhook>) {
    let mut last: Option<Option<Vec<u8>>> = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let now = tokio::fs::read(&path).await.ok();
        if last.as_ref() == Some(&now) {
            continue;
        }
        let text = now
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        match parse_identities_file(&text) {
            Ok(associations) => {
                tracing::info!(associations = associations.len(), path = %path.display(), "Pod Identity associations loaded");
                webhook.set_associations(associations);
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "keeping previous Pod Identity associations")
            }
        }
        last = Some(now);
    }
}

/// The direct ServiceAccount read through the Kubernetes API.
#[derive(Clone)]
pub struct KubeLookup {
    client: Client,
}

impl KubeLookup {
    /// A lookup through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ServiceAccountLookup for KubeLookup {
    fn get(&self, namespace: &str, name: &str) -> LookupFuture {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_owned();
        Box::pin(async move {
            match api.get_opt(&name).await {
                Ok(Some(sa)) => Ok(Some(sa.metadata.annotations.unwrap_or_default())),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
