//! Condition operators, compiled once and evaluated against a request context.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;

use crate::arn::ArnPattern;
use crate::context::Context;
use crate::date::parse_date;
use crate::pattern::{Pattern, Syntax};

/// A condition operator without its set qualifier or `IfExists` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

const OPERATORS: [(&str, Operator); 27] = [
    ("StringEquals", Operator::StringEquals),
    ("StringNotEquals", Operator::StringNotEquals),
    ("StringEqualsIgnoreCase", Operator::StringEqualsIgnoreCase),
    (
        "StringNotEqualsIgnoreCase",
        Operator::StringNotEqualsIgnoreCase,
    ),
    ("StringLike", Operator::StringLike),
    ("StringNotLike", Operator::StringNotLike),
    ("NumericEquals", Operator::NumericEquals),
    ("NumericNotEquals", Operator::NumericNotEquals),
    ("NumericLessThan", Operator::NumericLessThan),
    ("NumericLessThanEquals", Operator::NumericLessThanEquals),
    ("NumericGreaterThan", Operator::NumericGreaterThan),
    (
        "NumericGreaterThanEquals",
        Operator::NumericGreaterThanEquals,
    ),
    ("DateEquals", Operator::DateEquals),
    ("DateNotEquals", Operator::DateNotEquals),
    ("DateLessThan", Operator::DateLessThan),
    ("DateLessThanEquals", Operator::DateLessThanEquals),
    ("DateGreaterThan", Operator::DateGreaterThan),
    ("DateGreaterThanEquals", Operator::DateGreaterThanEquals),
    ("Bool", Operator::Bool),
    ("BinaryEquals", Operator::BinaryEquals),
    ("IpAddress", Operator::IpAddress),
    ("NotIpAddress", Operator::NotIpAddress),
    ("ArnEquals", Operator::ArnEquals),
    ("ArnLike", Operator::ArnLike),
    ("ArnNotEquals", Operator::ArnNotEquals),
    ("ArnNotLike", Operator::ArnNotLike),
    ("Null", Operator::Null),
];

impl Operator {
    pub fn name(self) -> &'static str {
        OPERATORS
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(name, _)| name)
    }

    /// AWS: negated operators match when the value matches *none* of the policy values, and are
    /// true when the key is missing.
    pub fn is_negated(self) -> bool {
        use Operator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

/// `ForAllValues:` / `ForAnyValue:` prefixes for multivalued keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SetQualifier {
    ForAllValues,
    ForAnyValue,
}

/// A full operator name such as `ForAnyValue:StringLikeIfExists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorSpec {
    pub qualifier: Option<SetQualifier>,
    pub operator: Operator,
    pub if_exists: bool,
}

impl OperatorSpec {
    pub fn parse(name: &str) -> Result<OperatorSpec, String> {
        let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAllValues:") {
            (Some(SetQualifier::ForAllValues), r)
        } else if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (Some(SetQualifier::ForAnyValue), r)
        } else {
            (None, name)
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let operator = OPERATORS
            .iter()
            .find(|(n, _)| *n == base)
            .map(|(_, op)| *op)
            .ok_or_else(|| match OPERATORS.iter().find(|(n, _)| n.eq_ignore_ascii_case(base)) {
                Some((n, _)) => format!("unknown condition operator `{name}` (operator names are case-sensitive: did you mean `{n}`?)"),
                None => format!("unknown condition operator `{name}`"),
            })?;
        if operator == Operator::Null && if_exists {
            return Err("the `Null` operator cannot take the `IfExists` suffix".into());
        }
        if operator == Operator::Null && qualifier.is_some() {
            return Err("the `Null` operator cannot take a set qualifier".into());
        }
        Ok(OperatorSpec {
            qualifier,
            operator,
            if_exists,
        })
    }
}

impl fmt::Display for OperatorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.qualifier {
            Some(SetQualifier::ForAllValues) => f.write_str("ForAllValues:")?,
            Some(SetQualifier::ForAnyValue) => f.write_str("ForAnyValue:")?,
            None => {}
        }
        f.write_str(self.operator.name())?;
        if self.if_exists {
            f.write_str("IfExists")?;
        }
        Ok(())
    }
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IP in a request value; `aws:SourceIp` may also arrive as `a.b.c.d/32`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse()
        .ok()
        .or_else(|| s.split_once('/').and_then(|(a, _)| a.parse().ok()))
}

