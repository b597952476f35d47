//! The cache on virtual time (`start_paused`): every hour below passes in microseconds.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::sleep;

use super::*;

const MIN: Duration = Duration::from_secs(60);

#[derive(Default)]
struct FakeState {
    pod_calls: AtomicU64,
    node_calls: AtomicU64,
    serial: AtomicU64,
    down: AtomicBool,
    deny_all: AtomicBool,
    refused: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
}

/// A test double of the server: credentials for `ttl`, numbered `ASIA0`, `ASIA1`, … .
#[derive(Clone)]
struct Fake {
    clock: AgentClock,
    ttl: Duration,
    state: Arc<FakeState>,
}

impl Fake {
    fn pod_calls(&self) -> u64 {
        self.state.pod_calls.load(Ordering::SeqCst)
    }
    fn credentials(&self) -> Credentials {
        let n = self.state.serial.fetch_add(1, Ordering::SeqCst);
        Credentials {
            access_key_id: format!("ASIA{n}"),
            secret_access_key: "secret".into(),
            session_token: "session".into(),
            expiration: self.clock.wall() + self.ttl,
        }
    }
}

impl CredentialSource for Fake {
    fn assume_for_pod(
        &self,
        _cluster_name: &str,
        token: &str,
    ) -> impl Future<Output = Result<PodCredentials, SourceError>> + Send {
        let this = self.clone();
        let token = token.to_owned();
        async move {
            this.state.pod_calls.fetch_add(1, Ordering::SeqCst);
            let delay = *this.state.delay.lock().unwrap();
            if !delay.is_zero() {
                sleep(delay).await;
            }
            if this.state.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable {
                    reason: "connection refused".into(),
                });
            }
            if this.state.refused.lock().unwrap().contains(&token) {
                return Err(service_error("InvalidTokenException", 400));
            }
            if this.state.deny_all.load(Ordering::SeqCst) {
                return Err(service_error("AccessDeniedException", 400));
            }
            Ok(PodCredentials {
                credentials: this.credentials(),
                assumed_role_arn: "arn:aws:sts::111122223333:assumed-role/R/eks-c-p-u".into(),
                association_id: "a-1".into(),
                namespace: "ns".into(),
                service_account: "sa".into(),
            })
        }
    }

    fn node_credentials(&self) -> impl Future<Output = Result<Credentials, SourceError>> + Send {
        let this = self.clone();
        async move {
            this.state.node_calls.fetch_add(1, Ordering::SeqCst);
            if this.state.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable {
                    reason: "connection refused".into(),
                });
            }
            Ok(this.credentials())
        }
    }
}

use std::future::Future;

fn service_error(code: &str, status: u16) -> SourceError {
    SourceError::Service {
        status,
        code: code.into(),
        message: "refused".into(),
    }
}

/// A pod token (signature irrelevant: the double plays the server's verifier).
fn token(uid: &str, variant: &str) -> String {
    let payload = format!(
        r#"{{"exp":1800000000,"jti":"{variant}","kubernetes.io":{{"namespace":"ns","pod":{{"name":"p","uid":"{uid}"}}}}}}"#
    );
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

fn setup(ttl: Duration, configure: impl FnOnce(&mut CacheConfig)) -> (CredentialCache<Fake>, Fake) {
    let clock = AgentClock::virtual_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let fake = Fake {
        clock,
        ttl,
        state: Arc::default(),
    };
    let mut config = CacheConfig::new("c");
    configure(&mut config);
    let cache = CredentialCache::new(fake.clone(), config, clock, Arc::default());
    (cache, fake)
}

async fn key(cache: &CredentialCache<Fake>, token: &str) -> String {
    cache
        .pod_credentials(token)
        .await
        .unwrap()
        .credentials
        .credentials
        .access_key_id
        .clone()
}

#[tokio::test(start_paused = true)]
async fn refreshes_before_expiry() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let _renewals = cache.spawn_renewals();
    let t = token("uid-1", "a");
    assert_eq!(key(&cache, &t).await, "ASIA0");
    sleep(29 * MIN).await;
    assert_eq!(fake.pod_calls(), 1, "nothing due before half the lifetime");
    sleep(2 * MIN).await;
    assert_eq!(fake.pod_calls(), 2, "renewed at half the lifetime");
    assert_eq!(
        key(&cache, &t).await,
        "ASIA1",
        "the renewed credentials are served"
    );
    assert_eq!(fake.pod_calls(), 2, "from the cache");
}

