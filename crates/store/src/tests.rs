//! The store suite, run against SQLite always and against PostgreSQL when
//! `PODIAM_TEST_DATABASE_URL` names a server (scripts/test starts one); without it the PostgreSQL
//! runs say so on stderr rather than pass silently.

use super::*;

fn role(name: &str) -> Role {
    Role {
        role_name: name.into(),
        path: "/".into(),
        role_id: "AROAEXAMPLEEXAMPLE123".into(),
        arn: format!("arn:aws:iam::000000000000:role/{name}"),
        create_date: 1,
        assume_role_policy_document: "{}".into(),
        description: None,
        max_session_duration: 3600,
        permissions_boundary_arn: None,
        tags: vec![Tag {
            key: "team".into(),
            value: "payments".into(),
        }],
        inline_policies: [("p".to_string(), "{\"Statement\":[]}".to_string())].into(),
        attached_policy_arns: vec!["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess".into()],
        last_used: None,
    }
}

/// Where each backend's databases live for one test.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    fn location(&self) -> String {
        match self {
            Backend::Sqlite(dir) => dir.path().join("podiam.db").display().to_string(),
            Backend::Postgres(url) => url.clone(),
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.location()).await.unwrap()
    }
}

/// A fresh database: a temp file, or a new PostgreSQL database on the test server.
async fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite(tempfile::tempdir().unwrap())];
    match std::env::var("PODIAM_TEST_DATABASE_URL") {
        Ok(base) => {
            let admin = Store::open_postgres(&base).await.unwrap();
            let name = format!(
                "podiam_test_{}_{}",
                std::process::id(),
                NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let Pool::Postgres(p) = &admin.pool else {
                unreachable!()
            };
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(p)
                .await
                .unwrap();
            admin.close().await;
            let (prefix, _) = base.rsplit_once('/').unwrap();
            out.push(Backend::Postgres(format!("{prefix}/{name}")));
        }
        Err(_) => eprintln!(
            "PostgreSQL NOT TESTED: set PODIAM_TEST_DATABASE_URL (scripts/test starts a server when Debian's postgresql is installed)"
        ),
    }
    out
}

static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[tokio::test]
async fn changes_survive_reopening_and_deletes_stick() {
    for b in backends().await {
        let store = b.open().await;
        assert_eq!(store.load().await.unwrap(), State::default());
        store
            .apply(&[
                Change::Role("app".into(), Some(role("App"))),
                Change::Role("other".into(), Some(role("Other"))),
                Change::Setting("account_id".into(), Some("000000000000".into())),
            ])
            .await
            .unwrap();
        store
            .apply(&[Change::Role("other".into(), None)])
            .await
            .unwrap();
        store.close().await;

        let store = b.open().await;
        let state = store.load().await.unwrap();
        assert_eq!(state.roles.len(), 1);
        assert_eq!(state.roles["app"], role("App"));
        assert_eq!(state.settings["account_id"], "000000000000");
        let mut expected = State::default();
        expected.apply(&Change::Role("app".into(), Some(role("App"))));
        expected.apply(&Change::Setting(
            "account_id".into(),
            Some("000000000000".into()),
        ));
        assert_eq!(state, expected, "in-memory apply mirrors the store");
        store.close().await;
    }
}

fn user(name: &str, id: &str) -> User {
    User {
        user_name: name.into(),
        path: "/".into(),
        user_id: id.into(),
        arn: format!("arn:aws:iam::000000000000:user/{name}"),
        create_date: 1,
        tags: Vec::new(),
        inline_policies: [("p".to_string(), "{\"Statement\":[]}".to_string())].into(),
        attached_policy_arns: Vec::new(),
        admin: false,
    }
}

fn group(name: &str, members: &[&User]) -> Group {
    Group {
        group_name: name.into(),
        path: "/ops/".into(),
        group_id: "AGPAEXAMPLEEXAMPLE123".into(),
        arn: format!("arn:aws:iam::000000000000:group/ops/{name}"),
        create_date: 2,
        inline_policies: [("deny".to_string(), "{\"Statement\":[]}".to_string())].into(),
        attached_policy_arns: vec!["arn:aws:iam::aws:policy/IAMReadOnlyAccess".into()],
        user_ids: members.iter().map(|u| u.user_id.clone()).collect(),
    }
}

