//! Wildcard patterns with policy variables.
//!
//! A pattern is compiled once into tokens (literal text, `*`, `?`, `${variable}`). At match time the
//! variables are resolved from the request context and their values are matched *literally*: a `*`
//! in a user name never acts as a wildcard. Matching takes time linear in the input (see [`glob`]).
//! Nothing is allocated unless a pattern has more than [`INLINE_PIECES`] tokens or a segment
//! between two `*`s of more than 64 characters is searched for in a long input.

use std::fmt;

/// Resolves a policy variable (its key already lowercased) to its single value.
pub trait Resolve {
    fn resolve(&self, key: &str) -> Option<&str>;
}

/// A resolver for places where variables cannot occur.
pub struct NoVariables;

impl Resolve for NoVariables {
    fn resolve(&self, _key: &str) -> Option<&str> {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Lit(Box<str>),
    /// `*`: any run of characters, including none.
    Star,
    /// `?`: exactly one character.
    Any,
    /// `${key}` or `${key, 'default'}`; `key` is lowercased (condition keys are case-insensitive).
    Var {
        key: Box<str>,
        default: Option<Box<str>>,
    },
}

/// How the text of a pattern is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syntax {
    /// `*` and `?` are wildcards (StringLike, Action, Resource) or literal text (StringEquals).
    pub wildcards: bool,
    /// `${…}` is a policy variable (Version 2012-10-17) or literal text (2008-10-17).
    pub variables: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: Box<str>,
    tokens: Box<[Token]>,
    shape: Shape,
}

/// Precomputed shapes that skip the general matcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The whole pattern is `*`.
    Everything,
    /// One literal token.
    Exact,
    /// A literal followed by `*`.
    Prefix,
    General,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.raw)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The pieces a pattern becomes once its variables are resolved.
#[derive(Clone, Copy, Debug)]
enum Piece<'a> {
    Lit(&'a str),
    Star,
    Any,
}

const INLINE_PIECES: usize = 32;

impl Pattern {
    pub fn compile(raw: &str, syntax: Syntax) -> Pattern {
        let tokens = tokenize(raw, syntax);
        Pattern::from_tokens(raw.into(), tokens)
    }

    pub(crate) fn from_tokens(raw: Box<str>, tokens: Vec<Token>) -> Pattern {
        let shape = match tokens.as_slice() {
            [Token::Star] => Shape::Everything,
            [] | [Token::Lit(_)] => Shape::Exact,
            [Token::Lit(_), Token::Star] => Shape::Prefix,
            _ => Shape::General,
        };
        Pattern {
            raw,
            tokens: tokens.into_boxed_slice(),
            shape,
        }
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn has_variables(&self) -> bool {
        self.tokens.iter().any(|t| matches!(t, Token::Var { .. }))
    }

    pub fn has_wildcards(&self) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, Token::Star | Token::Any))
    }

    /// Matches `input`. `ignore_case` folds case on both sides. Returns `false` when a variable
    /// has no value and no default: AWS treats an unresolved variable as matching nothing.
    pub fn matches(&self, input: &str, ignore_case: bool, vars: &dyn Resolve) -> bool {
        match (self.shape, &*self.tokens) {
            (Shape::Everything, _) => return true,
            (Shape::Exact, []) => return input.is_empty(),
            (Shape::Exact, [Token::Lit(lit)]) => return text_eq(lit, input, ignore_case),
            (Shape::Prefix, [Token::Lit(lit), Token::Star]) => {
                return input
                    .get(..lit.len())
                    .is_some_and(|head| text_eq(lit, head, ignore_case))
                    || (ignore_case
                        && !(lit.is_ascii() && input.is_ascii())
                        && general_prefix(lit, input));
            }
            _ => {}
        }
        let n = self.tokens.len();
        if n <= INLINE_PIECES {
            let mut buf = [Piece::Star; INLINE_PIECES];
            for (slot, token) in buf.iter_mut().zip(self.tokens.iter()) {
                match resolve(token, vars) {
                    Some(piece) => *slot = piece,
                    None => return false,
                }
            }
            glob(&buf[..n], input, ignore_case)
        } else {
            let mut pieces = Vec::with_capacity(n);
            for token in self.tokens.iter() {
                match resolve(token, vars) {
                    Some(piece) => pieces.push(piece),
                    None => return false,
                }
            }
            glob(&pieces, input, ignore_case)
        }
    }

    /// The pattern's text with variables resolved (for traces and for literal comparisons of
    /// values such as ARNs). `None` if a variable is unresolved.
    pub fn resolved(&self, vars: &dyn Resolve) -> Option<String> {
        let mut out = String::with_capacity(self.raw.len());
        for token in self.tokens.iter() {
            match resolve(token, vars)? {
                Piece::Lit(s) => out.push_str(s),
                Piece::Star => out.push('*'),
                Piece::Any => out.push('?'),
            }
        }
        Some(out)
    }
}

