//! `podiam audit`: who assumed which role, from the audit log under the data directory, or from
//! the audit table every `podiam server` on one PostgreSQL database writes (all replicas at once).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use podiam_server::audit::Event;
use podiam_store::{AuditFilter, Store};

use crate::exit;
use crate::policy::Output;

#[derive(Args)]
pub struct AuditArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Read the events of every server on this PostgreSQL database (`postgres://…`), with the
    /// replica that wrote each, instead of the data directory's audit.log.
    #[arg(long, env = "PODIAM_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Only events this recent: `30m`, `24h`, `7d`.
    #[arg(long)]
    since: Option<String>,
    /// Only this role (its name or ARN).
    #[arg(long)]
    role: Option<String>,
    /// Only refusals.
    #[arg(long)]
    denied: bool,
    /// Only the most recent N of the matching events.
    #[arg(long)]
    limit: Option<u32>,
    /// `text`: a table for a terminal; `json`: one event per line, as in `audit.log`.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Fit the table to this many columns: a longer reason wraps onto indented lines under its
    /// row. Default on a terminal: `COLUMNS`, else the terminal's width; a pipe or a file gets
    /// one whole line per event, as does `--width 0`.
    #[arg(long)]
    width: Option<usize>,
}

/// `podiam up` / `podiam server`: how the audit trail is kept on disk.
#[derive(Args, Clone, Debug)]
pub struct AuditLogArgs {
    /// Rotate `audit.log` (and `audit-unauthenticated.log`) once it is this many MiB.
    #[arg(long, env = "PODIAM_AUDIT_LOG_MAX_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    audit_log_max_mib: u64,
    /// Rotated files kept per log: `audit.log.1` (newest) … `audit.log.N`.
    #[arg(long, env = "PODIAM_AUDIT_LOG_FILES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    audit_log_files: u32,
    /// Refusals before authentication (tokens that do not verify: anyone can send them) recorded
    /// per second at most, in `audit-unauthenticated.log`; the others are counted there.
    #[arg(
        long,
        env = "PODIAM_AUDIT_UNAUTHENTICATED_PER_SECOND",
        default_value_t = 50
    )]
    audit_unauthenticated_per_second: u32,
}

impl AuditLogArgs {
    pub fn options(&self) -> podiam_server::audit::AuditOptions {
        podiam_server::audit::AuditOptions {
            max_bytes: self.audit_log_max_mib.saturating_mul(1024 * 1024),
            files: self.audit_log_files,
            unauthenticated_per_second: self.audit_unauthenticated_per_second,
        }
    }
}

/// Projected tokens are refreshed by kubelet well within a day; an older one means a pod reads a
/// stale token file (or a token was copied out of a pod).
const STALE_TOKEN_SECONDS: i64 = 24 * 3600;

fn parse_since(s: &str) -> anyhow::Result<i64> {
    let (num, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: i64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a duration such as 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("`{s}` is not a duration such as 30m, 24h or 7d"),
    };
    Ok(secs * 1000)
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let since_ms = match &args.since {
        Some(s) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
            Some(now - parse_since(s)?)
        }
        None => None,
    };
    let filter = AuditFilter {
        since_ms,
        role: args.role,
        denied_only: args.denied,
        limit: args.limit,
    };
    let (events, from_database) = match args.database_url.filter(|u| !u.is_empty()) {
        Some(url) => (from_database(&url, &filter)?, true),
        None => (
            from_file(&crate::up::data_dir(args.data_dir), &filter)?,
            false,
        ),
    };
    match args.output {
        Output::Json => {
            let mut out = String::new();
            for e in &events {
                out.push_str(&serde_json::to_string(e)?);
                out.push('\n');
            }
            crate::emit(&out)?;
        }
        Output::Text => {
            let width = args.width.or_else(terminal_width).filter(|&w| w > 0);
            crate::emit(&text(&events, from_database, width))?;
            if events.is_empty() {
                eprintln!("no matching events");
            }
        }
    }
    Ok(ExitCode::from(exit::OK))
}

