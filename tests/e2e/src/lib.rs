//! End-to-end tests for Outpost live in `tests/`, the benchmarks in
//! `benches/`; this library holds what the benchmarks share.

pub mod bench;
pub mod native_baseline;
