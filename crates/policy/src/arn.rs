//! ARN patterns, matched one colon-separated component at a time.
//!
//! AWS: "Each of the six colon-delimited components of the ARN is checked separately and each can
//! include multi-character match wildcards (*) or single-character match wildcards (?)." The
//! resource component (the sixth) keeps any further colons, so `arn:aws:logs:*:*:log-group:*`
//! matches `arn:aws:logs:us-east-1:1:log-group:x:log-stream:y`.

use crate::pattern::{Pattern, Resolve, Syntax, Token, tokenize};

/// An ARN has six components: `arn:partition:service:region:account:resource`.
const COMPONENTS: usize = 6;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArnPattern {
    raw: Box<str>,
    form: Form,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Form {
    /// Not ARN-shaped (such as `*`): matched as one wildcard string.
    Whole(Pattern),
    /// One pattern per component; the last one also takes every component after it.
    Components(Box<[Pattern]>),
}

impl ArnPattern {
    pub fn compile(raw: &str, syntax: Syntax) -> ArnPattern {
        let tokens = tokenize(raw, syntax);
        let form = if raw.starts_with("arn:") {
            Form::Components(split_components(tokens).into_boxed_slice())
        } else {
            Form::Whole(Pattern::from_tokens(raw.into(), tokens))
        };
        ArnPattern {
            raw: raw.into(),
            form,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn has_variables(&self) -> bool {
        match &self.form {
            Form::Whole(p) => p.has_variables(),
            Form::Components(c) => c.iter().any(Pattern::has_variables),
        }
    }

    /// The pattern with its variables resolved, for traces; `None` if one has no value.
    pub fn resolved(&self, vars: &dyn Resolve) -> Option<String> {
        match &self.form {
            Form::Whole(p) => p.resolved(vars),
            Form::Components(c) => {
                let parts: Option<Vec<String>> = c.iter().map(|p| p.resolved(vars)).collect();
                Some(parts?.join(":"))
            }
        }
    }

    pub fn matches(&self, arn: &str, vars: &dyn Resolve) -> bool {
        let components = match &self.form {
            Form::Whole(p) => return p.matches(arn, false, vars),
            Form::Components(c) => c,
        };
        let last = components.len() - 1;
        let mut rest = arn;
        for (i, pattern) in components.iter().enumerate() {
            if i == last {
                return pattern.matches(rest, false, vars);
            }
            let Some((head, tail)) = rest.split_once(':') else {
                return false;
            };
            if !pattern.matches(head, false, vars) {
                return false;
            }
            rest = tail;
        }
        false
    }
}

/// Splits tokens at the first five colons found in literal text (a colon inside `${aws:username}`
/// is part of a variable, not a separator).
fn split_components(tokens: Vec<Token>) -> Vec<Pattern> {
    let mut out = Vec::with_capacity(COMPONENTS);
    let mut current: Vec<Token> = Vec::new();
    let finish = |current: &mut Vec<Token>, out: &mut Vec<Pattern>| {
        let tokens = std::mem::take(current);
        let raw = render(&tokens);
        out.push(Pattern::from_tokens(raw.into(), tokens));
    };
    for token in tokens {
        match token {
            Token::Lit(text) if out.len() < COMPONENTS - 1 => {
                let mut rest: &str = &text;
                while out.len() < COMPONENTS - 1
                    && let Some((head, tail)) = rest.split_once(':')
                {
                    if !head.is_empty() {
                        current.push(Token::Lit(head.into()));
                    }
                    finish(&mut current, &mut out);
                    rest = tail;
                }
                if !rest.is_empty() {
                    current.push(Token::Lit(rest.into()));
                }
            }
            other => current.push(other),
        }
    }
    finish(&mut current, &mut out);
    out
}

fn render(tokens: &[Token]) -> String {
    let mut s = String::new();
    for t in tokens {
        match t {
            Token::Lit(l) => s.push_str(l),
            Token::Star => s.push('*'),
            Token::Any => s.push('?'),
            Token::Var { key, default } => {
                s.push_str("${");
                s.push_str(key);
                if let Some(d) = default {
                    s.push_str(", '");
                    s.push_str(d);
                    s.push('\'');
                }
                s.push('}');
            }
        }
    }
    s
}

/// The parts of a concrete ARN that evaluation needs (`arn:aws:sts::123:assumed-role/R/S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut parts = s.splitn(COMPONENTS, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next()?,
        };
        (!arn.partition.is_empty() && !arn.service.is_empty()).then_some(arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::NoVariables;
    use std::collections::HashMap;

    const S: Syntax = Syntax {
        wildcards: true,
        variables: true,
    };

    fn m(p: &str, arn: &str) -> bool {
        ArnPattern::compile(p, S).matches(arn, &NoVariables)
    }

    #[test]
    fn components_are_matched_separately() {
        assert!(m("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b"));
        assert!(!m("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket2/a"));
        assert!(m(
            "arn:aws:iam::*:role/x",
            "arn:aws:iam::123456789012:role/x"
        ));
        // A `*` in the region component does not reach into the account component.
        assert!(!m(
            "arn:aws:sqs:us-*:123:q",
            "arn:aws:sqs:us-east-1:999:123:q"
        ));
        // Fewer components: the last pattern component takes the rest of the ARN.
        assert!(m("arn:aws:sqs:*", "arn:aws:sqs:us-east-1:123:q"));
        assert!(!m("arn:aws:iam::1*:role/x", "arn:aws:iam::2:role/x"));
        assert!(m(
            "arn:aws:logs:*:*:log-group:*",
            "arn:aws:logs:us-east-1:1:log-group:x:log-stream:y"
        ));
        assert!(m("*", "arn:aws:s3:::b"));
        assert!(!m("arn:aws:s3:::b", "arn:aws:s3:::B"), "case-sensitive");
        assert!(m("arn:aws:s3:::b?", "arn:aws:s3:::b1"));
    }

    #[test]
    fn variables_can_hold_colons() {
        struct V(HashMap<&'static str, &'static str>);
        impl Resolve for V {
            fn resolve(&self, key: &str) -> Option<&str> {
                self.0.get(key).copied()
            }
        }
        let vars = V(HashMap::from([("aws:userid", "AROAX:sess")]));
        let p = ArnPattern::compile("arn:aws:s3:::bucket/${aws:userid}/*", S);
        assert!(p.matches("arn:aws:s3:::bucket/AROAX:sess/k", &vars));
        assert!(!p.matches("arn:aws:s3:::bucket/other/k", &vars));
    }

    #[test]
    fn parses_arns() {
        let a = Arn::parse("arn:aws:sts::123:assumed-role/R/S").unwrap();
        assert_eq!(a.service, "sts");
        assert_eq!(a.account, "123");
        assert_eq!(a.resource, "assumed-role/R/S");
        assert!(Arn::parse("123").is_none());
        assert!(Arn::parse("arn:aws").is_none());
    }
}