#[tokio::test]
async fn groups_and_their_members_survive_reopening() {
    for b in backends().await {
        let store = b.open().await;
        let (alice, bob) = (user("alice", "AIDAALICE"), user("bob", "AIDABOB"));
        store
            .apply(&[
                Change::User("alice".into(), Some(alice.clone())),
                Change::User("bob".into(), Some(bob.clone())),
                Change::Group("admins".into(), Some(group("Admins", &[&alice]))),
                Change::Group("readers".into(), Some(group("Readers", &[&alice, &bob]))),
            ])
            .await
            .unwrap();
        // A membership change is a compare-and-swap on the group, like any other write.
        let e = store
            .apply_checked(&[(
                Change::Group("admins".into(), Some(group("Admins", &[&alice, &bob]))),
                Change::Group("admins".into(), Some(group("Admins", &[]))),
            )])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        store
            .apply(&[Change::Group("readers".into(), None)])
            .await
            .unwrap();
        store.close().await;

        let state = b.open().await.load().await.unwrap();
        assert_eq!(state.groups.len(), 1);
        assert_eq!(state.groups["admins"], group("Admins", &[&alice]));
        let names = |u: &User| -> Vec<String> {
            state.groups_of(u).map(|g| g.group_name.clone()).collect()
        };
        assert_eq!(names(&alice), ["Admins"]);
        assert!(names(&bob).is_empty());
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_advice() {
    for b in backends().await {
        let store = b.open().await;
        store
            .execute_raw("INSERT INTO schema_version (version) VALUES (99)")
            .await
            .unwrap();
        store.close().await;
        let e = Store::open(&b.location()).await.unwrap_err();
        assert!(e.to_string().contains("upgrade podiam"), "{e}");
    }
}

#[tokio::test]
async fn unreadable_rows_name_the_entity() {
    for b in backends().await {
        let store = b.open().await;
        store
            .execute_raw("INSERT INTO entities (kind, key, data, updated_at) VALUES ('role', 'x', 'not json', 0)")
            .await
            .unwrap();
        let e = store.load().await.unwrap_err();
        assert!(
            e.to_string().contains("stored role `x` is unreadable"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn writes_compare_and_swap_across_writers() {
    for b in backends().await {
        let a = b.open().await;
        let other = b.open().await;
        // Both saw no role `app`; both try to create it: exactly one wins.
        let create = |name: &str| {
            (
                Change::Role("app".into(), Some(role(name))),
                Change::Role("app".into(), None),
            )
        };
        a.apply_checked(&[create("FromA")]).await.unwrap();
        let e = other.apply_checked(&[create("FromB")]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert_eq!(other.load().await.unwrap().roles["app"].role_name, "FromA");
        // An update based on a stale read is refused; one based on the current value goes through.
        let mut stale = role("FromB");
        stale.description = Some("stale".into());
        let e = other
            .apply_checked(&[(
                Change::Role("app".into(), Some(stale)),
                Change::Role("app".into(), Some(role("FromB"))),
            )])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        let mut fresh = role("FromA");
        fresh.description = Some("fresh".into());
        other
            .apply_checked(&[(
                Change::Role("app".into(), Some(fresh.clone())),
                Change::Role("app".into(), Some(role("FromA"))),
            )])
            .await
            .unwrap();
        assert_eq!(a.load().await.unwrap().roles["app"], fresh);
        // A failed write leaves nothing behind, even its other changes.
        let e = a
            .apply_checked(&[
                (
                    Change::Setting("k".into(), Some("v".into())),
                    Change::Setting("k".into(), None),
                ),
                (
                    Change::Role("app".into(), None),
                    Change::Role("app".into(), Some(role("FromA"))),
                ),
            ])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert!(!a.load().await.unwrap().settings.contains_key("k"));
    }
}

#[tokio::test]
async fn concurrent_creates_of_one_name_yield_exactly_one_success() {
    for b in backends().await {
        let stores: Vec<Store> = vec![b.open().await, b.open().await];
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = stores[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                s.apply_checked(&[(
                    Change::Role("race".into(), Some(role(&format!("R{i}")))),
                    Change::Role("race".into(), None),
                )])
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(ok, 1, "{}", b.location());
    }
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_with_the_master_key() {
    for b in backends().await {
        let mk = MasterKey::from_bytes(&[42u8; 32]).unwrap();
        let store = b.open().await.with_master_key(Some(mk.clone()));
        let key = AccessKey {
            access_key_id: "AKIAEXAMPLE000000001".into(),
            secret_access_key: "very-secret-value".into(),
            user_name: "admin".into(),
            status: "Active".into(),
            create_date: 0,
        };
        store
            .apply(&[
                Change::AccessKey(key.access_key_id.clone(), Some(key.clone())),
                Change::Role("app".into(), Some(role("App"))),
            ])
            .await
            .unwrap();
        let rows: Vec<(String, String)> = match &store.pool {
            Pool::Sqlite(p) => sqlx::query_as("SELECT kind, data FROM entities")
                .fetch_all(p)
                .await
                .unwrap(),
            Pool::Postgres(p) => sqlx::query_as("SELECT kind, data FROM entities")
                .fetch_all(p)
                .await
                .unwrap(),
        };
        for (kind, data) in &rows {
            assert!(
                !data.contains("very-secret-value"),
                "{kind} stored in clear"
            );
        }
        assert!(
            rows.iter().any(|(k, d)| k == "role" && d.contains("App")),
            "non-secrets stay readable"
        );
        assert_eq!(
            store.load().await.unwrap().access_keys[&key.access_key_id],
            key
        );
        // CAS compares the opened value.
        store
            .apply_checked(&[(
                Change::AccessKey(key.access_key_id.clone(), None),
                Change::AccessKey(key.access_key_id.clone(), Some(key.clone())),
            )])
            .await
            .unwrap();
        store
            .apply(&[Change::AccessKey(
                key.access_key_id.clone(),
                Some(key.clone()),
            )])
            .await
            .unwrap();
        let without = b.open().await;
        let e = without.load().await.unwrap_err();
        assert!(matches!(e, StoreError::MasterKeyRequired), "{e}");
        let wrong = b
            .open()
            .await
            .with_master_key(Some(MasterKey::from_bytes(&[1u8; 32]).unwrap()));
        assert!(wrong.load().await.is_err());
    }
}

fn audit_row(time_ms: i64, replica: &str, outcome: &str, role: Option<&str>) -> AuditRow {
    AuditRow {
        time_ms,
        replica: replica.into(),
        action: "AssumeRoleWithWebIdentity".into(),
        outcome: outcome.into(),
        role: role.map(|r| format!("arn:aws:iam::000000000000:role/{r}")),
        subject: Some("system:serviceaccount:ns:sa".into()),
        data: format!("{{\"time_ms\":{time_ms},\"outcome\":\"{outcome}\"}}"),
    }
}

#[tokio::test]
async fn audit_events_from_every_writer_are_queried_in_one_place() {
    for b in backends().await {
        let a = b.open().await;
        let other = b.open().await;
        a.append_audit(&[
            audit_row(1_000, "a", "allowed", Some("app")),
            audit_row(3_000, "a", "denied", Some("team/app")),
        ])
        .await
        .unwrap();
        other
            .append_audit(&[
                audit_row(2_000, "b", "error", Some("other")),
                audit_row(4_000, "b", "denied", None),
            ])
            .await
            .unwrap();
        a.append_audit(&[]).await.unwrap();
        let times = |rows: Vec<AuditRow>| rows.iter().map(|r| r.time_ms).collect::<Vec<_>>();

        let all = a.query_audit(&AuditFilter::default()).await.unwrap();
        assert_eq!(times(all.clone()), [1_000, 2_000, 3_000, 4_000]);
        assert_eq!(all[0], audit_row(1_000, "a", "allowed", Some("app")));
        assert_eq!(all[1].replica, "b");
        let since = AuditFilter {
            since_ms: Some(2_000),
            ..AuditFilter::default()
        };
        assert_eq!(
            times(other.query_audit(&since).await.unwrap()),
            [2_000, 3_000, 4_000]
        );
        // Every outcome but `allowed`, as `podiam audit --denied` reads the file.
        let denied = AuditFilter {
            denied_only: true,
            ..AuditFilter::default()
        };
        assert_eq!(
            times(a.query_audit(&denied).await.unwrap()),
            [2_000, 3_000, 4_000]
        );
        // A role by name matches any path; by ARN only that ARN.
        let role = |r: &str| AuditFilter {
            role: Some(r.into()),
            ..AuditFilter::default()
        };
        assert_eq!(
            times(a.query_audit(&role("app")).await.unwrap()),
            [1_000, 3_000]
        );
        let arn = "arn:aws:iam::000000000000:role/team/app";
        assert_eq!(times(a.query_audit(&role(arn)).await.unwrap()), [3_000]);
        assert!(a.query_audit(&role("ap")).await.unwrap().is_empty());
        // A limit keeps the newest, still oldest first.
        let newest = AuditFilter {
            limit: Some(2),
            denied_only: true,
            ..AuditFilter::default()
        };
        assert_eq!(times(a.query_audit(&newest).await.unwrap()), [3_000, 4_000]);

        // A batch larger than one INSERT statement goes in whole.
        let big: Vec<AuditRow> = (0..2_500)
            .map(|i| audit_row(10_000 + i, "a", "allowed", Some("bulk")))
            .collect();
        a.append_audit(&big).await.unwrap();
        let bulk = a.query_audit(&role("bulk")).await.unwrap();
        assert_eq!(bulk, big, "{}", b.location());

        // Text with the characters PostgreSQL's COPY format escapes (and a `\N` that is text,
        // not NULL) comes back as written.
        let awkward = AuditRow {
            subject: Some("tab\there\nnew\rline \\N back\\slash 日本".into()),
            data: "{\"reason\":\"a \\\"quoted\\\" \\\\ path\\n\"}".into(),
            ..audit_row(20_000, "c\td", "denied", Some("awkward"))
        };
        a.append_audit(std::slice::from_ref(&awkward))
            .await
            .unwrap();
        assert_eq!(
            a.query_audit(&role("awkward")).await.unwrap(),
            [awkward],
            "{}",
            b.location()
        );
        a.close().await;
        other.close().await;
    }
}

#[tokio::test]
async fn a_reader_does_not_migrate_the_database() {
    for b in backends().await {
        let Backend::Postgres(url) = &b else { continue };
        let reader = Store::open_postgres_as_is(url).await.unwrap();
        let e = reader
            .query_audit(&AuditFilter::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("reading audit events"), "{e}");
        let server = b.open().await;
        assert!(
            reader
                .query_audit(&AuditFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        server.close().await;
        reader.close().await;
    }
}

#[test]
fn database_urls_are_redacted_in_messages() {
    assert_eq!(
        redact("postgres://podiam:s3cret@db:5432/podiam"),
        "postgres://podiam:***@db:5432/podiam"
    );
    assert_eq!(redact("postgres://db/podiam"), "postgres://db/podiam");
}

#[tokio::test]
async fn the_state_version_counts_committed_writes_and_is_announced() {
    for b in backends().await {
        let a = b.open().await;
        let other = b.open().await;
        let mut listener = a.listen().await.unwrap();
        let v0 = a.version().await.unwrap();
        // One write transaction of two changes: one version, returned by the commit.
        let v1 = a
            .apply(&[
                Change::Role("one".into(), Some(role("One"))),
                Change::Role("two".into(), Some(role("Two"))),
            ])
            .await
            .unwrap();
        assert_eq!(v1, v0 + 1);
        assert_eq!(other.version().await.unwrap(), v1, "every process sees it");
        // A refused write commits nothing and moves nothing.
        let e = other
            .apply_checked(&[(
                Change::Role("one".into(), Some(role("Again"))),
                Change::Role("one".into(), None),
            )])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert_eq!(a.version().await.unwrap(), v1);
        // Another process's write is the next version, and a reload is at least that new.
        let v2 = other
            .apply(&[Change::Role("two".into(), None)])
            .await
            .unwrap();
        assert_eq!(v2, v1 + 1);
        let (loaded, state) = a.load_versioned().await.unwrap();
        assert_eq!(loaded, v2);
        assert!(state.roles.contains_key("one") && !state.roles.contains_key("two"));
        // PostgreSQL: each commit is announced with its version, so a writer knows its own.
        if let Some(l) = listener.as_mut() {
            for expected in [v1, v2] {
                let n = tokio::time::timeout(std::time::Duration::from_secs(10), l.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(n, Some(expected.to_string()));
            }
        }
    }
}
