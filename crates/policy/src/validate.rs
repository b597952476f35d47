//! `podiam policy validate`: errors (the document will be rejected) and warnings (it will be
//! accepted but probably grants more than intended, or names something AWS does not have).
//!
//! | module | |
//! | --- | --- |
//! | [`catalogue`] | the AWS actions and condition keys (with their types) names are checked against |

pub mod catalogue;

use self::catalogue::KeyTypes;
use crate::condition::{Operator, OperatorSpec, SetQualifier};
use crate::json::{self, Node, Position, Value};
use crate::limits::Limits;
use crate::pattern::{NoVariables, Pattern, Syntax};
use crate::policy::{Effect, ParseError, Policy, PolicyKind, Statement, Version};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable name for the rule, for scripts and suppressions.
    pub code: &'static str,
    /// Where: `Statement[0].Condition`.
    pub path: String,
    pub at: Position,
    pub message: String,
}

/// Reads whether a document is an identity, resource or trust policy from its shape: statements
/// with a `Principal` and no `Resource` are a trust policy.
pub fn detect_kind(document: &str) -> PolicyKind {
    let Ok(root) = json::parse(document) else {
        return PolicyKind::Identity;
    };
    let statements = statement_nodes(&root);
    let has = |n: &Node, keys: &[&str]| match &n.value {
        Value::Object(m) => m.iter().any(|m| keys.contains(&m.key.as_str())),
        _ => false,
    };
    let principal = statements
        .iter()
        .any(|s| has(s, &["Principal", "NotPrincipal"]));
    let resource = statements
        .iter()
        .any(|s| has(s, &["Resource", "NotResource"]));
    match (principal, resource) {
        (true, false) => PolicyKind::Trust,
        (true, true) => PolicyKind::Resource,
        _ => PolicyKind::Identity,
    }
}

/// The statements of a policy document: `Statement` is one object or an array of them.
fn statement_nodes(root: &Node) -> Vec<&Node> {
    match member(root, "Statement") {
        Some(Node {
            value: Value::Array(items),
            ..
        }) => items.iter().collect(),
        Some(node) => vec![node],
        None => Vec::new(),
    }
}

fn member<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.value {
        Value::Object(m) => m.iter().find(|m| m.key == key).map(|m| &m.value),
        _ => None,
    }
}

/// Validates one document of the given kind against AWS's grammar and size quotas, then lints it.
pub fn validate(document: &str, kind: PolicyKind, limits: &Limits) -> Vec<Finding> {
    let policy = match Policy::parse(document, kind) {
        Ok(p) => p,
        Err(e) => return vec![parse_finding(e)],
    };
    let mut out = Vec::new();
    let size = match kind {
        PolicyKind::Trust => limits.check_trust_policy(&policy),
        _ => limits.check_managed_policy(&policy),
    };
    if let Err(e) = size {
        out.push(Finding {
            severity: Severity::Error,
            code: "size-limit",
            path: "(document)".into(),
            at: Position { line: 1, column: 1 },
            message: e.to_string(),
        });
    }
    lint(&policy, &mut out);
    // The policy parsed, so the document is JSON of the policy's shape; the JSON tree is walked
    // again for the source position of each action and condition key.
    if let Ok(root) = json::parse(document) {
        lint_names(&root, &mut out);
    }
    out
}

fn parse_finding(e: ParseError) -> Finding {
    let (path, at, message) = match e {
        ParseError::Syntax(s) => ("(document)".to_string(), s.at, s.to_string()),
        ParseError::Invalid { path, at, problem } => (path, at, problem),
    };
    Finding {
        severity: Severity::Error,
        code: "malformed",
        path,
        at,
        message,
    }
}

