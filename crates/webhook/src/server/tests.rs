//! An AdmissionReview that cannot be encoded is a 500 that says so, not an empty 200.

use std::collections::BTreeMap;

use super::*;

#[tokio::test]
async fn an_unencodable_review_is_a_500() {
    let e = serde_json::to_vec(&BTreeMap::from([((1, 2), 3)])).unwrap_err();
    let resp = review_response(Err(EncodeError::from(e)));
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"couldn't encode the AdmissionReview response\n");
}

#[tokio::test]
async fn an_encoded_review_is_json() {
    let resp = review_response(Ok(b"{}".to_vec()));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
}
