//! IMDS for pods: IMDSv2 session tokens, the instance-metadata paths the AWS SDKs read, and the
//! namespace allow-list that decides who may read the node role's credentials.
//!
//! Callers are identified by source IP → pod → namespace, from a watch of the node's pods through
//! the Kubernetes API ([`crate::pod_watch`]) or a mapping file re-read when it changes. This is the job EKS users give a Calico GlobalNetworkPolicy, done at the endpoint,
//! where a refusal can be logged and counted.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_lc_rs::{constant_time, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::body::Bytes;
use tokio::task::JoinHandle;

use crate::wire::{EncodeError, encode};

/// AWS: `X-aws-ec2-metadata-token-ttl-seconds` is 1 to 21,600 (6 hours).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 21_600;

/// What the instance-metadata tree answers besides credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceIdentity {
    /// The node role's name (`iam/security-credentials/`).
    pub role_name: String,
    /// `instance-id`.
    pub instance_id: String,
    /// `placement/region`.
    pub region: String,
    /// `placement/availability-zone`.
    pub availability_zone: String,
    /// The node role's account (instance-identity document).
    pub account_id: String,
    /// The node's IP (instance-identity document), if known.
    pub private_ip: Option<String>,
}

impl InstanceIdentity {
    /// `/latest/dynamic/instance-identity/document`.
    ///
    /// # Errors
    /// [`EncodeError`] (not expected: the document is built as JSON).
    pub fn document(&self) -> Result<Bytes, EncodeError> {
        let doc = serde_json::json!({
            "accountId": self.account_id,
            "architecture": std::env::consts::ARCH,
            "availabilityZone": self.availability_zone,
            "imageId": null,
            "instanceId": self.instance_id,
            "instanceType": null,
            "privateIp": self.private_ip,
            "region": self.region,
            "version": "2017-09-30",
        });
        encode("instance-identity document", &doc, true)
    }
}

/// A stable `i-…` id (17 hex digits) derived from the node name.
#[must_use]
pub fn instance_id_for(node_name: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, node_name.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("i-{}", &hex[..17])
}

// === IMDSv2 session tokens ===

/// Stateless IMDSv2 tokens: `base64url(expiry_ms ‖ HMAC-SHA256(key, expiry_ms))` under a key
/// made at start, so tokens cost no memory and die with the process (as EC2's do with the
/// instance).
pub struct SessionTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTokens(<key>)")
    }
}

/// The random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the random number generator failed")]
pub struct RngFailed;

impl SessionTokens {
    /// A fresh random key.
    ///
    /// # Errors
    /// [`RngFailed`].
    pub fn new() -> Result<Self, RngFailed> {
        let mut key = [0u8; 32];
        rand::fill(&mut key).map_err(|_| RngFailed)?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// A token valid until `expires_ms` on the caller's millisecond timeline.
    #[must_use]
    pub fn issue(&self, expires_ms: u64) -> String {
        let stamp = expires_ms.to_be_bytes();
        let tag = hmac::sign(&self.key, &stamp);
        let mut raw = Vec::with_capacity(40);
        raw.extend_from_slice(&stamp);
        raw.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `token` was issued here and is unexpired at `now_ms`.
    #[must_use]
    pub fn check(&self, token: &str, now_ms: u64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let (Some(stamp), Some(tag)) = (raw.get(..8), raw.get(8..)) else {
            return false;
        };
        let expected = hmac::sign(&self.key, stamp);
        if constant_time::verify_slices_are_equal(expected.as_ref(), tag).is_err() {
            return false;
        }
        let mut be = [0u8; 8];
        be.copy_from_slice(stamp);
        now_ms < u64::from_be_bytes(be)
    }
}

/// Parses `X-aws-ec2-metadata-token-ttl-seconds`.
#[must_use]
pub fn parse_token_ttl(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    (1..=MAX_TOKEN_TTL_SECONDS)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

// === who may read the node role's credentials ===

/// Why a caller was refused the node role's credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The source IP maps to no pod.
    #[error("source IP `{ip}` is not a known pod")]
    UnknownIp {
        /// The caller.
        ip: IpAddr,
    },
    /// The pod's namespace is not on `--imds-allow-namespace`.
    #[error("namespace `{namespace}` (source IP `{ip}`) is not allowed the node role")]
    Namespace {
        /// The caller.
        ip: IpAddr,
        /// Its namespace.
        namespace: String,
    },
}

impl Denial {
    /// The metric label.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownIp { .. } => "unknown_ip",
            Self::Namespace { .. } => "namespace",
        }
    }
}

