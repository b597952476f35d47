//! Key rotation: `podiam issuer rotate` (a new signing key for the built-in issuer) and
//! `podiam session-keys rotate` (a new key for sealing session tokens).
//!
//! Both write to the store the running servers share (the data directory, or
//! `PODIAM_DATABASE_URL` with `PODIAM_MASTER_KEY_FILE`); every replica publishes the new key within
//! a second and starts using it after `KEY_ACTIVATION_DELAY`, so no request fails on a replica that
//! has not seen it yet.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use podiam_identity::rotation::KEY_ACTIVATION_DELAY;

use crate::exit;

#[derive(Subcommand)]
pub enum IssuerCommand {
    /// Sign new tokens with a new key; keep publishing the old one until its tokens expire.
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long the old key stays published: the longest lifetime of a token it signed.
    #[arg(long, default_value_t = 86_400 + 300)]
    keep_old_seconds: u64,
}

#[derive(Subcommand)]
pub enum SessionKeysCommand {
    /// Seal new session tokens with a new key; the previous keys keep opening the tokens they
    /// sealed until those expire.
    Rotate(SessionRotateArgs),
}

#[derive(Args)]
pub struct SessionRotateArgs {
    /// Where podiam keeps its state (default `~/.local/share/podiam`; `podiam up` prints the `export` that sets it).
    #[arg(long, env = "PODIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long the previous keys keep opening tokens: the longest session (12 h) plus skew.
    #[arg(long, default_value_t = 43_200 + 300)]
    keep_old_seconds: u64,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(cmd: IssuerCommand) -> anyhow::Result<ExitCode> {
    let IssuerCommand::Rotate(args) = cmd;
    let data_dir = crate::up::data_dir(args.data_dir);
    let kid = runtime()?.block_on(podiam_server::local::rotate_issuer(
        &data_dir,
        Duration::from_secs(args.keep_old_seconds),
    ))?;
    crate::emit(&format!(
        "new signing key {kid}: published now, signing in {} s; the previous key stays in the JWKS for {} s\n",
        KEY_ACTIVATION_DELAY.as_secs(),
        args.keep_old_seconds
    ))?;
    Ok(ExitCode::from(exit::OK))
}

pub fn run_session_keys(cmd: SessionKeysCommand) -> anyhow::Result<ExitCode> {
    let SessionKeysCommand::Rotate(args) = cmd;
    let data_dir = crate::up::data_dir(args.data_dir);
    let id = runtime()?.block_on(podiam_server::local::rotate_session_keys(
        &data_dir,
        Duration::from_secs(args.keep_old_seconds),
    ))?;
    crate::emit(&format!(
        "new session key {id}: opens tokens now, seals them in {} s; the previous keys keep opening theirs for {} s\n",
        KEY_ACTIVATION_DELAY.as_secs(),
        args.keep_old_seconds
    ))?;
    Ok(ExitCode::from(exit::OK))
}
