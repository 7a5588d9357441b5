//! Integration tests of Farol Store: one binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]

mod common;
mod concurrency;
mod corruption;
mod crash;
mod format;
mod gc;
mod io_faults;
mod model;
mod proofs;
