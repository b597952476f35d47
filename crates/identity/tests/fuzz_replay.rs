//! The `sigv4_authorization` and `jwt_parse` fuzz targets' checks, replayed on stable in every
//! `cargo test`: their seeds and a bounded number of mutations of them (fuzz/checks/replay.rs).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test code: a broken property fails the test"
)]

#[path = "../../../fuzz/checks/jwt_parse.rs"]
mod jwt_parse;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../../fuzz/checks/sigv4_authorization.rs"]
mod sigv4_authorization;

#[test]
fn sigv4_authorization_holds_on_its_seeds_and_their_mutations() {
    replay::replay("sigv4_authorization", 20_000, sigv4_authorization::check);
}

#[test]
fn jwt_parse_holds_on_its_seeds_and_their_mutations() {
    replay::replay("jwt_parse", 20_000, jwt_parse::check);
}
