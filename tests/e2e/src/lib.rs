//! End-to-end tests for Outpost live in `tests/`, the benchmark in `benches/`.
