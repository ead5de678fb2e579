//! The one error type of the host: everything that stops it from loading or
//! starting an application.

use std::path::PathBuf;

/// Why the host could not load, start or run an application.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    ManifestRead {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not a valid Spin manifest (or uses something this host
    /// does not provide).
    #[error("invalid manifest {path}: {message}")]
    Manifest {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Required variables have no value: Spin's own start-up error text.
    #[error("provider error: no provider resolved required variable(s): [{}]", .0.iter().map(|k| format!("Key({k:?})")).collect::<Vec<_>>().join(", "))]
    MissingVariables(Vec<String>),
    /// A `{{ var }}` template is malformed or names an unknown variable.
    #[error("invalid variable template: {0}")]
    Template(String),
    /// An `allowed_outbound_hosts` entry is invalid.
    #[error("invalid allowed_outbound_hosts entry for component {component:?}: {message}")]
    AllowedHost {
        /// The component whose entry is wrong.
        component: String,
        /// What is wrong.
        message: String,
    },
    /// A cron expression the cron plugin would refuse.
    #[error("invalid cron expression {expression:?} for component {component:?}: {message}")]
    Cron {
        /// The component the trigger names.
        component: String,
        /// The expression as written.
        expression: String,
        /// What is wrong.
        message: String,
    },
    /// A trigger serves a component whose host requirements it does not
    /// support: Spin's own start-up error (SPIN.md §0), e.g. a cron-served
    /// component that allows a `*.spin.internal` host.
    #[error("This application requires the following features that are not available in this version of the '{trigger}' trigger: {}", .requirements.join(", "))]
    UnsupportedHostRequirements {
        /// The refusing trigger type (`cron`).
        trigger: String,
        /// The unmet requirements (`local_service_chaining`).
        requirements: Vec<String>,
    },
    /// A root certificate for Postgres TLS could not be read or parsed.
    #[error("postgres root certificate {path}: {message}")]
    RootCertificate {
        /// Where it was read from.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A component could not be read, compiled or linked.
    #[error("component {component:?}: {message}")]
    Component {
        /// The component ID.
        component: String,
        /// What went wrong.
        message: String,
    },
    /// No such component, or it has no trigger of the kind asked for.
    #[error("{0}")]
    NoSuchComponent(String),
    /// The throwaway PostgreSQL cluster failed.
    #[error("postgres cluster: {0}")]
    Cluster(String),
    /// An I/O error (listening socket, files).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Anything else from wasmtime.
    #[error("wasmtime: {0}")]
    Wasmtime(String),
}

impl HostError {
    /// Wraps a wasmtime error, keeping its whole chain in the message.
    pub fn wasmtime(e: impl std::fmt::Debug) -> Self {
        HostError::Wasmtime(format!("{e:?}"))
    }
}
