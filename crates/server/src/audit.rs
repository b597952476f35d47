//! The audit trail: one JSON line per STS decision (and IAM denial), written off the request path.
//!
//! Requests push events onto a bounded in-memory queue and never wait; a writer thread takes the
//! whole queue every [`FLUSH_EVERY`] (sooner when a batch is full) and appends it to `audit.log`
//! under the data directory. A request never wakes the writer for its one event: a per-event
//! wake-up cost more CPU than the rest of the audit work together. If the queue is full the event
//! is counted as dropped rather than slowing the request (the count is logged).
//!
//! A server whose state is in PostgreSQL also sends each batch to the database's audit table,
//! tagged with its replica name, so `podiam audit --database-url` lists every replica's events in
//! one place. That happens on a task of its own behind a second bounded queue: a slow or absent
//! database costs retries there, never a request and never a line of `audit.log`.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use podiam_store::{AuditRow, Store};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::error::{AwsError, Protocol};
use crate::metrics::ResultLabels;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// ISO 8601.
    pub time: String,
    pub request_id: String,
    /// The server that wrote the event, when read back from the database (`audit.log` is one
    /// server's own and leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The action's name (borrowed when it is one of the server's own: no copy per event).
    pub action: Cow<'static, str>,
    /// `allowed`, `denied` or `error`.
    pub outcome: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The caller's ARN, or the token's `sub` for web identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// EKS Auth: the node the calling agent runs on (`eksNodeName`), its EC2 instance
    /// (`instanceId`) and zone (`zone`), as the agent reported them (not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// EKS Auth: the calling agent's node, from its web identity session (verified: the node
    /// of the agent's own ServiceAccount token), which the pod token's node must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Seconds since the token was issued: old tokens point at stale projected-token mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_age_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Broker mode: the request IDs of the upstream STS calls that made the session (two when
    /// chained into a target role), as CloudTrail records them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_request_ids: Vec<String>,
    /// Broker mode: the upstream session (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_session_arn: Option<String>,
    /// Broker mode: `hit`, `miss` or `stale` (cached credentials served while upstream failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_cache: Option<String>,
    /// Refused before the caller was authenticated (a web identity token that did not verify):
    /// `subject`, `issuer`, the Kubernetes names are what the unverified token *claims*, and
    /// anyone can send such requests. These events go to `audit-unauthenticated.log`, sampled
    /// when they flood, so they can never push an authenticated decision off the disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
}

/// The most any recorded text field holds (bytes), cut with a marker past it: a caller's
/// 300 KB User-Agent must not become 300 KB of audit trail per request.
pub const MAX_FIELD: usize = 1024;
/// `reason` holds an explanation, which may quote a policy: a little more room.
pub const MAX_REASON: usize = 2048;

impl Event {
    /// Cuts every text field to its bound ([`MAX_FIELD`], [`MAX_REASON`]), marking what was cut.
    pub fn bound(&mut self) {
        fn cut(field: &mut String, max: usize) {
            if field.len() > max {
                *field = crate::text::bounded(field, max).into_owned();
            }
        }
        fn cut_opt(field: &mut Option<String>, max: usize) {
            if let Some(f) = field {
                cut(f, max);
            }
        }
        cut(&mut self.time, 64);
        cut(&mut self.request_id, 128);
        for (field, max) in [(&mut self.action, 128), (&mut self.outcome, 64)] {
            if field.len() > max {
                *field = Cow::Owned(crate::text::bounded(field, max).into_owned());
            }
        }
        cut_opt(&mut self.reason, MAX_REASON);
        for f in [
            &mut self.replica,
            &mut self.code,
            &mut self.subject,
            &mut self.issuer,
            &mut self.role,
            &mut self.session_name,
            &mut self.namespace,
            &mut self.service_account,
            &mut self.pod,
            &mut self.node,
            &mut self.agent_node,
            &mut self.instance_id,
            &mut self.zone,
            &mut self.source_ip,
            &mut self.user_agent,
            &mut self.upstream_session_arn,
            &mut self.upstream_cache,
        ] {
            cut_opt(f, MAX_FIELD);
        }
        self.upstream_request_ids.truncate(4);
        for id in &mut self.upstream_request_ids {
            cut(id, 128);
        }
    }