fn lint(policy: &Policy, out: &mut Vec<Finding>) {
    if policy.version != Version::V2012_10_17 {
        out.push(Finding {
            severity: Severity::Warning,
            code: "old-version",
            path: "Version".into(),
            at: policy
                .statements
                .first()
                .map_or(Position { line: 1, column: 1 }, |s| s.span.start),
            message: "no `\"Version\": \"2012-10-17\"`: policy variables such as `${aws:username}` are read as literal text".into(),
        });
    }
    let many = policy.statements.len() > 1;
    for (i, s) in policy.statements.iter().enumerate() {
        let path = statement_path(i, many);
        let mut warn = |code: &'static str, message: String| {
            out.push(Finding {
                severity: Severity::Warning,
                code,
                path: path.clone(),
                at: s.span.start,
                message,
            });
        };
        if s.effect == Effect::Allow
            && s.action.negated
            && s.resource
                .as_ref()
                .is_some_and(|r| !r.negated && r.patterns.iter().any(|p| p.as_str() == "*"))
        {
            warn(
                "allow-notaction-all-resources",
                "`Allow` with `NotAction` and `Resource: *` grants every action of every service not listed, including ones AWS adds later: list the allowed actions instead".into(),
            );
        }
        for c in s.conditions.iter() {
            let wildcard_value = c.raw_values.iter().find(|v| v.contains(['*', '?']));
            if matches!(
                c.spec.operator,
                Operator::StringEquals | Operator::StringEqualsIgnoreCase
            ) && let Some(v) = wildcard_value
            {
                warn(
                    "wildcard-in-string-equals",
                    format!(
                        "`{}` compares `{v}` literally for key `{}`: `*` and `?` are wildcards only with `StringLike`",
                        c.spec, c.key
                    ),
                );
            }
            if c.spec.qualifier == Some(SetQualifier::ForAllValues)
                && s.effect == Effect::Allow
                && !c.spec.operator.is_negated()
            {
                warn(
                    "forallvalues-allow",
                    format!(
                        "`{}` on `{}` is also true when the key is missing or empty, so this Allow applies to requests without it: add a `Null` condition on the key",
                        c.spec, c.key
                    ),
                );
            }
        }
        if policy.kind == PolicyKind::Trust {
            lint_trust_statement(s, &mut warn);
        }
    }
}

fn lint_trust_statement(s: &Statement, warn: &mut impl FnMut(&'static str, String)) {
    if s.effect != Effect::Allow {
        return;
    }
    let Some(principal) = &s.principal else {
        return;
    };
    if principal.everyone && s.conditions.is_empty() {
        warn(
            "trust-everyone",
            "`Principal: *` with no condition lets anyone assume this role".into(),
        );
    }
    for provider in principal.federated.iter() {
        let Some(host) = provider.split_once(":oidc-provider/").map(|(_, h)| h) else {
            continue;
        };
        let keyed = |suffix: &str| {
            let want = format!("{host}:{suffix}").to_ascii_lowercase();
            s.conditions
                .iter()
                .filter(move |c| c.key_lowercase() == want)
        };
        if keyed("aud").next().is_none() {
            warn(
                "oidc-missing-aud",
                format!(
                    "the trust for OIDC provider `{host}` has no `{host}:aud` condition: tokens minted for any audience of this issuer can assume the role; add `\"StringEquals\": {{\"{host}:aud\": \"sts.amazonaws.com\"}}`"
                ),
            );
        }
        let subs: Vec<_> = keyed("sub").collect();
        if subs.is_empty() {
            warn(
                "oidc-missing-sub",
                format!(
                    "the trust for OIDC provider `{host}` has no `{host}:sub` condition: every ServiceAccount of the cluster can assume the role; add `\"StringEquals\": {{\"{host}:sub\": \"system:serviceaccount:NAMESPACE:NAME\"}}`"
                ),
            );
        }
        for c in subs {
            if !matches!(c.spec.operator, Operator::StringLike) {
                continue;
            }
            for v in c.raw_values.iter() {
                if let Some(rest) = v.strip_prefix("system:serviceaccount:")
                    && rest.contains('*')
                {
                    let scope = if rest.starts_with('*') {
                        "every ServiceAccount in every namespace"
                    } else {
                        "every matching ServiceAccount"
                    };
                    warn(
                        "oidc-wildcard-sub",
                        format!(
                            "`StringLike` on `{}` with `{v}` lets {scope} assume the role: name the ServiceAccount with `StringEquals`",
                            c.key
                        ),
                    );
                }
            }
        }
    }
}

/// `Statement[2]`, or `Statement` when the policy has one statement.
fn statement_path(i: usize, many: bool) -> String {
    if many {
        format!("Statement[{i}]")
    } else {
        "Statement".into()
    }
}

// === names: actions and condition keys against the catalogue ===

/// Warns about names AWS does not have: a statement that names a missing action grants or
/// denies nothing with it, and a condition on a key no request carries (or compared with an
/// operator of another type) silently never matches.
fn lint_names(root: &Node, out: &mut Vec<Finding>) {
    let catalogue = catalogue::catalogue();
    let statements = statement_nodes(root);
    let many = statements.len() > 1;
    for (i, statement) in statements.into_iter().enumerate() {
        let path = statement_path(i, many);
        let mut warn = |code: &'static str, path: String, at: Position, message: String| {
            out.push(Finding {
                severity: Severity::Warning,
                code,
                path,
                at,
                message,
            });
        };
        // The services the statement's `Action` names, or `None` when it may cover any
        // (`*`, `NotAction`, a wildcard prefix, a prefix AWS does not have).
        let mut services: Option<Vec<&catalogue::Service>> = Some(Vec::new());
        for element in ["Action", "NotAction"] {
            for (path, node, action) in strings(statement, element, &path) {
                match (element, check_action(catalogue, action)) {
                    ("Action", Ok(Some(service))) => {
                        services.iter_mut().for_each(|v| v.push(service));
                    }
                    (_, Ok(_)) => services = None,
                    (_, Err((code, message))) => {
                        services = None;
                        warn(code, path, node.span.start, message);
                    }
                }
            }
        }
        let Some(Node {
            value: Value::Object(operators),
            ..
        }) = member(statement, "Condition")
        else {
            continue;
        };
        for op in operators {
            let (Ok(spec), Value::Object(keys)) = (OperatorSpec::parse(&op.key), &op.value.value)
            else {
                continue;
            };
            for key in keys {
                let path = format!("{path}.Condition.{}.{}", op.key, key.key);
                let at = key.value.span.start;
                if let Some((code, message)) =
                    check_condition_key(catalogue, services.as_deref(), spec, &key.key)
                {
                    warn(code, path, at, message);
                }
            }
        }
    }
}

