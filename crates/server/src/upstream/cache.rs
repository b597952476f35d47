//! Upstream credentials per (association, pod UID), in memory only.
//!
//! One slot per key, behind an async lock: the first request for a key calls upstream while the
//! others for that key wait on the lock and then find the credentials it stored (one upstream
//! call per key, however many agents or processes ask at once). A failure is remembered with
//! its time, so requests that queued behind a failed call get its answer instead of each making
//! a call of their own.
//!
//! Nothing here is written to disk or to the database: upstream session tokens live in memory
//! until they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Issued, UpstreamFailure};

/// Most keys held; past it (after dropping expired entries) requests go uncached.
const MAX_ENTRIES: usize = 100_000;
/// Look for expired entries once the map has grown by this many keys.
const SWEEP_EVERY: usize = 1_024;

/// What a pod's credentials are cached under: the association (and its version: an update
/// changes the role, policy or tags) and the pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) association_id: String,
    /// The association's `modifiedAt`: credentials from before an update are not served after it.
    pub(crate) association_version: i64,
    pub(crate) pod_uid: String,
    /// The API that asked: a web-identity session is named and timed by its request, so the two
    /// never share an entry.
    pub(crate) via: Via,
}

/// Which API a pod's upstream session is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// EKS Auth `AssumeRoleForPodIdentity`.
    PodIdentity,
    /// STS `AssumeRoleWithWebIdentity` (IRSA), with the `RoleSessionName` and `DurationSeconds`
    /// asked for: the answer names the session the request named.
    WebIdentity {
        session_name: String,
        duration_secs: u64,
    },
}

#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) issued: Option<Arc<Issued>>,
    /// The last failed upstream call for this key, and when it ended.
    pub(crate) failed: Option<(Instant, UpstreamFailure)>,
}

impl Slot {
    /// Credentials that are still good to hand out at `now` for at least `min_left`.
    pub(crate) fn usable(&self, now: SystemTime, min_left: Duration) -> Option<&Arc<Issued>> {
        self.issued
            .as_ref()
            .filter(|i| i.remaining(now) >= min_left)
    }
}

pub(crate) type SlotRef = Arc<tokio::sync::Mutex<Slot>>;

#[derive(Default)]
pub(crate) struct Cache {
    slots: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, SlotRef>,
    len_at_sweep: usize,
}

impl Cache {
    /// The slot for `key` (created empty); a fresh unshared slot when the cache is full.
    pub(crate) fn slot(&self, key: &Key, now: SystemTime) -> SlotRef {
        let mut inner = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = inner.map.get(key) {
            return Arc::clone(s);
        }
        if inner.map.len() >= inner.len_at_sweep + SWEEP_EVERY || inner.map.len() >= MAX_ENTRIES {
            sweep(&mut inner.map, now);
            inner.len_at_sweep = inner.map.len();
        }
        let slot = SlotRef::default();
        if inner.map.len() < MAX_ENTRIES {
            inner.map.insert(key.clone(), Arc::clone(&slot));
        }
        slot
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

/// Drops slots nobody is using whose credentials have expired (or that never got any).
fn sweep(map: &mut HashMap<Key, SlotRef>, now: SystemTime) {
    map.retain(|_, slot| {
        if Arc::strong_count(slot) > 1 {
            return true;
        }
        match slot.try_lock() {
            Ok(s) => s
                .issued
                .as_ref()
                .is_some_and(|i| i.remaining(now) > Duration::ZERO),
            Err(_) => true,
        }
    });
}
