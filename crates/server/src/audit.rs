//! The audit trail: one JSON line per STS decision (and IAM denial), written off the request path.
//!
//! Requests hand events to a bounded channel and never wait; a writer task appends them in
//! batches to `audit.log` under the data directory. If the channel is full the event is counted
//! as dropped rather than slowing the request (the count is logged).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use tokio::sync::mpsc;

use crate::Ctx;
use crate::error::AwsError;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// ISO 8601.
    pub time: String,
    pub request_id: String,
    pub action: String,
    /// `allowed`, `denied` or `error`.
    pub outcome: String,
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
    /// Seconds since the token was issued: old tokens point at stale projected-token mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_age_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Event {
    pub fn new(ctx: &Ctx<'_>, action: &str) -> Event {
        Event {
            time: crate::iam::date(ctx.facts.now),
            request_id: ctx.request_id.to_string(),
            action: action.to_string(),
            source_ip: ctx.facts.source_ip.clone(),
            user_agent: ctx.facts.user_agent.clone(),
            ..Event::default()
        }
    }

    pub fn finish<T>(&mut self, result: &Result<T, AwsError>) {
        match result {
            Ok(_) => self.outcome = "allowed".into(),
            Err(e) => {
                self.outcome = if e.code == "AccessDenied"
                    || e.code.starts_with("InvalidIdentityToken")
                    || e.code.starts_with("Expired")
                {
                    "denied".into()
                } else {
                    "error".into()
                };
                self.code = Some(e.code.to_string());
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
    tx: Option<mpsc::Sender<Event>>,
    dropped: Arc<AtomicU64>,
}

const CHANNEL: usize = 16_384;
const BATCH: usize = 512;

impl Audit {
    /// Starts the writer appending to `path`: one dedicated thread with a buffered file, fed by
    /// a bounded channel, flushing once per batch (no async file I/O on the runtime's threads).
    pub fn start(path: PathBuf) -> Audit {
        let (tx, mut rx) = mpsc::channel::<Event>(CHANNEL);
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_writer = Arc::clone(&dropped);
        let spawned = std::thread::Builder::new()
            .name("podiam-audit".into())
            .spawn(move || {
                let file = match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; audit events are discarded");
                        while rx.blocking_recv().is_some() {}
                        return;
                    }
                };
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
                while let Some(first) = rx.blocking_recv() {
                    let mut n = 0;
                    let mut next = Some(first);
                    while let Some(e) = next {
                        if serde_json::to_writer(&mut out, &e).is_ok() {
                            let _ = out.write_all(b"\n");
                        }
                        n += 1;
                        next = if n < BATCH { rx.try_recv().ok() } else { None };
                    }
                    if let Err(e) = out.flush() {
                        tracing::error!(error = %e, "cannot write the audit log");
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
            tx: Some(tx),
            dropped,
        }
    }

    /// An audit sink that discards everything (for tests of other parts).
    pub fn disabled() -> Audit {
        Audit {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn record(&self, event: Event) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
