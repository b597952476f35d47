//! The audit table: every server on one database appends its events in batches, and
//! `podiam audit` reads them back from one place, whichever replica wrote them.

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::{Pool, Store, StoreError, db};

/// One audit event as the table keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// When it happened, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The server process that wrote it.
    pub replica: String,
    pub action: String,
    /// `allowed`, `denied` or `error`.
    pub outcome: String,
    /// The role's ARN.
    pub role: Option<String>,
    pub subject: Option<String>,
    /// The whole event, as JSON.
    pub data: String,
}

/// Which events [`Store::query_audit`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only this role, by name or ARN.
    pub role: Option<String>,
    /// Only refusals and errors (every outcome but `allowed`).
    pub denied_only: bool,
    /// Only the most recent `limit` of the matching events.
    pub limit: Option<u32>,
}

/// Rows per INSERT: 8 parameters each stays well under SQLite's 32766 and PostgreSQL's 65535.
const ROWS_PER_STATEMENT: usize = 1000;

/// A role's name: the last segment of its ARN (`arn:aws:iam::1:role/path/name` → `name`).
fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

fn insert<'a, DB>(rows: &'a [AuditRow]) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    i64: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO audit_events (time_ms, replica, action, outcome, role, role_name, subject, data) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.time_ms)
            .push_bind(r.replica.as_str())
            .push_bind(r.action.as_str())
            .push_bind(r.outcome.as_str())
            .push_bind(r.role.as_deref())
            .push_bind(r.role.as_deref().map(role_name))
            .push_bind(r.subject.as_deref())
            .push_bind(r.data.as_str());
    });
    q
}

/// `rows` in PostgreSQL's COPY text format: tab-separated columns in `append_audit`'s order,
/// `\\N` for NULL, and backslash escapes for the characters the format gives meaning to.
fn copy_text(rows: &[AuditRow]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, value: Option<&str>) {
        let Some(v) = value else {
            out.extend_from_slice(b"\\N");
            return;
        };
        for &b in v.as_bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
    }
    let mut out = Vec::with_capacity(rows.iter().map(|r| r.data.len() + 256).sum());
    for r in rows {
        out.extend_from_slice(r.time_ms.to_string().as_bytes());
        for value in [
            Some(r.replica.as_str()),
            Some(r.action.as_str()),
            Some(r.outcome.as_str()),
            r.role.as_deref(),
            r.role.as_deref().map(role_name),
            r.subject.as_deref(),
            Some(r.data.as_str()),
        ] {
            out.push(b'\t');
            field(&mut out, value);
        }
        out.push(b'\n');
    }
    out
}

fn select<'a, DB>(filter: &'a AuditFilter) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    i64: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT time_ms, replica, action, outcome, role, subject, data FROM audit_events WHERE 1 = 1",
    );
    if let Some(since) = filter.since_ms {
        q.push(" AND time_ms >= ").push_bind(since);
    }
    if let Some(role) = &filter.role {
        // A name matches any path; an ARN (it has a `/`) matches only itself. Both use the
        // (role_name, time_ms) index.
        q.push(" AND role_name = ").push_bind(role_name(role));
        if role.contains('/') {
            q.push(" AND role = ").push_bind(role.as_str());
        }
    }
    if filter.denied_only {
        q.push(" AND outcome <> 'allowed'");
    }
    match filter.limit {
        // The newest `limit`, read backwards and turned around by the caller.
        Some(n) => q
            .push(" ORDER BY time_ms DESC, id DESC LIMIT ")
            .push_bind(i64::from(n)),
        None => q.push(" ORDER BY time_ms, id"),
    };
    q
}

type Columns = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
);

/// The same statements on either backend (the query builder picks `?` or `$n` placeholders).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

impl Store {
    /// Appends audit events in one transaction (a multi-row INSERT per thousand rows).
    pub async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let doing = "appending audit events";
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await.map_err(db(doing))?;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    insert(chunk)
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(db(doing))?;
                }
                tx.commit().await.map_err(db(doing))
            }
            // COPY: one statement, no parse and plan of a thousand-row VALUES list. It costs the
            // database server about a third of the CPU of the INSERT, which matters when every
            // AssumeRoleWithWebIdentity adds a row and the database shares the servers' cores.
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await.map_err(db(doing))?;
                let mut copy = conn
                    .copy_in_raw(
                        "COPY audit_events (time_ms, replica, action, outcome, role, role_name, subject, data) FROM STDIN",
                    )
                    .await
                    .map_err(db(doing))?;
                let sent = copy.send(copy_text(rows)).await.map(|_| ());
                match sent {
                    Ok(()) => copy.finish().await.map(|_| ()).map_err(db(doing)),
                    Err(e) => {
                        let _ = copy.abort("podiam could not send the audit rows").await;
                        Err(db(doing)(e))
                    }
                }
            }
        }
    }

    /// The audit events that pass `filter`, oldest first.
    pub async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let rows: Vec<Columns> = on_pool!(&self.pool, p => {
            select(filter).build_query_as().fetch_all(p).await
        })
        .map_err(db("reading audit events"))?;
        let mut rows: Vec<AuditRow> = rows
            .into_iter()
            .map(
                |(time_ms, replica, action, outcome, role, subject, data)| AuditRow {
                    time_ms,
                    replica,
                    action,
                    outcome,
                    role,
                    subject,
                    data,
                },
            )
            .collect();
        if filter.limit.is_some() {
            rows.reverse();
        }
        Ok(rows)
    }
}
