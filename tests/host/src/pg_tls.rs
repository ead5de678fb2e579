//! Postgres over TLS the way Spin 4.0.2 speaks it (SPIN.md §3 Pooling;
//! `crates/factor-outbound-pg/src/client.rs`): `sslmode=disable` means plain
//! TCP; anything else (tokio-postgres's default is `prefer`) goes through a
//! native-tls connector, which on Linux is OpenSSL with the system roots
//! (and, as for Spin, OpenSSL's `SSL_CERT_FILE` / `SSL_CERT_DIR`), plus an
//! optional extra root certificate. Certificates are always verified, chain
//! and host name, also under `require`: that is what Spin does, so a URL
//! that works here works on Spin.
//!
//! Spin 4.0.2 has no runtime-config key for a Postgres root certificate (its
//! runtime config refuses unknown keys); a guest sets one with postgres@4.1's
//! `connection-builder.set-ca-root`, which Outpost's components (4.0.0) do
//! not import. This host takes one root for all component connections
//! (`outpost up --pg-root-cert`), and `outpost migrate` also reads libpq's
//! `sslrootcert=` URL parameter.

use std::path::{Path, PathBuf};

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;

use crate::error::HostError;

/// An extra trusted root for Postgres TLS, read from a PEM file.
#[derive(Clone)]
pub struct RootCertificate {
    certificate: Certificate,
    path: PathBuf,
}

impl std::fmt::Debug for RootCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCertificate")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RootCertificate {
    /// Reads a PEM certificate (the first one in the file).
    pub fn from_file(path: &Path) -> Result<Self, HostError> {
        let fail = |message: String| HostError::RootCertificate {
            path: path.to_path_buf(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let certificate =
            Certificate::from_pem(&pem).map_err(|e| fail(format!("not a PEM certificate: {e}")))?;
        Ok(Self {
            certificate,
            path: path.to_path_buf(),
        })
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The connector for every non-`disable` connection: system roots plus
/// `root`, verification on.
pub fn connector(root: Option<&RootCertificate>) -> Result<MakeTlsConnector, native_tls::Error> {
    let mut builder = TlsConnector::builder();
    if let Some(root) = root {
        builder.add_root_certificate(root.certificate.clone());
    }
    Ok(MakeTlsConnector::new(builder.build()?))
}

/// What `outpost migrate` takes from a libpq-style URL that tokio-postgres
/// (and so Spin) would refuse: `sslrootcert=<file>` and `sslmode=verify-ca`
/// / `verify-full`. Verification is always on here, so both verify modes
/// mean `require`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibpqTls {
    /// The URL with those parameters rewritten for tokio-postgres.
    pub url: String,
    /// The `sslrootcert` file, if the URL named one.
    pub root_cert: Option<PathBuf>,
}

/// Rewrites a `postgres://` URL's libpq-only TLS parameters (see
/// [`LibpqTls`]); other strings (key=value form) pass unchanged.
pub fn libpq_tls(url: &str) -> LibpqTls {
    let unchanged = || LibpqTls {
        url: url.to_string(),
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return unchanged();
    };
    if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
        return unchanged();
    }
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("sslrootcert", v) => {
                let decoded = url::form_urlencoded::parse(format!("v={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                root_cert = Some(PathBuf::from(decoded));
            }
            ("sslmode", "verify-ca" | "verify-full") => kept.push("sslmode=require".to_string()),
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    LibpqTls { url, root_cert }
}

/// A hint for a failed connection whose cause looks like TLS, naming the
/// fix; empty otherwise. Never includes the URL (it may hold a password).
pub fn hint(error_text: &str) -> &'static str {
    let text = error_text.to_ascii_lowercase();
    if text.contains("server does not support tls") {
        " (the server does not speak TLS: use sslmode=disable or prefer, or turn ssl on in the server)"
    } else if text.contains("certificate verify failed") || text.contains("certificate") {
        " (the server's certificate is not trusted: give its CA certificate with --pg-root-cert <file.pem> or sslrootcert=<file.pem>; Supabase's is under Database Settings → SSL Configuration)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_rewritten_and_others_kept() {
        let t = libpq_tls(
            "postgres://u:p%40ss@db.example:5432/postgres?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&application_name=a",
        );
        assert_eq!(
            t.url,
            "postgres://u:p%40ss@db.example:5432/postgres?sslmode=require&application_name=a"
        );
        assert_eq!(t.root_cert, Some(PathBuf::from("/tmp/ca x.pem")));

        let t = libpq_tls("postgres://h/db?sslrootcert=/ca.pem");
        assert_eq!(t.url, "postgres://h/db");
        assert_eq!(t.root_cert, Some(PathBuf::from("/ca.pem")));

        for same in [
            "postgres://h/db",
            "postgres://h/db?sslmode=disable",
            "host=h sslmode=require",
        ] {
            assert_eq!(libpq_tls(same).url, same);
            assert_eq!(libpq_tls(same).root_cert, None);
        }
    }

    #[test]
    fn a_missing_or_bad_root_certificate_is_a_clear_error() {
        let e = RootCertificate::from_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("outpost-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = RootCertificate::from_file(&bad).unwrap_err();
        assert!(e.to_string().contains("not a PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
