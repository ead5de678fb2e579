//! Finds the Spin WIT that ships inside the `spin-sdk` 5.2 crate cargo
//! downloaded, and writes a `bindgen!` invocation pointing at it into
//! `OUT_DIR`, so the host binds exactly the interfaces the components import
//! without a copy of Spin's WIT in this repository.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(message) = run() {
        // A build script reports failure by panicking; the message is the
        // whole point, so keep it readable.
        eprintln!("outpost-host build script: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let workspace_root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .ok_or("tests/host has no workspace root two levels up")?
        .to_path_buf();
    let wit_dir = match env::var("OUTPOST_SPIN_SDK_WIT") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => spin_sdk_wit(&workspace_root)?,
    };
    let cron_wit = workspace_root.join("wit").join("spin-cron.wit");
    for needed in [
        wit_dir.join("deps").join("spin-postgres@4.0.0"),
        wit_dir
            .join("deps")
            .join("spin@2.0.0")
            .join("variables.wit"),
        cron_wit.clone(),
    ] {
        if !needed.exists() {
            return Err(format!("{} does not exist", needed.display()));
        }
    }
    println!("cargo:rerun-if-changed={}", cron_wit.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OUTPOST_SPIN_SDK_WIT");

    // Only the two Spin interfaces the components import: an inline world
    // over the SDK's WIT folder (and its deps).
    let spin_bindings = format!(
        r#"wasmtime::component::bindgen!({{
    inline: "
        package outpost:host;
        world host {{
            import spin:postgres/postgres@4.0.0;
            import fermyon:spin/variables@2.0.0;
        }}
    ",
    path: {wit:?},
    world: "outpost:host/host",
    imports: {{ default: async | trappable }},
    with: {{
        "spin:postgres/postgres.connection": crate::postgres::PgConnection,
    }},
}});
"#,
        wit = wit_dir.display().to_string(),
    );
    let cron_bindings = format!(
        r#"wasmtime::component::bindgen!({{
    path: {cron:?},
    world: "spin-cron",
    exports: {{ default: async }},
}});
"#,
        cron = cron_wit.display().to_string(),
    );
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    fs::write(out.join("spin_bindings.rs"), spin_bindings).map_err(|e| e.to_string())?;
    fs::write(out.join("cron_bindings.rs"), cron_bindings).map_err(|e| e.to_string())?;
    Ok(())
}

/// Asks cargo where the `spin-sdk` 5.2 package lives and returns its `wit` dir.
fn spin_sdk_wit(workspace_root: &Path) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(workspace_root)
        .args(["metadata", "--format-version", "1"])
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // Avoid a JSON dependency in the build script: find the package entry
    // by its id/name/version fields and its manifest_path.
    let mut search = text.as_ref();
    while let Some(pos) = search.find("\"name\":\"spin-sdk\",\"version\":\"5.2.") {
        let rest = &search[pos..];
        let key = "\"manifest_path\":\"";
        if let Some(mp) = rest.find(key) {
            let after = &rest[mp + key.len()..];
            if let Some(end) = after.find('"') {
                let manifest = PathBuf::from(&after[..end]);
                if let Some(dir) = manifest.parent() {
                    let wit = dir.join("wit");
                    if wit.is_dir() {
                        return Ok(wit);
                    }
                }
            }
        }
        search = &rest[1..];
    }
    Err("spin-sdk 5.2.x not found in `cargo metadata` (is it a workspace dependency?)".into())
}
