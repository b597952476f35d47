//! The policy document model, compiled from JSON.

use std::fmt;

use crate::arn::ArnPattern;
use crate::condition::{Condition, OperatorSpec};
use crate::json::{self, Node, Position, Span, Value};
use crate::pattern::{Pattern, Syntax};

/// `Version`: without 2012-10-17, `${…}` is literal text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    #[serde(rename = "2012-10-17")]
    V2012_10_17,
    #[serde(rename = "2008-10-17")]
    V2008_10_17,
}

/// Where a policy sits, which decides the grammar it must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PolicyKind {
    /// Identity-based (inline, managed), permissions boundary, session policy: no `Principal`,
    /// `Resource` required.
    Identity,
    /// Resource-based: `Principal` required.
    Resource,
    /// A role's trust policy: `Principal` required, `Resource` prohibited.
    Trust,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Effect {
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        })
    }
}

/// A malformed policy document. Messages name the path (`Statement[1].Condition`) and the
/// position; the server reports them as `MalformedPolicyDocument`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Syntax(#[from] json::SyntaxError),
    #[error("`{path}` at {at}: {problem}")]
    Invalid {
        path: String,
        at: Position,
        problem: String,
    },
}

/// `Action`/`NotAction`, `Resource`/`NotResource`: a list of patterns, maybe negated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher<P> {
    pub negated: bool,
    pub patterns: Box<[P]>,
}

/// `Principal`/`NotPrincipal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalSpec {
    pub negated: bool,
    /// `"Principal": "*"`.
    pub everyone: bool,
    pub aws: Box<[String]>,
    pub service: Box<[String]>,
    pub federated: Box<[String]>,
    pub canonical_user: Box<[String]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Option<PrincipalSpec>,
    pub action: Matcher<Pattern>,
    /// `None` in trust policies, which have no `Resource`: they apply to the role itself.
    pub resource: Option<Matcher<ArnPattern>>,
    pub conditions: Box<[Condition]>,
    pub span: Span,
}

/// A compiled policy: parse once, evaluate many times.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub version: Version,
    pub id: Option<String>,
    pub kind: PolicyKind,
    pub statements: Box<[Statement]>,
    /// What the simulator reports as `SourcePolicyId` (a policy ARN, an inline policy name, a file).
    pub source_id: String,
    /// Characters excluding whitespace: what AWS's size quotas count.
    pub size: usize,
}

impl Policy {
    pub fn parse(document: &str, kind: PolicyKind) -> Result<Policy, ParseError> {
        let root = json::parse(document)?;
        let size = document.chars().filter(|c| !c.is_whitespace()).count();
        compile(&root, kind, size)
    }

    /// Sets the name the simulator reports for this policy.
    pub fn with_source_id(mut self, id: impl Into<String>) -> Policy {
        self.source_id = id.into();
        self
    }
}

// === compile ===

struct Path(Vec<String>);