fn resolve<'a>(token: &'a Token, vars: &'a dyn Resolve) -> Option<Piece<'a>> {
    Some(match token {
        Token::Lit(s) => Piece::Lit(s),
        Token::Star => Piece::Star,
        Token::Any => Piece::Any,
        Token::Var { key, default } => Piece::Lit(vars.resolve(key).or(default.as_deref())?),
    })
}

fn text_eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if !ignore_case {
        return a == b;
    }
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    // Character by character, as the general matcher compares: both must agree.
    a.chars().count() == b.chars().count()
        && a.chars().zip(b.chars()).all(|(x, y)| char_eq(x, y, true))
}

fn general_prefix(lit: &str, input: &str) -> bool {
    glob(&[Piece::Lit(lit), Piece::Star], input, true)
}

fn char_eq(a: char, b: char, ignore_case: bool) -> bool {
    a == b
        || (ignore_case
            && (a.eq_ignore_ascii_case(&b)
                || (!a.is_ascii() || !b.is_ascii()) && a.to_lowercase().eq(b.to_lowercase())))
}

/// One position of a resolved pattern between two `*`s: `?`, or one character of literal text
/// (including the text of a resolved variable, whose `*` and `?` are plain characters).
#[derive(Clone, Copy, Debug)]
enum Atom {
    Any,
    Char(char),
}

impl Atom {
    fn matches(self, c: char, ignore_case: bool) -> bool {
        match self {
            Atom::Any => true,
            Atom::Char(p) => char_eq(p, c, ignore_case),
        }
    }
}

/// The atoms of one piece, from either end.
enum PieceAtoms<'a> {
    Chars(std::str::Chars<'a>),
    One(Option<Atom>),
}

impl Iterator for PieceAtoms<'_> {
    type Item = Atom;

    fn next(&mut self) -> Option<Atom> {
        match self {
            PieceAtoms::Chars(chars) => chars.next().map(Atom::Char),
            PieceAtoms::One(atom) => atom.take(),
        }
    }
}

impl DoubleEndedIterator for PieceAtoms<'_> {
    fn next_back(&mut self) -> Option<Atom> {
        match self {
            PieceAtoms::Chars(chars) => chars.next_back().map(Atom::Char),
            PieceAtoms::One(atom) => atom.take(),
        }
    }
}

