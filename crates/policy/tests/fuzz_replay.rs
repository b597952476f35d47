//! The `policy_parse` fuzz target's check, replayed on stable in every `cargo test`: its seeds
//! and a bounded number of mutations of them (fuzz/checks/replay.rs).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test code: a broken property fails the test"
)]

#[path = "../../../fuzz/checks/policy_parse.rs"]
mod policy_parse;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn policy_parse_holds_on_its_seeds_and_their_mutations() {
    replay::replay("policy_parse", 10_000, policy_parse::check);
}
