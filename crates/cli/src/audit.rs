//! `podiam audit`: who assumed which role, from the audit log under the data directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use podiam_server::audit::Event;

use crate::exit;
use crate::policy::Output;

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Only events this recent: `30m`, `24h`, `7d`.
    #[arg(long)]
    since: Option<String>,
    /// Only this role (its name or ARN).
    #[arg(long)]
    role: Option<String>,
    /// Only refusals.
    #[arg(long)]
    denied: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
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
    let path = crate::up::data_dir(args.data_dir).join("audit.log");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let cutoff = match &args.since {
        Some(s) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
            Some(now - parse_since(s)?)
        }
        None => None,
    };
    let events: Vec<Event> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| {
            cutoff.is_none_or(|c| podiam_policy::date::parse_date(&e.time).is_some_and(|t| t >= c))
        })
        .filter(|e| !args.denied || e.outcome != "allowed")
        .filter(|e| {
            args.role.as_deref().is_none_or(|r| {
                e.role
                    .as_deref()
                    .is_some_and(|role| role == r || role.rsplit('/').next() == Some(r))
            })
        })
        .collect();
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
            let mut out = String::from(
                "TIME                  OUTCOME  ACTION                     ROLE                 NAMESPACE/SERVICEACCOUNT     POD                  TOKEN AGE  SOURCE           REASON\n",
            );
            for e in &events {
                let who = match (&e.namespace, &e.service_account) {
                    (Some(n), Some(s)) => format!("{n}/{s}"),
                    _ => e.subject.clone().unwrap_or_else(|| "-".into()),
                };
                let age = match e.token_age_seconds {
                    Some(a) if a > STALE_TOKEN_SECONDS => format!("{a}s STALE"),
                    Some(a) => format!("{a}s"),
                    None => "-".into(),
                };
                let role = e
                    .role
                    .as_deref()
                    .map_or("-", |r| r.rsplit('/').next().unwrap_or(r));
                out.push_str(&format!(
                    "{:<21} {:<8} {:<26} {:<20} {:<28} {:<20} {:<10} {:<16} {}\n",
                    e.time,
                    e.outcome,
                    e.action,
                    role,
                    who,
                    e.pod.as_deref().unwrap_or("-"),
                    age,
                    e.source_ip.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("")
                ));
            }
            crate::emit(&out)?;
        }
    }
    Ok(ExitCode::from(exit::OK))
}