#[tokio::test(start_paused = true)]
async fn server_outage_is_served_from_cache_until_expiry() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let _renewals = cache.spawn_renewals();
    let t = token("uid-1", "a");
    assert_eq!(key(&cache, &t).await, "ASIA0");
    fake.state.down.store(true, Ordering::SeqCst);
    sleep(50 * MIN).await;
    assert!(fake.pod_calls() > 2, "renewals were attempted and failed");
    assert_eq!(key(&cache, &t).await, "ASIA0", "still served while valid");
    sleep(9 * MIN + Duration::from_secs(40)).await; // 59:40, 20 s left
    assert_eq!(key(&cache, &t).await, "ASIA0");
    sleep(Duration::from_secs(10)).await; // 59:50, under min_remaining
    assert!(matches!(
        cache.pod_credentials(&t).await,
        Err(CacheError::Source(SourceError::Unavailable { .. }))
    ));
    sleep(MIN).await;
    assert!(cache.is_empty(), "expired entries are dropped");
    fake.state.down.store(false, Ordering::SeqCst);
    assert_ne!(
        key(&cache, &t).await,
        "ASIA0",
        "fresh credentials once the server is back"
    );
}

#[tokio::test(start_paused = true)]
async fn no_renewals_after_a_pod_stops_asking() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let _renewals = cache.spawn_renewals();
    cache.pod_credentials(&token("uid-1", "a")).await.unwrap();
    sleep(10 * 60 * MIN).await;
    // t=0 fetch; renewals at 30 min and 60 min (the pod's credentials, expiring at 60 min, are
    // within the 5-minute grace); at 90 min the pod has not asked since its credentials expired.
    assert_eq!(fake.pod_calls(), 3);
    assert!(cache.is_empty(), "its entry lapsed at expiry");
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_keeps_asking_keeps_being_renewed() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let _renewals = cache.spawn_renewals();
    let t = token("uid-1", "a");
    cache.pod_credentials(&t).await.unwrap();
    // Like an SDK: ask again 15 minutes before the credentials held expire.
    for _ in 0..12 {
        sleep(45 * MIN).await;
        cache.pod_credentials(&t).await.unwrap();
    }
    let m = cache.inner.metrics.cache_misses.get();
    assert_eq!(m, 1, "every later answer came from the cache");
    assert!(
        fake.pod_calls() >= 1 + 12 * 45 / 30 - 1,
        "{}",
        fake.pod_calls()
    );
}

