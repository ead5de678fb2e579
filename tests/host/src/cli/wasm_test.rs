//! `outpost wasm-test <file.wasm> [args]`: runs a `wasi:cli/run` component
//! (a test binary from `cargo test --target wasm32-wasip2`) on this host's
//! wasmtime and exits with its exit code, so cargo can use the binary as
//! `CARGO_TARGET_WASM32_WASIP2_RUNNER`.
//!
//! Why not `wasmtime run`: the wasmtime CLI is not installed here, and the
//! test binaries of crates that link spin-sdk import Spin interfaces
//! (`spin:postgres`, `fermyon:spin/variables`) that no plain WASI runtime
//! provides. This runner gives them WASI 0.2 (stdio, env, args, clocks,
//! random; no preopened directory, no sockets) and `wasi:http` with every
//! outgoing request denied, and turns every other import into a function
//! that traps when called: a unit test that touches Postgres or the network
//! inside wasm fails loudly, which is right for a unit test, while the pure
//! logic runs exactly as it does in a deployed component.
//!
//! Why not wasmtime's `Linker::define_unknown_imports_as_traps`: a Rust test
//! binary imports WASI at two versions at once (`wasi:io/error@0.2.0` from
//! std's adapter and `@0.2.12` from the `wasi` crate). The linker serves
//! both through semver matching, but that helper looks names up exactly,
//! stubs the second version's resources with a different type, and
//! instantiation fails with "mismatched resource types". So only imports
//! outside the WASI packages this runner provides are stubbed.

use std::future::Future;
use std::path::Path;

use anyhow::bail;
use wasmtime::Store;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceTable, ResourceType};
use wasmtime::error::Context as _;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// The exit code of a guest that trapped (a panic is an abort on
/// `wasm32-wasip2`, so every failing assertion ends here): 101, what a
/// native test binary exits with when a test fails.
const TRAP_EXIT_CODE: i32 = 101;

/// The WASI packages `wasmtime_wasi::p2` and `wasmtime_wasi_http::p2`
/// provide; imports of any other package are stubbed with traps.
const PROVIDED: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:http/",
];

struct RunnerState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: DenyAllRequests,
}

impl WasiView for RunnerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunnerState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Unit tests do not reach the network: every outgoing request is
/// `HTTP-request-denied`, the error Spin gives a host the manifest does not
/// allow.
struct DenyAllRequests;

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

impl WasiHttpHooks for DenyAllRequests {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        eprintln!(
            "outpost wasm-test: denied an outgoing request to {} (unit tests inside wasm have no network)",
            request.uri()
        );
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

/// Defines every import of `component` outside [`PROVIDED`] as functions
/// that trap when called (resources as an opaque host type).
fn stub_unprovided_imports(
    linker: &mut Linker<RunnerState>,
    component: &Component,
) -> anyhow::Result<()> {
    let engine = component.engine();
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        if PROVIDED.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        stub_item(&mut linker.root(), name, name, &import.ty, engine)?;
    }
    Ok(())
}

fn stub_item(
    linker: &mut LinkerInstance<'_, RunnerState>,
    name: &str,
    path: &str,
    item: &ComponentItem,
    engine: &wasmtime::Engine,
) -> anyhow::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let path = path.to_string();
            linker.func_new(name, move |_, _, _, _| {
                wasmtime::bail!(
                    "outpost wasm-test: `{path}` was called, but unit tests inside wasm have no Spin host (no Postgres, no variables)"
                )
            })?;
        }
        ComponentItem::ComponentInstance(instance) => {
            let mut inner = linker.instance(name)?;
            for (export, ext) in instance.exports(engine) {
                stub_item(
                    &mut inner,
                    export,
                    &format!("{path}#{export}"),
                    &ext.ty,
                    engine,
                )?;
            }
        }
        ComponentItem::Resource(_) => {
            linker.resource(name, ResourceType::host::<()>(), |_, _| Ok(()))?;
        }
        // Types need no definition; modules and components are never
        // imported by a Rust test binary.
        ComponentItem::Type(_) => {}
        other => bail!("outpost wasm-test: cannot stub the import {path} ({other:?})"),
    }
    Ok(())
}

/// Runs `args[0]` (a component file) with `args[1..]` as its arguments and
/// exits the process with the guest's exit code when it is not 0.
pub(super) async fn main(args: &[String]) -> anyhow::Result<()> {
    let Some((file, guest_args)) = args.split_first() else {
        bail!("wasm-test needs a .wasm file\n\n{}", super::USAGE);
    };
    let code = run(Path::new(file), guest_args).await?;
    if code != 0 {
        // Output is written straight through (inherited stdio), so nothing
        // is left to flush; cargo reads only the exit code.
        std::process::exit(code);
    }
    Ok(())
}

