//! `outpost-host`: a small Spin-compatible host for Outpost's tests and local runs.
//!
//! It loads the same `spin.toml` and the same `.wasm` files real Spin 4.0.2
//! runs, and provides exactly the Spin interfaces Outpost's components import:
//! the HTTP trigger, the cron trigger (`fermyon:spin-cron@2.0.0`),
//! `spin:postgres/postgres@4.0.0`, `fermyon:spin/variables@2.0.0`, WASI 0.2
//! and `wasi:http/outgoing-handler` with `allowed_outbound_hosts` and service
//! chaining. Where real Spin has a trap for the unwary (the zero-row query
//! hang, the `timestamptz` read), this host fails loudly instead. See
//! `shared/SPIN.md` for the facts it mirrors.

pub mod allowed_hosts;
pub mod app;
pub mod cli;
pub mod cron;
pub mod error;
pub mod manifest;
pub mod migrate;
pub mod outbound_http;
pub mod pg_cluster;
pub mod postgres;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod variables;

pub use app::{App, HostConfig};
pub use error::HostError;
pub use server::RunningServer;

/// Bindings for the Spin interfaces the components import, generated from the
/// WIT inside the `spin-sdk` crate (see `build.rs`).
pub mod bindings {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/spin_bindings.rs"));
}

/// Bindings for the cron plugin's world `fermyon:spin-cron@2.0.0/spin-cron`,
/// generated from `wit/spin-cron.wit`.
pub mod cron_bindings {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/cron_bindings.rs"));
}