#[tokio::test(start_paused = true)]
async fn renewals_are_rate_limited() {
    let (cache, fake) = setup(60 * MIN, |c| c.renewals_per_second = 2);
    let _renewals = cache.spawn_renewals();
    for i in 0..20 {
        cache
            .pod_credentials(&token(&format!("uid-{i}"), "a"))
            .await
            .unwrap();
    }
    assert_eq!(fake.pod_calls(), 20, "first fetches are not limited");
    sleep(30 * MIN - Duration::from_millis(500)).await;
    let mut per_second = Vec::new();
    let mut last = fake.pod_calls();
    for _ in 0..12 {
        sleep(Duration::from_secs(1)).await;
        per_second.push(fake.pod_calls() - last);
        last = fake.pod_calls();
    }
    assert!(per_second.iter().all(|n| *n <= 2), "{per_second:?}");
    assert_eq!(
        fake.pod_calls(),
        40,
        "all renewed within 10 s: {per_second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_different_token_for_the_same_pod_is_verified_first() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let a = token("uid-1", "a");
    let forged = token("uid-1", "forged");
    assert_eq!(key(&cache, &a).await, "ASIA0");
    fake.state.refused.lock().unwrap().insert(forged.clone());
    assert!(matches!(
        cache.pod_credentials(&forged).await,
        Err(CacheError::Source(SourceError::Service { ref code, .. })) if code == "InvalidTokenException"
    ));
    assert_eq!(fake.pod_calls(), 2, "the server saw the other token");
    assert_eq!(
        key(&cache, &a).await,
        "ASIA0",
        "the refusal did not evict the pod"
    );
    assert_eq!(fake.pod_calls(), 2);
    // kubelet rotated the token: the new one is verified, then replaces the entry.
    let rotated = token("uid-1", "rotated");
    assert_eq!(key(&cache, &rotated).await, "ASIA1");
    assert_eq!(key(&cache, &rotated).await, "ASIA1");
    assert_eq!(fake.pod_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_server_call() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    *fake.state.delay.lock().unwrap() = Duration::from_millis(200);
    let t = token("uid-1", "a");
    let gets: Vec<_> = (0..10)
        .map(|_| {
            let (cache, t) = (cache.clone(), t.clone());
            tokio::spawn(async move { key(&cache, &t).await })
        })
        .collect();
    for g in gets {
        assert_eq!(g.await.unwrap(), "ASIA0");
    }
    assert_eq!(fake.pod_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_refusal_on_renewal_drops_the_entry() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let _renewals = cache.spawn_renewals();
    let t = token("uid-1", "a");
    cache.pod_credentials(&t).await.unwrap();
    fake.state.deny_all.store(true, Ordering::SeqCst);
    sleep(31 * MIN).await;
    assert!(cache.is_empty(), "association gone: stop serving");
    assert!(cache.pod_credentials(&t).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn tokens_refused_locally_never_reach_the_server() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    for bad in ["", "a.b", "not-a-jwt"] {
        assert!(matches!(
            cache.pod_credentials(bad).await,
            Err(CacheError::Token(_))
        ));
    }
    let expired = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode("{}"),
        URL_SAFE_NO_PAD.encode(r#"{"exp":1600000000,"kubernetes.io":{"pod":{"uid":"u"}}}"#)
    );
    assert!(matches!(
        cache.pod_credentials(&expired).await,
        Err(CacheError::Token(TokenError::Expired { .. }))
    ));
    assert_eq!(fake.pod_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn node_credentials_are_cached_renewed_and_survive_an_outage() {
    let (cache, fake) = setup(60 * MIN, |_| {});
    let _renewals = cache.spawn_renewals();
    let first = cache.node_credentials().await.unwrap();
    assert_eq!(first.credentials.access_key_id, "ASIA0");
    cache.node_credentials().await.unwrap();
    assert_eq!(fake.state.node_calls.load(Ordering::SeqCst), 1);
    sleep(31 * MIN).await;
    assert_eq!(fake.state.node_calls.load(Ordering::SeqCst), 2);
    let renewed = cache.node_credentials().await.unwrap();
    assert_eq!(renewed.credentials.access_key_id, "ASIA1");
    fake.state.down.store(true, Ordering::SeqCst);
    sleep(40 * MIN).await;
    assert_eq!(
        cache
            .node_credentials()
            .await
            .unwrap()
            .credentials
            .access_key_id,
        "ASIA1",
        "outage: served from the cache"
    );
}

#[tokio::test(start_paused = true)]
async fn the_quietest_pod_makes_room_when_full() {
    let (cache, _fake) = setup(60 * MIN, |c| c.max_entries = 2);
    let (a, b, c) = (token("a", "1"), token("b", "1"), token("c", "1"));
    cache.pod_credentials(&a).await.unwrap();
    sleep(MIN).await;
    cache.pod_credentials(&b).await.unwrap();
    sleep(MIN).await;
    cache.pod_credentials(&c).await.unwrap();
    assert_eq!(cache.len(), 2);
    let pods = cache.inner.pods.read().unwrap();
    assert!(!pods.contains_key("a") && pods.contains_key("b") && pods.contains_key("c"));
}
