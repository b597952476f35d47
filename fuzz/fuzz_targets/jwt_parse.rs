//! Web identity tokens are untrusted input (AssumeRoleWithWebIdentity is unsigned): splitting,
//! base64url, header and claims parsing must never panic, and nothing may verify against a key
//! set the fuzzer cannot sign for.

#![no_main]

#[path = "../checks/jwt_parse.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
