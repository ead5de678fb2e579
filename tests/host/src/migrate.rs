//! The migration runner: applies `migrations/NNNN_name.sql` in order, each in
//! its own transaction, records each with the SHA-256 of its text in
//! `public.outpost_schema_migrations`, does nothing the second time, and
//! refuses to run at all when a file that was applied has changed since
//! (migrations are forward-only: a fix is a new file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// Serializes concurrent runners on one database (any constant works, as
/// long as every runner uses the same one).
const RUNNER_LOCK_KEY: i64 = 0x6f75_7470_6f73_7400; // "outpost\0"

const CREATE_LEDGER: &str = "
    create table if not exists public.outpost_schema_migrations (
        version text primary key,
        name text not null,
        checksum text not null,
        applied_at timestamptz not null default now()
    );
    comment on table public.outpost_schema_migrations is
        'Migrations applied by the outpost runner, with the sha256 of each file';
    alter table public.outpost_schema_migrations enable row level security;";

/// One migration file found on disk.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    /// The four-digit number that orders it.
    pub version: String,
    /// The file name without number and extension.
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub sql: String,
    /// Lowercase hex SHA-256 of its text.
    pub checksum: String,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Files applied by this run, in order (`NNNN_name`).
    pub applied: Vec<String>,
    /// Files that were already applied and unchanged.
    pub unchanged: usize,
}

impl MigrationReport {
    /// The latest version known after the run, if any migration exists.
    pub fn summary(&self) -> String {
        if self.applied.is_empty() {
            format!(
                "database is up to date ({} migrations already applied)",
                self.unchanged
            )
        } else {
            format!(
                "applied {} migration(s): {} ({} already applied)",
                self.applied.len(),
                self.applied.join(", "),
                self.unchanged
            )
        }
    }
}

/// Reads the migration files in `dir`, ordered by version. Names must be
/// `NNNN_lower_snake.sql`; anything else ending in `.sql` is an error, so a
/// misnamed file is never silently skipped.
pub fn discover(dir: &Path) -> anyhow::Result<Vec<MigrationFile>> {
    let mut files = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let Some((version, name)) = stem.split_once('_') else {
            bail!("{}: migration names must be NNNN_name.sql", path.display());
        };
        let well_formed = version.len() == 4
            && version.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            bail!(
                "{}: migration names must be NNNN_lower_snake.sql",
                path.display()
            );
        }
        let sql = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        let file = MigrationFile {
            version: version.to_string(),
            name: name.to_string(),
            path: path.clone(),
            sql,
            checksum,
        };
        if let Some(previous) = files.insert(version.to_string(), file) {
            bail!(
                "two migrations share version {version}: {} and {}",
                previous.path.display(),
                path.display()
            );
        }
    }
    Ok(files.into_values().collect())
}

