//! Postgres over TLS, as Spin 4.0.2 speaks it (SPIN.md §3): a throwaway
//! PostgreSQL with `ssl = on` and a certificate made for the test (a CA and
//! a server certificate for 127.0.0.1, generated with the `openssl` command
//! that `scripts/setup` installs). `outpost migrate` and a component's
//! `spin:postgres` connections use TLS unless the URL says
//! `sslmode=disable`, trust the given root, refuse an untrusted server and
//! say so, and `sslmode=require` refuses a server without TLS.
//!
//! Build the probe first: `cargo build --target wasm32-wasip2 --release -p probe`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use outpost_host::app::{App, HostConfig};
use outpost_host::migrate::run_with_root_cert;
use outpost_host::pg_cluster::PgCluster;
use outpost_host::variables::VariableSources;
use outpost_test_kit::{migrations_dir, probe_manifest, require_wasm};
use serde_json::Value;

type Res = anyhow::Result<()>;

/// A CA and a server certificate for 127.0.0.1 / localhost, in a folder
/// removed on drop.
struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("outpost-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let certs = Self { dir };
        std::fs::write(
            certs.path("server.ext"),
            "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
        )?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        certs.openssl(&[
            &["req", "-x509", "-nodes", "-days", "2"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=Outpost test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ])?;
        certs.openssl(&[
            &["req", "-nodes"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ])?;
        certs.openssl(&[&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]])?;
        Ok(certs)
    }

    fn openssl(&self, parts: &[&[&str]]) -> anyhow::Result<()> {
        let args: Vec<&str> = parts.concat();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| anyhow::anyhow!("running openssl (scripts/setup installs it): {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.path(name))?)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Loads the probe over `address` (its only allowed Postgres host), with
/// `root` as the extra Postgres root, and serves it.
async fn probe(
    address: &str,
    root: Option<&Path>,
) -> anyhow::Result<(App, outpost_host::RunningServer)> {
    require_wasm("probe")?;
    let mut config = HostConfig::new(probe_manifest());
    config.variables = VariableSources {
        overrides: [
            ("database_url", "postgres://unused@127.0.0.1:1/unused"),
            ("database_address", address),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        env: Some(Default::default()),
    };
    config.pg_root_cert = root.map(Path::to_path_buf);
    let app = App::load(config).await?;
    let server = app
        .serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .await?;
    Ok((app, server))
}

/// What the component sees: whether its own session runs over TLS, or its
/// connection error.
async fn component_ssl(server: &outpost_host::RunningServer, db: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let body: Value = client
        .get(format!("{}/probe/pg-query", server.url()))
        .query(&[
            (
                "sql",
                "select jsonb_build_object('ssl', ssl) from pg_stat_ssl where pid = pg_backend_pid()",
            ),
            ("db", db),
        ])
        .timeout(Duration::from_secs(30))
        .send()
        .await?
        .json()
        .await?;
    Ok(match body["rows"][0][0].as_str() {
        Some(row) => row.to_string(),
        None => body["error"].as_str().unwrap_or_default().to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_speaks_tls_as_spin_does() -> Res {
    require_wasm("probe")?;
    let certs = TestCerts::new()?;
    let ca = certs.path("ca.crt");
    let mut cluster = tokio::task::spawn_blocking(|| PgCluster::start_new(None)).await??;
    let base = format!("postgres://postgres@127.0.0.1:{}", cluster.port());

    // sslmode=require to a server without TLS: refused, and the error says why.
    let e = run_with_root_cert(
        &format!("{base}/postgres?sslmode=require"),
        &migrations_dir(),
        Some(&ca),
    )
    .await
    .expect_err("sslmode=require must not fall back to plain TCP");
    let e = format!("{e:#}");
    assert!(e.contains("server does not support TLS"), "{e}");
    assert!(e.contains("sslmode=require"), "{e}");

    // TLS on; database `tls_only` takes TLS connections only, so a
    // migration that lands there went over TLS.
    let (admin, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    admin.batch_execute("create database tls_only").await?;
    drop(admin);
    conn.await.ok();
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rest = std::fs::read_to_string(&hba)?;
    std::fs::write(
        &hba,
        format!(
            "hostssl tls_only all 127.0.0.1/32 trust\nhostnossl tls_only all 127.0.0.1/32 reject\n{rest}"
        ),
    )?;
    let (cert, key) = (certs.read("server.crt")?, certs.read("server.key")?);
    cluster = tokio::task::spawn_blocking(move || {
        cluster.enable_tls(&cert, &key)?;
        Ok::<_, outpost_host::HostError>(cluster)
    })
    .await??;
    let tls_only = format!("{base}/tls_only");

    // Without the root the server's certificate is not trusted (also under
    // `require`, as with Spin); the error names the fix.
    let e = run_with_root_cert(
        &format!("{tls_only}?sslmode=require"),
        &migrations_dir(),
        None,
    )
    .await
    .expect_err("an untrusted certificate must be refused");
    let e = format!("{e:#}");
    assert!(e.contains("certificate verify failed"), "{e}");
    assert!(e.contains("--pg-root-cert"), "{e}");

    // Plain TCP is refused by that database, so these runs prove TLS.
    let e = run_with_root_cert(
        &format!("{tls_only}?sslmode=disable"),
        &migrations_dir(),
        None,
    )
    .await
    .expect_err("tls_only takes no plain connection");
    assert!(format!("{e:#}").contains("no encryption"), "{e:#}");
    let report = run_with_root_cert(
        &format!("{tls_only}?sslmode=require"),
        &migrations_dir(),
        Some(&ca),
    )
    .await?;
    assert!(!report.applied.is_empty());
    // The default (prefer) and libpq's sslrootcert= / verify-full work too.
    let report = run_with_root_cert(&tls_only, &migrations_dir(), Some(&ca)).await?;
    assert!(report.applied.is_empty());
    let libpq = format!(
        "{tls_only}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let report = run_with_root_cert(&libpq, &migrations_dir(), None).await?;
    assert!(report.applied.is_empty());
    // OpenSSL's SSL_CERT_FILE, which Spin honours too (same native-tls),
    // works without --pg-root-cert; the binary gets it in its environment.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost-e2e-host"))
        .args(["migrate", "--dir"])
        .arg(migrations_dir())
        .args(["--database-url", &format!("{tls_only}?sslmode=require")])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("up to date"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // sslmode=disable still works where the server allows plain TCP.
    run_with_root_cert(
        &format!("{base}/postgres?sslmode=disable"),
        &migrations_dir(),
        None,
    )
    .await?;

    // A component's spin:postgres connections: TLS unless sslmode=disable.
    let (app, server) = probe(&cluster.address(), Some(&ca)).await?;
    for (query, want) in [
        ("?sslmode=require", r#"Jsonb({"ssl":true})"#),
        ("", r#"Jsonb({"ssl":true})"#),
        ("?sslmode=disable", r#"Jsonb({"ssl":false})"#),
    ] {
        let db = format!("{base}/postgres{query}");
        assert_eq!(component_ssl(&server, &db).await?, want, "{db}");
    }
    // ... and the TLS-only database takes the component's TLS session.
    assert_eq!(
        component_ssl(&server, &format!("{tls_only}?sslmode=require")).await?,
        r#"Jsonb({"ssl":true})"#
    );
    server.stop().await;
    app.close();

    // Without the root, the component's connection fails on the certificate.
    let (app, server) = probe(&cluster.address(), None).await?;
    let e = component_ssl(&server, &format!("{tls_only}?sslmode=require")).await?;
    assert!(
        e.contains("ConnectionFailed") && e.contains("certificate verify failed"),
        "{e}"
    );
    server.stop().await;
    app.close();
    Ok(())
}
