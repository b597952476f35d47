#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::{AccessKey, Change};

const SECRET: &str = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY42";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn key_change() -> Change {
    Change::AccessKey(
        "AKIAEXAMPLEEXAMPLE01".into(),
        Some(AccessKey {
            access_key_id: "AKIAEXAMPLEEXAMPLE01".into(),
            secret_access_key: SECRET.into(),
            user_name: "podiam-admin".into(),
            status: "Active".into(),
            create_date: 1,
        }),
    )
}

/// The database's files as a copy of them would hold them.
fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["podiam.db", "podiam.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_new_data_directory_and_every_file_in_it_are_the_owners_only() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let store = Store::open_local(&dir, None).await.unwrap();
    store.apply(&[key_change()]).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    for name in ["podiam.db", "podiam.db-wal", "podiam.db-shm", "master.key"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    store.close().await;
}

#[tokio::test]
async fn a_directory_or_database_others_can_read_is_refused_with_the_chmod_to_run() {
    let dir = tempfile::tempdir().unwrap();
    // A directory podiam has not used yet is taken and made private.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Store::open_local(dir.path(), None)
        .await
        .unwrap()
        .close()
        .await;
    assert_eq!(mode(dir.path()), 0o700);
    // One that holds a database and that others can read is refused.
    let db = dir.path().join("podiam.db");
    for (path, exposed, fix) in [(dir.path(), 0o755, "700"), (db.as_path(), 0o644, "600")] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(exposed)).unwrap();
        let err = Store::open_local(dir.path(), None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("run `chmod {fix} {}`", path.display())),
            "{err}"
        );
        let private = if fix == "700" { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).unwrap();
    }
}

#[tokio::test]
async fn secrets_are_sealed_in_the_file_and_an_unsealed_database_is_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    // As an older podiam left it: the secret in the clear.
    let old = Store::open_sqlite(&dir.path().join("podiam.db"))
        .await
        .unwrap();
    old.apply(&[key_change()]).await.unwrap();
    old.close().await;
    assert!(
        contains(&raw_bytes(dir.path()), SECRET),
        "the fixture is unsealed"
    );
    // What the refusal asks of the operator: `chmod 700 DIR`, `chmod 600 DIR/podiam.db`.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        dir.path().join("podiam.db"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    let store = Store::open_local(dir.path(), None).await.unwrap();
    let state = store.load().await.unwrap();
    assert_eq!(
        state.access_keys["AKIAEXAMPLEEXAMPLE01"].secret_access_key,
        SECRET
    );
    assert!(
        !contains(&raw_bytes(dir.path()), SECRET),
        "a copy of podiam.db reveals the secret"
    );
    // New writes are sealed too, and the store reopens with its key file.
    store.apply(&[key_change()]).await.unwrap();
    store.close().await;
    assert!(!contains(&raw_bytes(dir.path()), SECRET));
    let again = Store::open_local(dir.path(), None).await.unwrap();
    assert_eq!(again.load().await.unwrap().access_keys.len(), 1);
    again.close().await;
    // Without the key file the database does not open its secrets.
    let bare = Store::open_sqlite(&dir.path().join("podiam.db"))
        .await
        .unwrap();
    assert!(matches!(
        bare.load().await,
        Err(StoreError::MasterKeyRequired)
    ));
}

/// A volume the platform mounted (a Kubernetes emptyDir: root's, 2777 with an fsGroup) cannot be
/// tightened by the unprivileged server: it is accepted, while a directory of our own that others
/// can read is refused. Needs root to make a directory of another owner; skipped otherwise.
#[test]
fn a_directory_of_another_owner_is_accepted_and_our_own_open_one_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory another owner");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let mounted = base.path().join("emptydir");
    std::fs::create_dir(&mounted).unwrap();
    std::fs::set_permissions(&mounted, std::fs::Permissions::from_mode(0o2777)).unwrap();
    rustix::fs::chown(
        &mounted,
        Some(rustix::fs::Uid::from_raw(65532)),
        Some(rustix::fs::Gid::from_raw(65532)),
    )
    .unwrap();
    assert!(create_private_dir(&mounted, false).is_ok());
    assert_eq!(mode(&mounted), 0o777, "left as the platform made it");
    // Ours and open: refused (an existing data directory), or tightened (a new one).
    let own = base.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(own.join("podiam.db"), b"").unwrap();
    assert!(matches!(
        create_private_dir(&own, false),
        Err(StoreError::Exposed { .. })
    ));
}
