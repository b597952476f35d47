//! podiam's state behind one interface. The server loads everything into memory at start
//! ([`Store::load`]) and writes each change through ([`Store::apply_checked`]) before it shows in
//! memory, so a restart sees exactly what clients were told succeeded.
//!
//! Two backends with one schema (a document table): SQLite, the embedded default (one file under
//! the data directory, WAL mode), and PostgreSQL for several replicas. Writes are compare-and-swap
//! on whole entities: each change carries the value the writer saw, and the write fails with
//! [`StoreError::Conflict`] if another writer (another replica, the CLI) changed it meanwhile. The
//! writer reloads and decides again; there is no check-then-write window.
//!
//! Secrets at rest (access-key secrets, issuer private keys, session-token keys) are sealed with a
//! master key when one is configured ([`MasterKey`]), on both backends.

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

mod audit;
pub mod local;
mod master_key;
pub mod model;

pub use audit::{AuditFilter, AuditRow};
pub use master_key::{MasterKey, MasterKeyError};
pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at `{path}`: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database error while {doing}: {source}")]
    Database {
        doing: &'static str,
        source: sqlx::Error,
    },
    #[error("stored {kind} `{key}` is unreadable: {problem}")]
    Corrupt {
        kind: String,
        key: String,
        problem: String,
    },
    #[error(
        "the database schema is version {found}, newer than this podiam understands ({known}): upgrade podiam"
    )]
    TooNew { found: i64, known: i64 },
    /// Another writer changed an entity this write expected unchanged: reload and decide again.
    #[error("{kind} `{key}` was changed by another writer")]
    Conflict { kind: &'static str, key: String },
    #[error(
        "the database holds secrets sealed with a master key: start podiam with --master-key-file"
    )]
    MasterKeyRequired,
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error("cannot {doing} `{path}`: {source}")]
    File {
        path: String,
        doing: &'static str,
        source: std::io::Error,
    },
    /// The data directory or a file in it holds secrets and others may read it.
    #[error(
        "`{path}` is accessible to other users (mode {mode:o}) and holds secrets: run `chmod {fix_mode} {path}` and start again"
    )]
    Exposed {
        path: String,
        mode: u32,
        fix_mode: &'static str,
    },
}

/// Schema migrations, applied in order; the index + 1 is the version.
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_entities.sql"),
    include_str!("../migrations/sqlite/0002_audit_events.sql"),
    include_str!("../migrations/sqlite/0003_state_version.sql"),
];
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_entities.sql"),
    include_str!("../migrations/postgres/0002_audit_events.sql"),
    include_str!("../migrations/postgres/0003_state_version.sql"),
];

/// The PostgreSQL channel on which every committed write is announced; the payload is the
/// state version the write committed (see [`Store::version`]).
pub const NOTIFY_CHANNEL: &str = "podiam_state";

/// The store's state version: one more for every committed write transaction, by any process.
pub type StateVersion = i64;

/// Bumps the state version, last in a write transaction, and returns the new one.
const BUMP_VERSION: &str =
    "UPDATE state_version SET version = version + 1 WHERE id = 1 RETURNING version";

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    master_key: Option<MasterKey>,
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { doing, source }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The kinds whose documents hold secrets.
fn is_secret(kind: &str) -> bool {
    matches!(kind, "access_key" | "signing_key" | "sealing_key")
}

