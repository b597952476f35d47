//! SigV4 `Authorization` headers and presigned queries are untrusted input on every signed call:
//! parsing any bytes must return a result or a typed error, never panic; whatever parses must
//! also survive canonicalisation and verification against a fixed secret.

#![no_main]

#[path = "../checks/sigv4_authorization.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