/// The atoms of pieces between two `*`s (a `Star`, which callers never pass, would give none).
fn atoms<'a>(pieces: &'a [Piece<'a>]) -> impl DoubleEndedIterator<Item = Atom> + 'a {
    pieces.iter().flat_map(|piece| match *piece {
        Piece::Lit(s) => PieceAtoms::Chars(s.chars()),
        Piece::Any => PieceAtoms::One(Some(Atom::Any)),
        Piece::Star => PieceAtoms::One(None),
    })
}

/// Matches `atoms` against the start of `text`, one character each: the bytes they took.
fn eat(atoms: impl Iterator<Item = Atom>, text: &str, ignore_case: bool) -> Option<usize> {
    let mut chars = text.chars();
    for atom in atoms {
        if !atom.matches(chars.next()?, ignore_case) {
            return None;
        }
    }
    Some(text.len() - chars.as_str().len())
}

/// Matches `atoms`, last first, against the end of `text`: where the match starts.
fn eat_back(atoms: impl Iterator<Item = Atom>, text: &str, ignore_case: bool) -> Option<usize> {
    let mut chars = text.chars();
    for atom in atoms {
        if !atom.matches(chars.next_back()?, ignore_case) {
            return None;
        }
    }
    Some(chars.as_str().len())
}

/// Wildcard matching in time linear in the input.
///
/// A pattern with at least one `*` is `H*S1*…*Sk*T`, where the head `H`, the tail `T` and the
/// segments `Si` hold no `*`. Every atom of them (a literal character or `?`) takes exactly one
/// character, so `H` can only match the input's first `|H|` characters and `T` its last `|T|`,
/// which must not overlap `H`'s. Between them, each segment is searched left to right, from where
/// the previous one's leftmost occurrence ended. Taking the leftmost occurrence is never wrong: if
/// any match puts `Si` at some position, the leftmost occurrence is at or before it, ends at or
/// before it (all occurrences are equally long), and so leaves at least as much room for
/// `Si+1…Sk`, whose own occurrences in that match are still available. A pattern without `*` is
/// compared character by character.
///
/// Cost, for an input of `n` characters and a pattern of `m` atoms: the head, the tail and a
/// pattern without `*` take O(n + m). The segment searches read disjoint stretches of the input
/// (each starts where the previous one's match ended). [`find`] reads each character of its
/// stretch once, in O(⌈k/64⌉) for a segment of `k` atoms (plus, for a non-ASCII character, a
/// binary search among the segment's characters), after an O(k log k) set-up and the clearing of
/// a 128-entry table; or, where that is cheaper, it tries the segment at every position, within
/// a budget that keeps the total at O(n + m) (see [`NAIVE_BUDGET`]). In all:
/// O(n · ⌈m/64⌉ + n log m + m log m) time and O(m) memory. The algorithm this replaced (greedy,
/// retrying one character after the last `*` on every mismatch) took O(n · m): seconds for
/// `*a…(1,900 a's)…b*` against 100 KB of `a`.
///
/// Nothing is allocated unless a segment longer than 64 atoms is searched in a long input.
fn glob(pieces: &[Piece<'_>], input: &str, ignore_case: bool) -> bool {
    let is_star = |piece: &Piece<'_>| matches!(piece, Piece::Star);
    let (Some(first), Some(last)) = (
        pieces.iter().position(is_star),
        pieces.iter().rposition(is_star),
    ) else {
        return eat(atoms(pieces), input, ignore_case) == Some(input.len());
    };
    let Some(head) = eat(atoms(&pieces[..first]), input, ignore_case) else {
        return false;
    };
    let rest = &input[head..];
    let Some(tail) = eat_back(atoms(&pieces[last + 1..]).rev(), rest, ignore_case) else {
        return false;
    };
    // With one `*`, `first == last` and there are no segments.
    let Some(middle) = pieces.get(first + 1..last) else {
        return true;
    };
    let mut window = &rest[..tail];
    for segment in middle.split(is_star) {
        match find(segment, window, ignore_case) {
            Some(end) => window = &window[end..],
            None => return false,
        }
    }
    true
}

/// Up to this many bytes × atoms, a segment is tried at every position rather than searched
/// bit-parallel: faster for the short inputs policies usually see, and still linear. A segment of
/// `k` atoms tried at `s` positions costs at most `s · k ≤ NAIVE_BUDGET` comparisons, so at most
/// `√NAIVE_BUDGET · (s + k) / 2`; the positions tried for different segments are disjoint, so a
/// whole match spends at most 16 · (n + m) comparisons this way.
const NAIVE_BUDGET: usize = 1024;

/// Where the leftmost occurrence of `segment` (no `*`) in `text` ends, in bytes.
fn find(segment: &[Piece<'_>], text: &str, ignore_case: bool) -> Option<usize> {
    let len = atoms(segment).count();
    if len == 0 {
        return Some(0);
    }
    if len > text.len() {
        // Every atom takes a character, which takes at least a byte.
        return None;
    }
    if text.len().saturating_mul(len) <= NAIVE_BUDGET {
        find_naive(segment, text, ignore_case)
    } else if len <= 64 {
        find_bitap(segment, len, text, ignore_case)
    } else {
        find_bitap_words(segment, len, text, ignore_case)
    }
}

/// [`find`] by trying the segment at every position: O(bytes × atoms).
fn find_naive(segment: &[Piece<'_>], text: &str, ignore_case: bool) -> Option<usize> {
    let mut rest = text;
    loop {
        if let Some(taken) = eat(atoms(segment), rest, ignore_case) {
            return Some(text.len() - rest.len() + taken);
        }
        let mut chars = rest.chars();
        chars.next()?;
        rest = chars.as_str();
    }
}

/// A character's class under [`char_eq`]: `char_eq(a, b, ignore_case)` holds exactly when
/// `key(a, ignore_case) == key(b, ignore_case)`, so a search can look characters up by key.
///
/// Without folding, a character is its own class. With folding, [`char_eq`] holds exactly when
/// both characters have the same `to_lowercase()`: for two ASCII characters its first two tests
/// are ASCII lowercasing, which is what `to_lowercase` does to them; otherwise `a == b` and
/// `eq_ignore_ascii_case` (which leaves non-ASCII characters alone, so it only holds for `a == b`)
/// imply equal lowercase, and the third test is exactly that. The key packs the lowercase
/// sequence (at most 3 characters, 21 bits each, plus one so that no sequence packs like a longer
/// one). ASCII characters get keys 1 to 128 either way.
fn key(c: char, ignore_case: bool) -> u64 {
    if !ignore_case {
        u64::from(c) + 1
    } else if c.is_ascii() {
        u64::from(c.to_ascii_lowercase()) + 1
    } else {
        c.to_lowercase()
            .zip([0, 21, 42])
            .fold(0, |key, (l, shift)| key | (u64::from(l) + 1) << shift)
    }
}

/// The index of an ASCII key in a table of 128.
fn ascii_index(key: u64) -> Option<usize> {
    match key {
        1..=128 => usize::try_from(key - 1).ok(),
        _ => None,
    }
}

/// [`find`] by shift-and (bitap) for a segment of 1 to 64 atoms: after each character, bit `j`
/// of the state says whether the last `j + 1` characters match the segment's first `j + 1`
/// atoms. O(1) per character (a table lookup, or a binary search among at most 64 non-ASCII
/// classes) after an O(len log len) set-up, and nothing allocated.
fn find_bitap(segment: &[Piece<'_>], len: usize, text: &str, ignore_case: bool) -> Option<usize> {
    // Per class, the positions it may take: ASCII classes by index, the others sorted by key.
    let mut ascii = [0u64; 128];
    let mut positions = [(0u64, 0u64); 64];
    let mut used = 0;
    let mut any = 0u64;
    for (j, atom) in atoms(segment).take(64).enumerate() {
        let bit = 1u64 << j;
        let Atom::Char(c) = atom else {
            any |= bit;
            continue;
        };
        let k = key(c, ignore_case);
        if let Some(slot) = ascii_index(k).and_then(|i| ascii.get_mut(i)) {
            *slot |= bit;
        } else if let Some(entry) = positions.get_mut(used) {
            *entry = (k, bit);
            used += 1;
        }
    }
    let positions = &mut positions[..used];
    positions.sort_unstable_by_key(|e| e.0);
    let mut others = [(0u64, 0u64); 64];
    let mut classes = 0;
    for run in positions.chunk_by(|a, b| a.0 == b.0) {
        if let (Some(&(k, _)), Some(slot)) = (run.first(), others.get_mut(classes)) {
            *slot = (k, run.iter().fold(0, |mask, e| mask | e.1));
            classes += 1;
        }
    }
    let others = &others[..classes];
    let accept = 1u64 << (len.clamp(1, 64) - 1);
    let mut state = 0u64;
    for (i, c) in text.char_indices() {
        let k = key(c, ignore_case);
        let mask = match ascii_index(k).and_then(|i| ascii.get(i)) {
            Some(&mask) => mask,
            None => others
                .binary_search_by_key(&k, |e| e.0)
                .ok()
                .and_then(|i| others.get(i))
                .map_or(0, |e| e.1),
        };
        state = ((state << 1) | 1) & (mask | any);
        if state & accept != 0 {
            return Some(i + c.len_utf8());
        }
    }
    None
}

/// One class of the characters in a long segment, for [`find_bitap_words`].
struct Class {
    key: u64,
    /// Its entries in the sorted (key, position) list.
    positions: std::ops::Range<usize>,
    /// Where its mask (with the `?` positions) starts in the dense masks, if it has one.
    mask: Option<usize>,
}

fn bit(words: &[u64], j: usize) -> bool {
    words.get(j / 64).is_some_and(|w| w >> (j % 64) & 1 == 1)
}

fn set_bit(words: &mut [u64], j: usize) {
    if let Some(w) = words.get_mut(j / 64) {
        *w |= 1 << (j % 64);
    }
}

/// [`find_bitap`] for segments of more than 64 atoms, with a state of `W = ⌈len/64⌉` words:
/// O(W + log len) per character, O(len) memory.
///
/// A mask of `W` words for every class could take O(len²/64) memory (a long variable value with
/// many distinct characters), so only classes that take at least `W` positions get one (there are
/// at most `len/W` of them); a rarer class sets its fewer than `W` positions one by one.
fn find_bitap_words(
    segment: &[Piece<'_>],
    len: usize,
    text: &str,
    ignore_case: bool,
) -> Option<usize> {
    let words = len.div_ceil(64);
    let mut any = vec![0u64; words];
    let mut positions: Vec<(u64, usize)> = Vec::with_capacity(len);
    for (j, atom) in atoms(segment).take(len).enumerate() {
        match atom {
            Atom::Any => set_bit(&mut any, j),
            Atom::Char(c) => positions.push((key(c, ignore_case), j)),
        }
    }
    positions.sort_unstable();
    let mut classes: Vec<Class> = Vec::new();
    let mut dense: Vec<u64> = Vec::new();
    let mut ascii: [Option<usize>; 128] = [None; 128];
    let mut start = 0;
    for run in positions.chunk_by(|a, b| a.0 == b.0) {
        let Some(&(key, _)) = run.first() else {
            continue;
        };
        let mask = (run.len() >= words).then(|| {
            let at = dense.len();
            dense.extend_from_slice(&any);
            for &(_, j) in run {
                set_bit(&mut dense[at..], j);
            }
            at
        });
        if let Some(slot) = ascii_index(key).and_then(|i| ascii.get_mut(i)) {
            *slot = Some(classes.len());
        }
        classes.push(Class {
            key,
            positions: start..start + run.len(),
            mask,
        });
        start += run.len();
    }
    let accept = len.max(1) - 1;
    let mut state = vec![0u64; words];
    let mut hits: Vec<usize> = Vec::with_capacity(words);
    // Words from `live` on are zero; a step can only carry into the first of them.
    let mut live = 0;
    for (i, c) in text.char_indices() {
        let k = key(c, ignore_case);
        let class = match ascii_index(k) {
            Some(a) => ascii.get(a).copied().flatten(),
            None => classes.binary_search_by_key(&k, |class| class.key).ok(),
        }
        .and_then(|index| classes.get(index));
        let hi = (live + 1).min(words);
        let state = &mut state[..hi];
        // A rare class's positions that survive the step: bit `j` after the shift is bit `j - 1`
        // before it (and bit 0 is shifted in set).
        hits.clear();
        let mask: &[u64] = match class {
            Some(Class { mask: Some(at), .. }) => &dense[*at..],
            Some(Class { positions: p, .. }) => {
                hits.extend(
                    positions[p.clone()]
                        .iter()
                        .map(|&(_, j)| j)
                        .filter(|&j| j == 0 || bit(state, j - 1)),
                );
                &any
            }
            None => &any,
        };
        let mut carry = 1;
        for (w, m) in state.iter_mut().zip(mask) {
            let out = *w >> 63;
            *w = ((*w << 1) | carry) & m;
            carry = out;
        }
        for &j in &hits {
            set_bit(state, j);
        }
        if bit(state, accept) {
            return Some(i + c.len_utf8());
        }
        live = state.iter().rposition(|&w| w != 0).map_or(0, |w| w + 1);
    }
    None
}

/// Splits pattern text into tokens. `${*}`, `${?}` and `${$}` are literal `*`, `?` and `$`.
pub(crate) fn tokenize(raw: &str, syntax: Syntax) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut lit = String::new();
    let flush = |lit: &mut String, tokens: &mut Vec<Token>| {
        if !lit.is_empty() {
            tokens.push(Token::Lit(std::mem::take(lit).into_boxed_str()));
        }
    };
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if syntax.variables
            && rest.starts_with("${")
            && let Some(close) = rest.find('}')
        {
            let inner = &rest[2..close];
            match inner {
                "*" | "?" | "$" => lit.push_str(inner),
                _ => {
                    flush(&mut lit, &mut tokens);
                    tokens.push(parse_variable(inner));
                }
            }
            rest = &rest[close + 1..];
            continue;
        }
        match c {
            '*' if syntax.wildcards => {
                flush(&mut lit, &mut tokens);
                // `**` means the same as `*`.
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            '?' if syntax.wildcards => {
                flush(&mut lit, &mut tokens);
                tokens.push(Token::Any);
            }
            _ => lit.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut lit, &mut tokens);
    tokens
}

/// `key` or `key, 'default'` (AWS: the default is a quoted string after a comma).
fn parse_variable(inner: &str) -> Token {
    let (key, default) = match inner.split_once(',') {
        Some((key, default)) => {
            let d = default.trim();
            let d = d
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .unwrap_or(d);
            (key, Some(d.into()))
        }
        None => (inner, None),
    };
    Token::Var {
        key: key.trim().to_ascii_lowercase().into_boxed_str(),
        default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::prop;
    use proptest::strategy::Strategy;
    use std::collections::HashMap;

    const GLOB: Syntax = Syntax {
        wildcards: true,
        variables: true,
    };

    struct Vars(HashMap<&'static str, &'static str>);
    impl Resolve for Vars {
        fn resolve(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
    }

    fn m(p: &str, s: &str) -> bool {
        Pattern::compile(p, GLOB).matches(s, false, &NoVariables)
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("s3:Get*", "s3:GetObject"));
        assert!(!m("s3:Get*", "s3:PutObject"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*a*b*", "xxaxxbxx"));
        assert!(!m("*a*b", "xxaxxbxxc"));
        assert!(m("é?", "éß"));
        assert!(m("", ""));
        assert!(!m("", "x"));
    }

    #[test]
    fn case_folding_is_optional() {
        let p = Pattern::compile("S3:get*", GLOB);
        assert!(p.matches("s3:GetObject", true, &NoVariables));
        assert!(!p.matches("s3:GetObject", false, &NoVariables));
        let p = Pattern::compile("ÉTÉ*", GLOB);
        assert!(p.matches("été-x", true, &NoVariables));
        // Every shape folds case the same way, character by character.
        let kelvin = "\u{212A}";
        for pattern in ["k", "k*", "k?", "*k"] {
            let input = pattern
                .replace('?', "x")
                .replace('*', "")
                .replace('k', kelvin);
            let input = if pattern == "k?" {
                format!("{kelvin}x")
            } else {
                input
            };
            assert!(
                Pattern::compile(pattern, GLOB).matches(&input, true, &NoVariables),
                "{pattern} vs {input}"
            );
        }
    }

    #[test]
    fn variables_are_literal_and_escapes_work() {
        let vars = Vars(HashMap::from([("aws:username", "a*b")]));
        let p = Pattern::compile("home/${aws:UserName}/*", GLOB);
        assert!(p.matches("home/a*b/x", false, &vars));
        assert!(
            !p.matches("home/aXb/x", false, &vars),
            "value must be literal"
        );
        let p = Pattern::compile("x${*}y${?}${$}", GLOB);
        assert!(p.matches("x*y?$", false, &NoVariables));
        assert!(!p.matches("xAy?$", false, &NoVariables));
        let p = Pattern::compile("${aws:PrincipalTag/team, 'company-wide'}", GLOB);
        assert!(p.matches("company-wide", false, &NoVariables));
        let p = Pattern::compile("${aws:missing}*", GLOB);
        assert!(!p.matches("anything", false, &NoVariables));
        assert_eq!(p.resolved(&NoVariables), None);
    }

    /// `*`, `count` × `c`, `b`: every position of a run of `c` starts a near-match.
    fn attack(c: char, count: usize) -> Pattern {
        let mut p = String::from("*");
        p.extend(std::iter::repeat_n(c, count));
        p.push('b');
        Pattern::compile(&p, GLOB)
    }

    #[test]
    fn the_attack_shape_does_not_match() {
        // O(pattern × input) steps for the greedy matcher this replaced: seconds for 100 KB.
        // Only the result is checked here; the time is in crates/policy-bench/benches/wildcard.rs.
        let p = attack('a', 1_900);
        for len in [100_000, 300_000] {
            let input = "a".repeat(len);
            assert!(!p.matches(&input, false, &NoVariables), "{len}");
            assert!(
                !p.matches(&input, true, &NoVariables),
                "{len}, ignoring case"
            );
            assert!(p.matches(&(input + "b"), false, &NoVariables), "{len} + b");
        }
        let input = "É".repeat(100_000);
        assert!(!attack('é', 1_900).matches(&input, true, &NoVariables));
        assert!(attack('é', 1_900).matches(&(input + "B"), true, &NoVariables));
        // The same segment between two stars, and made of `?`s.
        let p = Pattern::compile(&format!("*{}b*", "a".repeat(1_900)), GLOB);
        assert!(!p.matches(&"a".repeat(100_000), false, &NoVariables));
        let p = Pattern::compile(&format!("*{}b", "?".repeat(1_900)), GLOB);
        assert!(!p.matches(&"a".repeat(100_000), false, &NoVariables));
        assert!(p.matches(&format!("{}b", "a".repeat(100_000)), false, &NoVariables));
    }

    #[test]
    fn long_variable_values_are_literal() {
        let value: &'static str = "a*?".repeat(400).leak();
        let vars = Vars(HashMap::from([("aws:username", value)]));
        let p = Pattern::compile("*/${aws:username}/*", GLOB);
        let input = format!("x/{value}/{value}/y");
        assert!(p.matches(&input, false, &vars));
        let input = format!("x/{}/y", "a*b".repeat(1_200));
        assert!(!p.matches(&input, false, &vars), "the value's ? is literal");
    }

    #[test]
    fn keys_are_classes_of_char_eq() {
        let interesting = [
            'a', 'A', 'k', 'K', 'i', 'I', 's', 'S', '\u{212A}', '\u{0130}', '\u{0131}', 'ſ', 'ß',
            'ẞ', 'σ', 'ς', 'Σ', 'é', 'É', 'ǅ', 'ǆ', 'Ǆ', '\u{2126}', 'ω', 'Ω', '𝔸', '\0',
        ];
        let check = |a: char, b: char| {
            for ignore_case in [false, true] {
                assert_eq!(
                    char_eq(a, b, ignore_case),
                    key(a, ignore_case) == key(b, ignore_case),
                    "{a:?} {b:?} ignoring case: {ignore_case}"
                );
            }
        };
        for a in interesting {
            for b in interesting {
                check(a, b);
            }
        }
        // Every character against its lowercase and uppercase forms.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for other in c.to_lowercase().chain(c.to_uppercase()) {
                check(c, other);
            }
        }
    }

    /// Segments over a small alphabet with case pairs, multibyte characters and `?`, in runs (so
    /// that some characters take many positions and others few). The Kelvin sign folds to an
    /// ASCII letter, and `İ` to two characters.
    fn segment(max_runs: usize, max_run: usize) -> impl Strategy<Value = Vec<Piece<'static>>> {
        let atom = prop::sample::select(
            &[
                Piece::Lit("a"),
                Piece::Lit("A"),
                Piece::Lit("b"),
                Piece::Lit("é"),
                Piece::Lit("É"),
                Piece::Lit("k"),
                Piece::Lit("\u{212A}"),
                Piece::Lit("İ"),
                Piece::Lit("ab"),
                Piece::Lit(""),
                Piece::Any,
            ][..],
        );
        prop::collection::vec((atom, 1..max_run), 1..max_runs).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(piece, n)| std::iter::repeat_n(piece, n))
                .collect()
        })
    }

    /// Text that often holds near-matches of `segment`: runs of its own characters.
    fn text(max: usize) -> impl Strategy<Value = String> {
        let run = (
            prop::sample::select(&["a", "A", "b", "é", "É", "K", "\u{212A}", "İ", "i", "x"][..]),
            1..40usize,
        )
            .prop_map(|(s, n)| s.repeat(n));
        prop::collection::vec(run, 0..max).prop_map(|runs| runs.concat())
    }

    /// The segment with its `?`s filled in, inside `text`, so that it occurs.
    fn with_occurrence(segment: &[Piece<'_>], text: &str, at: prop::sample::Index) -> String {
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut out = text[..cut].to_string();
        for atom in atoms(segment) {
            match atom {
                Atom::Any => out.push('É'),
                Atom::Char(c) => out.push(c),
            }
        }
        out.push_str(&text[cut..]);
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        #[test]
        fn bitap_finds_what_trying_every_position_finds(
            seg in segment(16, 8),
            text in text(12),
            plant in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<prop::sample::Index>(),
            ignore_case in proptest::prelude::any::<bool>(),
        ) {
            let text = if plant { with_occurrence(&seg, &text, at) } else { text };
            let len = atoms(&seg).count();
            let want = find_naive(&seg, &text, ignore_case);
            if (1..=64).contains(&len) {
                proptest::prop_assert_eq!(find_bitap(&seg, len, &text, ignore_case), want);
            }
            if len >= 1 {
                proptest::prop_assert_eq!(find_bitap_words(&seg, len, &text, ignore_case), want);
            }
            proptest::prop_assert_eq!(find(&seg, &text, ignore_case), want);
        }

        #[test]
        fn multiword_bitap_finds_what_trying_every_position_finds(
            seg in segment(12, 60),
            text in text(30),
            plant in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<prop::sample::Index>(),
            ignore_case in proptest::prelude::any::<bool>(),
        ) {
            let text = if plant { with_occurrence(&seg, &text, at) } else { text };
            let len = atoms(&seg).count();
            let want = find_naive(&seg, &text, ignore_case);
            if len >= 1 {
                proptest::prop_assert_eq!(find_bitap_words(&seg, len, &text, ignore_case), want);
            }
            proptest::prop_assert_eq!(find(&seg, &text, ignore_case), want);
        }
    }

    #[test]
    fn literal_syntax_keeps_everything() {
        let p = Pattern::compile(
            "a*${x}",
            Syntax {
                wildcards: false,
                variables: false,
            },
        );
        assert!(p.matches("a*${x}", false, &NoVariables));
        assert!(!p.matches("ab${x}", false, &NoVariables));
    }
}