/// The strings of a statement's element that is one string or an array of them, each with its
/// path (`Statement[0].Action[1]`).
fn strings<'a>(
    statement: &'a Node,
    element: &str,
    statement_path: &str,
) -> Vec<(String, &'a Node, &'a str)> {
    let path = format!("{statement_path}.{element}");
    match member(statement, element) {
        Some(
            node @ Node {
                value: Value::String(s),
                ..
            },
        ) => vec![(path, node, s.as_str())],
        Some(Node {
            value: Value::Array(items),
            ..
        }) => items
            .iter()
            .enumerate()
            .filter_map(|(j, node)| match &node.value {
                Value::String(s) => Some((format!("{path}[{j}]"), node, s.as_str())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

const WILDCARDS: Syntax = Syntax {
    wildcards: true,
    variables: false,
};

/// Checks one `Action`/`NotAction` entry: `Ok(Some(service))` when it names actions of one
/// known service, `Ok(None)` when it covers every service (`*`), `Err` with the
/// warning when it matches nothing AWS has.
fn check_action<'c>(
    catalogue: &'c catalogue::Catalogue,
    action: &str,
) -> Result<Option<&'c catalogue::Service>, (&'static str, String)> {
    let Some((prefix, name)) = action.split_once(':') else {
        return Ok(None);
    };
    let name_pattern = Pattern::compile(name, WILDCARDS);
    // The parser has already refused wildcards in the prefix (AWS does too).
    let Some(service) = catalogue.service(prefix) else {
        let hint = did_you_mean(
            catalogue
                .closest_service(prefix)
                .map(|p| format!("{p}:{name}")),
        );
        return Err((
            "unknown-service",
            format!("no AWS service has the prefix `{prefix}` (in `{action}`){hint}"),
        ));
    };
    if name_pattern.has_wildcards() {
        if !service
            .actions()
            .any(|a| name_pattern.matches(a, true, &NoVariables))
        {
            return Err((
                "unknown-action",
                format!("`{action}` matches no action of `{}`", service.prefix()),
            ));
        }
    } else if service.action(name).is_none() {
        let hint = match service.closest_action(name) {
            Some(a) => format!("; did you mean `{}:{a}`?", service.prefix()),
            None => format!(
                ": see the actions of `{}` in AWS's Service Authorization Reference",
                service.prefix()
            ),
        };
        return Err((
            "unknown-action",
            format!("`{}` has no action `{name}`{hint}", service.prefix()),
        ));
    }
    Ok(Some(service))
}

/// `; did you mean `s3:GetObject`?`, or nothing without a suggestion.
fn did_you_mean(suggestion: Option<impl std::fmt::Display>) -> String {
    suggestion.map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

/// Checks one condition key: its operator against its type, and (when the statement's actions
/// are all of known services) that it is a key some request of those actions carries.
fn check_condition_key(
    catalogue: &catalogue::Catalogue,
    services: Option<&[&catalogue::Service]>,
    spec: OperatorSpec,
    key: &str,
) -> Option<(&'static str, String)> {
    let prefix = key.split_once(':').map(|(p, _)| p);
    let own_service = prefix.and_then(|p| catalogue.service(p));
    // A key is known here if it is global or a key of one of the statement's services; a key of
    // another service still has a type to check the operator against.
    let known = catalogue
        .global_key(key)
        .or_else(|| services?.iter().find_map(|s| s.key(key)));
    if let Some(types) = known.or_else(|| own_service?.key(key))
        && let Some(message) = type_mismatch(spec, key, types)
    {
        return Some(("condition-type-mismatch", message));
    }
    if known.is_some() {
        return None;
    }
    // Keys of identity providers (`accounts.google.com:aud`, an OIDC issuer's `…:sub`) and of
    // prefixes that are no service are not ours to judge.
    let services = services.filter(|s| !s.is_empty())?;
    let prefix = prefix?;
    if prefix.eq_ignore_ascii_case("aws") {
        let hint = did_you_mean(catalogue.closest_global_key(key));
        return Some((
            "unknown-condition-key",
            format!("`{key}` is not a global condition key, so no request has it{hint}"),
        ));
    }
    own_service?;
    let mut names: Vec<&str> = services.iter().map(|s| s.prefix()).collect();
    names.dedup();
    Some((
        "unknown-condition-key",
        format!(
            "no action of `{}` in this statement has the condition key `{key}`, so the condition never sees a value: use a key of these services or a global `aws:` key",
            names.join("`, `")
        ),
    ))
}

/// AWS: an operator compares values of its own type (IAM Access Analyzer's "type mismatch"
/// check). Only clear mismatches are reported: string operators are accepted on keys of every
/// type but IP addresses (dates, numbers, booleans and ARNs compare as text), and ARN keys also
/// accept string operators.
fn type_mismatch(spec: OperatorSpec, key: &str, types: KeyTypes) -> Option<String> {
    use Operator::*;
    let (accepted, compares) = match spec.operator {
        StringEquals
        | StringNotEquals
        | StringEqualsIgnoreCase
        | StringNotEqualsIgnoreCase
        | StringLike
        | StringNotLike => (
            KeyTypes::STRING
                .union(KeyTypes::ARN)
                .union(KeyTypes::BOOL)
                .union(KeyTypes::NUMERIC)
                .union(KeyTypes::DATE),
            "strings",
        ),
        NumericEquals
        | NumericNotEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => (KeyTypes::NUMERIC, "numbers"),
        DateEquals
        | DateNotEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => (KeyTypes::DATE, "dates"),
        Bool => (KeyTypes::BOOL, "booleans"),
        IpAddress | NotIpAddress => (KeyTypes::IP_ADDRESS, "IP addresses"),
        ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => (KeyTypes::ARN, "ARNs"),
        BinaryEquals | Null => return None,
    };
    if types.intersects(accepted) {
        return None;
    }
    let (is, use_instead) = if types.intersects(KeyTypes::IP_ADDRESS) {
        ("an IP address", "`IpAddress` or `NotIpAddress`")
    } else if types.intersects(KeyTypes::DATE) {
        (
            "a date",
            "`DateEquals`, `DateLessThan`, `DateGreaterThan`, …",
        )
    } else if types.intersects(KeyTypes::NUMERIC) {
        ("a number", "`NumericEquals`, `NumericLessThan`, …")
    } else if types.intersects(KeyTypes::BOOL) {
        ("a boolean", "`Bool`")
    } else if types.intersects(KeyTypes::ARN) {
        ("an ARN", "`ArnEquals` or `ArnLike`")
    } else {
        ("a string", "`StringEquals` or `StringLike`")
    };
    Some(format!(
        "`{spec}` compares {compares}, but `{key}` is {is}, so the comparison does not work: use {use_instead}"
    ))
}

#[cfg(test)]
mod tests;