/// This machine's server: `audit.log` under the data directory, after the rotated `audit.log.1`
/// (the server moves the file there past 64 MiB).
fn from_file(data_dir: &std::path::Path, filter: &AuditFilter) -> anyhow::Result<Vec<Event>> {
    if !data_dir.join("audit.log").exists() && !data_dir.join("podiam.db").exists() {
        anyhow::bail!(
            "no podiam data in {}: give the server's --data-dir, or --database-url for servers on PostgreSQL",
            data_dir.display()
        );
    }
    let mut text = String::new();
    for base in ["audit-unauthenticated.log", "audit.log"] {
        // Oldest first: `audit.log.N` … `audit.log.1`, then `audit.log`.
        let mut names: Vec<String> = (1..=1000)
            .map(|k| format!("{base}.{k}"))
            .take_while(|n| data_dir.join(n).exists())
            .collect();
        names.reverse();
        names.push(base.to_string());
        for name in names {
            let path = data_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(t) => text.push_str(&t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read `{}`", path.display()));
                }
            }
        }
    }
    let mut events: Vec<Event> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .map(|mut e| {
            e.role = role_of(&e);
            e
        })
        .filter(|e| {
            filter
                .since_ms
                .is_none_or(|c| podiam_policy::date::parse_date(&e.time).is_some_and(|t| t >= c))
        })
        .filter(|e| !filter.denied_only || e.outcome != "allowed")
        .filter(|e| {
            filter.role.as_deref().is_none_or(|r| {
                e.role
                    .as_deref()
                    .is_some_and(|role| role == r || role.rsplit('/').next() == Some(r))
            })
        })
        .collect();
    // The two logs interleave in time (the server writes times in one fixed format).
    events.sort_by(|a, b| a.time.cmp(&b.time));
    if let Some(n) = filter.limit {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        events.drain(..events.len().saturating_sub(n));
    }
    Ok(events)
}

/// Every replica's events, from the audit table of the servers' PostgreSQL database. Only
/// servers on PostgreSQL write that table: a server on SQLite (`podiam up`) keeps its trail in
/// audit.log, so a SQLite location is refused rather than read as an empty table.
fn from_database(url: &str, filter: &AuditFilter) -> anyhow::Result<Vec<Event>> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!(
            "--database-url takes a postgres:// URL; a server on SQLite keeps its audit trail in audit.log (`podiam audit --data-dir DIR`)"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rows = runtime.block_on(async {
        // No migration: a reader must not change the schema under the servers.
        let store = Store::open_postgres_as_is(url).await?;
        let rows = store.query_audit(filter).await;
        store.close().await;
        rows
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let mut e = serde_json::from_str::<Event>(&row.data).ok()?;
            e.replica = Some(row.replica);
            e.role = role_of(&e);
            Some(e)
        })
        .collect())
}

/// The role a call was made as: the one the event names (STS decisions) or, for a call signed
/// with role credentials, the role of the session (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/S`).
fn role_of(e: &Event) -> Option<String> {
    if let Some(r) = &e.role {
        return Some(r.clone());
    }
    let subject = e.subject.as_deref()?;
    let (prefix, rest) = subject.split_once(":assumed-role/")?;
    let account = prefix.strip_prefix("arn:aws:sts::")?;
    let (role, _session) = rest.split_once('/')?;
    Some(format!("arn:aws:iam::{account}:role/{role}"))
}

/// A token's age as people say it: `42s`, `55m`, `7h`, `3d` (rounded down to the largest unit).
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{}s", s.max(0)),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The width of the terminal the table goes to: `COLUMNS` when set, else the terminal's own;
/// none for a pipe or a file.
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal as _;
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
    {
        return Some(columns);
    }
    rustix::termios::tcgetwinsize(&stdout)
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&w| w > 0)
}

