//! `podiam issuer rotate`: a new signing key for the built-in issuer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::exit;

#[derive(Subcommand)]
pub enum IssuerCommand {
    /// Sign new tokens with a new key; keep publishing the old one until its tokens expire.
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long the old key stays published: the longest lifetime of a token it signed.
    #[arg(long, default_value_t = 86_400 + 300)]
    keep_old_seconds: u64,
}

pub fn run(cmd: IssuerCommand) -> anyhow::Result<ExitCode> {
    let IssuerCommand::Rotate(args) = cmd;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let data_dir = crate::up::data_dir(args.data_dir);
    let kid = runtime.block_on(podiam_server::local::rotate_issuer(
        &data_dir,
        Duration::from_secs(args.keep_old_seconds),
    ))?;
    crate::emit(&format!(
        "new signing key {kid}; the previous key stays in the JWKS for {} s (a running podiam picks this up within seconds)\n",
        args.keep_old_seconds
    ))?;
    Ok(ExitCode::from(exit::OK))
}
