//! awsQuery form bodies are read before any authentication: decoding, repeated names, member
//! lists and control characters must never panic, and what is read survives re-encoding.

#![no_main]

#[path = "../checks/query_form.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