fn text(events: &[Event], with_replica: bool, width: Option<usize>) -> String {
    let mut header = vec!["TIME"];
    if with_replica {
        header.push("REPLICA");
    }
    header.extend([
        "OUTCOME",
        "ACTION",
        "ROLE",
        "NAMESPACE/SERVICEACCOUNT",
        "POD",
        "TOKEN AGE",
        "SOURCE",
        "REASON",
    ]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_string()).collect()];
    for e in events {
        let mut who = match (&e.namespace, &e.service_account) {
            (Some(n), Some(s)) => format!("{n}/{s}"),
            _ => e.subject.clone().unwrap_or_else(|| "-".into()),
        };
        // What a token that did not verify claims is nobody's identity: say so.
        if e.unauthenticated && who != "-" {
            who.push_str(" (unverified)");
        }
        let age = match e.token_age_seconds {
            Some(a) if a > STALE_TOKEN_SECONDS => format!("{} STALE", age(a)),
            Some(a) => age(a),
            None => "-".into(),
        };
        let role = e
            .role
            .as_deref()
            .map_or("-", |r| r.rsplit('/').next().unwrap_or(r));
        let mut row = vec![e.time.clone()];
        if with_replica {
            row.push(e.replica.clone().unwrap_or_else(|| "-".into()));
        }
        row.extend([
            e.outcome.to_string(),
            e.action.to_string(),
            role.to_string(),
            who,
            e.pod.clone().unwrap_or_else(|| "-".into()),
            age,
            e.source_ip.clone().unwrap_or_else(|| "-".into()),
            e.reason.clone().unwrap_or_default(),
        ]);
        // Every value may come from a caller: no control character reaches the terminal.
        rows.push(
            row.iter()
                .map(|c| podiam_server::text::printable(c, 4096))
                .collect(),
        );
    }
    // Columns as wide as their widest cell, two spaces apart; the reason last, unpadded. Given a
    // width, a line that would be wider has its reason wrapped onto indented lines below it.
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns - 1) {
            line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
        }
        let reason = &row[columns - 1];
        match width {
            Some(w) if line.chars().count() + reason.chars().count() > w => {
                out.push_str(&cut(line.trim_end(), w));
                out.push('\n');
                for part in wrap(reason, w.saturating_sub(REASON_INDENT.len()).max(20)) {
                    out.push_str(REASON_INDENT);
                    out.push_str(&part);
                    out.push('\n');
                }
            }
            _ => {
                line.push_str(reason);
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    out
}

/// Where a wrapped reason starts, under its row.
const REASON_INDENT: &str = "    ";

/// `line` cut to `width` characters, a cut marked with `…`.
fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word is split).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while !word.is_empty() {
            let room = if len == 0 {
                width
            } else {
                width.saturating_sub(len + 1)
            };
            if word.len() <= room {
                if len > 0 {
                    line.push(' ');
                    len += 1;
                }
                line.extend(word.iter());
                len += word.len();
                word.clear();
            } else if len > 0 {
                lines.push(std::mem::take(&mut line));
                len = 0;
            } else {
                line.extend(word.drain(..width));
                lines.push(std::mem::take(&mut line));
            }
        }
    }
    if len > 0 {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_claims_are_marked_and_no_escape_reaches_the_terminal() {
        let mut e = event("2026-01-01T00:00:00Z", "denied", "x");
        e.role = None;
        e.subject = Some("cluster-admin\u{1b}]0;owned\u{7}".into());
        e.unauthenticated = true;
        e.reason = Some("ok\u{1b}[2K\rallowed\nforged row".into());
        let out = text(&[e], false, None);
        assert!(
            out.contains("cluster-admin\\u{1b}]0;owned\\u{7} (unverified)"),
            "{out}"
        );
        assert!(out.contains("\\u{d}allowed\\u{a}forged row"), "{out}");
        // Two lines: the header and the one event; no raw control character anywhere.
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        // Everything printed goes through the same guard.
        assert_eq!(crate::terminal_safe("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\n");
        assert_eq!(crate::terminal_safe("plain\ttext\n"), "plain\ttext\n");
    }

    fn event(time: &str, outcome: &str, role: &str) -> Event {
        Event {
            time: time.into(),
            action: "AssumeRoleWithWebIdentity".into(),
            outcome: outcome.to_string().into(),
            role: Some(format!("arn:aws:iam::000000000000:role/{role}")),
            ..Event::default()
        }
    }

    #[test]
    fn the_file_takes_the_same_filters_as_the_table() {
        // No tempfile dependency for one test: a directory of our own under the temp dir.
        let dir = std::env::temp_dir().join(format!("podiam-audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines: String = [
            event("2026-01-01T00:00:01Z", "allowed", "app"),
            event("2026-01-01T00:00:02Z", "denied", "team/app"),
            event("2026-01-01T00:00:03Z", "error", "other"),
        ]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
        // The oldest event is in the rotated file; both are read, oldest first.
        let (rotated, current) = lines.split_at(lines.find('\n').unwrap() + 1);
        std::fs::write(dir.join("audit.log.1"), rotated).unwrap();
        std::fs::write(dir.join("audit.log"), current.to_string() + "not json\n").unwrap();
        let times = |filter: AuditFilter| -> Vec<String> {
            from_file(&dir, &filter)
                .unwrap()
                .into_iter()
                .map(|e| e.time[17..19].to_string())
                .collect()
        };
        assert_eq!(times(AuditFilter::default()), ["01", "02", "03"]);
        let role = |r: &str| AuditFilter {
            role: Some(r.into()),
            ..AuditFilter::default()
        };
        assert_eq!(times(role("app")), ["01", "02"]);
        assert_eq!(
            times(role("arn:aws:iam::000000000000:role/team/app")),
            ["02"]
        );
        let newest_refusal = AuditFilter {
            denied_only: true,
            limit: Some(1),
            ..AuditFilter::default()
        };
        assert_eq!(times(newest_refusal), ["03"]);
        let since = AuditFilter {
            since_ms: podiam_policy::date::parse_date("2026-01-01T00:00:02Z"),
            ..AuditFilter::default()
        };
        assert_eq!(times(since), ["02", "03"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_ages_read_as_people_say_them_and_stale_ones_are_flagged() {
        assert_eq!(
            [0, 59, 60, 3599, 3600, 86_399, 86_400, 3 * 86_400 + 5].map(age),
            ["0s", "59s", "1m", "59m", "1h", "23h", "1d", "3d"]
        );
        let mut e = event("2026-01-01T00:00:01Z", "allowed", "app");
        e.token_age_seconds = Some(55 * 60);
        assert!(text(std::slice::from_ref(&e), false, None).contains("  55m  "));
        e.token_age_seconds = Some(3 * 86_400);
        assert!(text(&[e], false, None).contains("  3d STALE  "));
    }

    #[test]
    fn a_table_fits_the_width_it_is_given() {
        let mut e = event("2026-01-01T00:00:01Z", "denied", "app");
        e.reason = Some("because ".repeat(40));
        let whole = text(std::slice::from_ref(&e), false, None);
        assert_eq!(whole.lines().count(), 2, "{whole}");
        let table = text(&[e], false, Some(100));
        assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
        // Header and row keep their columns; each reason wraps, indented, under its row; no word
        // of the reason is lost.
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("TIME ") && lines[1] == "    REASON",
            "{table}"
        );
        assert!(
            lines[2].starts_with("2026-01-01T00:00:01Z  denied"),
            "{table}"
        );
        let wrapped: Vec<&str> = lines[3..]
            .iter()
            .map(|l| l.strip_prefix("    ").unwrap())
            .collect();
        assert!(wrapped.len() > 1, "{table}");
        assert_eq!(wrapped.join(" "), "because ".repeat(40).trim_end());
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(cut("abcdef", 4), "abc…");
    }

    #[test]
    fn the_replica_column_shows_only_for_the_table() {
        let mut e = event("2026-01-01T00:00:01Z", "allowed", "app");
        assert!(
            text(std::slice::from_ref(&e), false, None)
                .starts_with("TIME                  OUTCOME")
        );
        e.replica = Some("podiam-server-0".into());
        let table = text(&[e], true, None);
        assert!(table.starts_with("TIME                  REPLICA          OUTCOME"));
        assert!(
            table.contains("2026-01-01T00:00:01Z  podiam-server-0  allowed"),
            "{table}"
        );
    }

    #[test]
    fn columns_stay_aligned_with_long_roles_and_callers() {
        let mut sts = event(
            "2026-01-01T00:00:01Z",
            "allowed",
            "weasel-weasel-eks-pod-sa",
        );
        sts.namespace = Some("weasel".into());
        sts.service_account = Some("weasel-eks-pod-sa".into());
        let mut iam = event("2026-01-01T00:00:02Z", "denied", "x");
        iam.action = "ListRoles".into();
        iam.role = None;
        iam.subject = Some(
            "arn:aws:sts::000000000000:assumed-role/weasel-weasel-eks-pod-sa/botocore-session-1"
                .into(),
        );
        sts.source_ip = Some("127.0.0.1".into());
        iam.reason = Some("no identity-based policy allows the action".into());
        iam.role = role_of(&iam);
        let table = text(&[sts, iam], false, None);
        let lines: Vec<&str> = table.lines().collect();
        let column = |l: &str, word: &str| l.find(word).unwrap();
        // OUTCOME, ROLE and SOURCE start at the same column on every line.
        for (line, cell, header) in [
            (1, "allowed", "OUTCOME"),
            (2, "denied", "OUTCOME"),
            (1, "weasel-weasel", "ROLE"),
            (2, "weasel-weasel", "ROLE"),
            (1, "127.0.0.1", "SOURCE"),
            (2, "no identity-based", "REASON"),
        ] {
            assert_eq!(
                column(lines[line], cell),
                column(lines[0], header),
                "{table}"
            );
        }
        assert!(!table.lines().any(|l| l.ends_with(' ')), "{table}");
    }

    #[test]
    fn a_call_with_role_credentials_counts_for_that_role() {
        let mut e = event("2026-01-01T00:00:01Z", "denied", "x");
        e.role = None;
        e.subject =
            Some("arn:aws:sts::000000000000:assumed-role/payments-api/eks-dev-api-7d9".into());
        assert_eq!(
            role_of(&e).as_deref(),
            Some("arn:aws:iam::000000000000:role/payments-api")
        );
        e.subject = Some("arn:aws:iam::000000000000:user/podiam-admin".into());
        assert_eq!(role_of(&e), None);
        let dir = std::env::temp_dir().join(format!("podiam-audit-role-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        e.subject = Some("arn:aws:sts::000000000000:assumed-role/payments-api/s".into());
        std::fs::write(
            dir.join("audit.log"),
            serde_json::to_string(&e).unwrap() + "\n",
        )
        .unwrap();
        let filter = AuditFilter {
            role: Some("payments-api".into()),
            denied_only: true,
            ..AuditFilter::default()
        };
        assert_eq!(from_file(&dir, &filter).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_podiam_data_is_an_error_not_an_empty_table() {
        let dir = std::env::temp_dir().join(format!("podiam-audit-none-{}", std::process::id()));
        let e = from_file(&dir, &AuditFilter::default()).unwrap_err();
        assert!(e.to_string().contains("--data-dir"), "{e}");
    }

    #[test]
    fn a_sqlite_location_is_refused_with_advice() {
        let e = from_database("/var/lib/podiam/podiam.db", &AuditFilter::default()).unwrap_err();
        assert!(e.to_string().contains("audit.log"), "{e}");
    }
}