/// Policy values, parsed for their operator when the policy is compiled.
#[derive(Clone, Debug, PartialEq)]
enum Values {
    Strings(Box<[Pattern]>),
    Numbers(Box<[f64]>),
    Dates(Box<[i64]>),
    Bools(Box<[bool]>),
    /// `Bool` values of which some are policy variables (`"${aws:ViaAWSService}"`): AWS allows
    /// a variable with `Bool`, resolved when the request is evaluated.
    BoolVars(Box<[BoolValue]>),
    Binaries(Box<[Vec<u8>]>),
    Networks(Box<[Cidr]>),
    Arns(Box<[ArnPattern]>),
}

/// One `Bool` policy value: fixed, or a policy variable resolved at evaluation.
#[derive(Clone, Debug, PartialEq)]
enum BoolValue {
    Fixed(bool),
    Variable(Pattern),
}

/// One `Operator: { Key: values }` entry of a statement's `Condition` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub spec: OperatorSpec,
    /// The key as written in the policy.
    pub key: Box<str>,
    key_lower: Box<str>,
    /// The values as written in the policy.
    pub raw_values: Box<[String]>,
    values: Values,
}

/// What a condition found when it was evaluated, for the trace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConditionTrace {
    pub operator: String,
    pub key: String,
    pub expected: Vec<String>,
    /// The request's values for the key; `None` when the key is not in the request.
    pub actual: Option<Vec<String>>,
    pub result: bool,
    pub why: String,
}

