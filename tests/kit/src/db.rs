//! Test databases: a process-wide PostgreSQL, a migrated template per set
//! of migrations, and one database per test cloned from it.

use std::time::Duration;

use outpost_host::pg_cluster::PgCluster;
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls};

use crate::{KitError, migrations_dir};

/// The PostgreSQL the tests of this process use.
pub struct TestPostgres {
    /// A superuser URL (database `postgres`).
    admin_url: String,
    host: String,
    port: u16,
    /// Keeps a private cluster alive for the whole process (its watchdog
    /// stops it when the process exits).
    _cluster: Option<std::sync::Mutex<PgCluster>>,
    template: OnceCell<String>,
}

static POSTGRES: OnceCell<TestPostgres> = OnceCell::const_new();

/// The process-wide test PostgreSQL: `OUTPOST_TEST_DATABASE_URL` (a superuser
/// URL; the test script starts one), or else a private throwaway cluster.
pub async fn test_postgres() -> Result<&'static TestPostgres, KitError> {
    POSTGRES
        .get_or_try_init(|| async {
            if let Ok(url) = std::env::var("OUTPOST_TEST_DATABASE_URL") {
                let config: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e| KitError::Database(format!("OUTPOST_TEST_DATABASE_URL: {e}")))?;
                let host = match config.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    _ => "127.0.0.1".to_string(),
                };
                let port = config.get_ports().first().copied().unwrap_or(5432);
                return Ok(TestPostgres {
                    admin_url: url,
                    host,
                    port,
                    _cluster: None,
                    template: OnceCell::new(),
                });
            }
            let cluster = tokio::task::spawn_blocking(|| PgCluster::start_new(None))
                .await
                .map_err(|e| KitError::Database(e.to_string()))??;
            Ok(TestPostgres {
                admin_url: cluster.url("postgres"),
                host: "127.0.0.1".into(),
                port: cluster.port(),
                _cluster: Some(std::sync::Mutex::new(cluster)),
                template: OnceCell::new(),
            })
        })
        .await
}

impl TestPostgres {
    /// The superuser URL.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A URL for `database` with the same credentials.
    pub fn url_for(&self, database: &str) -> String {
        replace_database(&self.admin_url, database)
    }

    /// `postgres://host:port`, for `allowed_outbound_hosts`.
    pub fn address(&self) -> String {
        format!("postgres://{}:{}", self.host, self.port)
    }

    /// An admin connection (its driver runs on the current runtime).
    pub async fn admin(&self) -> Result<Client, KitError> {
        connect(&self.admin_url).await
    }

    /// The migrated template's name, building it once per process (and once
    /// per cluster across processes: the name carries the migrations'
    /// fingerprint and creation runs under an advisory lock).
    pub async fn template(&self) -> Result<&str, KitError> {
        self.template
            .get_or_try_init(|| async { self.build_template().await })
            .await
            .map(String::as_str)
    }

    async fn build_template(&self) -> Result<String, KitError> {
        let dir = migrations_dir();
        let fingerprint = outpost_host::migrate::fingerprint(&dir)
            .map_err(|e| KitError::Database(format!("{e:#}")))?;
        let name = format!("outpost_tpl_{}", &fingerprint[..16]);
        let admin = self.admin().await?;
        let db_err = |e: tokio_postgres::Error| KitError::Database(format!("{e:?}"));
        // Any constant; every test process uses the same one.
        let lock: i64 = 0x6f75_7470_7470_6c00;
        admin
            .execute("select pg_advisory_lock($1)", &[&lock])
            .await
            .map_err(db_err)?;
        let result = async {
            let exists = admin
                .query_opt("select 1 from pg_database where datname = $1", &[&name])
                .await
                .map_err(db_err)?
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                admin
                    .batch_execute(&format!("drop database if exists {building} with (force)"))
                    .await
                    .map_err(db_err)?;
                admin
                    .batch_execute(&format!("create database {building} template template0"))
                    .await
                    .map_err(db_err)?;
                outpost_host::migrate::run(&self.url_for(&building), &dir)
                    .await
                    .map_err(|e| KitError::Database(format!("migrating the template: {e:#}")))?;
                admin
                    .batch_execute(&format!("alter database {building} rename to {name}"))
                    .await
                    .map_err(db_err)?;
                admin
                    .batch_execute(&format!("alter database {name} with is_template true"))
                    .await
                    .map_err(db_err)?;
            }
            Ok::<_, KitError>(())
        }
        .await;
        admin
            .execute("select pg_advisory_unlock($1)", &[&lock])
            .await
            .map_err(db_err)?;
        result.map(|()| name)
    }
}

async fn connect(url: &str) -> Result<Client, KitError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| KitError::Database(format!("connecting to {url}: {e}")))?;
    tokio::spawn(async move {
        // Errors surface on the client's calls.
        connection.await.ok();
    });
    Ok(client)
}

fn replace_database(url: &str, database: &str) -> String {
    // postgres://user@host:port/db?params
    let (base, params) = match url.split_once('?') {
        Some((b, p)) => (b, Some(p)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match params {
        Some(p) => format!("{base}/{database}?{p}"),
        None => format!("{base}/{database}"),
    }
}

/// A fresh database for one test, dropped (best effort) when dropped.
pub struct TestDb {
    name: String,
    url: String,
    address: String,
    admin_url: String,
}

impl TestDb {
    /// A fresh database cloned from the migrated template.
    pub async fn new() -> Result<Self, KitError> {
        let pg = test_postgres().await?;
        let template = pg.template().await?.to_string();
        Self::create(pg, &template).await
    }

    /// A fresh empty database (no migrations).
    pub async fn empty() -> Result<Self, KitError> {
        let pg = test_postgres().await?;
        Self::create(pg, "template0").await
    }

    async fn create(pg: &TestPostgres, template: &str) -> Result<Self, KitError> {
        let name = format!(
            "outpost_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let admin = pg.admin().await?;
        // Cloning fails while another session is briefly connected to the
        // template (another process building it); retry a little.
        let mut attempt = 0;
        loop {
            match admin
                .batch_execute(&format!("create database {name} template {template}"))
                .await
            {
                Ok(()) => break,
                Err(_) if attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(KitError::Database(format!("creating {name}: {e:?}"))),
            }
        }
        Ok(Self {
            url: pg.url_for(&name),
            address: pg.address(),
            admin_url: pg.admin_url().to_string(),
            name,
        })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser URL for it.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `postgres://host:port`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// A new connection to it (its driver runs on the current runtime).
    pub async fn connect(&self) -> Result<Client, KitError> {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop on a thread of its own: this may run inside or outside a runtime.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = connect(&admin_url).await {
                    // Best effort: a leftover test database is harmless.
                    client
                        .batch_execute(&format!("drop database if exists {name} with (force)"))
                        .await
                        .ok();
                }
            });
        });
        handle.join().ok();
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:55432/postgres", "x"),
            "postgres://postgres@127.0.0.1:55432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
