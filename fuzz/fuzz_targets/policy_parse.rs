//! Policy documents are untrusted input (CreatePolicy, AssumeRole's `Policy`, trust policies):
//! parsing any bytes must return a policy or an error, never panic or hang, and a policy that
//! parses must evaluate without panicking.

#![no_main]

#[path = "../checks/policy_parse.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
