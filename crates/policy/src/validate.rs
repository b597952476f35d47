//! `podiam policy validate`: errors (the document will be rejected) and warnings (it will be
//! accepted but probably grants more than intended).

use crate::condition::{Operator, SetQualifier};
use crate::json::{self, Position, Value};
use crate::limits::Limits;
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
    let statements: Vec<&json::Node> = match &root.value {
        Value::Object(m) => match m.iter().find(|m| m.key == "Statement").map(|m| &m.value) {
            Some(json::Node {
                value: Value::Array(items),
                ..
            }) => items.iter().collect(),
            Some(node) => vec![node],
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    let has = |n: &json::Node, keys: &[&str]| match &n.value {
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
        let path = if many {
            format!("Statement[{i}]")
        } else {
            "Statement".into()
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(doc: &str) -> Vec<&'static str> {
        validate(doc, detect_kind(doc), &Limits::default())
            .into_iter()
            .map(|f| f.code)
            .collect()
    }

    #[test]
    fn irsa_trust_warnings() {
        let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/ABC"},
            "Action":"sts:AssumeRoleWithWebIdentity",
            "Condition":{"StringLike":{"oidc.example.com/id/ABC:sub":"system:serviceaccount:*:*"}}}]}"#;
        assert_eq!(detect_kind(wide), PolicyKind::Trust);
        assert_eq!(codes(wide), ["oidc-missing-aud", "oidc-wildcard-sub"]);
        let good = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/ABC"},
            "Action":"sts:AssumeRoleWithWebIdentity",
            "Condition":{"StringEquals":{"oidc.example.com/id/ABC:sub":"system:serviceaccount:ns:sa",
                                          "oidc.example.com/id/ABC:aud":"sts.amazonaws.com"}}}]}"#;
        assert!(codes(good).is_empty());
    }

    #[test]
    fn identity_warnings_and_errors() {
        let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}}"#;
        assert_eq!(codes(doc), ["allow-notaction-all-resources"]);
        let doc = r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEquals":{"s3:prefix":"home/*"}}}}"#;
        assert_eq!(codes(doc), ["old-version", "wildcard-in-string-equals"]);
        let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Permit","Action":"s3:*","Resource":"*"}}"#;
        let f = validate(doc, PolicyKind::Identity, &Limits::default());
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].path, "Statement");
        assert!(f[0].message.contains("`Permit`"));
    }
}