/// A digest of every migration file's name and text, for naming a template
/// database built from exactly these files.
pub fn fingerprint(dir: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for file in discover(dir)? {
        hasher.update(file.version.as_bytes());
        hasher.update(file.name.as_bytes());
        hasher.update(file.checksum.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Connects to `database_url` and applies the pending migrations in `dir`
/// (TLS as [`run_with_root_cert`] without an extra root).
pub async fn run(database_url: &str, dir: &Path) -> anyhow::Result<MigrationReport> {
    run_with_root_cert(database_url, dir, None).await
}

/// Connects to `database_url` and applies the pending migrations in `dir`.
///
/// TLS as the components get it on Spin ([`crate::pg_tls`]): plain TCP only
/// with `sslmode=disable`, otherwise TLS with verified certificates against
/// the system roots plus `root_cert` (or the URL's libpq `sslrootcert=`);
/// libpq's `sslmode=verify-ca` / `verify-full` are accepted and mean the same.
pub async fn run_with_root_cert(
    database_url: &str,
    dir: &Path,
    root_cert: Option<&Path>,
) -> anyhow::Result<MigrationReport> {
    let libpq = crate::pg_tls::libpq_tls(database_url);
    let root_path = root_cert.map(Path::to_path_buf).or(libpq.root_cert);
    let root = root_path
        .as_deref()
        .map(crate::pg_tls::RootCertificate::from_file)
        .transpose()?;
    // The URL may hold a password: errors name only host, port and mode.
    let config: tokio_postgres::Config = libpq
        .url
        .parse()
        .context("parsing the database URL (tokio-postgres options only: sslmode is disable, prefer or require)")?;
    let target = describe_target(&config);
    let connected = if config.get_ssl_mode() == SslMode::Disable {
        config
            .connect(NoTls)
            .await
            .map(|(client, conn)| (client, tokio::spawn(conn)))
    } else {
        let tls = crate::pg_tls::connector(root.as_ref()).context("setting up TLS")?;
        config
            .connect(tls)
            .await
            .map(|(client, conn)| (client, tokio::spawn(conn)))
    };
    let (mut client, driver) = connected.map_err(|e| {
        // tokio-postgres's Display leaves out the cause (where TLS says why).
        let text = format!("{:#}", anyhow::Error::new(e));
        anyhow::anyhow!(
            "connecting to the database at {target}: {text}{}",
            crate::pg_tls::hint(&text)
        )
    })?;
    let report = apply(&mut client, dir).await;
    drop(client);
    // The connection task ends when the client is dropped; its own error, if
    // any, is already reflected in the result above.
    if let Ok(Err(e)) = driver.await
        && report.is_ok()
    {
        return Err(e).context("database connection failed");
    }
    report
}

/// `host:port (sslmode=...)` of a connection config, for error messages.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mode = match config.get_ssl_mode() {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        _ => "other",
    };
    format!("{host}:{port} (sslmode={mode})")
}

/// Applies the pending migrations in `dir` over `client`, one transaction
/// each, under a session advisory lock so concurrent runners take turns.
pub async fn apply(client: &mut Client, dir: &Path) -> anyhow::Result<MigrationReport> {
    let files = discover(dir)?;
    client
        .execute("select pg_advisory_lock($1)", &[&RUNNER_LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    let result = apply_locked(client, &files).await;
    let unlock = client
        .execute("select pg_advisory_unlock($1)", &[&RUNNER_LOCK_KEY])
        .await;
    let report = result?;
    unlock.context("releasing the migration lock")?;
    Ok(report)
}

async fn apply_locked(
    client: &mut Client,
    files: &[MigrationFile],
) -> anyhow::Result<MigrationReport> {
    client
        .batch_execute(CREATE_LEDGER)
        .await
        .context("creating public.outpost_schema_migrations")?;
    let recorded: BTreeMap<String, (String, String)> = client
        .query(
            "select version, name, checksum from public.outpost_schema_migrations",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                (row.get::<_, String>(1), row.get::<_, String>(2)),
            )
        })
        .collect();

    // Check everything before applying anything.
    for file in files {
        if let Some((_, checksum)) = recorded.get(&file.version)
            && *checksum != file.checksum
        {
            bail!(
                "migration {}_{}.sql was changed after it was applied (recorded sha256 {}, file sha256 {}); \
                 applied migrations are never edited: put the change in a new file",
                file.version,
                file.name,
                checksum,
                file.checksum
            );
        }
    }
    let known: std::collections::BTreeSet<&str> =
        files.iter().map(|f| f.version.as_str()).collect();
    if let Some((version, (name, _))) = recorded.iter().find(|(v, _)| !known.contains(v.as_str())) {
        bail!(
            "the database has migration {version}_{name} applied, which is not in this migrations folder (is this an older checkout?)"
        );
    }

    let mut report = MigrationReport::default();
    for file in files {
        if recorded.contains_key(&file.version) {
            report.unchanged += 1;
            continue;
        }
        let transaction = client.transaction().await?;
        transaction
            .batch_execute(&file.sql)
            .await
            .map_err(|e| describe_sql_error(e, file))?;
        transaction
            .execute(
                "insert into public.outpost_schema_migrations (version, name, checksum) values ($1, $2, $3)",
                &[&file.version, &file.name, &file.checksum],
            )
            .await?;
        transaction
            .commit()
            .await
            .with_context(|| format!("committing {}", file.path.display()))?;
        report
            .applied
            .push(format!("{}_{}", file.version, file.name));
    }
    Ok(report)
}

/// Names the file and, where Postgres gives a position, the line.
fn describe_sql_error(error: tokio_postgres::Error, file: &MigrationFile) -> anyhow::Error {
    let Some(db) = error.as_db_error() else {
        return anyhow::Error::new(error).context(format!("applying {}", file.path.display()));
    };
    let line = match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(position)) => {
            let offset = (*position as usize).saturating_sub(1).min(file.sql.len());
            let line = file.sql.get(..offset).map(|s| s.matches('\n').count() + 1);
            line.map(|l| format!(":{l}")).unwrap_or_default()
        }
        _ => String::new(),
    };
    let mut message = format!(
        "{}{}: {} (SQLSTATE {})",
        file.path.display(),
        line,
        db.message(),
        db.code().code()
    );
    if let Some(detail) = db.detail() {
        message.push_str(&format!("\n  detail: {detail}"));
    }
    if let Some(context) = db.where_() {
        message.push_str(&format!("\n  where: {context}"));
    }
    anyhow::anyhow!(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    mod tempdir {
        /// A throwaway directory removed on drop.
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir()
                    .join(format!("outpost-migrate-test-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _removed = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn discovers_files_in_version_order_with_checksums() {
        let dir = dir_with(&[
            ("0002_b.sql", "select 2;"),
            ("0001_a.sql", "select 1;"),
            ("README.md", "x"),
        ]);
        let files = discover(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| format!("{}_{}", f.version, f.name))
            .collect();
        assert_eq!(names, ["0001_a", "0002_b"]);
        assert_eq!(files[0].checksum, hex::encode(Sha256::digest(b"select 1;")));
    }

    #[test]
    fn refuses_misnamed_and_duplicate_files() {
        let misnamed = dir_with(&[("1_a.sql", "")]);
        assert!(
            discover(misnamed.path())
                .unwrap_err()
                .to_string()
                .contains("NNNN_")
        );
        let duplicate = dir_with(&[("0001_a.sql", ""), ("0001_b.sql", "")]);
        assert!(
            discover(duplicate.path())
                .unwrap_err()
                .to_string()
                .contains("share version 0001")
        );
    }

    #[test]
    fn fingerprint_changes_with_any_file() {
        let a = dir_with(&[("0001_a.sql", "select 1;")]);
        let b = dir_with(&[("0001_a.sql", "select 2;")]);
        assert_ne!(
            fingerprint(a.path()).unwrap(),
            fingerprint(b.path()).unwrap()
        );
    }
}