impl Path {
    fn err(&self, at: Position, problem: impl Into<String>) -> ParseError {
        ParseError::Invalid {
            path: self.render(),
            at,
            problem: problem.into(),
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for part in &self.0 {
            if !s.is_empty() && !part.starts_with('[') {
                s.push('.');
            }
            s.push_str(part);
        }
        if s.is_empty() { "(document)".into() } else { s }
    }

    fn with<T>(&mut self, part: impl Into<String>, f: impl FnOnce(&mut Path) -> T) -> T {
        self.0.push(part.into());
        let r = f(self);
        self.0.pop();
        r
    }
}

fn compile(root: &Node, kind: PolicyKind, size: usize) -> Result<Policy, ParseError> {
    let mut path = Path(Vec::new());
    let Value::Object(members) = &root.value else {
        return Err(path.err(
            root.span.start,
            format!("a policy must be a JSON object, not {}", root.value.kind()),
        ));
    };
    let mut version = None;
    let mut id = None;
    let mut statement = None;
    for m in members {
        match m.key.as_str() {
            "Version" => {
                let v = path.with("Version", |p| string(p, &m.value))?;
                version = Some(match v {
                    "2012-10-17" => Version::V2012_10_17,
                    "2008-10-17" => Version::V2008_10_17,
                    other => {
                        return Err(path.err(
                            m.value.span.start,
                            format!("`Version` `{other}` is not supported: use `2012-10-17`"),
                        ));
                    }
                });
            }
            "Id" => id = Some(path.with("Id", |p| string(p, &m.value))?.to_string()),
            "Statement" => statement = Some(&m.value),
            other => {
                return Err(path.err(
                    m.value.span.start,
                    format!("unknown field `{other}` (expected `Version`, `Id`, `Statement`)"),
                ));
            }
        }
    }
    // AWS: a policy without `Version` is read as 2008-10-17, where variables are literal.
    let version = version.unwrap_or(Version::V2008_10_17);
    let Some(statement) = statement else {
        return Err(path.err(root.span.start, "missing required field `Statement`"));
    };
    let items: Vec<&Node> = match &statement.value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![statement],
        other => {
            return Err(path.with("Statement", |p| {
                p.err(
                    statement.span.start,
                    format!(
                        "`Statement` must be an object or an array, not {}",
                        other.kind()
                    ),
                )
            }));
        }
    };
    if items.is_empty() {
        return Err(path.err(statement.span.start, "`Statement` must not be empty"));
    }
    let mut statements = Vec::with_capacity(items.len());
    for (i, node) in items.into_iter().enumerate() {
        let part = if matches!(statement.value, Value::Array(_)) {
            format!("Statement[{i}]")
        } else {
            "Statement".to_string()
        };
        let s = path.with(part, |p| compile_statement(p, node, kind, version))?;
        if let Some(sid) = &s.sid
            && statements
                .iter()
                .any(|o: &Statement| o.sid.as_deref() == Some(sid))
        {
            return Err(path.err(
                node.span.start,
                format!("duplicate `Sid` `{sid}`: statement IDs must be unique in a policy"),
            ));
        }
        statements.push(s);
    }
    Ok(Policy {
        version,
        id,
        kind,
        statements: statements.into_boxed_slice(),
        source_id: String::new(),
        size,
    })
}

fn string<'a>(path: &Path, node: &'a Node) -> Result<&'a str, ParseError> {
    match &node.value {
        Value::String(s) => Ok(s),
        other => Err(path.err(
            node.span.start,
            format!("expected a string, not {}", other.kind()),
        )),
    }
}

/// A string or an array of strings, as AWS allows almost everywhere.
fn strings<'a>(path: &mut Path, node: &'a Node) -> Result<Vec<(&'a str, Position)>, ParseError> {
    let out = match &node.value {
        Value::String(s) => vec![(s.as_str(), node.span.start)],
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let s = path.with(format!("[{i}]"), |p| string(p, item))?;
                out.push((s, item.span.start));
            }
            out
        }
        other => {
            return Err(path.err(
                node.span.start,
                format!(
                    "expected a string or an array of strings, not {}",
                    other.kind()
                ),
            ));
        }
    };
    if out.is_empty() {
        return Err(path.err(node.span.start, "must not be empty"));
    }
    Ok(out)
}