impl Store {
    /// `postgres://…` (or `postgresql://…`) opens PostgreSQL; anything else is a SQLite file path.
    pub async fn open(location: &str) -> Result<Store, StoreError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Store::open_postgres(location).await
        } else {
            Store::open_sqlite(Path::new(location)).await
        }
    }

    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Overwritten secrets (sealed on upgrade, rotated keys) leave no copy in free pages.
            .pragma("secure_delete", "on")
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = Store {
            pool: Pool::Sqlite(pool),
            master_key: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let store = Store::open_postgres_as_is(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to a PostgreSQL database without touching its schema: a reader such as
    /// `podiam audit` must not migrate a database that older servers still run on.
    pub async fn open_postgres_as_is(url: &str) -> Result<Store, StoreError> {
        let redacted = redact(url);
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open {
            path: redacted.clone(),
            source,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: redacted,
                source,
            })?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            master_key: None,
        })
    }

    /// Seals secrets written from now on, and opens sealed ones when loading.
    pub fn with_master_key(mut self, key: Option<MasterKey>) -> Store {
        self.master_key = key;
        self
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let create = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)";
        let read = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db("migrating"))?;
                sqlx::query(create)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("creating the schema table"))?;
                let (current,): (i64,) = sqlx::query_as(read)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("reading the schema version"))?;
                for (version, sql) in pending(SQLITE_MIGRATIONS, current)? {
                    sqlx::raw_sql(sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("migrating"))?;
                    sqlx::query("INSERT INTO schema_version (version) VALUES (?1)")
                        .bind(version)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("migrating"))?;
                }
                tx.commit().await.map_err(db("migrating"))?;
            }
            Pool::Postgres(p) => {
                // One migrator at a time across replicas: a transaction-scoped advisory lock, and
                // DDL is transactional, so a crash mid-migration leaves the old schema whole.
                let mut tx = p.begin().await.map_err(db("migrating"))?;
                sqlx::query("SELECT pg_advisory_xact_lock(7242)")
                    .execute(&mut *tx)
                    .await
                    .map_err(db("locking for migration"))?;
                sqlx::query(create)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("creating the schema table"))?;
                let (current,): (i64,) = sqlx::query_as(read)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("reading the schema version"))?;
                for (version, sql) in pending(POSTGRES_MIGRATIONS, current)? {
                    sqlx::raw_sql(sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("migrating"))?;
                    sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                        .bind(version)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("migrating"))?;
                }
                tx.commit().await.map_err(db("migrating"))?;
            }
        }
        Ok(())
    }

    fn open_document(&self, kind: &str, key: &str, data: String) -> Result<String, StoreError> {
        if !master_key::is_sealed(&data) {
            return Ok(data);
        }
        let mk = self
            .master_key
            .as_ref()
            .ok_or(StoreError::MasterKeyRequired)?;
        mk.open(&format!("{kind}/{key}"), &data)
            .map_err(|e| StoreError::Corrupt {
                kind: kind.to_string(),
                key: key.to_string(),
                problem: e.to_string(),
            })
    }

    fn seal_document(&self, kind: &str, key: &str, data: String) -> Result<String, StoreError> {
        match &self.master_key {
            Some(mk) if is_secret(kind) => Ok(mk.seal(&format!("{kind}/{key}"), &data)?),
            _ => Ok(data),
        }
    }

    /// Seals the secret documents (access keys, issuer and session keys) that were written
    /// unsealed (by a podiam from before sealing, or without a master key), then compacts the
    /// database so no unsealed copy stays in it. SQLite only: on PostgreSQL the operator
    /// chooses the master key from the start. Returns how many were sealed.
    pub async fn seal_unsealed_secrets(&self) -> Result<usize, StoreError> {
        let (Pool::Sqlite(p), Some(mk)) = (&self.pool, &self.master_key) else {
            return Ok(0);
        };
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT kind, key, data FROM entities WHERE kind IN ('access_key', 'signing_key', 'sealing_key')",
        )
        .fetch_all(p)
        .await
        .map_err(db("reading secrets to seal"))?;
        let unsealed: Vec<_> = rows
            .into_iter()
            .filter(|(_, _, data)| !master_key::is_sealed(data))
            .collect();
        if unsealed.is_empty() {
            return Ok(0);
        }
        let mut tx = p
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("starting a write"))?;
        for (kind, key, data) in &unsealed {
            let sealed = mk.seal(&format!("{kind}/{key}"), data)?;
            sqlx::query("UPDATE entities SET data = ?1 WHERE kind = ?2 AND key = ?3 AND data = ?4")
                .bind(sealed)
                .bind(kind)
                .bind(key)
                .bind(data)
                .execute(&mut *tx)
                .await
                .map_err(db("sealing a secret"))?;
        }
        tx.commit().await.map_err(db("sealing secrets"))?;
        // The old pages: rewritten by VACUUM, then the write-ahead log folded in and emptied.
        for sql in ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"] {
            sqlx::query(sql)
                .execute(p)
                .await
                .map_err(db("compacting after sealing"))?;
        }
        Ok(unsealed.len())
    }

    /// Reads the whole state and a version it is at least as new as: the version is read first,
    /// so a write committed in between makes the state newer than the version, never older (a
    /// poller then reloads once more, rather than missing the write).
    pub async fn load_versioned(&self) -> Result<(StateVersion, State), StoreError> {
        let version = self.version().await?;
        Ok((version, self.load().await?))
    }

    /// Reads the whole state.
    pub async fn load(&self) -> Result<State, StoreError> {
        let sql = "SELECT kind, key, data FROM entities";
        let rows: Vec<(String, String, String)> = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
            Pool::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .map_err(db("loading the state"))?;
        let mut state = State::default();
        for (kind, key, data) in rows {
            let data = self.open_document(&kind, &key, data)?;
            if let Some(change) = decode(&kind, &key, &data)? {
                state.apply(&change);
            }
        }
        Ok(state)
    }

    /// Writes changes atomically and unconditionally (first-start bootstrap), and returns the
    /// state version the write committed.
    pub async fn apply(&self, changes: &[Change]) -> Result<StateVersion, StoreError> {
        let writes: Vec<(Change, Option<Change>)> =
            changes.iter().map(|c| (c.clone(), None)).collect();
        self.write(&writes).await
    }

    /// Writes changes atomically, each only if its entity still has the value the writer saw
    /// (`expected`: the entity as the writer's snapshot had it, absent as `Change::…(key, None)`).
    /// Returns the state version the write committed: the one before it was that minus one, so a
    /// writer whose memory was at that version knows its memory plus these changes is the store.
    pub async fn apply_checked(
        &self,
        writes: &[(Change, Change)],
    ) -> Result<StateVersion, StoreError> {
        let writes: Vec<(Change, Option<Change>)> = writes
            .iter()
            .map(|(c, e)| (c.clone(), Some(e.clone())))
            .collect();
        self.write(&writes).await
    }

    async fn write(&self, writes: &[(Change, Option<Change>)]) -> Result<StateVersion, StoreError> {
        let mut rows = Vec::with_capacity(writes.len());
        for (change, expected) in writes {
            let (kind, key, data) = encode(change)?;
            let data = data
                .map(|d| self.seal_document(kind, &key, d))
                .transpose()?;
            rows.push((kind, key, data, expected.as_ref()));
        }
        let now = now_millis();
        match &self.pool {
            Pool::Sqlite(p) => {
                // IMMEDIATE: take the write lock before reading what we compare against.
                let mut tx = p
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db("starting a write"))?;
                for (kind, key, data, expected) in &rows {
                    if let Some(expected) = expected {
                        let current: Option<(String,)> = sqlx::query_as(
                            "SELECT data FROM entities WHERE kind = ?1 AND key = ?2",
                        )
                        .bind(*kind)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("reading an entity"))?;
                        self.check(kind, key, current.map(|c| c.0), expected)?;
                    }
                    match data {
                        Some(data) => sqlx::query(
                            "INSERT INTO entities (kind, key, data, updated_at) VALUES (?1, ?2, ?3, ?4) \
                             ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                        )
                        .bind(*kind)
                        .bind(key)
                        .bind(data)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("writing an entity"))?,
                        None => sqlx::query("DELETE FROM entities WHERE kind = ?1 AND key = ?2")
                            .bind(*kind)
                            .bind(key)
                            .execute(&mut *tx)
                            .await
                            .map_err(db("deleting an entity"))?,
                    };
                }
                let (version,): (StateVersion,) = sqlx::query_as(BUMP_VERSION)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("bumping the state version"))?;
                tx.commit().await.map_err(db("committing a write"))?;
                Ok(version)
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await.map_err(db("starting a write"))?;
                for (kind, key, data, expected) in &rows {
                    let expect_absent = expected.is_some_and(change_is_delete);
                    if let Some(expected) = expected
                        && !expect_absent
                    {
                        let current: Option<(String,)> = sqlx::query_as(
                            "SELECT data FROM entities WHERE kind = $1 AND key = $2 FOR UPDATE",
                        )
                        .bind(*kind)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("reading an entity"))?;
                        self.check(kind, key, current.map(|c| c.0), expected)?;
                    }
                    let result = match (data, expect_absent) {
                        // Expected absent: a plain INSERT, so two replicas creating the same name
                        // cannot both succeed (the primary key decides).
                        (Some(data), true) => {
                            sqlx::query("INSERT INTO entities (kind, key, data, updated_at) VALUES ($1, $2, $3, $4)")
                                .bind(*kind)
                                .bind(key)
                                .bind(data)
                                .bind(now)
                                .execute(&mut *tx)
                                .await
                        }
                        (Some(data), false) => {
                            sqlx::query(
                                "INSERT INTO entities (kind, key, data, updated_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                            )
                            .bind(*kind)
                            .bind(key)
                            .bind(data)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                        }
                        (None, _) => {
                            sqlx::query("DELETE FROM entities WHERE kind = $1 AND key = $2")
                                .bind(*kind)
                                .bind(key)
                                .execute(&mut *tx)
                                .await
                        }
                    };
                    match result {
                        Err(sqlx::Error::Database(e)) if e.kind() == ErrorKind::UniqueViolation => {
                            return Err(StoreError::Conflict {
                                kind,
                                key: key.clone(),
                            });
                        }
                        other => {
                            other.map_err(db("writing an entity"))?;
                        }
                    }
                }
                // Last, so that the row lock on the counter is held only until the commit.
                let (version,): (StateVersion,) = sqlx::query_as(BUMP_VERSION)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("bumping the state version"))?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(NOTIFY_CHANNEL)
                    .bind(version.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("announcing a write"))?;
                tx.commit().await.map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.kind() == ErrorKind::UniqueViolation => {
                        StoreError::Conflict {
                            kind: "entity",
                            key: String::new(),
                        }
                    }
                    _ => StoreError::Database {
                        doing: "committing a write",
                        source: e,
                    },
                })?;
                Ok(version)
            }
        }
    }

    /// Compares the stored entity with what the writer expected, as typed values (so a document
    /// written by an older podiam, lacking a defaulted field, still compares equal).
    fn check(
        &self,
        kind: &'static str,
        key: &str,
        current: Option<String>,
        expected: &Change,
    ) -> Result<(), StoreError> {
        let current = match current {
            Some(data) => decode(kind, key, &self.open_document(kind, key, data)?)?,
            None => None,
        };
        let same = match current {
            Some(c) => c == *expected,
            None => change_is_delete(expected),
        };
        if same {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                kind,
                key: key.to_string(),
            })
        }
    }

    /// The state version: one more for every committed write, by any process. Other processes (a
    /// second server, the CLI) poll it to notice writes they did not make; a writer recognises
    /// its own by the version [`Store::apply_checked`] returned.
    pub async fn version(&self) -> Result<StateVersion, StoreError> {
        let sql = "SELECT version FROM state_version WHERE id = 1";
        let row: (StateVersion,) = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_as(sql).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_as(sql).fetch_one(p).await,
        }
        .map_err(db("reading the state version"))?;
        Ok(row.0)
    }

    /// For PostgreSQL: a stream that yields once per write committed by any process.
    pub async fn listen(&self) -> Result<Option<WriteListener>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(None),
            Pool::Postgres(p) => {
                let mut l = sqlx::postgres::PgListener::connect_with(p)
                    .await
                    .map_err(db("listening for writes"))?;
                l.listen(NOTIFY_CHANNEL)
                    .await
                    .map_err(db("listening for writes"))?;
                Ok(Some(WriteListener(l)))
            }
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// Runs raw SQL (tests and diagnostics only).
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &'static str) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        }
        .map_err(db("running SQL"))
    }
}

