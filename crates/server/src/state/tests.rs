//! The write path on persistent maps, and how the server tells its own writes from others'.

use podiam_store::{Change, Role, State, Store};

use super::Shared;

fn role(name: &str) -> Role {
    Role {
        role_name: name.to_string(),
        path: "/".into(),
        role_id: format!("AROA{name:0>17}"),
        arn: format!("arn:aws:iam::000000000000:role/{name}"),
        create_date: 0,
        assume_role_policy_document: "{}".into(),
        description: None,
        max_session_duration: 3600,
        permissions_boundary_arn: None,
        tags: Vec::new(),
        inline_policies: Default::default(),
        attached_policy_arns: Vec::new(),
        last_used: None,
    }
}

fn put(name: &str) -> Change {
    Change::Role(name.to_string(), Some(role(name)))
}

/// A server's shared state over a fresh SQLite file, and a second handle on the same file
/// (another process: the CLI, a replica).
async fn shared() -> (tempfile::TempDir, Shared, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podiam.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    let other = Store::open_sqlite(&path).await.unwrap();
    let (version, state) = store.load_versioned().await.unwrap();
    let shared = Shared::new(
        super::Config::for_tests(),
        store,
        state,
        Some(version),
        crate::ServerClock::default(),
    )
    .unwrap();
    (dir, shared, other)
}

async fn write(shared: &Shared, changes: Vec<Change>) {
    shared
        .write(move |_: &State| Ok((changes.clone(), ())))
        .await
        .unwrap();
}

#[tokio::test]
async fn own_writes_are_not_reloaded_and_other_writers_are() {
    let (_dir, shared, other) = shared().await;
    write(&shared, vec![put("a")]).await;
    assert_eq!(
        shared.known_version(),
        Some(other.version().await.unwrap()),
        "the server's memory is at the version its own write committed"
    );
    // An unreadable row, planted without a write (no version change): a refresh that re-read the
    // store would fail on it, so this shows that the server's own write costs no reload.
    other
        .execute_raw(
            "INSERT INTO entities (kind, key, data, updated_at) VALUES ('role', 'planted', 'not json', 0)",
        )
        .await
        .unwrap();
    assert!(
        !shared.refresh().await.unwrap(),
        "own write: nothing to reload"
    );
    assert_eq!(shared.metrics.cache_reloads.get(), 0);
    other
        .execute_raw("DELETE FROM entities WHERE key = 'planted'")
        .await
        .unwrap();

    // Another writer: its version is not ours, and the refresh picks its write up.
    other.apply(&[put("b")]).await.unwrap();
    assert_ne!(shared.known_version(), Some(other.version().await.unwrap()));
    assert!(
        shared.refresh().await.unwrap(),
        "another writer's write is reloaded"
    );
    assert!(shared.snapshot().roles.contains_key("b"));
    assert_eq!(shared.known_version(), Some(other.version().await.unwrap()));
    assert!(!shared.refresh().await.unwrap(), "and only once");
}

#[tokio::test]
async fn a_write_after_another_writers_is_not_taken_for_the_whole_store() {
    let (_dir, shared, other) = shared().await;
    // Another process writes `b`; this server, not having seen it, writes `a` (a different
    // entity, so the compare-and-swap succeeds).
    other.apply(&[put("b")]).await.unwrap();
    write(&shared, vec![put("a")]).await;
    assert!(!shared.snapshot().roles.contains_key("b"));
    assert_ne!(
        shared.known_version(),
        Some(other.version().await.unwrap()),
        "memory lacks `b`: its version must stay stale so that the poll reloads"
    );
    assert!(shared.refresh().await.unwrap());
    let state = shared.snapshot();
    assert!(state.roles.contains_key("a") && state.roles.contains_key("b"));
}

#[tokio::test]
async fn notifications_of_writes_already_in_memory_are_recognised() {
    let (_dir, shared, _other) = shared().await;
    write(&shared, vec![put("a")]).await;
    let Some(v) = shared.known_version() else {
        panic!("the version is known after a write")
    };
    assert!(shared.has_committed(&v.to_string()), "our own write");
    assert!(shared.has_committed(&(v - 1).to_string()), "an older one");
    assert!(!shared.has_committed(&(v + 1).to_string()), "a newer one");
    assert!(!shared.has_committed(""), "an older podiam's empty payload");
    assert!(!shared.has_committed("x"));
}

