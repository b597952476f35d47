//! The `query_form` property: any request body (or query string) is read as awsQuery parameters
//! without a panic, with work bounded by its length, and what it yields survives re-encoding.

use podiam_server::query::Params;

/// `application/x-www-form-urlencoded` encoding of one name or value: every byte but the
/// unreserved ones as `%XX`.
fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

pub fn check(data: &[u8]) {
    let params = Params::parse(data);
    let pairs: Vec<(&str, &str)> = params.iter().collect();
    // Bounded: at most one parameter per `&`-separated pair of the input.
    assert!(
        pairs.len() <= data.len() / 2 + 1,
        "{} parameters from {} bytes",
        pairs.len(),
        data.len()
    );

    // The control-character check refuses exactly the values XML 1.0 cannot carry.
    let bad = pairs.iter().any(|(_, v)| {
        v.bytes()
            .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    });
    assert_eq!(
        params.check_characters().is_err(),
        bad,
        "check_characters on {pairs:?}"
    );

    // Every name reads back its value, and the decoded parameters survive re-encoding.
    let mut form = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        assert_eq!(params.get(k), Some(*v));
        if i > 0 {
            form.push('&');
        }
        encode(k, &mut form);
        form.push('=');
        encode(v, &mut form);
    }
    let again = Params::parse(form.as_bytes());
    assert!(again.iter().eq(params.iter()), "re-encoded {form:?}");

    // The list and structure readers, on every list name the input spells, stay within it.
    for (k, _) in &pairs {
        if let Some((name, _)) = k.split_once(".member.") {
            assert!(params.list(name).len() <= pairs.len());
            assert!(params.structs(name).len() <= pairs.len());
            let _ = params.tags(name);
        }
        let _ = params.int(k);
        let _ = params.bool(k);
    }
}
