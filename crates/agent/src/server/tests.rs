//! Our own failures are answered as ours: a 500 with a body that says what failed, never a
//! 200 or an empty body.

use http_body_util::BodyExt as _;

use super::*;
use crate::wire::EncodeError;

fn unencodable() -> CacheError {
    CacheError::Encode(EncodeError {
        document: "container credentials document",
        reason: "key must be a string".to_owned(),
    })
}

async fn body(answer: Answer) -> serde_json::Value {
    let bytes = answer.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn an_unencodable_document_is_a_500_for_pods() {
    let answer = cache_error_response(&unencodable());
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body(answer).await;
    assert_eq!(body["code"], "InternalServerException");
    assert_eq!(
        body["message"],
        "couldn't encode the container credentials document: key must be a string"
    );
}

#[tokio::test]
async fn an_unencodable_document_is_a_500_for_imds() {
    let answer = imds_error_response(&unencodable());
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body(answer).await["Code"], "Failure");
    let unavailable = CacheError::Source(SourceError::Unavailable {
        reason: "down".to_owned(),
    });
    assert_eq!(
        imds_error_response(&unavailable).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
