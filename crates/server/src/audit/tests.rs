//! The writer → store path: batches reach `audit.log` and the audit table; a failing database
//! costs retries and a counter, never a line of the file.

use super::*;
use crate::metrics::Metrics;
use podiam_store::AuditFilter;

fn event(i: usize, outcome: &str) -> Event {
    Event {
        time: "2026-01-02T03:04:05Z".into(),
        request_id: format!("req-{i}"),
        action: "AssumeRoleWithWebIdentity".into(),
        outcome: outcome.to_string().into(),
        role: Some("arn:aws:iam::000000000000:role/app".into()),
        subject: Some("system:serviceaccount:ns:sa".into()),
        ..Event::default()
    }
}

/// The N of each line's `req-N`.
fn request_numbers(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Event>(l).unwrap().request_id[4..]
                .parse()
                .unwrap()
        })
        .collect()
}

/// Polls `check` until it holds; the writer is a thread and the database real, so no virtual time.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn file_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A writer with a SQLite store as its database, named `replica-a`.
struct Writer {
    dir: tempfile::TempDir,
    store: Store,
    metrics: Metrics,
    audit: Audit,
}

impl Writer {
    async fn start(retry: Retry, store_closed: bool) -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("podiam.db"))
            .await
            .unwrap();
        if store_closed {
            store.close().await;
        }
        let metrics = Metrics::new();
        let sink = DatabaseSink::new(
            store.clone(),
            "replica-a".into(),
            metrics.audit_database_events.clone(),
            retry,
        );
        let audit = Audit::start(
            dir.path().join("audit.log"),
            Some(sink),
            AuditOptions::default(),
        );
        Writer {
            dir,
            store,
            metrics,
            audit,
        }
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.log")
    }
}

#[tokio::test]
async fn each_batch_reaches_the_file_and_the_table_with_the_replica_name() {
    let w = Writer::start(Retry::default(), false).await;
    let (store, metrics, audit, log) = (&w.store, &w.metrics, &w.audit, w.log());
    let events = [event(0, "allowed"), event(1, "denied"), event(2, "allowed")];
    for e in &events {
        audit.record(e.clone());
    }
    eventually("3 rows in the table", async || {
        store
            .query_audit(&AuditFilter::default())
            .await
            .unwrap()
            .len()
            == 3
    })
    .await;
    let rows = store.query_audit(&AuditFilter::default()).await.unwrap();
    // The file is as it always was (no replica field); the table keeps the same lines.
    let lines = file_lines(&log);
    assert_eq!(lines.len(), 3);
    for ((row, line), e) in rows.iter().zip(&lines).zip(&events) {
        assert_eq!(line, &serde_json::to_string(e).unwrap());
        assert_eq!(&row.data, line);
        assert_eq!(row.replica, "replica-a");
        assert_eq!(row.outcome, e.outcome);
        assert_eq!(row.role, e.role);
        assert_eq!(
            Some(row.time_ms),
            podiam_policy::date::parse_date("2026-01-02T03:04:05Z")
        );
    }
    let denied = AuditFilter {
        denied_only: true,
        ..AuditFilter::default()
    };
    assert_eq!(store.query_audit(&denied).await.unwrap().len(), 1);
    eventually("the written counter", async || {
        metrics
            .render()
            .contains("podiam_audit_database_events_total{result=\"written\"} 3")
    })
    .await;
}

#[tokio::test]
async fn a_failing_database_costs_retries_and_a_count_never_a_file_line() {
    let retry = Retry {
        attempts: 3,
        first_delay: Duration::from_millis(1),
        timeout: Duration::from_secs(5),
    };
    let w = Writer::start(retry, true).await;
    let (audit, metrics, log) = (&w.audit, &w.metrics, w.log());
    audit.record(event(0, "allowed"));
    audit.record(event(1, "denied"));
    eventually("both lines in the file", async || {
        file_lines(&log).len() == 2
    })
    .await;
    eventually("the failed counter", async || {
        metrics
            .render()
            .contains("podiam_audit_database_events_total{result=\"failed\"} 2")
    })
    .await;
    // The writer is still alive after giving up on the database.
    audit.record(event(2, "allowed"));
    eventually("the next line", async || file_lines(&log).len() == 3).await;
}

