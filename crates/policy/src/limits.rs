//! AWS's size quotas for policy documents (whitespace is not counted), configurable.

use crate::policy::Policy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct Limits {
    /// A role's trust policy: 2,048 by default (AWS raises it on request).
    pub trust_policy: usize,
    /// One customer managed policy (or version of one).
    pub managed_policy: usize,
    /// All inline policies of one role, together.
    pub role_inline_total: usize,
    /// All inline policies of one user, together.
    pub user_inline_total: usize,
    /// All inline policies of one group, together.
    pub group_inline_total: usize,
    /// A session policy (inline `Policy` plus `PolicyArns`), in plain text.
    pub session_policy: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            trust_policy: 2_048,
            managed_policy: 6_144,
            role_inline_total: 10_240,
            user_inline_total: 2_048,
            group_inline_total: 5_120,
            session_policy: 2_048,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {size} characters, over the limit of {limit} (whitespace not counted)")]
pub struct SizeError {
    pub what: &'static str,
    pub size: usize,
    pub limit: usize,
}

/// Characters in a document, not counting whitespace, as AWS counts them for quotas.
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

fn check(what: &'static str, size: usize, limit: usize) -> Result<(), SizeError> {
    if size > limit {
        Err(SizeError { what, size, limit })
    } else {
        Ok(())
    }
}

impl Limits {
    pub fn check_trust_policy(&self, policy: &Policy) -> Result<(), SizeError> {
        check("the trust policy", policy.size, self.trust_policy)
    }

    pub fn check_managed_policy(&self, policy: &Policy) -> Result<(), SizeError> {
        check("the managed policy", policy.size, self.managed_policy)
    }

    /// `sizes`: every inline policy of the role, including the one being put.
    pub fn check_role_inline_total(
        &self,
        sizes: impl IntoIterator<Item = usize>,
    ) -> Result<(), SizeError> {
        check(
            "the role's inline policies together",
            sizes.into_iter().sum(),
            self.role_inline_total,
        )
    }

    /// `sizes`: every inline policy of the user, including the one being put.
    pub fn check_user_inline_total(
        &self,
        sizes: impl IntoIterator<Item = usize>,
    ) -> Result<(), SizeError> {
        check(
            "the user's inline policies together",
            sizes.into_iter().sum(),
            self.user_inline_total,
        )
    }

    /// `sizes`: every inline policy of the group, including the one being put.
    pub fn check_group_inline_total(
        &self,
        sizes: impl IntoIterator<Item = usize>,
    ) -> Result<(), SizeError> {
        check(
            "the group's inline policies together",
            sizes.into_iter().sum(),
            self.group_inline_total,
        )
    }

    pub fn check_session_policy(&self, size: usize) -> Result<(), SizeError> {
        check("the session policy", size, self.session_policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyKind;

    #[test]
    fn counts_without_whitespace() {
        let doc = format!(
            r#"{{ "Version": "2012-10-17", "Statement": {{ "Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::{}" }} }}"#,
            "a".repeat(3000)
        );
        let p = Policy::parse(&doc, PolicyKind::Identity).unwrap();
        assert_eq!(p.size, policy_size(&doc));
        let limits = Limits::default();
        assert!(limits.check_managed_policy(&p).is_ok());
        let e = limits.check_session_policy(p.size).unwrap_err();
        assert_eq!(e.limit, 2048);
        assert!(e.to_string().contains("over the limit of 2048"));
        assert!(limits.check_role_inline_total([6000, 5000]).is_err());
        // AWS's quotas: 2,048 for a user's inline policies together, 5,120 for a group's.
        assert!(limits.check_user_inline_total([1000, 1048]).is_ok());
        assert!(limits.check_user_inline_total([1000, 1049]).is_err());
        assert!(limits.check_group_inline_total([5120]).is_ok());
        assert!(limits.check_group_inline_total([5000, 121]).is_err());
        let relaxed = Limits {
            session_policy: 4096,
            ..Limits::default()
        };
        assert!(relaxed.check_session_policy(p.size).is_ok());
    }
}
