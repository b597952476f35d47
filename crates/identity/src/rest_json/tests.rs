//! The error shapes of Smithy's restJson1 protocol tests (`RestJsonFooErrorUsing…`) and the
//! precedence botocore gives the header and the body's fields.

use super::*;

fn parse(status: u16, headers: &[(&str, &str)], body: &str) -> RestJsonError {
    RestJsonError::parse(status, headers.iter().copied(), body.as_bytes())
}

const URI: &str = ":http://internal.amazon.com/coral/com.amazon.coral.validate/";
const NAMESPACE: &str = "aws.protocoltests.restjson#";

#[test]
fn every_smithy_shape_of_the_code_gives_the_name() {
    for value in [
        "FooError".to_owned(),
        format!("FooError{URI}"),
        format!("{NAMESPACE}FooError"),
        format!("{NAMESPACE}FooError{URI}"),
    ] {
        let header = parse(500, &[("X-Amzn-Errortype", &value)], "");
        assert_eq!(header.code, "FooError", "header `{value}`");
        for field in ["code", "Code", "__type"] {
            let body = serde_json::json!({ field: value }).to_string();
            assert_eq!(parse(500, &[], &body).code, "FooError", "body {body}");
        }
    }
}

#[test]
fn the_header_wins_then_code_then_dunder_type() {
    let body = r#"{"code":"FromCode","__type":"FromType","message":"m"}"#;
    let header = [("x-amzn-errortype", "FromHeader")];
    assert_eq!(parse(400, &header, body).code, "FromHeader");
    assert_eq!(parse(400, &[], body).code, "FromCode");
    assert_eq!(parse(400, &[], r#"{"__type":"FromType"}"#).code, "FromType");
    assert_eq!(
        parse(400, &[("x-amzn-errortype", "")], r#"{"__type":"FromType"}"#).code,
        "FromType",
        "an empty header names nothing"
    );
}

#[test]
fn message_comes_from_message_then_capital_message() {
    let e = parse(
        400,
        &[(
            "x-amzn-errortype",
            "InvalidTokenException:http://internal.amazon.com/",
        )],
        r#"{"message":"bad","Message":"other"}"#,
    );
    assert_eq!(
        e,
        RestJsonError {
            status: 400,
            code: "InvalidTokenException".into(),
            message: "bad".into()
        }
    );
    assert_eq!(parse(400, &[], r#"{"Message":"Hi"}"#).message, "Hi");
    assert_eq!(parse(400, &[], r#"{"message":5}"#).message, "");
}

#[test]
fn an_unnamed_error_is_named_after_its_status() {
    let e = parse(503, &[], "");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("Http503", ""));
    assert_eq!(parse(400, &[], r#"{"code":7}"#).code, "Http400");
    assert_eq!(parse(400, &[], r#"{"__type":"ns#"}"#).code, "Http400");
}

#[test]
fn a_body_that_is_not_json_is_kept_as_the_message() {
    let page = format!("  <html><body>{}</body></html>\n", "x".repeat(300));
    let e = parse(502, &[], &page);
    assert_eq!(e.code, "Http502");
    assert!(e.message.starts_with("<html><body>xxx"), "{}", e.message);
    assert_eq!(e.message.chars().count(), 200);
    assert_eq!(
        parse(400, &[], r#"{"__type":"X"}"#).message,
        "",
        "a JSON body without a message has none"
    );
}