    pub(crate) fn new(ctx: &Ctx<'_>, action: impl Into<Cow<'static, str>>) -> Event {
        Event {
            time: podiam_policy::date::format_date(ctx.facts.now),
            request_id: ctx.request_id.to_string(),
            action: action.into(),
            source_ip: ctx.facts.source_ip.clone(),
            user_agent: ctx.facts.user_agent.clone(),
            ..Event::default()
        }
    }

    /// Records the outcome: `allowed`, `denied` ([`AwsError::is_denial`]) or `error`, with the
    /// code the client of `protocol` saw.
    pub fn finish<T>(&mut self, result: &Result<T, AwsError>, protocol: Protocol) {
        match result {
            Ok(_) => self.outcome = "allowed".into(),
            Err(e) => {
                self.outcome = if e.is_denial() { "denied" } else { "error" }.into();
                self.code = Some(e.code(protocol).to_string());
                if self.reason.is_none() {
                    self.reason = Some(e.message.clone());
                }
            }
        }
    }
}

/// Where events go.
#[derive(Clone)]
pub struct Audit {
    queue: Option<Arc<Queue>>,
    dropped: Arc<AtomicU64>,
}

/// How the trail is kept on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    /// A log file is rotated once it is this large.
    pub max_bytes: u64,
    /// Rotated files kept per log: `audit.log.1` (the newest) … `audit.log.N`.
    pub files: u32,
    /// Refusals before authentication recorded per second at most; the others are counted,
    /// and the count is recorded.
    pub unauthenticated_per_second: u32,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            max_bytes: ROTATE_AT,
            files: 5,
            unauthenticated_per_second: 50,
        }
    }
}

/// The unauthenticated events of the current second, and those left out.
#[derive(Default)]
struct Sampling {
    second: u64,
    recorded: u32,
    left_out: u64,
}

/// Events waiting for the writer.
struct Queue {
    pending: Mutex<Vec<Event>>,
    sampling: Mutex<Sampling>,
    per_second: u32,
    /// Signalled when `pending` reaches a full batch (or someone waits for a flush).
    full: Condvar,
    /// Events queued so far, and events the writer has handled (written, or given up on).
    queued: AtomicU64,
    handled: AtomicU64,
}

/// Events held in memory at most; past it new events are dropped (and counted).
const CAPACITY: usize = 16_384;
/// A batch this large wakes the writer at once.
const BATCH: usize = 512;
/// The writer looks for events this often: the most an event waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// `audit.log` is renamed to `audit.log.1` (replacing the previous one) once it is this large, so
/// the two files hold at most about twice this: a pod's data volume has a size limit, and the
/// complete trail of a cluster of replicas belongs in the database (`podiam audit --database-url`)
/// or a log pipeline that ships the files.
pub const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// `audit.log` with its size, rotated past a limit.
struct LogFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    len: u64,
    rotate_at: u64,
    files: u32,
}

/// `audit.log.N`.
fn rotated(path: &std::path::Path, n: u32) -> PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl LogFile {
    fn open(path: PathBuf, options: AuditOptions) -> Result<LogFile, (PathBuf, std::io::Error)> {
        let rotate_at = options.max_bytes;
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => return Err((path, e)),
        };
        let len = file.metadata().map_or(0, |m| m.len());
        Ok(LogFile {
            path,
            out: std::io::BufWriter::with_capacity(64 * 1024, file),
            len,
            rotate_at,
            files: options.files.max(1),
        })
    }

    fn write_line(&mut self, line: &[u8]) {
        if self.out.write_all(line).is_ok() {
            self.len = self
                .len
                .saturating_add(u64::try_from(line.len()).unwrap_or(u64::MAX));
        }
    }

    /// Flushes the batch; past the limit, shifts `audit.log.K` to `.K+1` (the oldest past the
    /// kept count goes), moves the file to `audit.log.1` and starts a new one.
    fn flush_and_rotate(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        if self.len < self.rotate_at {
            return;
        }
        for k in (1..self.files).rev() {
            let from = rotated(&self.path, k);
            if from.exists() {
                let _ = std::fs::rename(&from, rotated(&self.path, k + 1));
            }
        }
        let reopened = std::fs::rename(&self.path, rotated(&self.path, 1)).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        });
        match reopened {
            Ok(file) => {
                self.out = std::io::BufWriter::with_capacity(64 * 1024, file);
                self.len = 0;
            }
            // Keep appending to the file we have (renamed or not): losing events is worse.
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit log");
                self.rotate_at = self.rotate_at.saturating_mul(2);
            }
        }
    }
}