// How many conditions this thread has decided: the unit tests' proof that an explanation
// does not evaluate again.
#[cfg(test)]
thread_local! {
    pub(crate) static DECIDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Condition {
    /// Compiles one condition. `variables` is false for Version 2008-10-17 policies.
    pub fn compile(
        spec: OperatorSpec,
        key: &str,
        raw_values: Vec<String>,
        variables: bool,
    ) -> Result<Condition, String> {
        use Operator::*;
        if raw_values.is_empty() {
            return Err(format!("condition key `{key}` has no values"));
        }
        let each = |what: &str, parse: &dyn Fn(&str) -> bool| -> Result<(), String> {
            match raw_values.iter().find(|v| !parse(v)) {
                Some(bad) => Err(format!(
                    "`{bad}` is not {what} (operator `{spec}`, key `{key}`)"
                )),
                None => Ok(()),
            }
        };
        let values = match spec.operator {
            StringEquals | StringNotEquals | StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => {
                let syntax = Syntax {
                    wildcards: false,
                    variables,
                };
                Values::Strings(
                    raw_values
                        .iter()
                        .map(|v| Pattern::compile(v, syntax))
                        .collect(),
                )
            }
            StringLike | StringNotLike => {
                let syntax = Syntax {
                    wildcards: true,
                    variables,
                };
                Values::Strings(
                    raw_values
                        .iter()
                        .map(|v| Pattern::compile(v, syntax))
                        .collect(),
                )
            }
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => {
                each("a number", &|v| parse_number(v).is_some())?;
                Values::Numbers(raw_values.iter().filter_map(|v| parse_number(v)).collect())
            }
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => {
                each("a date (ISO 8601 or epoch seconds)", &|v| {
                    parse_date(v).is_some()
                })?;
                Values::Dates(raw_values.iter().filter_map(|v| parse_date(v)).collect())
            }
            Bool if variables && raw_values.iter().any(|v| v.contains("${")) => {
                let syntax = Syntax {
                    wildcards: false,
                    variables: true,
                };
                each("`true`, `false` or a policy variable", &|v| {
                    parse_bool(v).is_some() || Pattern::compile(v, syntax).has_variables()
                })?;
                Values::BoolVars(
                    raw_values
                        .iter()
                        .map(|v| match parse_bool(v) {
                            Some(b) => BoolValue::Fixed(b),
                            None => BoolValue::Variable(Pattern::compile(v, syntax)),
                        })
                        .collect(),
                )
            }
            Bool | Null => {
                each("`true` or `false`", &|v| parse_bool(v).is_some())?;
                Values::Bools(raw_values.iter().filter_map(|v| parse_bool(v)).collect())
            }
            BinaryEquals => {
                each("base64", &|v| decode_base64(v).is_some())?;
                Values::Binaries(raw_values.iter().filter_map(|v| decode_base64(v)).collect())
            }
            IpAddress | NotIpAddress => {
                each("an IPv4 or IPv6 address or CIDR", &|v| {
                    Cidr::parse(v).is_some()
                })?;
                Values::Networks(raw_values.iter().filter_map(|v| Cidr::parse(v)).collect())
            }
            ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => {
                let syntax = Syntax {
                    wildcards: true,
                    variables,
                };
                Values::Arns(
                    raw_values
                        .iter()
                        .map(|v| ArnPattern::compile(v, syntax))
                        .collect(),
                )
            }
        };
        Ok(Condition {
            spec,
            key: key.into(),
            key_lower: key.to_ascii_lowercase().into_boxed_str(),
            raw_values: raw_values.into_boxed_slice(),
            values,
        })
    }

    /// The key, lowercased.
    pub fn key_lowercase(&self) -> &str {
        &self.key_lower
    }

    /// Evaluates the condition. Allocates nothing.
    pub fn evaluate(&self, ctx: &Context) -> bool {
        self.decide(ctx).0
    }

    /// Evaluates and says why, for the trace.
    pub fn explain(&self, ctx: &Context) -> ConditionTrace {
        let (result, why) = self.decide(ctx);
        self.trace(ctx, result, why)
    }

    /// The trace of a decision already made (`result`, for the reason `why`): the values are
    /// read from the request, nothing is matched again.
    pub(crate) fn trace(&self, ctx: &Context, result: bool, why: &str) -> ConditionTrace {
        ConditionTrace {
            operator: self.spec.to_string(),
            key: self.key.to_string(),
            expected: self.raw_values.to_vec(),
            actual: ctx
                .get_lowercase(&self.key_lower)
                .map(|v| v.values.to_strings()),
            result,
            why: why.to_string(),
        }
    }

    /// The decision and its reason. Allocates nothing.
    pub(crate) fn decide(&self, ctx: &Context) -> (bool, &'static str) {
        #[cfg(test)]
        DECIDED.with(|d| d.set(d.get() + 1));
        let entry = ctx
            .get_lowercase(&self.key_lower)
            .filter(|v| !v.values.is_empty());
        if self.spec.operator == Operator::Null {
            // AWS: `Null: true` holds when the key is absent, `false` when it is present.
            let absent = entry.is_none();
            return match self.values {
                Values::Bools(ref want) if want.contains(&absent) => (
                    true,
                    if absent {
                        "key is absent, as `Null: true` requires"
                    } else {
                        "key is present, as `Null: false` requires"
                    },
                ),
                _ => (
                    false,
                    if absent {
                        "key is absent but `Null: false` requires it"
                    } else {
                        "key is present but `Null: true` requires it absent"
                    },
                ),
            };
        }
        let negated = self.spec.operator.is_negated();
        let Some(entry) = entry else {
            return match (self.spec.if_exists, self.spec.qualifier) {
                (true, _) => (true, "key is absent, so the `IfExists` condition holds"),
                (false, Some(SetQualifier::ForAllValues)) => {
                    (true, "key is absent: `ForAllValues` holds for an empty set")
                }
                (false, Some(SetQualifier::ForAnyValue)) => {
                    (false, "key is absent: `ForAnyValue` fails for an empty set")
                }
                (false, None) if negated => (true, "key is absent, so a negated operator holds"),
                (false, None) => (false, "key is absent from the request"),
            };
        };
        let per_value = |v: &str| self.any_value_matches(v, ctx) != negated;
        let result = match self.spec.qualifier {
            Some(SetQualifier::ForAllValues) => entry.values.iter().all(|v| per_value(v)),
            Some(SetQualifier::ForAnyValue) => entry.values.iter().any(|v| per_value(v)),
            // Without a set qualifier, a positive operator needs one request value to match; a
            // negated one needs every request value to match none of the policy values.
            None if negated => entry.values.iter().all(|v| per_value(v)),
            None => entry.values.iter().any(|v| per_value(v)),
        };
        let why = match (result, self.spec.qualifier) {
            (true, Some(SetQualifier::ForAllValues)) => "every request value matched",
            (false, Some(SetQualifier::ForAllValues)) => "a request value matched no policy value",
            (true, Some(SetQualifier::ForAnyValue)) => "a request value matched",
            (false, Some(SetQualifier::ForAnyValue)) => "no request value matched",
            (true, None) if negated => "the request value matched none of the policy values",
            (false, None) if negated => "the request value matched a policy value",
            (true, None) => "the request value matched",
            (false, None) => "the request value matched none of the policy values",
        };
        (result, why)
    }

    /// Whether one request value matches any policy value under the (positive form of the)
    /// operator. A request value that does not parse as the operator's type matches nothing.
    fn any_value_matches(&self, v: &str, ctx: &Context) -> bool {
        use Operator::*;
        let op = self.spec.operator;
        match &self.values {
            Values::Strings(patterns) => {
                let ignore_case = matches!(op, StringEqualsIgnoreCase | StringNotEqualsIgnoreCase);
                patterns.iter().any(|p| p.matches(v, ignore_case, ctx))
            }
            Values::Numbers(want) => {
                let Some(got) = parse_number(v) else {
                    return false;
                };
                want.iter().any(|&w| compare(op, got.partial_cmp(&w)))
            }
            Values::Dates(want) => {
                let Some(got) = parse_date(v) else {
                    return false;
                };
                want.iter().any(|&w| compare(op, Some(got.cmp(&w))))
            }
            Values::Bools(want) => parse_bool(v).is_some_and(|got| want.contains(&got)),
            Values::BoolVars(want) => parse_bool(v).is_some_and(|got| {
                want.iter().any(|w| match w {
                    BoolValue::Fixed(b) => *b == got,
                    // A variable whose key is absent, or not a boolean, matches nothing.
                    BoolValue::Variable(p) => {
                        p.resolved(ctx).and_then(|text| parse_bool(&text)) == Some(got)
                    }
                })
            }),
            Values::Binaries(want) => {
                // Decode into a stack buffer: request values here are short (hashes, ids).
                let mut buf = [0u8; 512];
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode_slice(v.trim(), &mut buf);
                match decoded {
                    Ok(n) => want.iter().any(|w| w.as_slice() == &buf[..n]),
                    Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                        let got = decode_base64(v);
                        want.iter().any(|w| got.as_deref() == Some(w.as_slice()))
                    }
                    // Not base64: compare the raw text.
                    Err(_) => want.iter().any(|w| v.as_bytes() == w.as_slice()),
                }
            }
            Values::Networks(nets) => {
                parse_ip(v).is_some_and(|ip| nets.iter().any(|n| n.contains(ip)))
            }
            Values::Arns(patterns) => patterns.iter().any(|p| p.matches(v, ctx)),
        }
    }
}

