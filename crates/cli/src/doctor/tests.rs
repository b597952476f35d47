use std::collections::HashMap;

use super::*;

struct FakeEnv(HashMap<&'static str, String>);

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podiam-doctor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An unsigned JWT with these claims (doctor does not verify signatures).
fn token(claims: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","kid":"k"}"#),
        b64(claims)
    )
}

const NOW: i64 = 1_700_000_000;

fn env_with(dir: &Path, extra: &[(&'static str, &str)]) -> FakeEnv {
    let mut m = HashMap::new();
    m.insert("HOME", dir.display().to_string());
    for (k, v) in extra {
        m.insert(*k, (*v).to_string());
    }
    FakeEnv(m)
}

#[test]
fn a_profile_with_keys_shadows_web_identity_in_the_rust_sdk_only() {
    let dir = scratch("trap");
    let creds = dir.join("credentials");
    std::fs::write(
        &creds,
        "[podiam]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = s\n",
    )
    .unwrap();
    let tok = dir.join("token");
    std::fs::write(
        &tok,
        token(r#"{"iss":"https://issuer","sub":"system:serviceaccount:shop:cart","aud":["sts.amazonaws.com"],"exp":1700003600}"#) + "\n",
    )
    .unwrap();
    let env = env_with(
        &dir,
        &[
            ("AWS_PROFILE", "podiam"),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", tok.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::000000000000:role/cart"),
        ],
    );
    let found = survey(&env, false, NOW);
    assert!(
        found.iter().all(|f| f.problems.is_empty()),
        "{}",
        report(&found)
    );
    let text = report(&found);
    assert!(
        text.contains("wins in boto3, the aws CLI, Java, JavaScript: web identity")
            && text.contains("present but shadowed: shared profile")
            && text.contains("wins in the AWS SDK for Rust: shared profile")
            && text.contains("warning: the SDKs disagree"),
        "{text}"
    );
    assert!(
        text.contains("sub system:serviceaccount:shop:cart"),
        "{text}"
    );
    assert!(
        text.contains("token expires at 2023-11-14T23:13:20Z UTC (in 60m)"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn environment_keys_win_everywhere_and_broken_sources_are_named() {
    let dir = scratch("env");
    let tok = dir.join("token");
    std::fs::write(
        &tok,
        token(r#"{"sub":"x","aud":"pods.eks.amazonaws.com","exp":1699999000}"#),
    )
    .unwrap();
    let env = env_with(
        &dir,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", tok.to_str().unwrap()),
            ("AWS_PROFILE", "missing"),
        ],
    );
    let found = survey(&env, false, NOW);
    let text = report(&found);
    assert!(
        text.contains("wins in boto3, the aws CLI, Java, JavaScript: environment keys"),
        "{text}"
    );
    assert!(!text.contains("SDKs disagree"), "{text}");
    for problem in [
        "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not",
        "the token's audience is not `sts.amazonaws.com`",
        "the token expired at 2023-11-14T21:56:40Z UTC",
        "AWS_PROFILE=missing, but no credentials for it",
    ] {
        assert!(
            text.contains(&format!("problem: {problem}")),
            "{problem}: {text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreachable_container_endpoint_is_a_problem() {
    let dir = scratch("container");
    let env = env_with(
        &dir,
        &[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:1/v1/credentials",
        )],
    );
    let text = report(&survey(&env, false, NOW));
    assert!(
        text.contains("wins in boto3, the aws CLI, Java, JavaScript: container credentials"),
        "{text}"
    );
    assert!(
        text.contains("problem: the credentials endpoint is not reachable"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
