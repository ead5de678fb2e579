//! Start-up checks that real Spin makes (SPIN.md §0, §7): the repository's
//! `spin.toml` passes all of them with its `.wasm` files, and a manifest
//! where a cron-served component allows a `*.spin.internal` host is refused
//! by `outpost up` with Spin's own two lines, serving nothing.
//!
//! Build the components first: `scripts/build`.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_host::app::{App, HostConfig};
use outpost_host::manifest::LoadedManifest;
use outpost_host::variables::VariableSources;
use outpost_test_kit::product_manifest;

type Res = anyhow::Result<()>;

const SPIN_REFUSAL: &str = "Error: This application requires the following features that are not available in this version of the 'cron' trigger: local_service_chaining\nA trigger exited unexpectedly. Terminating.\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_spin_toml_loads_with_every_component() -> Res {
    let loaded = LoadedManifest::load(&product_manifest())?;
    let ids: Vec<String> = loaded.manifest.component.keys().cloned().collect();
    for id in &ids {
        let wasm = loaded.source_path(id)?;
        anyhow::ensure!(
            wasm.is_file(),
            "{} is missing: run scripts/build",
            wasm.display()
        );
    }
    let mut config = HostConfig::new(product_manifest());
    config.variables = VariableSources {
        // Only the required variables, as `outpost up` fills them in; no
        // database is contacted while loading.
        overrides: BTreeMap::from([
            (
                "database_url".into(),
                "postgres://o@127.0.0.1:5432/o".into(),
            ),
            (
                "database_address".into(),
                "postgres://127.0.0.1:5432".into(),
            ),
            ("job_secret".into(), "placeholder".into()),
        ]),
        env: Some(BTreeMap::new()),
    };
    let app = match App::load(config).await {
        Ok(app) => app,
        Err(e) => panic!("spin.toml would not start: {e}"),
    };
    let loaded: Vec<&str> = app.component_ids().collect();
    for id in &ids {
        assert!(loaded.contains(&id.as_str()), "{id} not loaded");
    }
    app.close();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_up_refuses_a_cron_component_that_chains() -> Res {
    let bin = env!("CARGO_BIN_EXE_outpost-e2e-host");
    for allowed in ["http://x.spin.internal", "http://*.spin.internal"] {
        let dir = std::env::temp_dir().join(format!("outpost-chain-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let manifest = dir.join("spin.toml");
        // No .wasm exists: the refusal comes before any component is read.
        std::fs::write(
            &manifest,
            format!(
                r#"spin_manifest_version = 2
[application]
name = "chains"
[[trigger.http]]
route = "/jobs/claim"
component = "claim"
[[trigger.cron]]
component = "claim"
cron_expression = "0 * * * * *"
[[trigger.http]]
route = {{ private = true }}
component = "x"
[component.claim]
source = "claim.wasm"
allowed_outbound_hosts = ["{allowed}"]
[component.x]
source = "x.wasm"
"#
            ),
        )?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(bin)
                .args(["up", "--no-migrate", "--manifest"])
                .arg(&manifest)
                .args(["--listen", &listen.to_string()])
                .args(["--database-url", "postgres://u:hunter2@127.0.0.1:1/db"])
                .args(["--variable", "job_secret=x"])
                .kill_on_drop(true)
                .output(),
        )
        .await??;
        std::fs::remove_dir_all(&dir).ok();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{allowed}: {stderr}");
        assert_eq!(stderr, SPIN_REFUSAL, "{allowed}");
        assert!(!stdout.contains("serving"), "{allowed}: {stdout}");
    }
    Ok(())
}
