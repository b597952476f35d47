//! The AdmissionReview answer when encoding fails: a refusal that says why, never `allowed`
//! with an empty patch.

use super::*;

/// A real serde_json encoding error: JSON object keys must be strings.
fn encoding_error() -> serde_json::Error {
    serde_json::to_vec(&BTreeMap::from([((1, 2), 3)])).unwrap_err()
}

#[test]
fn a_patch_that_cannot_be_encoded_refuses_the_pod() {
    let response = patched("u-1", Err(encoding_error()));
    assert_eq!(response["uid"], "u-1");
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none());
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("couldn't encode the JSON patch: "),
        "{message}"
    );
}

#[test]
fn an_encoded_patch_is_allowed_in_base64() {
    let response = patched("u-1", Ok(b"[]".to_vec()));
    assert_eq!(
        response,
        json!({"uid": "u-1", "allowed": true, "patch": "W10=", "patchType": "JSONPatch"})
    );
}

#[test]
fn reviews_echo_the_request_types() {
    let types = TypeMeta {
        api_version: Some("admission.k8s.io/v1beta1".to_owned()),
        kind: Some("AdmissionReview".to_owned()),
    };
    let body = respond(&types, "u-2", Outcome::Allow(Vec::new())).unwrap();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        review,
        json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
               "response": {"uid": "u-2", "allowed": true}})
    );
    let body = respond(&TypeMeta::default(), "", Outcome::Error("no".to_owned())).unwrap();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["message"], "no");
}

/// A ServiceAccount write that panicked half-way (the lock is poisoned) does not stop later
/// ServiceAccounts from being cached and read (they were dropped, and reads found nothing).
#[test]
fn service_accounts_survive_a_poisoned_lock() {
    let webhook = Webhook::new(Config::default(), None, None, LookupPolicy::default());
    std::thread::scope(|s| {
        let _ = s
            .spawn(|| {
                let _held = webhook.service_accounts.write().unwrap();
                panic!("poisoning the lock on purpose");
            })
            .join();
    });
    assert!(webhook.service_accounts.is_poisoned());
    let annotations = BTreeMap::from([(
        "eks.amazonaws.com/role-arn".to_owned(),
        "arn:aws:iam::111122223333:role/web".to_owned(),
    )]);
    webhook.apply_service_account("default", "web", &annotations);
    assert_eq!(webhook.cached_service_accounts(), 1);
    assert!(webhook.cached("default", "web").is_some());
    webhook.delete_service_account("default", "web");
    assert_eq!(webhook.cached_service_accounts(), 0);
}
