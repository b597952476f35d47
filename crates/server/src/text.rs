//! Text that came from a caller, made safe to keep and to show: bounded in length (with a marker
//! that says how much was cut) and with control characters escaped, so that no value can flood
//! a log or rewrite an operator's terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` cut to at most `max` bytes on a character boundary; a cut value ends with
/// `…[N bytes cut]`, so a reader knows it is not the whole value.
pub fn bounded(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[{} bytes cut]", &s[..end], s.len() - end))
}

/// `s` bounded as [`bounded`] does, with every control character (C0, DEL, C1) written as
/// `\u{…}`: safe to print to a terminal or a one-line log.
pub fn printable(s: &str, max: usize) -> String {
    let b = bounded(s, max);
    if !b.chars().any(char::is_control) {
        return b.into_owned();
    }
    let mut out = String::with_capacity(b.len() + 16);
    for c in b.chars() {
        if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_as_they_are() {
        assert!(matches!(bounded("abc", 3), Cow::Borrowed("abc")));
        assert_eq!(printable("a b", 10), "a b");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary_with_a_marker() {
        assert_eq!(bounded("abcdef", 4), "abcd…[2 bytes cut]");
        // 'é' is two bytes: a cut inside it moves back to its start.
        assert_eq!(bounded("aé", 2), "a…[2 bytes cut]");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            printable("ok\u{1b}]0;pwned\u{7}\n\u{9b}x", 100),
            "ok\\u{1b}]0;pwned\\u{7}\\u{a}\\u{9b}x"
        );
    }

    #[test]
    fn a_bounded_value_is_a_prefix_within_the_bound_and_printable_has_no_control_character() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(2_000), |(value in "(?s).{0,80}", max in 0usize..100)| {
            let b = bounded(&value, max);
            if value.len() <= max {
                prop_assert_eq!(&*b, value.as_str());
            } else {
                let (kept, marker) = b.split_once('…').unwrap();
                prop_assert!(kept.len() <= max && value.starts_with(kept));
                prop_assert_eq!(marker, format!("[{} bytes cut]", value.len() - kept.len()));
            }
            prop_assert!(!printable(&value, max).chars().any(char::is_control));
        });
    }
}