/// Runs one command component and returns its exit code: 0 for `Ok`, the
/// code the guest passed to `exit`, or [`TRAP_EXIT_CODE`] after a trap
/// (the trap and its wasm backtrace are printed to stderr).
pub async fn run(file: &Path, guest_args: &[String]) -> anyhow::Result<i32> {
    // The host's engine: its compilation cache makes a second run of an
    // unchanged test binary start at once.
    let engine = crate::runtime::engine()?;
    let component = Component::from_file(engine, file)
        .with_context(|| format!("loading {}", file.display()))?;
    let mut linker = Linker::<RunnerState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    stub_unprovided_imports(&mut linker, &component)?;

    // argv[0] is the program name, as a native test binary sees it.
    let program = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string());
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio()
        .inherit_env()
        .arg(&program)
        .args(guest_args);
    let mut store = Store::new(
        engine,
        RunnerState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: DenyAllRequests,
        },
    );
    let command = Command::instantiate_async(&mut store, &component, &linker)
        .await
        .with_context(|| format!("instantiating {}", file.display()))?;
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Ok(0),
        // `wasi:cli/run` returned `err`: the guest's `main` failed without
        // a code of its own.
        Ok(Err(())) => Ok(1),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => {
                eprintln!("{program}: trapped: {e:?}");
                Ok(TRAP_EXIT_CODE)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `wasi:cli/run` command whose `run` does `body` (core wasm
    /// instructions); it may call `$exit` (`wasi:cli/exit`) and `$query`
    /// (an import of `spin:postgres`, which this runner does not provide).
    /// Like a Rust test binary, it imports WASI at versions other than the
    /// ones wasmtime-wasi names (one resource at two versions, `exit` at
    /// 0.2.0): `define_unknown_imports_as_traps` would stub those over with
    /// traps (the `exit` case then exits 101, not 1).
    fn command(body: &str) -> String {
        format!(
            r#"(component
  (import "wasi:io/error@0.2.0" (instance (export "error" (type (sub resource)))))
  (import "wasi:io/error@0.2.12" (instance (export "error" (type (sub resource)))))
  (import "wasi:cli/exit@0.2.0" (instance $exit_i
    (export "exit" (func (param "status" (result))))))
  (import "spin:postgres/postgres@4.0.0" (instance $pg_i
    (export "query-stub" (func (param "n" u32) (result u32)))))
  (core func $exit_l (canon lower (func $exit_i "exit")))
  (core func $query_l (canon lower (func $pg_i "query-stub")))
  (core module $m
    (import "host" "exit" (func $exit (param i32)))
    (import "host" "query" (func $query (param i32) (result i32)))
    (func (export "run") (result i32) {body}))
  (core instance $host (export "exit" (func $exit_l)) (export "query" (func $query_l)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run_i (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run_i)))"#
        )
    }

    async fn exit_code(name: &str, body: &str) -> anyhow::Result<i32> {
        let dir =
            std::env::temp_dir().join(format!("outpost-wasm-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Component::from_file takes the text format as well.
        let file = dir.join(format!("{name}.wat"));
        std::fs::write(&file, command(body))?;
        let result = run(&file, &[]).await;
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    #[tokio::test]
    async fn exit_codes_follow_the_guest() -> anyhow::Result<()> {
        // `run` returning ok (0), returning err (1), exiting with err (1).
        assert_eq!(exit_code("ok", "i32.const 0").await?, 0);
        assert_eq!(exit_code("err", "i32.const 1").await?, 1);
        assert_eq!(
            exit_code("exit", "i32.const 1 call $exit i32.const 0").await?,
            1
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_trap_is_a_failure_not_an_error() -> anyhow::Result<()> {
        // A panic on wasm32-wasip2 is an abort: an `unreachable` trap.
        assert_eq!(exit_code("trap", "unreachable").await?, TRAP_EXIT_CODE);
        Ok(())
    }

    #[tokio::test]
    async fn unknown_imports_instantiate_and_trap_when_called() -> anyhow::Result<()> {
        // Instantiates although nothing provides spin:postgres...
        assert_eq!(exit_code("unused", "i32.const 0").await?, 0);
        // ...and calling it is a trap, not a quiet default value.
        assert_eq!(
            exit_code("called", "i32.const 7 call $query drop i32.const 0").await?,
            TRAP_EXIT_CODE
        );
        Ok(())
    }
}