impl Audit {
    /// Starts the writer appending to `path`: one dedicated thread with a buffered file, fed by
    /// a bounded queue, flushing once per batch (no async file I/O on the runtime's threads).
    /// With `database`, each batch also goes to the store's audit table (see [`DatabaseSink`]).
    /// Past [`ROTATE_AT`] bytes the file becomes `audit.log.1` and a new one starts.
    /// Refusals before authentication go to `audit-unauthenticated.log` beside it, sampled.
    pub fn start(path: PathBuf, database: Option<DatabaseSink>, options: AuditOptions) -> Audit {
        let queue = Arc::new(Queue {
            pending: Mutex::new(Vec::with_capacity(BATCH)),
            sampling: Mutex::new(Sampling::default()),
            per_second: options.unauthenticated_per_second,
            full: Condvar::new(),
            queued: AtomicU64::new(0),
            handled: AtomicU64::new(0),
        });
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_writer = Arc::clone(&dropped);
        let writer_queue = Arc::clone(&queue);
        let mut database = database.and_then(DatabaseQueue::start);
        let spawned = std::thread::Builder::new()
            .name("podiam-audit".into())
            .spawn(move || {
                let queue = writer_queue;
                let open = |path: PathBuf| match LogFile::open(path, options) {
                    Ok(f) => Some(f),
                    Err((path, e)) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; audit events are discarded");
                        None
                    }
                };
                let unauthenticated_path = path.with_file_name("audit-unauthenticated.log");
                let mut out = open(path);
                let mut unauthenticated = open(unauthenticated_path);
                let mut batch = Vec::with_capacity(BATCH);
                let mut line = Vec::with_capacity(1024);
                // Runs until every `Audit` handle is gone and the queue is empty.
                while queue.take(&mut batch) {
                    let taken = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                    if let Some(summary) = queue.left_out_summary() {
                        batch.push(summary);
                    }
                    for e in batch.drain(..) {
                        let file = if e.unauthenticated {
                            &mut unauthenticated
                        } else {
                            &mut out
                        };
                        let Some(file) = file else { continue };
                        line.clear();
                        if serde_json::to_writer(&mut line, &e).is_err() {
                            continue;
                        }
                        line.push(b'\n');
                        file.write_line(&line);
                        // The database keeps the very line the file gets.
                        if let Some(db) = &mut database
                            && let Ok(text) = std::str::from_utf8(&line[..line.len() - 1])
                        {
                            db.push(e, text.to_owned());
                        }
                    }
                    for file in [&mut out, &mut unauthenticated].into_iter().flatten() {
                        file.flush_and_rotate();
                    }
                    queue.handled.fetch_add(taken, Ordering::Release);
                    if let Some(db) = &mut database {
                        db.hand_over();
                    }
                    let d = dropped_writer.swap(0, Ordering::Relaxed);
                    if d > 0 {
                        tracing::warn!(dropped = d, "audit events were dropped: the writer could not keep up");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit writer; audit events are discarded");
            return Audit::disabled();
        }
        Audit {
            queue: Some(queue),
            dropped,
        }
    }

    /// An audit sink that discards everything (for tests of other parts).
    pub fn disabled() -> Audit {
        Audit {
            queue: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `event` for the writer: a lock held for one push, no system call (but for the
    /// event that fills a batch). Its fields are bounded first; a refusal before authentication
    /// past the per-second sample is only counted.
    pub fn record(&self, mut event: Event) {
        let Some(queue) = &self.queue else {
            return;
        };
        if event.unauthenticated && !queue.sample() {
            return;
        }
        event.bound();
        let mut pending = queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= CAPACITY {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.push(event);
        queue.queued.fetch_add(1, Ordering::Relaxed);
        if pending.len() == BATCH {
            queue.full.notify_one();
        }
    }

    /// Waits until the writer has handled every event recorded before the call, at most
    /// `grace`; `true` if it has.
    pub async fn flush(&self, grace: Duration) -> bool {
        let Some(queue) = &self.queue else {
            return true;
        };
        let target = {
            let mut pending = queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
            // What sampling left out so far is counted in the trail before the flush returns.
            if let Some(summary) = queue.left_out_summary() {
                pending.push(summary);
                queue.queued.fetch_add(1, Ordering::Relaxed);
            }
            queue.queued.load(Ordering::Relaxed)
        };
        queue.full.notify_one();
        let deadline = tokio::time::Instant::now() + grace;
        while queue.handled.load(Ordering::Acquire) < target {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

impl Queue {
    /// Whether an unauthenticated event of this second is recorded (at most `per_second`).
    fn sample(&self) -> bool {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut s = self.sampling.lock().unwrap_or_else(PoisonError::into_inner);
        if s.second != second {
            s.second = second;
            s.recorded = 0;
        }
        if s.recorded < self.per_second {
            s.recorded += 1;
            true
        } else {
            s.left_out += 1;
            false
        }
    }

    /// An event that counts the refusals before authentication left out since the last one.
    fn left_out_summary(&self) -> Option<Event> {
        let n = {
            let mut s = self.sampling.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut s.left_out)
        };
        (n > 0).then(|| Event {
            time: podiam_policy::date::format_date(crate::auth::millis(
                std::time::SystemTime::now(),
            )),
            action: "RefusedBeforeAuthentication".into(),
            outcome: "sampled".into(),
            reason: Some(format!(
                "{n} more refusals before authentication were not recorded: at most {} per second are",
                self.per_second
            )),
            unauthenticated: true,
            ..Event::default()
        })
    }

    /// Waits up to [`FLUSH_EVERY`] for events and moves them all into `batch` (empty on entry).
    /// `false` once no `Audit` handle is left and nothing is pending.
    fn take(self: &Arc<Self>, batch: &mut Vec<Event>) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() {
            // Only the writer's own reference left: nobody can record any more.
            if Arc::strong_count(self) == 1 {
                return false;
            }
            pending = self
                .full
                .wait_timeout(pending, FLUSH_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut *pending, batch);
        true
    }
}

// === impl DatabaseSink ===

/// The store's audit table as a second destination for audit events, named by replica.
pub struct DatabaseSink {
    store: Store,
    replica: String,
    events: Family<ResultLabels, Counter>,
    retry: Retry,
}

/// How a batch the database refused is tried again.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Tries per batch, the first included.
    pub attempts: u32,
    /// Wait after the first failure, doubled after each further one.
    pub first_delay: Duration,
    /// Bound on one try (a database that hangs rather than refuses).
    pub timeout: Duration,
}

impl Default for Retry {
    /// 5 tries over about 8 s: a database restart or failover is ridden out, a long outage costs
    /// only the events that arrive during it (they stay in `audit.log`).
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            timeout: Duration::from_secs(15),
        }
    }
}

/// Batches waiting for the database; past this the writer drops them from the database only.
const DATABASE_QUEUE: usize = 64;
/// After an outage, queued batches are written together, up to this many events per transaction.
const COALESCE: usize = 4096;

impl DatabaseSink {
    /// The sink of a server: only when its state is in PostgreSQL. On SQLite (`podiam up`) the
    /// data directory's `audit.log` is the whole trail and the request path stays as fast as it
    /// was; the table exists there too but no server writes to it.
    pub fn for_server(
        shared: &crate::state::Shared,
        replica: Option<String>,
    ) -> Option<DatabaseSink> {
        shared.store().is_postgres().then(|| {
            DatabaseSink::new(
                shared.store().clone(),
                replica.unwrap_or_else(default_replica_name),
                shared.metrics.audit_database_events.clone(),
                Retry::default(),
            )
        })
    }

    pub fn new(
        store: Store,
        replica: String,
        events: Family<ResultLabels, Counter>,
        retry: Retry,
    ) -> DatabaseSink {
        DatabaseSink {
            store,
            replica,
            events,
            retry,
        }
    }

    /// Writes queued batches until the writer thread is gone.
    async fn run(self, mut rx: mpsc::Receiver<Vec<AuditRow>>) {
        while let Some(mut batch) = rx.recv().await {
            while batch.len() < COALESCE {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            self.write(&batch).await;
        }
    }

    /// One batch, tried up to `retry.attempts` times; then given up (it is in `audit.log`).
    async fn write(&self, batch: &[AuditRow]) {
        let mut delay = self.retry.first_delay;
        for attempt in 1..=self.retry.attempts {
            let error = match tokio::time::timeout(
                self.retry.timeout,
                self.store.append_audit(batch),
            )
            .await
            {
                Ok(Ok(())) => {
                    count(&self.events, "written", batch.len());
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.retry.timeout),
            };
            if attempt == self.retry.attempts {
                tracing::error!(events = batch.len(), attempts = attempt, %error,
                    "audit events not written to the database (they are in audit.log)");
                break;
            }
            if attempt == 1 {
                tracing::warn!(events = batch.len(), %error,
                    "cannot write audit events to the database; retrying");
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
        count(&self.events, "failed", batch.len());
    }
}

fn count(events: &Family<ResultLabels, Counter>, result: &'static str, n: usize) {
    events
        .get_or_create(&ResultLabels { result })
        .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
}

/// The replica name when none is given: the host's name, which on Kubernetes is the pod's.
pub fn default_replica_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "podiam".into())
}

/// The writer thread's side: rows of the batch being written, handed to the database task once
/// the batch is in the file.
struct DatabaseQueue {
    tx: mpsc::Sender<Vec<AuditRow>>,
    replica: String,
    events: Family<ResultLabels, Counter>,
    rows: Vec<AuditRow>,
    /// Events dropped since the queue last had room (logged when it has again).
    dropping: usize,
}

impl DatabaseQueue {
    /// Spawns the database task on the current runtime.
    fn start(sink: DatabaseSink) -> Option<DatabaseQueue> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no async runtime: audit events go to audit.log only");
            return None;
        };
        let (tx, rx) = mpsc::channel(DATABASE_QUEUE);
        let queue = DatabaseQueue {
            tx,
            replica: sink.replica.clone(),
            events: sink.events.clone(),
            rows: Vec::with_capacity(BATCH),
            dropping: 0,
        };
        runtime.spawn(sink.run(rx));
        Some(queue)
    }

    fn push(&mut self, e: Event, line: String) {
        let time_ms = podiam_policy::date::parse_date(&e.time)
            .unwrap_or_else(|| crate::auth::millis(std::time::SystemTime::now()));
        self.rows.push(AuditRow {
            time_ms,
            replica: self.replica.clone(),
            action: e.action.into_owned(),
            outcome: e.outcome.into_owned(),
            role: e.role,
            subject: e.subject,
            data: line,
        });
    }

    fn hand_over(&mut self) {
        if self.rows.is_empty() {
            return;
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(BATCH));
        match self.tx.try_send(rows) {
            Ok(()) => {
                if self.dropping > 0 {
                    tracing::warn!(
                        dropped = self.dropping,
                        "the audit database queue has room again; the dropped events are only in audit.log"
                    );
                    self.dropping = 0;
                }
            }
            Err(e) => {
                let n = match e {
                    mpsc::error::TrySendError::Full(rows)
                    | mpsc::error::TrySendError::Closed(rows) => rows.len(),
                };
                if self.dropping == 0 {
                    tracing::warn!(
                        "the audit database queue is full (the database is slow or down): events go only to audit.log until it drains"
                    );
                }
                self.dropping += n;
                count(&self.events, "dropped", n);
            }
        }
    }
}

#[cfg(test)]
mod tests;