#[tokio::test]
async fn the_log_rotates_past_its_size_and_keeps_the_newest_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let options = AuditOptions {
        max_bytes: 1_000,
        files: 1,
        ..AuditOptions::default()
    };
    let audit = Audit::start(log.clone(), None, options);
    let line = serde_json::to_string(&event(0, "allowed")).unwrap().len() + 1;
    assert!(
        30 * line > 3 * 1_000,
        "the events must fill the file several times over"
    );
    for i in 0..30 {
        audit.record(event(i, "allowed"));
        // Spread over several of the writer's batches.
        if i % 5 == 4 {
            tokio::time::sleep(FLUSH_EVERY * 2).await;
        }
    }
    // A snapshot of both files that ends with the last event (a read that straddles a rotation
    // does not, and is taken again).
    let mut both = Vec::new();
    eventually("the last event written", async || {
        both = [file_lines(&rotated), file_lines(&log)].concat();
        both.last().is_some_and(|l| l.contains("\"req-29\""))
    })
    .await;
    // The two files hold the newest events, in order, with nothing missing between them; the
    // oldest ones went with an earlier rotation.
    let kept = request_numbers(&both);
    assert_eq!(kept, (30 - kept.len()..30).collect::<Vec<_>>());
    assert!(kept.len() < 30, "nothing was rotated away: {kept:?}");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    assert!(
        size(&rotated) >= 1_000,
        "rotated at {} bytes",
        size(&rotated)
    );
    assert!(size(&log) < 1_000 + 5 * line as u64, "{} bytes", size(&log));
}

#[tokio::test]
async fn flush_returns_once_every_recorded_event_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let audit = Audit::start(log.clone(), None, AuditOptions::default());
    for i in 0..1_000 {
        audit.record(event(i, "allowed"));
    }
    assert!(audit.flush(Duration::from_secs(10)).await);
    // No waiting here: flush promised the lines are written.
    let lines = file_lines(&log);
    assert_eq!(lines.len(), 1_000);
    assert!(lines[999].contains("\"req-999\""));
    // Nothing recorded since: returns at once.
    assert!(audit.flush(Duration::ZERO).await);
}

#[tokio::test]
async fn the_configured_number_of_rotated_files_is_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let options = AuditOptions {
        max_bytes: 500,
        files: 3,
        ..AuditOptions::default()
    };
    let audit = Audit::start(log.clone(), None, options);
    for i in 0..60 {
        audit.record(event(i, "allowed"));
        if i % 3 == 2 {
            assert!(audit.flush(Duration::from_secs(10)).await);
        }
    }
    assert!(audit.flush(Duration::from_secs(10)).await);
    let name = |n: u32| dir.path().join(format!("audit.log.{n}"));
    assert!(name(3).exists(), "three rotated files are kept");
    assert!(!name(4).exists(), "no more than three");
    // Oldest to newest: .3, .2, .1, then the current file, with nothing missing in between.
    let all = [
        file_lines(&name(3)),
        file_lines(&name(2)),
        file_lines(&name(1)),
        file_lines(&log),
    ]
    .concat();
    let ids = request_numbers(&all);
    assert_eq!(ids, (60 - ids.len()..60).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_flood_of_unauthenticated_refusals_cannot_rotate_the_trail_or_bloat_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let options = AuditOptions {
        max_bytes: 16 * 1024 * 1024,
        files: 1,
        unauthenticated_per_second: 10,
    };
    let started = std::time::Instant::now();
    let audit = Audit::start(log.clone(), None, options);
    let mut marker = event(0, "allowed");
    marker.request_id = "marker".into();
    audit.record(marker);
    // 2,000 refusals with a garbage token and a 300 KB User-Agent.
    for i in 1..=2_000 {
        let mut e = event(i, "denied");
        e.unauthenticated = true;
        e.user_agent = Some("x".repeat(300 * 1024));
        e.reason = Some(format!("bad token from {}", "y".repeat(300 * 1024)));
        audit.record(e);
    }
    // A flood of d seconds touches at most floor(d) + 2 calendar seconds.
    let seconds = started.elapsed().as_secs() + 2;
    assert!(audit.flush(Duration::from_secs(10)).await);
    // The authenticated trail is untouched: the marker is there and nothing rotated.
    let lines = file_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"marker\""));
    assert!(!dir.path().join("audit.log.1").exists());
    // The refusals went to their own file, sampled, bounded, with a count of what was left out.
    let refused = file_lines(&dir.path().join("audit-unauthenticated.log"));
    let events: Vec<Event> = refused
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded = events.iter().filter(|e| e.outcome == "denied").count();
    // At most 10 in each second the flood lasted.
    assert!(
        (10..=10 * seconds as usize).contains(&recorded),
        "{recorded} recorded in {seconds} s"
    );
    let left_out: u64 = events
        .iter()
        .filter(|e| e.outcome == "sampled")
        .map(|e| {
            let r = e.reason.as_deref().unwrap();
            r.split_whitespace().next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(left_out + recorded as u64, 2_000);
    for e in events.iter().filter(|e| e.outcome == "denied") {
        let ua = e.user_agent.as_deref().unwrap();
        assert!(
            ua.len() < MAX_FIELD + 32 && ua.ends_with("bytes cut]"),
            "{}",
            ua.len()
        );
        assert!(e.reason.as_deref().unwrap().len() < MAX_REASON + 32);
    }
}