#[tokio::test]
async fn a_write_copies_only_the_path_to_its_entity() {
    let (_dir, shared, _other) = shared().await;
    let names: Vec<String> = (0..1_000).map(|i| format!("r{i:04}")).collect();
    write(&shared, names.iter().map(|n| put(n)).collect()).await;
    let before = shared.snapshot();

    let mut tagged = role("r0000");
    tagged.tags.push(podiam_store::Tag {
        key: "k".into(),
        value: "v".into(),
    });
    write(
        &shared,
        vec![Change::Role("r0000".into(), Some(tagged.clone()))],
    )
    .await;
    let after = shared.snapshot();

    // Readers of the previous snapshot keep it unchanged; the new one has the write.
    assert!(before.roles["r0000"].tags.is_empty());
    assert_eq!(after.roles["r0000"], tagged);
    assert_eq!(after.roles.len(), 1_000);
    // Every role the write did not touch is equal; all but the few sharing the changed one's
    // B-tree node are the very same memory (a clone of the whole state copies all 1,000).
    let copied = names[1..]
        .iter()
        .filter(|n| {
            assert_eq!(before.roles[n.as_str()], after.roles[n.as_str()]);
            !std::ptr::eq(
                before.roles[n.as_str()].arn.as_ptr(),
                after.roles[n.as_str()].arn.as_ptr(),
            )
        })
        .count();
    assert!(copied < 64, "{copied} of 999 untouched roles were copied");
}

#[test]
fn a_role_is_found_by_its_arn_with_a_path_and_any_case() {
    let mut state = State::default();
    let mut app = role("App");
    app.path = "/team/".into();
    app.arn = "arn:aws:iam::000000000000:role/team/App".into();
    state.apply(&Change::Role("app".into(), Some(app.clone())));
    state.apply(&put("plain"));
    let by_arn = |arn: &str| crate::issuance::role_by_arn(&state, arn).map(|r| &r.role_name);
    assert_eq!(
        by_arn("arn:aws:iam::000000000000:role/team/App"),
        Some(&app.role_name)
    );
    assert_eq!(
        by_arn("arn:aws:iam::000000000000:role/plain"),
        Some(&"plain".to_string())
    );
    // The ARN must be the role's own: another path, account or case is another role.
    assert_eq!(by_arn("arn:aws:iam::000000000000:role/App"), None);
    assert_eq!(by_arn("arn:aws:iam::111122223333:role/team/App"), None);
    assert_eq!(by_arn("arn:aws:iam::000000000000:role/team/app"), None);
    assert_eq!(by_arn("not-an-arn"), None);
}

/// The handlers' futures stay small (ARCHITECTURE.md, "Futures stay small"): the store's
/// futures are large and boxed in `Shared::write`. Inline, every IAM handler's future, and the
/// awsQuery adapter's that holds it, was over 16 KB in a release build (5.8 KB in this debug
/// build, against 1.5 KB boxed), and axum moves it several times per request.
#[tokio::test]
async fn handler_futures_stay_small() {
    let (_dir, shared, _other) = shared().await;
    let audit = crate::audit::Audit::disabled();
    let ctx = crate::ctx::Ctx {
        shared: &shared,
        caller: None,
        facts: crate::auth::RequestFacts {
            source_ip: None,
            secure_transport: true,
            user_agent: None,
            now: 0,
        },
        request_id: "test",
        audit: &audit,
        offline: false,
    };
    let p = crate::query::Params::parse(b"");
    let iam = std::mem::size_of_val(&crate::iam::handle(&ctx, "CreateRole", &p));
    let sts = std::mem::size_of_val(&crate::sts::handle(&ctx, "AssumeRoleWithWebIdentity", &p));
    let write = std::mem::size_of_val(&shared.write(|_: &State| Ok((Vec::new(), ()))));
    for (what, size) in [
        ("iam::handle", iam),
        ("sts::handle", sts),
        ("Shared::write", write),
    ] {
        assert!(size <= 4 * 1024, "{what}'s future is {size} bytes");
    }
}
