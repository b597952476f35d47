//! Benchmarks of `podiam-policy` live in `benches/evaluate.rs`; run them with
//! `cargo bench -p podiam-policy-bench`. This library is empty on purpose.
