//! The key sources the node agent and the webhook sign with: a file re-read when it changes, a
//! half-written rewrite that keeps the previous key, and the environment's errors.

use super::*;

/// Static and file sources never wait: one poll finishes them.
fn now<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("a static or file source does not wait"),
    }
}

const ONE: &str = "[p]\naws_access_key_id=AKIAONE\naws_secret_access_key=x\n";
const TWO: &str = "[p]\naws_access_key_id=AKIATWOTWO\naws_secret_access_key=y\n";

fn id(source: &KeySource) -> String {
    now(source.current())
        .unwrap()
        .key
        .access_key_id
        .as_str()
        .to_owned()
}

#[test]
fn key_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(&path, ONE).unwrap();
    let source = KeySource::file(&path, "p").unwrap();
    assert_eq!(id(&source), "AKIAONE");
    assert!(now(source.current()).unwrap().kept_because.is_none());
    std::fs::write(&path, TWO).unwrap();
    assert_eq!(id(&source), "AKIATWOTWO");
    std::fs::write(&path, "[p]\n").unwrap();
    let kept = now(source.current()).unwrap();
    assert_eq!(
        kept.key.access_key_id.as_str(),
        "AKIATWOTWO",
        "a broken rewrite keeps the previous key"
    );
    assert!(
        matches!(
            kept.kept_because,
            Some(KeyError::Invalid {
                source: CredentialsError::MissingKey { .. },
                ..
            })
        ),
        "and says why: {:?}",
        kept.kept_because
    );
}

#[test]
fn clones_share_the_file_and_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(&path, ONE).unwrap();
    let source = KeySource::file(&path, "p").unwrap();
    let clone = source.clone();
    std::fs::write(&path, TWO).unwrap();
    assert_eq!(id(&clone), "AKIATWOTWO");
    std::fs::write(&path, "[p]\n").unwrap();
    assert_eq!(
        id(&source),
        "AKIATWOTWO",
        "the clone's read is the original's previous key"
    );
    let KeySource::File(file) = &source else {
        unreachable!("a file source");
    };
    assert_eq!((file.path(), file.profile()), (path.as_path(), "p"));
}

#[test]
fn a_bad_file_at_start_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    assert!(matches!(
        KeySource::file(&path, "p"),
        Err(KeyError::Read { .. })
    ));
    std::fs::write(&path, ONE).unwrap();
    let e = KeySource::file(&path, "other").unwrap_err();
    assert!(
        matches!(
            &e,
            KeyError::Invalid { source: CredentialsError::MissingKey { profile, .. }, .. }
                if profile == "other"
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("credentials`"),
        "names the file: {e}"
    );
}

#[test]
fn a_vanished_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(&path, ONE).unwrap();
    let source = KeySource::file(&path, "p").unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(now(source.current()), Err(KeyError::Read { .. })));
}

#[test]
fn env_key_needs_both_halves_and_errors_name_the_environment() {
    assert!(KeySource::from_env(|_| None).unwrap().is_none());
    let half = KeySource::from_env(|k| (k == "AWS_ACCESS_KEY_ID").then(|| "AKIAX".to_owned()));
    let e = half.unwrap_err();
    assert!(matches!(
        e,
        KeyError::Environment(CredentialsError::IncompleteEnvironment)
    ));
    assert!(e.to_string().starts_with("the environment: "), "{e}");
    let both = KeySource::from_env(|k| {
        (k != "AWS_SESSION_TOKEN").then(|| {
            if k == "AWS_ACCESS_KEY_ID" {
                "AKIAX"
            } else {
                "s"
            }
            .to_owned()
        })
    });
    assert!(matches!(both, Ok(Some(KeySource::Static(_)))));
}
