//! `podiam`: one binary, one file per verb. Logic lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod audit;
mod bench;
mod cluster;
mod connections;
mod create;
mod delete;
mod doctor;
mod exit;
mod get;
mod hint;
mod issuer;
mod policy;
mod server;
mod token;
mod up;
mod upstream;
mod version;
mod webhook;

/// mimalloc instead of glibc's malloc: a request allocates and frees many small strings across two
/// worker threads, and glibc spent about a sixth of AssumeRoleWithWebIdentity's CPU in
/// `_int_malloc`/`_int_free`/`malloc_consolidate` (BENCHMARKS.md has the before and after).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "podiam",
    version = version::VERSION,
    long_version = version::LONG_VERSION,
    about = "AWS IAM identities for Kubernetes workloads, on any cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

/// How the long-running commands (`up`, `server`, `agent`, `webhook`) log to stderr.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Least severe level logged: error, warn, info, debug (podiam's own, with one line per
    /// request: `podiam::request`), trace (everything, libraries too).
    /// Default: RUST_LOG's filter, else info. Never logs secrets, tokens or session keys.
    #[arg(long, global = true, value_enum, env = "PODIAM_LOG_LEVEL")]
    log_level: Option<LogLevel>,
    /// `text` for people, `json` (one object per line) for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PODIAM_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// The log settings `main` read from the command line, for [`init_logging`].
static LOG: std::sync::OnceLock<LogArgs> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Command {
    /// Run STS, IAM and the built-in OIDC issuer on this machine (SQLite in the data directory).
    Up(up::UpArgs),
    /// Run the server for a cluster: PostgreSQL for several replicas, secrets sealed at rest.
    Server(server::ServerArgs),
    /// Clusters registered for EKS Pod Identity.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create resources: `podiam create iamserviceaccount`, `podiam create podidentityassociation`.
    #[command(subcommand)]
    Create(create::CreateCommand),
    /// List IRSA service accounts, Pod Identity associations and clusters (`-o json|yaml`).
    #[command(subcommand)]
    Get(get::GetCommand),
    /// Delete resources: `podiam delete iamserviceaccount`, `podiam delete podidentityassociation`.
    #[command(subcommand)]
    Delete(delete::DeleteCommand),
    /// ServiceAccount tokens from the built-in issuer.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The built-in OIDC issuer's keys.
    #[command(subcommand)]
    Issuer(issuer::IssuerCommand),
    /// The keys that seal session tokens (the credentials STS and EKS Auth hand out).
    #[command(subcommand)]
    SessionKeys(issuer::SessionKeysCommand),
    /// Who assumed which role, and what was refused and why.
    Audit(audit::AuditArgs),
    /// Work with IAM policy documents offline: simulate and validate.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the admission webhook that gives pods AWS identities (IRSA and EKS Pod Identity),
    /// or print its Kubernetes manifests.
    Webhook(Box<webhook::WebhookArgs>),
    /// Run the node agent (EKS Pod Identity container credentials, IMDS for the node role), or
    /// print its DaemonSet.
    Agent(Box<agent::AgentArgs>),
    /// Broker mode: what the upstream account needs (`podiam upstream trust-policy`).
    #[command(subcommand)]
    Upstream(upstream::UpstreamCommand),
    /// Measure AssumeRoleWithWebIdentity requests/s and latency against a no-op endpoint of the
    /// same in-process server, under the same load generator.
    Bench(bench::BenchArgs),
    /// Which AWS credentials a process here gets: the SDKs' chain in their order, the source
    /// that wins and the ones it shadows, each checked, then GetCallerIdentity.
    Doctor(doctor::DoctorArgs),
    /// This binary's version, git commit, build date and features.
    Version(version::VersionArgs),
    /// Shell completion: `source <(podiam completion bash)`, or zsh, fish.
    Completion(version::CompletionArgs),
}

/// Writes command output to stdout. A closed pipe (`podiam … | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = terminal_safe(text);
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `text` with every control character but line feed and tab written as `\u{…}`: what podiam
/// prints may hold values a caller chose (a token's claims, a role's description), and an ANSI
/// or OSC escape among them must not rewrite the operator's terminal.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether log lines carry ANSI colours.
#[derive(Clone, Copy, Debug)]
pub enum LogColour {
    /// tracing-subscriber's default: on unless `NO_COLOR` is set (`podiam up`, `podiam server`).
    Default,
    /// Only when stderr is a terminal: the agent's and the webhook's stderr is a pod's log, which
    /// escape codes would clutter.
    WhenTerminal,
}

/// Logs to stderr at `--log-level` (else `RUST_LOG`'s filter, else `info`), as `--log-format`
/// says. Never logs secrets or tokens. A second call keeps the first set-up.
pub fn init_logging(colour: LogColour) {
    let args = LOG.get();
    let filter = match args.and_then(|a| a.log_level) {
        // The AWS SDK (broker mode) says at `info` what each credential load found; below
        // `debug` it stays at `warn`.
        // `debug` is podiam's own (one line per request); the libraries stay at `info`, the AWS
        // SDK (which says at `info` what each credential load found) at `warn` as by default.
        Some(level) => tracing_subscriber::EnvFilter::new(match level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info,aws_config=warn",
            LogLevel::Debug => "info,aws_config=warn,podiam=debug",
            LogLevel::Trace => "trace",
        }),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,aws_config=warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.is_some_and(|a| a.log_format == LogFormat::Json) {
        let _already_set = builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init();
        return;
    }
    let _already_set = match colour {
        LogColour::Default => builder.try_init(),
        LogColour::WhenTerminal => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

fn main() -> ExitCode {
    // Files podiam creates hold secrets or audit trails (the database and its -wal/-shm,
    // master.key, audit logs, AWS credentials): the owner's only, whoever creates them.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _ = LOG.set(cli.log.clone());
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Server(args) => server::run(args),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Create(cmd) => create::run(cmd),
        Command::Get(cmd) => get::run(cmd),
        Command::Delete(cmd) => delete::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Issuer(cmd) => issuer::run(cmd),
        Command::SessionKeys(cmd) => issuer::run_session_keys(cmd),
        Command::Audit(args) => audit::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Webhook(args) => webhook::run(*args),
        Command::Agent(args) => agent::run(*args),
        Command::Upstream(cmd) => upstream::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Version(args) => version::run(args),
        Command::Completion(args) => version::completion(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

#[cfg(test)]
mod tests;