/// The migrations after `current`, with their versions; a newer schema is refused.
fn pending(
    migrations: &'static [&'static str],
    current: i64,
) -> Result<Vec<(i64, &'static str)>, StoreError> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    Ok(migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
        .map(|(i, sql)| (i64::try_from(i + 1).unwrap_or(i64::MAX), *sql))
        .collect())
}

fn change_is_delete(c: &Change) -> bool {
    matches!(
        c,
        Change::Role(_, None)
            | Change::Policy(_, None)
            | Change::OidcProvider(_, None)
            | Change::User(_, None)
            | Change::Group(_, None)
            | Change::AccessKey(_, None)
            | Change::SigningKey(_, None)
            | Change::SealingKey(_, None)
            | Change::Setting(_, None)
            | Change::Cluster(_, None)
            | Change::PodIdentityAssociation(_, None)
    )
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn corrupt(kind: &str, key: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        kind: kind.to_string(),
        key: key.to_string(),
        problem: e.to_string(),
    }
}

/// A stored row as a change; `None` for kinds written by a newer podiam (kept, ignored).
fn decode(kind: &str, key: &str, data: &str) -> Result<Option<Change>, StoreError> {
    let k = key.to_string();
    macro_rules! parse {
        ($variant:ident) => {
            Change::$variant(
                k,
                Some(serde_json::from_str(data).map_err(|e| corrupt(kind, key, e))?),
            )
        };
    }
    Ok(Some(match kind {
        "role" => parse!(Role),
        "policy" => parse!(Policy),
        "oidc_provider" => parse!(OidcProvider),
        "user" => parse!(User),
        "group" => parse!(Group),
        "access_key" => parse!(AccessKey),
        "signing_key" => parse!(SigningKey),
        "sealing_key" => parse!(SealingKey),
        "setting" => parse!(Setting),
        "cluster" => parse!(Cluster),
        "pod_identity_association" => parse!(PodIdentityAssociation),
        _ => return Ok(None),
    }))
}

