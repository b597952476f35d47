//! Interop tests only: `tests/rust_sdk.rs` drives a real `podiam up` with the Rust AWS SDK.
//!
//! Not a default workspace member, so ordinary builds do not compile the SDK. Run with
//! `cargo build -p podiam-cli && PODIAM_BIN=target/debug/podiam cargo test -p podiam-interop`.
