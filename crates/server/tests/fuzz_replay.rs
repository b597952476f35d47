//! The `query_form` fuzz target's check, replayed on stable in every `cargo test`: its seeds and
//! a bounded number of mutations of them (fuzz/checks/replay.rs).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test code: a broken property fails the test"
)]

#[path = "../../../fuzz/checks/query_form.rs"]
mod query_form;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn query_form_holds_on_its_seeds_and_their_mutations() {
    replay::replay("query_form", 20_000, query_form::check);
}
