//! The SigV4 canonical request (AWS General Reference, "Create a canonical request for
//! Signature Version 4"), built from what the client says it signed.

use super::{SigV4Error, UriEncoding, VerifyOptions};

/// RFC 3986 unreserved characters, which SigV4 never encodes.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// SigV4's `UriEncode`: every byte but the unreserved ones (and `/` when `keep_slash`) as `%XX`
/// with uppercase hex.
pub(crate) fn uri_encode(out: &mut String, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Percent-decodes `input`; with `plus_as_space`, `+` becomes a space (query strings, as the AWS
/// SDKs' form decoding does). Invalid escapes are kept literally.
pub(crate) fn percent_decode(input: &str, plus_as_space: bool) -> Vec<u8> {
    let b = input.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).and_then(|c| char::from(*c).to_digit(16));
                let lo = b.get(i + 2).and_then(|c| char::from(*c).to_digit(16));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    // Both digits are below 16, so the value fits a byte.
                    out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_as_space => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4 dot-segment removal as the AWS SDKs apply it for SigV4: empty segments
/// (`//`) and `.` are dropped, `..` pops; a trailing slash is kept.
fn normalize_path(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b"/".to_vec();
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    let ends_with_slash = [&b"/"[..], b"/.", b"/.."].iter().any(|s| path.ends_with(s));
    if out.is_empty() || (ends_with_slash && out.last() != Some(&b'/')) {
        out.push(b'/');
    }
    out
}

/// The canonical URI of `path` (the raw, still percent-encoded path the request arrived with).
pub(crate) fn canonical_uri(path: &str, options: &VerifyOptions) -> String {
    let bytes: Vec<u8> = match options.uri_encoding {
        // Non-S3 services: the path as sent is encoded once more (`%` becomes `%25`).
        UriEncoding::Double => path.as_bytes().to_vec(),
        // S3: the path is encoded once, so decode what arrived first.
        UriEncoding::Single => percent_decode(path, false),
    };
    let bytes = if options.normalize_path {
        normalize_path(&bytes)
    } else if bytes.is_empty() {
        b"/".to_vec()
    } else {
        bytes
    };
    let mut out = String::with_capacity(bytes.len() + 8);
    uri_encode(&mut out, &bytes, true);
    out
}

/// Query parameters decoded into `(name, value)` byte strings, in arrival order.
pub(crate) fn query_pairs(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// The canonical query string: every parameter but `skip` re-encoded strictly and sorted by
/// name, then value.
pub(crate) fn canonical_query(pairs: &[(Vec<u8>, Vec<u8>)], skip: Option<&[u8]>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| Some(name.as_slice()) != skip)
        .map(|(name, value)| {
            let mut n = String::with_capacity(name.len());
            uri_encode(&mut n, name, false);
            let mut v = String::with_capacity(value.len());
            uri_encode(&mut v, value, false);
            (n, v)
        })
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (name, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Trims a header value and folds each run of whitespace into one space. The SDKs differ at the
/// edges (botocore and the JS SDK fold any whitespace, the Rust SDK spaces only); folding all of
/// it also covers obsolete line folding.
pub(crate) fn fold_header_value(out: &mut String, value: &str) {
    let mut pending_space = false;
    for c in value
        .trim_matches(|c: char| matches!(c, ' ' | '\t' | '\r' | '\n'))
        .chars()
    {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            pending_space = true;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
}

/// The canonical headers block (each `name:value\n`) for the signed header names, which must
/// be lowercase, sorted and unique. Repeated headers join their values with `,` in arrival order.
pub(crate) fn canonical_headers(
    headers: &[(&str, &str)],
    signed_headers: &[String],
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(256);
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let mut found = false;
        for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if found {
                out.push(',');
            }
            fold_header_value(&mut out, value);
            found = true;
        }
        if !found {
            return Err(SigV4Error::SignedHeaderMissing { name: name.clone() });
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_the_sdks() {
        let cases: [(&str, &str); 12] = [
            ("", "/"),
            ("/", "/"),
            ("/./example", "/example"),
            ("/example/.", "/example/"),
            ("//example//", "/example/"),
            ("/example1/example2/../..", "/"),
            ("/example/..", "/"),
            ("/../foo", "/foo"),
            ("/foo/bar/../baz/", "/foo/baz/"),
            ("/a/./b/../c", "/a/c"),
            ("foo", "/foo"),
            ("/example/../", "/"),
        ];
        assert_eq!(normalize_path(b"/file.txt."), b"/file.txt.");
        for (input, expected) in cases {
            assert_eq!(
                String::from_utf8(normalize_path(input.as_bytes())).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn decodes_leniently() {
        assert_eq!(percent_decode("a%20b+c", true), b"a b c");
        assert_eq!(percent_decode("a%20b+c", false), b"a b+c");
        assert_eq!(percent_decode("100%", true), b"100%");
        assert_eq!(percent_decode("%zz%4", true), b"%zz%4");
        assert_eq!(percent_decode("%e1%88%b4", true), "ሴ".as_bytes());
    }

    #[test]
    fn encodes_strictly() {
        let mut out = String::new();
        uri_encode(&mut out, "a b/c~-_.*ሴ".as_bytes(), false);
        assert_eq!(out, "a%20b%2Fc~-_.%2A%E1%88%B4");
    }

    #[test]
    fn folds_whitespace() {
        let mut out = String::new();
        fold_header_value(&mut out, "  \"a   b \t c\"\r\n   d  ");
        assert_eq!(out, "\"a b c\" d");
    }

    #[test]
    fn canonical_query_sorts_and_skips() {
        let pairs = query_pairs("b=2&a=3&a=1&X-Amz-Signature=abc&&c");
        assert_eq!(
            canonical_query(&pairs, Some(b"X-Amz-Signature")),
            "a=1&a=3&b=2&c="
        );
    }
}
