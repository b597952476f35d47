//! podiam's state behind one interface. The server loads everything into memory at start
//! ([`Store::load`]) and writes each change through ([`Store::apply`]) before it shows in memory,
//! so a restart sees exactly what clients were told succeeded.
//!
//! SQLite is the embedded default (one file under the data directory, WAL mode). The schema is a
//! document table, identical for the PostgreSQL backend that replicas will share.

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};

pub mod model;

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
    #[error("stored {kind} `{key}` is unreadable: {source}")]
    Corrupt {
        kind: String,
        key: String,
        source: serde_json::Error,
    },
    #[error(
        "the database schema is version {found}, newer than this podiam understands ({known}): upgrade podiam"
    )]
    TooNew { found: i64, known: i64 },
}

/// Schema migrations, applied in order; the index + 1 is the version.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/0001_entities.sql")];

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { doing, source }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
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
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(db("creating the schema table"))?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the schema version"))?
            .try_get(0)
            .map_err(db("reading the schema version"))?;
        let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            let mut tx = self.pool.begin().await.map_err(db("migrating"))?;
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(db("migrating"))?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db("migrating"))?;
            tx.commit().await.map_err(db("migrating"))?;
        }
        Ok(())
    }

    /// Reads the whole state.
    pub async fn load(&self) -> Result<State, StoreError> {
        let rows = sqlx::query("SELECT kind, key, data FROM entities")
            .fetch_all(&self.pool)
            .await
            .map_err(db("loading the state"))?;
        let mut state = State::default();
        for row in rows {
            let kind: String = row.try_get(0).map_err(db("loading the state"))?;
            let key: String = row.try_get(1).map_err(db("loading the state"))?;
            let data: String = row.try_get(2).map_err(db("loading the state"))?;
            fn parse<T: DeserializeOwned>(
                kind: &str,
                key: &str,
                data: &str,
            ) -> Result<T, StoreError> {
                serde_json::from_str(data).map_err(|source| StoreError::Corrupt {
                    kind: kind.to_string(),
                    key: key.to_string(),
                    source,
                })
            }
            let change = match kind.as_str() {
                "role" => Change::Role(key.clone(), Some(parse(&kind, &key, &data)?)),
                "policy" => Change::Policy(key.clone(), Some(parse(&kind, &key, &data)?)),
                "oidc_provider" => {
                    Change::OidcProvider(key.clone(), Some(parse(&kind, &key, &data)?))
                }
                "user" => Change::User(key.clone(), Some(parse(&kind, &key, &data)?)),
                "access_key" => Change::AccessKey(key.clone(), Some(parse(&kind, &key, &data)?)),
                "signing_key" => Change::SigningKey(key.clone(), Some(parse(&kind, &key, &data)?)),
                "sealing_key" => Change::SealingKey(key.clone(), Some(parse(&kind, &key, &data)?)),
                "setting" => Change::Setting(key.clone(), Some(parse(&kind, &key, &data)?)),
                "cluster" => Change::Cluster(key.clone(), Some(parse(&kind, &key, &data)?)),
                "pod_identity_association" => {
                    Change::PodIdentityAssociation(key.clone(), Some(parse(&kind, &key, &data)?))
                }
                // Written by a newer podiam: keep it, ignore it.
                _ => continue,
            };
            state.apply(&change);
        }
        Ok(state)
    }

    /// Writes changes atomically: all of them or none.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("starting a write"))?;
        for change in changes {
            write(&mut tx, change).await?;
        }
        tx.commit().await.map_err(db("committing a write"))?;
        Ok(())
    }

    /// Changes whenever any entity is written or deleted: other processes (a second server, the
    /// CLI) poll it to notice writes they did not make.
    pub async fn version(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(updated_at), 0), COUNT(*) FROM entities")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the state version"))?;
        Ok((
            row.try_get(0).map_err(db("reading the state version"))?,
            row.try_get(1).map_err(db("reading the state version"))?,
        ))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn write(tx: &mut Transaction<'_, Sqlite>, change: &Change) -> Result<(), StoreError> {
    fn json<T: Serialize>(
        kind: &str,
        key: &str,
        v: &Option<T>,
    ) -> Result<Option<String>, StoreError> {
        v.as_ref()
            .map(|v| serde_json::to_string(v))
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                kind: kind.to_string(),
                key: key.to_string(),
                source,
            })
    }
    let (kind, key, data) = match change {
        Change::Role(k, v) => ("role", k, json("role", k, v)?),
        Change::Policy(k, v) => ("policy", k, json("policy", k, v)?),
        Change::OidcProvider(k, v) => ("oidc_provider", k, json("oidc_provider", k, v)?),
        Change::User(k, v) => ("user", k, json("user", k, v)?),
        Change::AccessKey(k, v) => ("access_key", k, json("access_key", k, v)?),
        Change::SigningKey(k, v) => ("signing_key", k, json("signing_key", k, v)?),
        Change::SealingKey(k, v) => ("sealing_key", k, json("sealing_key", k, v)?),
        Change::Setting(k, v) => ("setting", k, json("setting", k, v)?),
        Change::Cluster(k, v) => ("cluster", k, json("cluster", k, v)?),
        Change::PodIdentityAssociation(k, v) => (
            "pod_identity_association",
            k,
            json("pod_identity_association", k, v)?,
        ),
    };
    match data {
        Some(data) => {
            sqlx::query(
                "INSERT INTO entities (kind, key, data, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            )
            .bind(kind)
            .bind(key)
            .bind(data)
            .bind(now_millis())
            .execute(&mut **tx)
            .await
            .map_err(db("writing an entity"))?;
        }
        None => {
            sqlx::query("DELETE FROM entities WHERE kind = ? AND key = ?")
                .bind(kind)
                .bind(key)
                .execute(&mut **tx)
                .await
                .map_err(db("deleting an entity"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
