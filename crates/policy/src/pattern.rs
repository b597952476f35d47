//! Wildcard patterns with policy variables.
//!
//! A pattern is compiled once into tokens (literal text, `*`, `?`, `${variable}`). At match time the
//! variables are resolved from the request context and their values are matched *literally*: a `*`
//! in a user name never acts as a wildcard. Nothing is allocated unless a pattern has more than
//! [`INLINE_PIECES`] tokens.

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

/// Position in a resolved pattern: which piece, and the byte offset inside a literal piece.
#[derive(Clone, Copy)]
struct At {
    piece: usize,
    offset: usize,
}

enum Atom {
    End,
    Star,
    Any,
    Char(char),
}

fn atom(pieces: &[Piece<'_>], at: &mut At) -> Atom {
    loop {
        match pieces.get(at.piece) {
            None => return Atom::End,
            Some(Piece::Star) => return Atom::Star,
            Some(Piece::Any) => return Atom::Any,
            Some(Piece::Lit(s)) => match s[at.offset..].chars().next() {
                Some(c) => return Atom::Char(c),
                None => {
                    at.piece += 1;
                    at.offset = 0;
                }
            },
        }
    }
}

fn advance(pieces: &[Piece<'_>], at: At) -> At {
    match pieces.get(at.piece) {
        Some(Piece::Lit(s)) => {
            let len = s[at.offset..].chars().next().map_or(0, char::len_utf8);
            At {
                piece: at.piece,
                offset: at.offset + len,
            }
        }
        _ => At {
            piece: at.piece + 1,
            offset: 0,
        },
    }
}

/// Classic greedy wildcard matching with one backtrack point: linear in practice, O(n·m) worst.
fn glob(pieces: &[Piece<'_>], input: &str, ignore_case: bool) -> bool {
    let mut at = At {
        piece: 0,
        offset: 0,
    };
    let mut si = 0usize;
    let mut backtrack: Option<(At, usize)> = None;
    loop {
        let next_char = input[si..].chars().next();
        let step = match (atom(pieces, &mut at), next_char) {
            (Atom::Star, _) => {
                at = advance(pieces, at);
                backtrack = Some((at, si));
                continue;
            }
            (Atom::Any, Some(c)) => Some(c),
            (Atom::Char(p), Some(c)) if char_eq(p, c, ignore_case) => Some(c),
            (Atom::End, None) => return true,
            _ => None,
        };
        match step {
            Some(c) => {
                at = advance(pieces, at);
                si += c.len_utf8();
            }
            None => {
                // Let the last `*` swallow one more character and retry from just after it.
                let Some((star_at, star_si)) = backtrack else {
                    return false;
                };
                let Some(c) = input[star_si..].chars().next() else {
                    return false;
                };
                let star_si = star_si + c.len_utf8();
                backtrack = Some((star_at, star_si));
                at = star_at;
                si = star_si;
            }
        }
    }
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
