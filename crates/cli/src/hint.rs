//! Messages that name the fix, for mistakes people make with the admin verbs.

use std::path::Path;

use podiam_server::local::as_admin;

/// A policy given by name where an ARN belongs (`--attach-policy-arn weasel-pod`): the ARN it
/// most likely means (the account's policy of that name, else the AWS managed one), or how to
/// make it.
pub async fn policy_name_for_arn(data_dir: &Path, name: &str) -> anyhow::Error {
    let account = podiam_server::local::settings(data_dir)
        .await
        .ok()
        .and_then(|s| s.get("account_id").cloned())
        .unwrap_or_else(|| "ACCOUNT".into());
    let candidates = [
        format!("arn:aws:iam::{account}:policy/{name}"),
        format!("arn:aws:iam::aws:policy/{name}"),
    ];
    for arn in &candidates {
        if as_admin(data_dir, async |a| a.get_policy(arn))
            .await
            .is_ok()
        {
            return anyhow::anyhow!(
                "`{name}` is a policy name, not an ARN: give its ARN, {arn}; nothing was created"
            );
        }
    }
    anyhow::anyhow!(
        "`{name}` is not a policy ARN (arn:aws:iam::{account}:policy/NAME), and there is no policy named so: create it first with\n  aws iam create-policy --policy-name {name} --policy-document file://policy.json\nthen give {}; nothing was created",
        candidates[0]
    )
}
