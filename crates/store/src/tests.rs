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

#[tokio::test]
async fn changes_survive_reopening_and_deletes_stick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podiam.db");
    let store = Store::open_sqlite(&path).await.unwrap();
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

    let store = Store::open_sqlite(&path).await.unwrap();
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
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podiam.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
        .execute(&store.pool)
        .await
        .unwrap();
    store.close().await;
    let e = Store::open_sqlite(&path).await.unwrap_err();
    assert!(e.to_string().contains("upgrade podiam"), "{e}");
}

#[tokio::test]
async fn unreadable_rows_name_the_entity() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("db")).await.unwrap();
    sqlx::query(
        "INSERT INTO entities (kind, key, data, updated_at) VALUES ('role', 'x', 'not json', 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let e = store.load().await.unwrap_err();
    assert!(
        e.to_string().contains("stored role `x` is unreadable"),
        "{e}"
    );
}