fn compile_statement(
    path: &mut Path,
    node: &Node,
    kind: PolicyKind,
    version: Version,
) -> Result<Statement, ParseError> {
    let Value::Object(members) = &node.value else {
        return Err(path.err(
            node.span.start,
            format!("a statement must be an object, not {}", node.value.kind()),
        ));
    };
    let variables = version == Version::V2012_10_17;
    let mut sid = None;
    let mut effect = None;
    let mut principal: Option<PrincipalSpec> = None;
    let mut action: Option<Matcher<Pattern>> = None;
    let mut resource: Option<Matcher<ArnPattern>> = None;
    let mut conditions = Vec::new();
    for m in members {
        let at = m.value.span.start;
        let key = m.key.as_str();
        let exclusive = |path: &Path, taken: bool, other: &str| {
            if taken {
                Err(path.err(
                    at,
                    format!("a statement cannot have both `{key}` and `{other}`"),
                ))
            } else {
                Ok(())
            }
        };
        match key {
            "Sid" => {
                let v = path.with("Sid", |p| string(p, &m.value))?;
                // AWS: IAM's own policies (identity and trust) take only ASCII letters and digits
                // in a Sid; other services' resource policies accept more.
                if kind != PolicyKind::Resource && !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(path.err(
                        at,
                        format!("`Sid` `{v}` may contain only ASCII letters and digits"),
                    ));
                }
                sid = Some(v.to_string());
            }
            "Effect" => {
                effect = Some(match path.with("Effect", |p| string(p, &m.value))? {
                    "Allow" => Effect::Allow,
                    "Deny" => Effect::Deny,
                    other => {
                        return Err(path.err(
                            at,
                            format!("`Effect` must be `Allow` or `Deny`, not `{other}`"),
                        ));
                    }
                });
            }
            "Principal" | "NotPrincipal" => {
                exclusive(
                    path,
                    principal.is_some(),
                    if key == "Principal" {
                        "NotPrincipal"
                    } else {
                        "Principal"
                    },
                )?;
                if kind == PolicyKind::Identity {
                    return Err(path.err(
                        at,
                        format!("an identity-based policy must not specify `{key}`"),
                    ));
                }
                // AWS: "You cannot use the NotPrincipal element in an IAM identity-based policy
                // nor in an IAM role trust policy."
                if kind == PolicyKind::Trust && key == "NotPrincipal" {
                    return Err(path.err(at, "a trust policy must not use `NotPrincipal`: name the principals in `Principal`"));
                }
                principal = Some(path.with(key, |p| {
                    compile_principal(p, &m.value, key == "NotPrincipal")
                })?);
            }
            "Action" | "NotAction" => {
                exclusive(
                    path,
                    action.is_some(),
                    if key == "Action" {
                        "NotAction"
                    } else {
                        "Action"
                    },
                )?;
                action =
                    Some(path.with(key, |p| compile_actions(p, &m.value, key == "NotAction"))?);
            }
            "Resource" | "NotResource" => {
                exclusive(
                    path,
                    resource.is_some(),
                    if key == "Resource" {
                        "NotResource"
                    } else {
                        "Resource"
                    },
                )?;
                if kind == PolicyKind::Trust {
                    return Err(path.err(
                        at,
                        format!("a trust policy must not have `{key}`: it applies to its role"),
                    ));
                }
                resource = Some(path.with(key, |p| {
                    compile_resources(p, &m.value, key == "NotResource", variables)
                })?);
            }
            "Condition" => {
                conditions =
                    path.with("Condition", |p| compile_conditions(p, &m.value, variables))?;
            }
            other => {
                return Err(path.err(
                    at,
                    format!(
                        "unknown field `{other}` (expected `Sid`, `Effect`, `Principal`, \
                         `NotPrincipal`, `Action`, `NotAction`, `Resource`, `NotResource`, `Condition`)"
                    ),
                ));
            }
        }
    }
    let Some(effect) = effect else {
        return Err(path.err(node.span.start, "missing required field `Effect`"));
    };
    let Some(action) = action else {
        return Err(path.err(
            node.span.start,
            "missing required field `Action` (or `NotAction`)",
        ));
    };
    if kind != PolicyKind::Identity && principal.is_none() {
        return Err(path.err(
            node.span.start,
            "missing required field `Principal` (or `NotPrincipal`)",
        ));
    }
    if kind != PolicyKind::Trust && resource.is_none() {
        return Err(path.err(
            node.span.start,
            "missing required field `Resource` (or `NotResource`)",
        ));
    }
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions: conditions.into_boxed_slice(),
        span: node.span,
    })
}

