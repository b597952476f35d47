//! `podiam version` and `podiam completion`: what this binary is, and shell completion for it.

use std::process::ExitCode;

use clap::{Args, CommandFactory as _};

use crate::exit;

/// What `podiam version` reports, fixed at build time (`build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("PODIAM_GIT_COMMIT");
/// Unix seconds: `SOURCE_DATE_EPOCH`, else the commit's time, else when it was built.
const BUILD_EPOCH: &str = env!("PODIAM_BUILD_EPOCH");
pub const TARGET: &str = env!("PODIAM_TARGET");

/// What the binary can do, independent of Cargo features (it has none yet): the stores, the
/// transport security, the broker's upstream client and the allocator it was built with.
const BUILT_WITH: &[&str] = &[
    "sqlite",
    "postgresql",
    "tls (rustls, aws-lc-rs)",
    "broker (aws-sdk-sts)",
    "mimalloc",
];

#[derive(Args)]
pub struct VersionArgs {
    /// `text` for a person, `json` for a script or a bug report.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

fn features() -> Vec<String> {
    let cargo = env!("PODIAM_CARGO_FEATURES");
    BUILT_WITH
        .iter()
        .map(|s| (*s).to_string())
        .chain(
            cargo
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string),
        )
        .collect()
}

/// `podiam --version` too: one line with the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PODIAM_GIT_COMMIT"),
    ")"
);

/// The build time, `2026-12-03T13:50:00Z`.
fn build_date() -> String {
    let secs = BUILD_EPOCH.parse::<i64>().unwrap_or(0);
    podiam_identity::clock::format_iso8601(podiam_identity::clock::from_unix_seconds(secs))
}

pub fn run(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let text = match args.output {
        Output::Json => format!(
            "{}\n",
            serde_json::json!({
                "version": VERSION,
                "commit": COMMIT,
                "buildDate": build_date(),
                "target": TARGET,
                "features": features(),
            })
        ),
        Output::Text => format!(
            "podiam {VERSION}\ncommit:   {COMMIT}\nbuilt:    {}\ntarget:   {TARGET}\nfeatures: {}\n",
            build_date(),
            features().join(", ")
        ),
    };
    crate::emit(&text)?;
    Ok(ExitCode::from(exit::OK))
}

#[derive(Args)]
pub struct CompletionArgs {
    /// The shell to complete for. Bash: `source <(podiam completion bash)`; zsh: `podiam
    /// completion zsh > "${fpath[1]}/_podiam"`; fish: `podiam completion fish >
    /// ~/.config/fish/completions/podiam.fish`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn completion(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut crate::Cli::command(), "podiam", &mut out);
    crate::emit(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::from(exit::OK))
}
