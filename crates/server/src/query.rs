//! awsQuery request parameters: `Action=…&Version=…&Tags.member.1.Key=…`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::AwsError;

/// The parameters of one request. Names and values with nothing to decode (nearly all: a web
/// identity token is base64url) borrow from the request's bytes rather than being copied.
#[derive(Clone, Debug, Default)]
pub struct Params<'a> {
    map: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

impl<'a> Params<'a> {
    /// Parses a form body or a query string. A repeated name keeps its first value.
    ///
    /// As `application/x-www-form-urlencoded` decoding (WHATWG URL): `+` is a space, `%XX` a
    /// byte, a malformed escape stays as written, and invalid UTF-8 becomes U+FFFD. Values with
    /// nothing to decode (a web identity token is base64url) are borrowed, not copied.
    pub fn parse(input: &'a [u8]) -> Params<'a> {
        let mut map = BTreeMap::new();
        // memchr: the ~1 KB web identity token is scanned with SIMD, not a byte at a time.
        let mut start = 0;
        while start <= input.len() {
            let end = memchr::memchr(b'&', &input[start..]).map_or(input.len(), |i| start + i);
            let pair = &input[start..end];
            start = end + 1;
            if pair.is_empty() {
                continue;
            }
            let (k, v) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            if let std::collections::btree_map::Entry::Vacant(slot) = map.entry(decode(k)) {
                slot.insert(decode(v));
            }
        }
        Params { map }
    }

    /// Refuses a value with a control character XML 1.0 cannot carry (anything below U+0020
    /// but tab, line feed and carriage return): AWS's field patterns refuse them too, and once
    /// stored they would break every answer that holds them. Names the parameter and the
    /// character.
    pub fn check_characters(&self) -> Result<(), AwsError> {
        for (k, v) in &self.map {
            // A branch-free pass first (it vectorises: a 1 KB token is a few dozen
            // instructions); the byte is looked for only in a value that has one below U+0020.
            if !v.bytes().fold(false, |any, b| any | (b < 0x20)) {
                continue;
            }
            if let Some(c) = v
                .bytes()
                .find(|b| *b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
            {
                return Err(AwsError::validation(format!(
                    "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must not contain the control character U+{:04X}",
                    crate::text::printable(k, 128),
                    c
                )));
            }
        }
        Ok(())
    }

    /// Adds `other`'s names that are not here yet (a repeated name keeps its first value).
    pub fn extend(&mut self, other: Params<'a>) {
        if self.map.is_empty() {
            // A POST's query string is usually empty: take the body's map as it is.
            self.map = other.map;
            return;
        }
        for (k, v) in other.map {
            self.map.entry(k).or_insert(v);
        }
    }

    /// Every name and its value, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(|v| &**v)
    }

    pub fn required(&self, name: &str) -> Result<&str, AwsError> {
        self.get(name).ok_or_else(|| AwsError::missing(name))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, AwsError> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    AwsError::validation(format!(
                        "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be a number",
                        crate::error::lower_first(name)
                    ))
                })
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        self.get(name)
            .map(|v| match v {
                "true" | "True" => Ok(true),
                "false" | "False" => Ok(false),
                _ => Err(AwsError::validation(format!(
                    "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be true or false",
                    crate::error::lower_first(name)
                ))),
            })
            .transpose()
    }

    /// The names `Name.member.…` and their values, as (what follows `.member.`, value): no
    /// prefix is built (this runs for `PolicyArns` on every AssumeRole*).
    fn members<'s>(&'s self, name: &str) -> impl Iterator<Item = (&'s str, &'s str)> {
        self.map
            .range::<str, _>((std::ops::Bound::Included(name), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(name))
            .filter_map(move |(k, v)| Some((k[name.len()..].strip_prefix(".member.")?, &**v)))
    }

    /// `Name.member.1`, `Name.member.2`, … in index order.
    pub fn list(&self, name: &str) -> Vec<&str> {
        let mut items: Vec<(u32, &str)> = self
            .members(name)
            .filter_map(|(i, v)| Some((i.parse().ok()?, v)))
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `Name.member.N.Field` structures, in index order, as field maps.
    pub fn structs(&self, name: &str) -> Vec<BTreeMap<&str, &str>> {
        let mut items: BTreeMap<u32, BTreeMap<&str, &str>> = BTreeMap::new();
        for (rest, v) in self.members(name) {
            if let Some((index, field)) = rest.split_once('.')
                && let Ok(index) = index.parse::<u32>()
            {
                items.entry(index).or_default().insert(field, v);
            }
        }
        items.into_values().collect()
    }

    /// `Tags.member.N.Key` / `.Value` pairs.
    pub fn tags(&self, name: &str) -> Result<Vec<(String, String)>, AwsError> {
        self.structs(name)
            .into_iter()
            .map(|m| {
                let key = m.get("Key").ok_or_else(|| AwsError::missing("Key"))?;
                Ok((
                    key.to_string(),
                    m.get("Value").copied().unwrap_or("").to_string(),
                ))
            })
            .collect()
    }
}

/// Form-decodes one name or value: borrowed when there is nothing to decode.
fn decode(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        // `from_utf8` first: its check is vectorised, `from_utf8_lossy`'s chunking is not.
        return match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        };
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_structs_in_index_order() {
        let p = Params::parse(
            b"Action=X&ClientIDList.member.10=j&ClientIDList.member.2=b&ClientIDList.member.1=a\
              &Tags.member.2.Key=k2&Tags.member.1.Value=v1&Tags.member.1.Key=k1&Tags.member.2.Value=v%202",
        );
        assert_eq!(p.list("ClientIDList"), ["a", "b", "j"]);
        // A name that merely starts with another is not its member list.
        let q = Params::parse(
            b"Tag.member.1=x&TagKeys.member.1=y&Tags.member.1.Key=z&Tags.member.1.Value=w",
        );
        assert_eq!(q.list("Tag"), ["x"]);
        assert_eq!(q.list("TagKeys"), ["y"]);
        assert_eq!(
            q.tags("Tags").unwrap(),
            [("z".to_string(), "w".to_string())]
        );
        assert_eq!(q.tags("Tag").unwrap(), []);
        assert_eq!(
            p.tags("Tags").unwrap(),
            [
                ("k1".to_string(), "v1".to_string()),
                ("k2".to_string(), "v 2".to_string())
            ]
        );
        assert_eq!(p.required("Action").unwrap(), "X");
        let e = p.required("RoleName").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Validation);
        assert!(e.message.contains("at 'roleName'"));
        assert!(Params::parse(b"MaxItems=x").int("MaxItems").is_err());
    }

    /// Any bytes parse; the character check refuses exactly the values with a control
    /// character XML 1.0 cannot carry, and names the parameter.
    #[test]
    fn the_character_check_refuses_exactly_what_xml_cannot_carry() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(2_000), |(input in proptest::collection::vec(any::<u8>(), 0..200))| {
            let p = Params::parse(&input);
            let bad = p.map.values().any(|v| v.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')));
            prop_assert_eq!(p.check_characters().is_err(), bad);
        });
        let e = Params::parse(b"Description=hi%01")
            .check_characters()
            .unwrap_err();
        assert!(
            e.message.contains("'Description'") && e.message.contains("U+0001"),
            "{}",
            e.message
        );
        assert!(
            Params::parse(b"Description=tab%09and%0Aline%0D")
                .check_characters()
                .is_ok()
        );
    }

    /// The hand-written decoder agrees with the `form_urlencoded` crate (the WHATWG algorithm)
    /// on inputs built from the bytes that matter: separators, escapes, `+`, hex digits, broken
    /// escapes and invalid UTF-8.
    #[test]
    fn parse_agrees_with_form_urlencoded() {
        const ALPHABET: &[&[u8]] = &[
            b"&",
            b"=",
            b"%",
            b"+",
            b"a",
            b"F",
            b"0",
            b"9",
            b"g",
            b"%2",
            b"%41",
            b"%e6%97%a5",
            b"%zz",
            b"%C3",
            b"\xff",
            "日".as_bytes(),
            b"\x80",
            b" ",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bits = seed;
            for _ in 0..(seed % 12) {
                input.extend_from_slice(ALPHABET[(bits % ALPHABET.len() as u64) as usize]);
                bits /= ALPHABET.len() as u64;
                if bits == 0 {
                    bits = seed.rotate_left(17);
                }
            }
            let mut expected = BTreeMap::new();
            for (k, v) in form_urlencoded::parse(&input) {
                expected
                    .entry(k.into_owned())
                    .or_insert_with(|| v.into_owned());
            }
            let got: BTreeMap<String, String> = Params::parse(&input)
                .map
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(got, expected, "input {:?}", String::from_utf8_lossy(&input));
        }
    }
}