fn compile_principal(
    path: &mut Path,
    node: &Node,
    negated: bool,
) -> Result<PrincipalSpec, ParseError> {
    let mut spec = PrincipalSpec {
        negated,
        everyone: false,
        aws: Box::new([]),
        service: Box::new([]),
        federated: Box::new([]),
        canonical_user: Box::new([]),
    };
    match &node.value {
        Value::String(s) if s == "*" => {
            spec.everyone = true;
            return Ok(spec);
        }
        Value::Object(members) if !members.is_empty() => {
            for m in members {
                let values = path.with(m.key.as_str(), |p| strings(p, &m.value))?;
                let list =
                    |check: &dyn Fn(&str) -> Option<String>| -> Result<Box<[String]>, ParseError> {
                        values
                            .iter()
                            .map(|(v, at)| match check(v) {
                                Some(problem) => Err(path.err(*at, problem)),
                                None => Ok((*v).to_string()),
                            })
                            .collect()
                    };
                match m.key.as_str() {
                    "AWS" => spec.aws = list(&check_aws_principal)?,
                    "Service" => spec.service = list(&|v| no_partial_wildcard("Service", v))?,
                    "Federated" => spec.federated = list(&|v| no_partial_wildcard("Federated", v))?,
                    "CanonicalUser" => spec.canonical_user = list(&|_| None)?,
                    other => {
                        return Err(path.err(
                            m.value.span.start,
                            format!(
                                "unknown principal type `{other}` (expected `AWS`, `Service`, \
                                 `Federated`, `CanonicalUser`)"
                            ),
                        ));
                    }
                }
            }
            return Ok(spec);
        }
        _ => {}
    }
    Err(path.err(
        node.span.start,
        "a principal must be `\"*\"` or an object such as `{\"AWS\": \"arn:aws:iam::123456789012:root\"}`",
    ))
}

fn no_partial_wildcard(kind: &str, v: &str) -> Option<String> {
    (v != "*" && (v.contains('*') || v.contains('?'))).then(|| {
        format!("invalid {kind} principal `{v}`: a wildcard cannot match part of a principal")
    })
}

