//! Time and randomness as injected dependencies.
//!
//! Nothing in this crate reads the system clock or an entropy source directly: every expiry rule
//! takes a [`Clock`], and every freshly minted secret takes an [`Rng`], so tests pin both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The source of "now" for every expiry and freshness rule.
pub trait Clock {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that always answers the same instant, for tests and for replaying a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedClock(pub SystemTime);

impl FixedClock {
    /// A clock fixed at `secs` seconds after the Unix epoch.
    #[must_use]
    pub fn at_unix(secs: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The random number generator failed to produce bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
pub struct RngError;

/// A cryptographically secure source of random bytes.
pub trait Rng {
    /// Fills `dest` entirely with random bytes.
    ///
    /// # Errors
    /// [`RngError`] when the underlying source fails; callers must not use `dest` then.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RngError>;
}

/// The system's CSPRNG as exposed by aws-lc-rs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRng;

impl Rng for SystemRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RngError> {
        aws_lc_rs::rand::fill(dest).map_err(|_| RngError)
    }
}

/// The system's CSPRNG, drawn in blocks of [`POOL_BYTES`] per thread and handed out in order,
/// each byte once (and zeroed in the pool as it is handed out).
///
/// Each call into the system CSPRNG costs a fixed few hundred nanoseconds (its DRBG re-keys
/// after every call) whatever the length, and a credential mint needs 58 bytes: drawn in blocks,
/// about seventeen mints share one call. This is the construction of `rand`'s `ThreadRng` (a per-thread
/// buffer refilled from a CSPRNG), with the system's DRBG as the generator.
///
/// The pool is per thread, so it needs no lock, and a thread never hands out what another did.
/// A process that forks gives its child a copy of the pool; podiam never forks (subprocesses
/// are spawned with exec, which starts a fresh image).
#[derive(Clone, Copy, Debug, Default)]
pub struct PooledSystemRng;

/// How many bytes [`PooledSystemRng`] draws from the system CSPRNG at a time.
pub const POOL_BYTES: usize = 1024;

struct Pool {
    bytes: [u8; POOL_BYTES],
    /// Bytes already handed out (zeroed) from the front of `bytes`.
    used: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { bytes: [0; POOL_BYTES], used: POOL_BYTES })
    };
}

impl Rng for PooledSystemRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RngError> {
        // Large requests would drain the pool for little gain: they go to the source directly.
        if dest.len() > POOL_BYTES / 4 {
            return SystemRng.fill(dest);
        }
        POOL.try_with(|pool| {
            let Ok(mut pool) = pool.try_borrow_mut() else {
                return SystemRng.fill(dest);
            };
            let pool = &mut *pool;
            if pool.used + dest.len() > POOL_BYTES {
                // A failed refill leaves the pool empty (all of it counts as handed out).
                pool.used = POOL_BYTES;
                SystemRng.fill(&mut pool.bytes)?;
                pool.used = 0;
            }
            let end = pool.used + dest.len();
            dest.copy_from_slice(&pool.bytes[pool.used..end]);
            pool.bytes[pool.used..end].fill(0);
            pool.used = end;
            Ok(())
        })
        // The thread is exiting (its pool is gone): draw directly.
        .unwrap_or_else(|_| SystemRng.fill(dest))
    }
}

impl<R: Rng + ?Sized> Rng for &R {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RngError> {
        (**self).fill(dest)
    }
}

/// Seconds since the Unix epoch, negative before it (JWT `NumericDate` allows that).
#[must_use]
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The instant `secs` seconds after (or before, when negative) the Unix epoch.
#[must_use]
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

// === calendar arithmetic (proleptic Gregorian, UTC) ===

/// Days since 1970-01-01 for a civil date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date for a count of days since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are in range by construction (day 1..=31, month 1..=12).
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Broken-down UTC time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
}

fn to_civil(time: SystemTime) -> Civil {
    let secs = unix_seconds(time);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
    }
}

/// Formats `time` as AWS writes `Expiration` in XML: ISO-8601 UTC with whole seconds,
/// `2019-11-09T13:34:41Z`.
#[must_use]
pub fn format_iso8601(time: SystemTime) -> String {
    let c = to_civil(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Formats `time` in SigV4's basic ISO-8601 form, `20150830T123600Z`.
#[must_use]
pub fn format_amz_date(time: SystemTime) -> String {
    let c = to_civil(time);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses SigV4's basic ISO-8601 timestamp `YYYYMMDDTHHMMSSZ` (exactly 16 ASCII characters).
pub(crate) fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let year = i64::from(year);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second);
    Some(from_unix_seconds(secs))
}

/// A deterministic byte stream for unit tests (never for secrets).
#[cfg(test)]
pub(crate) struct TestRng(pub std::cell::Cell<u64>);

#[cfg(test)]
impl Rng for TestRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RngError> {
        for b in dest {
            // SplitMix64 step: cheap and well spread.
            let mut z = self.0.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            self.0.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *b = (z ^ (z >> 31)) as u8;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_rng_hands_out_each_byte_once() {
        // Draws across several refills of the pool: no two 16-byte values are equal (a replay
        // of the pool, or zeroed bytes handed out, would repeat one), and a large draw works.
        let rng = PooledSystemRng;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(3 * POOL_BYTES / 16) {
            let mut v = [0u8; 16];
            rng.fill(&mut v).unwrap();
            assert_ne!(v, [0u8; 16]);
            assert!(seen.insert(v), "a pooled value repeated");
        }
        // Odd sizes straddle the end of a pool.
        for len in [1, 7, 58, 255, 256] {
            let mut v = vec![0u8; len];
            rng.fill(&mut v).unwrap();
        }
        let mut big = vec![0u8; POOL_BYTES * 2];
        rng.fill(&mut big).unwrap();
        assert!(big.iter().any(|b| *b != 0));
        // Another thread's pool is its own: its values are not this thread's.
        let other: Vec<[u8; 16]> = std::thread::spawn(|| {
            (0..64)
                .map(|_| {
                    let mut v = [0u8; 16];
                    PooledSystemRng.fill(&mut v).unwrap();
                    v
                })
                .collect()
        })
        .join()
        .unwrap();
        assert!(other.iter().all(|v| !seen.contains(v)));
    }

    #[test]
    fn formats_and_parses_round_trip() {
        let t = from_unix_seconds(1_440_938_160); // 2015-08-30T12:36:00Z
        assert_eq!(format_iso8601(t), "2015-08-30T12:36:00Z");
        assert_eq!(format_amz_date(t), "20150830T123600Z");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(t));
    }

    #[test]
    fn calendar_is_consistent_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            format_iso8601(from_unix_seconds(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn rejects_impossible_dates() {
        for bad in [
            "20150230T000000Z",
            "20190229T000000Z",
            "20151301T000000Z",
            "20150830T240000Z",
            "20150830T123660Z",
            "20150830 123600Z",
            "2015083OT123600Z",
            "20150830T123600",
            "+0150830T123600Z",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        assert!(parse_amz_date("20160229T000000Z").is_some());
    }
}
