//! `outpost-host`: a small Spin-compatible host for Outpost's tests and local runs.
//!
//! It loads the same `spin.toml` and the same `.wasm` files real Spin 4.0.2
//! runs, and provides exactly the Spin interfaces Outpost's components import:
//! the HTTP trigger, the cron trigger (`fermyon:spin-cron@2.0.0`),
//! `spin:postgres/postgres@4.0.0`, `fermyon:spin/variables@2.0.0`, WASI 0.2
//! and `wasi:http/outgoing-handler` with `allowed_outbound_hosts` and service
//! chaining. Where real Spin has a trap for the unwary (the zero-row query
//! hang, the `timestamptz` read), this host fails loudly instead. See
//! `../shared/SPIN.md` (beside the repository) for the facts it mirrors.
//!
//! Deliberate differences from Spin 4.0.2:
//! - Postgres: TLS as in Spin (native-tls, `prefer` unless the URL says
//!   otherwise), but one extra root certificate for every component can be
//!   given on the command line (`--pg-root-cert`), where Spin has no such
//!   setting (its guests call postgres@4.1's `set-ca-root`; both honour
//!   OpenSSL's `SSL_CERT_FILE`); no 128 MiB result limit; past 16 pools per
//!   component an arbitrary one is evicted.
//! - Host requirements: like Spin, a manifest where a cron-served component
//!   allows a `*.spin.internal` host is refused at start-up with Spin's
//!   message; but a templated entry that resolves to one (Spin judges the
//!   raw entry and lets it pass) can chain here, even from a cron run.
//! - Loud failures: a zero-row `query` errors instead of hanging (cron runs
//!   too, although the real cron plugin is built on Spin 3.5, which returns
//!   empty rows); `strict_single_jsonb` (on unless `--no-strict-jsonb`)
//!   refuses any `query` that is not one row of one `jsonb` value.
//! - Service chaining to an unknown component is an error to the guest, not
//!   a trap; `http://self` requests are denied.
//! - Manifest features the components do not use are refused at start-up
//!   (`files`, key-value, SQLite, AI models, `dependencies`, wagi, non-path
//!   sources, trigger types other than http and cron).
//! - Variables: `--variable` (and `k=@file`), `SPIN_VARIABLE_*`, `./.env`,
//!   then defaults; no runtime-config `[[variables_provider]]`.
//! - No TLS serving; a conflicting `Host` header is not rejected; instance
//!   memory is capped at 512 MiB by the pooling allocator.
//! - A request body the answer left unread is read and discarded after the
//!   answer (up to 16 MiB, 30 s, or a 1 s pause; see [`drain`]), so a sender without
//!   `Expect: 100-continue` gets a refusal such as a 413 instead of a
//!   connection reset; Spin closes at once and the sender often sees the
//!   reset.

pub mod allowed_hosts;
pub mod app;
pub mod cli;
pub mod cron;
pub mod drain;
pub mod error;
pub mod manifest;
pub mod migrate;
pub mod outbound_http;
pub mod pg_cluster;
pub mod pg_tls;
pub mod postgres;
pub mod requirements;
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
