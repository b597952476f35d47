//! Which key of a ring signs or seals at a given moment, shared by the issuer's and the session
//! tokens' key rings.
//!
//! Several replicas share one ring through the store and learn of a new key within about a second
//! (PostgreSQL `LISTEN/NOTIFY`, or the periodic version check). A key must not sign before every
//! replica can verify what it signs, so a new key is *published* at once (tokens it would sign are
//! accepted everywhere) but *used* only after [`KEY_ACTIVATION_DELAY`]; until then the previous
//! key, now retiring but still valid, goes on signing. Rotation therefore never produces a token
//! that some replica cannot open.

use std::time::{Duration, SystemTime};

/// How long a new key is only published before it signs: ten times the replicas' one-second
/// propagation bound, which also absorbs clock differences between replicas.
pub const KEY_ACTIVATION_DELAY: Duration = Duration::from_secs(10);

/// The key to use at `now`, given each key's creation time and `retire_after`, from a slice
/// sorted oldest first: among keys still valid, the newest whose activation delay has passed; if
/// none has (a fresh install, whose only key is new), the oldest valid key.
pub(crate) fn active<K>(
    keys: &[K],
    now: SystemTime,
    created: impl Fn(&K) -> SystemTime,
    retire_after: impl Fn(&K) -> Option<SystemTime>,
) -> Option<&K> {
    let valid = |k: &&K| retire_after(k).is_none_or(|t| t > now);
    keys.iter()
        .rev()
        .filter(valid)
        .find(|k| created(k) + KEY_ACTIVATION_DELAY <= now)
        .or_else(|| keys.iter().find(valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (created, retire_after) in seconds.
    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn pick(keys: &[(u64, Option<u64>)], now: u64) -> Option<u64> {
        active(keys, at(now), |k| at(k.0), |k| k.1.map(at)).map(|k| k.0)
    }

    #[test]
    fn a_new_key_signs_only_after_the_activation_delay() {
        // Rotation at t=1000: the old key retires in a day, the new one is created.
        let ring = [(0, Some(1000 + 86_400)), (1000, None)];
        assert_eq!(
            pick(&ring, 1000),
            Some(0),
            "just rotated: the old key still signs"
        );
        assert_eq!(pick(&ring, 1009), Some(0));
        assert_eq!(
            pick(&ring, 1010),
            Some(1000),
            "after the delay: the new key"
        );
        // Past the old key's retirement only the new key is valid.
        assert_eq!(pick(&ring, 1000 + 86_400), Some(1000));
    }

    #[test]
    fn a_fresh_ring_signs_at_once_and_an_empty_or_expired_one_not_at_all() {
        assert_eq!(pick(&[(500, None)], 500), Some(500));
        assert_eq!(pick(&[], 500), None);
        assert_eq!(pick(&[(0, Some(10))], 10), None);
    }

    #[test]
    fn two_rotations_in_a_row_keep_the_last_activated_key() {
        let ring = [(0, Some(90_000)), (1000, Some(90_000)), (1005, None)];
        // 1005 rotated before 1000 activated: 0 signs until 1010, then 1000 until 1015.
        assert_eq!(pick(&ring, 1007), Some(0));
        assert_eq!(pick(&ring, 1012), Some(1000));
        assert_eq!(pick(&ring, 1015), Some(1005));
    }
}