/// Numeric and date comparisons; the operator's positive form decides.
fn compare(op: Operator, ord: Option<std::cmp::Ordering>) -> bool {
    use Operator::*;
    use std::cmp::Ordering::*;
    let Some(ord) = ord else {
        return false;
    };
    match op {
        NumericEquals | NumericNotEquals | DateEquals | DateNotEquals => ord == Equal,
        NumericLessThan | DateLessThan => ord == Less,
        NumericLessThanEquals | DateLessThanEquals => ord != Greater,
        NumericGreaterThan | DateGreaterThan => ord == Greater,
        NumericGreaterThanEquals | DateGreaterThanEquals => ord != Less,
        _ => false,
    }
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(op: &str, key: &str, values: &[&str]) -> Condition {
        Condition::compile(
            OperatorSpec::parse(op).unwrap(),
            key,
            values.iter().map(|s| s.to_string()).collect(),
            true,
        )
        .unwrap()
    }

    #[test]
    fn operator_names() {
        let s = OperatorSpec::parse("ForAnyValue:StringLikeIfExists").unwrap();
        assert_eq!(s.qualifier, Some(SetQualifier::ForAnyValue));
        assert_eq!(s.operator, Operator::StringLike);
        assert!(s.if_exists);
        assert_eq!(s.to_string(), "ForAnyValue:StringLikeIfExists");
        assert!(OperatorSpec::parse("NullIfExists").is_err());
        let e = OperatorSpec::parse("stringequals").unwrap_err();
        assert!(e.contains("did you mean `StringEquals`"), "{e}");
    }

    /// AWS: a policy variable may be used with `Bool`; it is resolved at evaluation, and an
    /// absent or non-boolean variable matches nothing.
    #[test]
    fn bool_takes_policy_variables() {
        let c = cond("Bool", "aws:SecureTransport", &["${aws:ViaAWSService}"]);
        let mut ctx = Context::new();
        ctx.insert("aws:SecureTransport", "true");
        assert!(!c.evaluate(&ctx), "the variable's key is absent");
        ctx.insert("aws:ViaAWSService", "true");
        assert!(c.evaluate(&ctx));
        ctx.insert("aws:ViaAWSService", "false");
        assert!(!c.evaluate(&ctx));
        ctx.insert("aws:ViaAWSService", "maybe");
        assert!(!c.evaluate(&ctx));
        assert!(
            Condition::compile(
                OperatorSpec::parse("Bool").unwrap(),
                "k",
                vec!["yes".into()],
                true
            )
            .is_err()
        );
    }

    #[test]
    fn missing_keys_follow_aws() {
        let ctx = Context::new();
        assert!(!cond("StringEquals", "k", &["a"]).evaluate(&ctx));
        assert!(cond("StringNotEquals", "k", &["a"]).evaluate(&ctx));
        assert!(cond("StringEqualsIfExists", "k", &["a"]).evaluate(&ctx));
        assert!(cond("ForAllValues:StringEquals", "k", &["a"]).evaluate(&ctx));
        assert!(!cond("ForAnyValue:StringEquals", "k", &["a"]).evaluate(&ctx));
        assert!(cond("Null", "k", &["true"]).evaluate(&ctx));
        assert!(!cond("Null", "k", &["false"]).evaluate(&ctx));
    }

    #[test]
    fn typed_operators() {
        let mut ctx = Context::new();
        ctx.insert("n", "10")
            .insert("d", "2020-06-01T00:00:00Z")
            .insert("ip", "10.1.2.3")
            .insert("ip6", "2001:db8::1")
            .insert("b", "true")
            .insert("bin", "aGVsbG8=");
        assert!(cond("NumericLessThan", "n", &["11"]).evaluate(&ctx));
        assert!(!cond("NumericLessThan", "n", &["10"]).evaluate(&ctx));
        assert!(cond("NumericEquals", "n", &["10.0"]).evaluate(&ctx));
        assert!(cond("DateGreaterThan", "d", &["2020-01-01"]).evaluate(&ctx));
        assert!(cond("DateLessThan", "d", &["1600000000"]).evaluate(&ctx));
        assert!(cond("IpAddress", "ip", &["10.0.0.0/8"]).evaluate(&ctx));
        assert!(cond("NotIpAddress", "ip", &["192.168.0.0/16"]).evaluate(&ctx));
        assert!(cond("IpAddress", "ip6", &["2001:db8::/32"]).evaluate(&ctx));
        assert!(!cond("IpAddress", "ip6", &["10.0.0.0/8"]).evaluate(&ctx));
        assert!(cond("Bool", "b", &["true"]).evaluate(&ctx));
        assert!(cond("BinaryEquals", "bin", &["aGVsbG8="]).evaluate(&ctx));
        assert!(
            Condition::compile(
                OperatorSpec::parse("NumericEquals").unwrap(),
                "n",
                vec!["ten".into()],
                true
            )
            .unwrap_err()
            .contains("`ten` is not a number")
        );
    }

    #[test]
    fn set_qualifiers_on_lists() {
        let mut ctx = Context::new();
        ctx.insert_list("aws:TagKeys", ["env", "team"]);
        assert!(
            cond(
                "ForAllValues:StringEquals",
                "aws:tagkeys",
                &["env", "team", "x"]
            )
            .evaluate(&ctx)
        );
        assert!(!cond("ForAllValues:StringEquals", "aws:tagkeys", &["env"]).evaluate(&ctx));
        assert!(cond("ForAnyValue:StringEquals", "aws:tagkeys", &["env"]).evaluate(&ctx));
        assert!(!cond("ForAnyValue:StringEquals", "aws:tagkeys", &["y"]).evaluate(&ctx));
        assert!(cond("ForAllValues:StringNotEquals", "aws:tagkeys", &["y"]).evaluate(&ctx));
        assert!(!cond("ForAllValues:StringNotEquals", "aws:tagkeys", &["env"]).evaluate(&ctx));
        assert!(cond("ForAnyValue:StringNotEquals", "aws:tagkeys", &["env"]).evaluate(&ctx));
        let t = cond("ForAllValues:StringEquals", "aws:TagKeys", &["env"]).explain(&ctx);
        assert!(!t.result);
        assert_eq!(t.actual, Some(vec!["env".to_string(), "team".to_string()]));
    }

    #[test]
    fn cidr_edges() {
        let c = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(c.contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("::ffff:203.0.113.9".parse().unwrap()));
    }
}
