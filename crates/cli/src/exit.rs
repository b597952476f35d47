//! Typed exit codes, as in cedar's CLI.

/// Success; for `policy simulate`, every request was allowed.
pub const OK: u8 = 0;
/// Something went wrong (bad input file, server error).
pub const ERROR: u8 = 1;
/// A request was denied.
pub const DENIED: u8 = 2;
/// The command line itself was wrong (sysexits `EX_USAGE`).
pub const USAGE: u8 = 64;