/// A change as `(kind, key, document or None for a delete)`.
fn encode(change: &Change) -> Result<(&'static str, String, Option<String>), StoreError> {
    fn json<T: serde::Serialize>(
        kind: &'static str,
        key: &str,
        v: &Option<T>,
    ) -> Result<(&'static str, String, Option<String>), StoreError> {
        let data = v
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt(kind, key, e))?;
        Ok((kind, key.to_string(), data))
    }
    match change {
        Change::Role(k, v) => json("role", k, v),
        Change::Policy(k, v) => json("policy", k, v),
        Change::OidcProvider(k, v) => json("oidc_provider", k, v),
        Change::User(k, v) => json("user", k, v),
        Change::Group(k, v) => json("group", k, v),
        Change::AccessKey(k, v) => json("access_key", k, v),
        Change::SigningKey(k, v) => json("signing_key", k, v),
        Change::SealingKey(k, v) => json("sealing_key", k, v),
        Change::Setting(k, v) => json("setting", k, v),
        Change::Cluster(k, v) => json("cluster", k, v),
        Change::PodIdentityAssociation(k, v) => json("pod_identity_association", k, v),
    }
}

#[cfg(test)]
mod tests;

/// The writes other processes commit, as PostgreSQL notifications ([`Store::listen`]).
pub struct WriteListener(sqlx::postgres::PgListener);

impl WriteListener {
    /// The next write's payload (its state version); `Ok(None)` once the store is closing. The
    /// listener holds a connection of the pool, which [`Store::close`] waits for: dropping the
    /// listener then lets the close finish (sqlx keeps the connection across `PoolClosed`).
    ///
    /// # Errors
    /// The channel was lost; the next call reconnects.
    pub async fn recv(&mut self) -> Result<Option<String>, StoreError> {
        match self.0.recv().await {
            Ok(n) => Ok(Some(n.payload().to_owned())),
            Err(sqlx::Error::PoolClosed) => Ok(None),
            Err(e) => Err(db("listening for writes")(e)),
        }
    }
}
