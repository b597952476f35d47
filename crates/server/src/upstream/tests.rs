use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;

#[test]
fn aws_means_the_regional_endpoint_of_the_region() {
    assert_eq!(
        endpoint_url("aws", "eu-west-1").unwrap(),
        "https://sts.eu-west-1.amazonaws.com"
    );
    assert_eq!(
        endpoint_url("aws", "cn-north-1").unwrap(),
        "https://sts.cn-north-1.amazonaws.com.cn"
    );
    assert_eq!(
        endpoint_url("http://127.0.0.1:7780/", "us-east-1").unwrap(),
        "http://127.0.0.1:7780"
    );
    assert!(matches!(
        endpoint_url("sts.amazonaws.com", "us-east-1"),
        Err(UpstreamConfigError::Endpoint(_))
    ));
    assert!(matches!(
        endpoint_url("aws", "Not A Region"),
        Err(UpstreamConfigError::Region(_))
    ));
}

#[test]
fn a_role_of_another_account_is_upstream() {
    let config = Config::for_tests();
    assert!(is_upstream_role(
        &config,
        "arn:aws:iam::111122223333:role/app"
    ));
    assert!(is_upstream_role(
        &config,
        "arn:aws:iam::111122223333:role/path/app"
    ));
    assert!(!is_upstream_role(
        &config,
        "arn:aws:iam::000000000000:role/app"
    ));
    assert!(!is_upstream_role(
        &config,
        "arn:aws:iam::111122223333:user/app"
    ));
    assert!(!is_upstream_role(&config, "arn:aws:iam::1111:role/app"));
    assert!(!is_upstream_role(
        &config,
        "arn:aws:iam::111122223333:role/"
    ));
    assert!(
        check_chain(
            &config,
            "arn:aws:iam::111122223333:role/a",
            Some("arn:aws:iam::000000000000:role/b")
        )
        .is_err()
    );
    assert!(
        check_chain(
            &config,
            "arn:aws:iam::111122223333:role/a",
            Some("arn:aws:iam::444455556666:role/b")
        )
        .is_ok()
    );
    assert!(check_chain(&config, "arn:aws:iam::000000000000:role/a", None).is_ok());
}

#[test]
fn the_source_identity_names_the_pod_within_aws_pattern() {
    assert_eq!(source_identity("shop", "cart-7d9f"), "shop@cart-7d9f");
    let long = source_identity("team-a", &"p".repeat(300));
    assert_eq!(long.len(), 64);
    assert!(long.starts_with("team-a@ppp"));
    // Only `[\w+=,.@-]` survives, whatever a token from another issuer says.
    assert_eq!(source_identity("ns", "a/b:c d"), "ns@abcd");
}

#[test]
fn a_session_is_trusted_as_its_role() {
    assert_eq!(
        trust_principal("arn:aws:sts::111122223333:assumed-role/broker/i-0abc"),
        "arn:aws:iam::111122223333:role/broker"
    );
    assert_eq!(
        trust_principal("arn:aws:iam::111122223333:user/podiam-broker"),
        "arn:aws:iam::111122223333:user/podiam-broker"
    );
}

#[test]
fn the_trust_policy_conditions_the_session_tags_the_broker_must_send() {
    let p = trust_policy(
        "arn:aws:iam::111122223333:user/broker",
        "prod",
        Some("shop"),
        None,
        true,
    )
    .to_value();
    let s = &p["Statement"][0];
    assert_eq!(
        s["Principal"]["AWS"],
        "arn:aws:iam::111122223333:user/broker"
    );
    assert_eq!(
        s["Action"],
        json!(["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"])
    );
    assert_eq!(
        s["Condition"]["StringEquals"],
        json!({"aws:RequestTag/eks-cluster-name": "prod", "aws:RequestTag/kubernetes-namespace": "shop"})
    );
    // It is a trust policy podiam's own engine accepts.
    podiam_policy::Policy::parse(&p.to_string(), podiam_policy::PolicyKind::Trust).unwrap();
    let plain = trust_policy("arn:aws:iam::1:root", "c", None, None, false).to_value();
    assert_eq!(
        plain["Statement"][0]["Action"],
        json!(["sts:AssumeRole", "sts:TagSession"])
    );
}

fn issued(received: SystemTime, lifetime: Duration) -> Issued {
    Issued {
        access_key_id: "ASIA".into(),
        secret_access_key: SecretAccessKey::new("secret"),
        session_token: "token".into(),
        expiration: received + lifetime,
        received,
        assumed_role_arn: "arn".into(),
        assumed_role_id: "id".into(),
        session_name: "s".into(),
        request_ids: Vec::new(),
        source_identity: None,
    }
}

#[test]
fn credentials_are_refreshed_shortly_before_they_expire() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let hour = issued(t0, Duration::from_secs(3600));
    assert!(!hour.refresh_due(t0 + Duration::from_secs(44 * 60)));
    assert!(hour.refresh_due(t0 + Duration::from_secs(46 * 60)));
    // Short sessions refresh in their last quarter.
    let short = issued(t0, Duration::from_secs(900));
    assert!(!short.refresh_due(t0 + Duration::from_secs(600)));
    assert!(short.refresh_due(t0 + Duration::from_secs(700)));
    // Secrets stay out of logs.
    let shown = format!("{hour:?}");
    assert!(
        !shown.contains("secret") && !shown.contains("token"),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_are_spaced_by_the_rate_and_a_long_wait_is_refused() {
    let l = limiter::Limiter::new(10);
    let start = tokio::time::Instant::now();
    for _ in 0..5 {
        l.acquire(Duration::from_secs(1)).await.unwrap();
    }
    // One call at once, then one every 100 ms: no burst beyond the rate.
    assert_eq!(start.elapsed(), Duration::from_millis(400));
    // Ten more would wait past a 500 ms budget from the sixth on.
    let mut refused = 0;
    for _ in 0..10 {
        if l.reserve(Duration::from_millis(500)).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
}

#[tokio::test]
async fn the_cache_keeps_one_slot_per_key() {
    let c = cache::Cache::default();
    let key = |uid: &str| CacheKey {
        association_id: "a-1".into(),
        association_version: 1,
        pod_uid: uid.into(),
        via: Via::PodIdentity,
    };
    let now = SystemTime::now();
    let a = c.slot(&key("p1"), now);
    let b = c.slot(&key("p1"), now);
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let other = c.slot(&key("p2"), now);
    assert!(!std::sync::Arc::ptr_eq(&a, &other));
    assert_eq!(c.len(), 2);
    // The same pod's web-identity session is another entry.
    let irsa = CacheKey {
        via: Via::WebIdentity {
            session_name: "s".into(),
            duration_secs: 3600,
        },
        ..key("p1")
    };
    assert!(!std::sync::Arc::ptr_eq(&a, &c.slot(&irsa, now)));
    assert_eq!(c.len(), 3);
    a.lock().await.issued = Some(std::sync::Arc::new(issued(now, Duration::from_secs(3600))));
    let s = b.lock().await;
    assert!(s.usable(now, MIN_SERVED).is_some());
    assert!(
        s.usable(now + Duration::from_secs(3590), MIN_SERVED)
            .is_none()
    );
}
