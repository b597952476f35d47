//! `podiam`: one binary, one file per verb. Logic lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod exit;
mod policy;
mod webhook;

#[derive(Parser)]
#[command(
    name = "podiam",
    version,
    about = "AWS IAM identities for Kubernetes workloads, on any cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with IAM policy documents offline: simulate and validate.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the admission webhook that gives pods AWS identities (IRSA and EKS Pod Identity),
    /// or print its Kubernetes manifests.
    Webhook(Box<webhook::WebhookArgs>),
}

/// Writes command output to stdout. A closed pipe (`podiam … | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
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
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Webhook(args) => webhook::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