/// Source IP → namespace.
pub type IpNamespaces = HashMap<IpAddr, String>;

/// Allows `ip` when its namespace is on `allowed`.
///
/// # Errors
/// The [`Denial`].
pub fn authorize(ip: IpAddr, pods: &IpNamespaces, allowed: &HashSet<String>) -> Result<(), Denial> {
    let ip = canonical_ip(ip);
    match pods.get(&ip) {
        None => Err(Denial::UnknownIp { ip }),
        Some(ns) if allowed.contains(ns) => Ok(()),
        Some(ns) => Err(Denial::Namespace {
            ip,
            namespace: ns.clone(),
        }),
    }
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.5`) as plain IPv4.
#[must_use]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Why the pod-IP map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodIpMapError {
    /// I/O.
    #[error("while reading `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not `{"IP": "namespace", …}`.
    #[error("`{path}`: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Parses `{"10.0.0.5": "kube-system", …}`.
///
/// # Errors
/// A description of the first bad entry.
pub fn parse_pod_ip_map(text: &str) -> Result<IpNamespaces, String> {
    let raw: HashMap<String, String> = serde_json::from_str(text)
        .map_err(|e| format!("expected {{\"IP\": \"namespace\"}}: {e}"))?;
    raw.into_iter()
        .map(|(ip, ns)| {
            let parsed: IpAddr = ip
                .trim()
                .parse()
                .map_err(|_| format!("`{ip}` is not an IP address"))?;
            Ok((canonical_ip(parsed), ns))
        })
        .collect()
}

/// The mapping file, re-read when its modification time or size changes.
#[derive(Debug)]
pub struct PodIpMap {
    path: PathBuf,
    current: ArcSwap<IpNamespaces>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

impl PodIpMap {
    /// Reads `path` now (a bad file stops the agent before it binds).
    ///
    /// # Errors
    /// [`PodIpMapError`].
    pub fn load(path: &Path) -> Result<Self, PodIpMapError> {
        let map = Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(HashMap::new()),
            stamp: Mutex::new(None),
        };
        map.reload()?;
        Ok(map)
    }

    /// A fixed map (tests, or no file).
    #[must_use]
    pub fn fixed(map: IpNamespaces) -> Self {
        Self {
            path: PathBuf::new(),
            current: ArcSwap::from_pointee(map),
            stamp: Mutex::new(None),
        }
    }

    /// Replaces the map (the Kubernetes pod watch, [`crate::pod_watch`]).
    pub fn set(&self, map: IpNamespaces) {
        self.current.store(Arc::new(map));
    }

    /// The current map.
    #[must_use]
    pub fn current(&self) -> Arc<IpNamespaces> {
        self.current.load_full()
    }

    /// Re-reads the file if it changed. Returns whether the map was replaced.
    ///
    /// # Errors
    /// [`PodIpMapError`]; the previous map stays in force.
    pub fn reload(&self) -> Result<bool, PodIpMapError> {
        if self.path.as_os_str().is_empty() {
            return Ok(false);
        }
        let read_err = |source| PodIpMapError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if *last == Some(stamp) {
            return Ok(false);
        }
        let text = std::fs::read_to_string(&self.path).map_err(read_err)?;
        let map = parse_pod_ip_map(&text).map_err(|problem| PodIpMapError::Invalid {
            path: self.path.clone(),
            problem,
        })?;
        tracing::info!(path = %self.path.display(), pods = map.len(), "pod IP map loaded");
        self.current.store(Arc::new(map));
        *last = Some(stamp);
        Ok(true)
    }

    /// Polls the file every `interval`.
    #[must_use]
    pub fn spawn_reload(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if let Err(e) = this.reload() {
                    tracing::warn!(error = %e, "pod IP map not reloaded; keeping the previous one");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn session_tokens_expire_and_cannot_be_forged() {
        let tokens = SessionTokens::new().unwrap();
        let t = tokens.issue(1_000);
        assert!(tokens.check(&t, 999));
        assert!(!tokens.check(&t, 1_000));
        let other = SessionTokens::new().unwrap();
        assert!(!other.check(&t, 0), "another key");
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[7] ^= 0xff; // push the expiry out
        assert!(!tokens.check(&URL_SAFE_NO_PAD.encode(raw), 0));
        assert!(!tokens.check("", 0));
        assert!(!tokens.check("!!!", 0));
    }

    #[test]
    fn token_ttl_bounds() {
        assert_eq!(
            parse_token_ttl(Some("21600")),
            Some(Duration::from_secs(21_600))
        );
        assert_eq!(parse_token_ttl(Some("1")), Some(Duration::from_secs(1)));
        for bad in [Some("0"), Some("21601"), Some("-1"), Some("x"), None] {
            assert_eq!(parse_token_ttl(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allow_list_by_namespace() {
        let pods = parse_pod_ip_map(
            r#"{"10.0.0.5":"kube-system","10.0.0.6":"default","fd00::1":"kube-system"}"#,
        )
        .unwrap();
        let allowed: HashSet<String> = ["kube-system".to_owned()].into();
        assert_eq!(
            authorize("10.0.0.5".parse().unwrap(), &pods, &allowed),
            Ok(())
        );
        assert_eq!(
            authorize("::ffff:10.0.0.5".parse().unwrap(), &pods, &allowed),
            Ok(())
        );
        assert_eq!(
            authorize("fd00::1".parse().unwrap(), &pods, &allowed),
            Ok(())
        );
        assert_eq!(
            authorize("10.0.0.6".parse().unwrap(), &pods, &allowed),
            Err(Denial::Namespace {
                ip: "10.0.0.6".parse().unwrap(),
                namespace: "default".into()
            })
        );
        assert!(matches!(
            authorize("10.0.0.7".parse().unwrap(), &pods, &allowed),
            Err(Denial::UnknownIp { .. })
        ));
        assert!(parse_pod_ip_map(r#"{"nope":"x"}"#).is_err());
        assert!(parse_pod_ip_map("[]").is_err());
    }

    #[test]
    fn map_file_reload_keeps_the_old_map_on_a_bad_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        std::fs::write(&path, r#"{"10.0.0.5":"a"}"#).unwrap();
        let map = PodIpMap::load(&path).unwrap();
        assert!(!map.reload().unwrap(), "unchanged");
        std::fs::write(&path, r#"{"10.0.0.5":"bb"}"#).unwrap();
        assert!(map.reload().unwrap());
        assert_eq!(
            map.current().get(&"10.0.0.5".parse().unwrap()).unwrap(),
            "bb"
        );
        std::fs::write(&path, "{bad json").unwrap();
        assert!(map.reload().is_err());
        assert_eq!(
            map.current().get(&"10.0.0.5".parse().unwrap()).unwrap(),
            "bb"
        );
    }

    #[test]
    fn instance_ids_look_like_ec2s() {
        let id = instance_id_for("node-1");
        assert!(id.starts_with("i-") && id.len() == 19, "{id}");
        assert_eq!(id, instance_id_for("node-1"));
    }
}
