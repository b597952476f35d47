//! A small writer for awsQuery XML responses: `<OpResponse xmlns=…><OpResult>…</OpResult>
//! <ResponseMetadata><RequestId>…</RequestId></ResponseMetadata></OpResponse>`.

use std::fmt::Write as _;

pub struct Xml {
    out: String,
    /// The open elements: a few levels at most, kept inline.
    stack: smallvec::SmallVec<[&'static str; 4]>,
}

/// Appends `s` with XML's special characters escaped. Runs without them (session tokens, keys,
/// ARNs: nearly everything) are copied in one go rather than a char at a time.
pub fn escape(s: &str, out: &mut String) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            b'\r' => "&#13;",
            // XML 1.0 cannot carry these even as references: the replacement character keeps
            // the answer readable by every parser. Input is checked too (`Params`); this
            // covers what reached the store before, or from elsewhere.
            b'\t' | b'\n' => continue,
            0..0x20 => "\u{FFFD}",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[plain..i]);
        out.push_str(entity);
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

impl Xml {
    /// Starts `<{action}Response xmlns="{ns}"><{action}Result>`.
    pub fn response(action: &str, ns: &str) -> Xml {
        // An STS answer with credentials is about 1.4 KB: it is written without a reallocation.
        let mut out = String::with_capacity(2048);
        let _ = write!(out, "<{action}Response xmlns=\"{ns}\">\n  <{action}Result>");
        Xml {
            out,
            stack: smallvec::SmallVec::new(),
        }
    }

    /// The bytes written so far.
    pub fn written(&self) -> usize {
        self.out.len()
    }

    pub fn start(&mut self, name: &'static str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.stack.push(name);
        self
    }

    pub fn end(&mut self) -> &mut Self {
        if let Some(name) = self.stack.pop() {
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
        self
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        escape(value, &mut self.out);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// An element whose value is known to hold none of XML's special characters (base64 session
    /// tokens and secrets, access key IDs, timestamps), copied without the escaping scan.
    pub fn text_plain(&mut self, name: &str, value: &str) -> &mut Self {
        debug_assert!(
            !value.contains(['&', '<', '>', '"', '\'', '\r']),
            "{name} needs escaping"
        );
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.out.push_str(value);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// An element whose text is `parts` one after the other (each escaped): `AssumedRoleId` is
    /// `role ID:session name`, written without joining them first.
    pub fn text_joined(&mut self, name: &str, parts: &[&str]) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        for part in parts {
            escape(part, &mut self.out);
        }
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// An ISO 8601 time (`2020-01-01T00:00:00Z`) from milliseconds since the epoch.
    pub fn date(&mut self, name: &str, millis: i64) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        podiam_policy::date::format_date_into(millis, &mut self.out);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.text(name, v);
        }
        self
    }

    pub fn num(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "<{name}>{value}</{name}>");
        self
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.num(name, value)
    }

    /// Closes the result and adds the request ID.
    pub fn finish(mut self, action: &str, request_id: &str) -> String {
        while !self.stack.is_empty() {
            self.end();
        }
        let _ = write!(
            self.out,
            "</{action}Result>\n  <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\n</{action}Response>\n"
        );
        self.out
    }

    /// A response with no result element (`DeleteRole` and other writes).
    pub fn empty(action: &str, ns: &str, request_id: &str) -> String {
        format!(
            "<{action}Response xmlns=\"{ns}\">\n  <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\n</{action}Response>\n"
        )
    }

    pub fn error(ns: &str, fault: &str, code: &str, message: &str, request_id: &str) -> String {
        let mut m = String::new();
        escape(message, &mut m);
        format!(
            "<ErrorResponse xmlns=\"{ns}\">\n  <Error>\n    <Type>{fault}</Type>\n    <Code>{code}</Code>\n    <Message>{m}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nests() {
        let mut x = Xml::response("GetRole", "ns");
        x.start("Role")
            .text("RoleName", "a<b&\"c\"")
            .num("MaxSessionDuration", 3600);
        let s = x.finish("GetRole", "rid");
        assert!(s.contains("<Role><RoleName>a&lt;b&amp;&quot;c&quot;</RoleName><MaxSessionDuration>3600</MaxSessionDuration></Role></GetRoleResult>"), "{s}");
        assert!(s.contains("<RequestId>rid</RequestId>"));
    }

    #[test]
    fn escape_keeps_multibyte_text_and_escapes_at_the_edges() {
        let mut out = String::new();
        escape("<é\r日本'>", &mut out);
        assert_eq!(out, "&lt;é&#13;日本&apos;&gt;");
        out.clear();
        escape("plain", &mut out);
        assert_eq!(out, "plain");
        out.clear();
        escape("a\x01b\tc\nd\x1f", &mut out);
        assert_eq!(out, "a\u{FFFD}b\tc\nd\u{FFFD}");
    }

    /// Whatever a value holds, the escaped text has only characters XML 1.0 allows, and reading
    /// its entities back gives the value with the characters it cannot carry replaced.
    #[test]
    fn escaped_text_is_always_well_formed_xml_text() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(2_000), |(value in "(?s).{0,64}")| {
            let mut out = String::new();
            escape(&value, &mut out);
            prop_assert!(!out.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n')));
            prop_assert!(!out.contains('<') && !out.contains('>'));
            let back = out
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&#13;", "\r")
                .replace("&amp;", "&");
            let expected: String = value
                .chars()
                .map(|c| if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') { '\u{FFFD}' } else { c })
                .collect();
            prop_assert_eq!(back, expected);
        });
    }
}
