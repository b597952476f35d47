//! Interop tests only: `tests/rust_sdk.rs` drives a real `podiam up` with the Rust AWS SDK.
//!
//! Not a default workspace member, so ordinary builds do not compile the SDK. Run with
//! `cargo build --release -p podiam-cli && PODIAM_BIN=target/release/podiam cargo test -p podiam-interop`.