/// AWS: `"*"`, a 12-digit account ID, or an IAM/STS ARN; no partial wildcards.
fn check_aws_principal(v: &str) -> Option<String> {
    if v == "*" || (v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if let Some(p) = no_partial_wildcard("AWS", v) {
        return Some(p);
    }
    match crate::arn::Arn::parse(v) {
        Some(arn) if matches!(arn.service, "iam" | "sts") && !arn.account.is_empty() => None,
        _ => Some(format!(
            "invalid AWS principal `{v}`: use `*`, a 12-digit account ID, or an IAM or STS ARN"
        )),
    }
}

fn compile_actions(
    path: &mut Path,
    node: &Node,
    negated: bool,
) -> Result<Matcher<Pattern>, ParseError> {
    let values = strings(path, node)?;
    let mut patterns = Vec::with_capacity(values.len());
    for (v, at) in values {
        if v != "*" {
            let Some((service, name)) = v.split_once(':') else {
                return Err(path.err(
                    at,
                    format!("action `{v}` must be prefixed by a service, as in `s3:GetObject`"),
                ));
            };
            if service.is_empty() || name.is_empty() || service.contains(['*', '?']) {
                return Err(path.err(
                    at,
                    format!(
                        "action `{v}`: the service prefix must be spelled out, without wildcards"
                    ),
                ));
            }
        }
        patterns.push(Pattern::compile(
            v,
            Syntax {
                wildcards: true,
                variables: false,
            },
        ));
    }
    Ok(Matcher {
        negated,
        patterns: patterns.into_boxed_slice(),
    })
}

fn compile_resources(
    path: &mut Path,
    node: &Node,
    negated: bool,
    variables: bool,
) -> Result<Matcher<ArnPattern>, ParseError> {
    let values = strings(path, node)?;
    let mut patterns = Vec::with_capacity(values.len());
    for (v, at) in values {
        if v != "*" {
            if !v.starts_with("arn:") {
                return Err(path.err(at, format!("resource `{v}` must be an ARN or `*`")));
            }
            let service = v.split(':').nth(2).unwrap_or("");
            if service.is_empty() || service.contains(['*', '?']) {
                return Err(path.err(
                    at,
                    format!("resource `{v}`: the service component must be spelled out, without wildcards"),
                ));
            }
        }
        patterns.push(ArnPattern::compile(
            v,
            Syntax {
                wildcards: true,
                variables,
            },
        ));
    }
    Ok(Matcher {
        negated,
        patterns: patterns.into_boxed_slice(),
    })
}

fn compile_conditions(
    path: &mut Path,
    node: &Node,
    variables: bool,
) -> Result<Vec<Condition>, ParseError> {
    let Value::Object(operators) = &node.value else {
        return Err(path.err(
            node.span.start,
            format!("`Condition` must be an object, not {}", node.value.kind()),
        ));
    };
    let mut out = Vec::new();
    for op in operators {
        let spec = OperatorSpec::parse(&op.key).map_err(|e| path.err(op.value.span.start, e))?;
        path.with(op.key.as_str(), |path| {
            let Value::Object(keys) = &op.value.value else {
                return Err(path.err(
                    op.value.span.start,
                    format!(
                        "expected an object of condition keys, as in `{{\"aws:SourceIp\": \"10.0.0.0/8\"}}`, not {}",
                        op.value.value.kind()
                    ),
                ));
            };
            if keys.is_empty() {
                return Err(path.err(op.value.span.start, "names no condition keys"));
            }
            for k in keys {
                let values = path.with(k.key.as_str(), |p| condition_values(p, &k.value))?;
                let cond = Condition::compile(spec, &k.key, values, variables)
                    .map_err(|e| path.err(k.value.span.start, e))?;
                out.push(cond);
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Condition values may be strings, numbers or booleans (AWS accepts `"Bool": {"k": true}`),
/// alone or in an array.
fn condition_values(path: &mut Path, node: &Node) -> Result<Vec<String>, ParseError> {
    let scalar = |path: &Path, n: &Node| match &n.value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(path.err(
            n.span.start,
            format!(
                "a condition value must be a string, number or boolean, not {}",
                other.kind()
            ),
        )),
    };
    match &node.value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(path.err(node.span.start, "must not be empty"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, n)| path.with(format!("[{i}]"), |p| scalar(p, n)))
                .collect()
        }
        _ => Ok(vec![scalar(path, node)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(doc: &str, kind: PolicyKind) -> String {
        Policy::parse(doc, kind).unwrap_err().to_string()
    }

    #[test]
    fn statement_as_object_or_array_and_single_strings() {
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
            PolicyKind::Identity,
        )
        .unwrap();
        assert_eq!(p.statements.len(), 1);
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Deny","NotAction":["iam:*","sts:*"],"NotResource":"arn:aws:s3:::b"}]}"#,
            PolicyKind::Identity,
        )
        .unwrap();
        assert!(p.statements[0].action.negated);
        assert_eq!(p.statements[0].sid.as_deref(), Some("A"));
        assert_eq!(p.version, Version::V2012_10_17);
    }

    #[test]
    fn errors_name_the_path() {
        let e = err(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"StringEquals":{"k":{"x":1}}}}]}"#,
            PolicyKind::Identity,
        );
        assert!(e.contains("`Statement[0].Condition.StringEquals.k`"), "{e}");
        let e = err(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"GetObject","Resource":"*"}]}"#,
            PolicyKind::Identity,
        );
        assert!(e.contains("must be prefixed by a service"), "{e}");
        let e = err(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
            PolicyKind::Identity,
        );
        assert!(e.contains("must not specify `Principal`"), "{e}");
        let e = err(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/*"},"Action":"sts:AssumeRole"}}"#,
            PolicyKind::Trust,
        );
        assert!(e.contains("cannot match part of a principal"), "{e}");
        let e = err(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole","Resource":"*"}}"#,
            PolicyKind::Trust,
        );
        assert!(e.contains("trust policy must not have `Resource`"), "{e}");
        let e = err(
            r#"{"Version":"2012-10-17","Statement":[]}"#,
            PolicyKind::Identity,
        );
        assert!(e.contains("must not be empty"), "{e}");
        let e = err(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"NumericLessThan":{"s3:max-keys":"ten"}}}}"#,
            PolicyKind::Identity,
        );
        assert!(e.contains("`ten` is not a number"), "{e}");
    }

    #[test]
    fn size_excludes_whitespace() {
        let p = Policy::parse(
            "{ \"Statement\" : { \"Effect\":\"Allow\", \"Action\":\"s3:*\", \"Resource\":\"*\" } }",
            PolicyKind::Identity,
        )
        .unwrap();
        assert_eq!(
            p.size,
            r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#.len()
        );
        assert_eq!(p.version, Version::V2008_10_17);
    }
}
