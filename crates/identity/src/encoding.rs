//! Small encodings shared by the modules: hex, strict base64 and AWS's base32 alphabet.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Lowercase hex, as SigV4 writes hashes and signatures.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes lowercase or uppercase hex into exactly `N` bytes.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let b = text.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// base64url without padding (JOSE), strict: padding and non-canonical trailing bits are rejected.
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

pub(crate) fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 with padding, strict.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Standard base64 with padding. SIMD (`base64-simd`): it writes the session token of every STS
/// answer, and the scalar encoder was most of the token's cost after the encryption.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// RFC 4648 base32 alphabet: uppercase `A`–`Z` then `2`–`7`. AWS unique IDs and access key IDs
/// use these characters after their four-letter prefix.
pub(crate) const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Maps random bytes onto the base32 alphabet, one character per byte. 256 is a multiple of 32,
/// so taking the low five bits keeps the distribution uniform.
pub(crate) fn base32_chars(random: &[u8]) -> String {
    random
        .iter()
        .map(|b| char::from(BASE32_ALPHABET[usize::from(b & 0x1f)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex::<4>("0001ABff"), Some(bytes));
        assert_eq!(unhex::<4>("0001abf"), None);
        assert_eq!(unhex::<4>("0001abfg"), None);
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64url_decode("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(b64url_decode("AQ=="), None);
        assert_eq!(b64url_decode("AR"), None); // non-zero trailing bits
        assert_eq!(b64url_decode("a+b/"), None);
    }

    /// The SIMD encoder writes what the `base64` crate's strict decoder reads back, at every
    /// length around its block sizes (and the padding cases).
    #[test]
    fn simd_encoding_round_trips_through_the_strict_decoder() {
        let bytes: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in 0..bytes.len() {
            let text = b64_encode(&bytes[..n]);
            assert_eq!(text, STANDARD.encode(&bytes[..n]), "length {n}");
            assert_eq!(
                b64_decode(&text).as_deref(),
                Some(&bytes[..n]),
                "length {n}"
            );
        }
    }
}
