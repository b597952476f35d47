//! [`ChainKey`]'s caching: temporary credentials renewed ahead of expiry, keys without an expiry
//! kept until a watched file changes, failed refreshes keeping an unexpired key. The chain is a
//! double counting its calls (the real chain reads the process environment, which tests must not
//! change); tests/interop/pod-identity.sh runs the real one (profiles, web identity).
#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{error::CredentialsError, future};

use super::*;

/// An access key ID and its expiry, or why the chain failed.
type Answer = Result<(String, Option<SystemTime>), String>;

/// Answers the queued results in turn (the last one forever) and counts calls and builds.
#[derive(Debug, Default)]
struct Script {
    answers: Mutex<Vec<Answer>>,
    calls: AtomicUsize,
    builds: AtomicUsize,
}

impl Script {
    fn counts(&self) -> (usize, usize) {
        (
            self.calls.load(Ordering::SeqCst),
            self.builds.load(Ordering::SeqCst),
        )
    }
}

#[derive(Debug)]
struct Double(Arc<Script>);

impl ProvideCredentials for Double {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.0.answers.lock().unwrap();
        let next = if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0].clone()
        };
        future::ProvideCredentials::ready(match next {
            Ok((id, expiry)) => Ok(Credentials::new(
                id,
                "secret",
                Some("token".into()),
                expiry,
                "double",
            )),
            Err(why) => Err(CredentialsError::provider_error(why)),
        })
    }
}

fn chain(script: &Arc<Script>, watched: Vec<PathBuf>, clock: AgentClock) -> ChainKey {
    let s = Arc::clone(script);
    let build: BuildChain = Box::new(move || {
        s.builds.fetch_add(1, Ordering::SeqCst);
        let p = SharedCredentialsProvider::new(Double(Arc::clone(&s)));
        Box::pin(async move { p })
    });
    ChainKey::new(build, watched, clock)
}

fn script(answers: Vec<Result<(&str, Option<SystemTime>), &str>>) -> Arc<Script> {
    Arc::new(Script {
        answers: Mutex::new(
            answers
                .into_iter()
                .map(|a| a.map(|(id, e)| (id.to_owned(), e)).map_err(str::to_owned))
                .collect(),
        ),
        ..Script::default()
    })
}

async fn id(k: &ChainKey) -> String {
    k.resolve()
        .await
        .unwrap()
        .key
        .access_key_id
        .as_str()
        .to_owned()
}

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn at(secs: u64) -> Option<SystemTime> {
    Some(T0 + Duration::from_secs(1_700_000_000 + secs))
}

#[tokio::test(start_paused = true)]
async fn temporary_credentials_are_renewed_ahead_of_expiry() {
    let clock = AgentClock::virtual_at(at(0).unwrap());
    let s = script(vec![
        Ok(("ASIAFIRST", at(3600))),
        Ok(("ASIASECOND", at(7200))),
    ]);
    let k = chain(&s, Vec::new(), clock);
    assert_eq!(id(&k).await, "ASIAFIRST");
    tokio::time::advance(Duration::from_secs(3600) - REFRESH_AHEAD - Duration::from_secs(1)).await;
    assert_eq!(
        id(&k).await,
        "ASIAFIRST",
        "cached until five minutes before expiry"
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        id(&k).await,
        "ASIASECOND",
        "renewed inside the five minutes"
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        s.builds.load(Ordering::SeqCst),
        1,
        "no file changed: one chain"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_an_unexpired_key_and_says_why() {
    let clock = AgentClock::virtual_at(at(0).unwrap());
    let s = script(vec![Ok(("ASIAFIRST", at(600))), Err("sts is down")]);
    let k = chain(&s, Vec::new(), clock);
    assert_eq!(id(&k).await, "ASIAFIRST");
    tokio::time::advance(Duration::from_secs(400)).await;
    let kept = k.resolve().await.unwrap();
    assert_eq!(kept.key.access_key_id.as_str(), "ASIAFIRST");
    let why = kept.kept_because.unwrap().to_string();
    assert!(
        why.contains("the AWS credential chain") && why.contains("sts is down"),
        "{why}"
    );
    tokio::time::advance(Duration::from_secs(200)).await;
    let e = k.resolve().await.unwrap_err();
    assert!(
        e.to_string().contains("sts is down"),
        "expired: no key kept: {e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_without_expiry_is_kept_until_a_watched_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(&file, "[default]\n").unwrap();
    let clock = AgentClock::virtual_at(at(0).unwrap());
    let s = script(vec![Ok(("AKIAFIRST", None)), Ok(("AKIASECOND", None))]);
    let k = chain(&s, vec![file.clone(), dir.path().join("absent")], clock);
    assert_eq!(id(&k).await, "AKIAFIRST");
    tokio::time::advance(Duration::from_secs(86_400)).await;
    assert_eq!(
        id(&k).await,
        "AKIAFIRST",
        "no expiry, no change: no new resolution"
    );
    assert_eq!(s.counts(), (1, 1), "(calls, builds)");
    std::fs::write(&file, "[default]\n# rotated\n").unwrap();
    assert_eq!(
        id(&k).await,
        "AKIASECOND",
        "the file changed: the chain is built again"
    );
    assert_eq!(s.counts(), (2, 2), "(calls, builds)");
    std::fs::write(dir.path().join("absent"), "[p]\n").unwrap();
    let _ = k.resolve().await.unwrap();
    assert_eq!(
        s.builds.load(Ordering::SeqCst),
        3,
        "a file that appears counts as a change"
    );
}

#[tokio::test]
async fn nothing_found_is_an_error_naming_the_chain() {
    let s = script(vec![Err("no providers in chain provided credentials")]);
    let k = chain(&s, Vec::new(), AgentClock::system());
    let e = k.resolve().await.unwrap_err();
    assert!(
        e.to_string().starts_with("the AWS credential chain: "),
        "{e}"
    );
}

#[test]
fn standard_watches_the_files_the_sdk_reads() {
    let env = |k: &str| match k {
        "HOME" => Some("/home/u".to_owned()),
        "AWS_SHARED_CREDENTIALS_FILE" => Some("/secret/credentials".to_owned()),
        _ => None,
    };
    let k = ChainKey::standard("us-east-1", AgentClock::system(), env);
    assert_eq!(
        k.watched,
        [
            PathBuf::from("/home/u/.aws/config"),
            PathBuf::from("/secret/credentials")
        ]
    );
}
