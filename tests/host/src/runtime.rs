//! The wasmtime side: one process-wide [`Engine`] (pooling allocator, async,
//! component model, on-disk compilation cache), one [`Linker`] holding
//! exactly the interfaces Outpost's components import (WASI 0.2,
//! `wasi:http/outgoing-handler`, `spin:postgres/postgres@4.0.0`,
//! `fermyon:spin/variables@2.0.0`), and a process-wide cache of compiled
//! components and their [`InstancePre`]s keyed by the `.wasm`'s SHA-256, so
//! many hosts in one test process compile each file once. Each request or
//! cron tick gets a fresh [`Store`] and instance, as Spin does for WASIp2.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::app::AppInner;
use crate::cron_bindings::SpinCronPre;
use crate::error::HostError;
use crate::outbound_http::OutboundHooks;
use crate::postgres::PgPools;

/// The export names Spin 4.0.2 accepts as an HTTP handler (SPIN.md §1).
pub const ACCEPTED_HTTP_EXPORTS: &str = "wasi:http/incoming-handler@0.2.*, wasi:http/incoming-handler@0.2.0-rc-2023-10-18, wasi:http/incoming-handler@0.2.0-rc-2023-11-10, wasi:http/handler@0.3.0-rc-2026-03-15, fermyon:spin/inbound-http";

/// A compiled component, shared by every host in the process that loads the
/// same bytes.
pub struct Compiled {
    /// The compiled component.
    pub component: Component,
    /// Pre-instantiated against the host linker.
    pub pre: InstancePre<HostState>,
    /// The `wasi:http/incoming-handler@0.2.*` export, if there is one.
    pub proxy: Option<ProxyPre<HostState>>,
    /// The cron plugin's `handle-cron-event` export, if there is one.
    pub cron: Option<SpinCronPre<HostState>>,
    /// Export names that look like an HTTP handler Spin would reject.
    pub other_http_exports: Vec<String>,
}

/// Everything one component's instances share: its resolved variables, its
/// allow-list and its Postgres pools.
pub struct ComponentContext {
    /// The component ID.
    pub id: String,
    /// Resolved component variables (guests read only these keys).
    pub variables: BTreeMap<String, String>,
    /// `environment` for WASI.
    pub environment: Vec<(String, String)>,
    /// Resolved `allowed_outbound_hosts`.
    pub allowed_hosts: AllowedHosts,
    /// Postgres pools, keyed by connection string (one set per component, as in Spin).
    pub pg_pools: PgPools,
    /// The compiled code.
    pub compiled: Arc<Compiled>,
}

/// The data of one [`Store`]: one request's or one cron tick's instance.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: OutboundHooks,
    pub(crate) component: Arc<ComponentContext>,
    pub(crate) pg_open: usize,
    pub(crate) strict_single_jsonb: bool,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Creates the store for one instance of a component.
pub fn new_store(
    component: &Arc<ComponentContext>,
    app: Weak<AppInner>,
    strict_single_jsonb: bool,
) -> Result<Store<HostState>, HostError> {
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdout().inherit_stderr();
    wasi.envs(&component.environment);
    let state = HostState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: OutboundHooks::new(component.clone(), app),
        component: component.clone(),
        pg_open: 0,
        strict_single_jsonb,
    };
    Ok(Store::new(engine()?, state))
}

/// The process-wide engine.
pub fn engine() -> Result<&'static Engine, HostError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| build_engine().map_err(|e| format!("{e:?}")))
        .as_ref()
        .map_err(|e| HostError::Wasmtime(e.clone()))
}

fn build_engine() -> wasmtime::Result<Engine> {
    // With RUST_BACKTRACE=1 every wasmtime error (several are made and
    // handled on each request) captures a Rust backtrace, halving
    // throughput. Wasm backtraces of traps are unaffected. Set
    // OUTPOST_HOST_BACKTRACE=1 to keep host backtraces.
    if std::env::var_os("OUTPOST_HOST_BACKTRACE").is_none() {
        wasmtime::error::disable_backtrace();
    }
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(1000)
        .total_core_instances(2000)
        .total_memories(1000)
        .total_tables(2000)
        .total_stacks(1000)
        .max_memory_size(512 << 20)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        // How much of a memory is reset with memset instead of madvise.
        .linear_memory_keep_resident(keep_resident())
        // Decommit recycled memories 32 at a time: each madvise on a
        // multi-threaded process costs a TLB shootdown on every core.
        .decommit_batch_size(env_usize("OUTPOST_HOST_DECOMMIT_BATCH", 32))
        .table_keep_resident(1 << 20);
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    // OUTPOST_HOST_PERFMAP=1 writes /tmp/perf-<pid>.map so `perf report`
    // names the components' compiled functions (for profiling only).
    if std::env::var_os("OUTPOST_HOST_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let dir = cache_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        match wasmtime::Cache::new(cache) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(e) => eprintln!("outpost-host: compilation cache disabled: {e:?}"),
        }
    }
    Engine::new(&config)
}

/// Where compiled machine code is cached between runs:
/// `OUTPOST_WASM_CACHE`, else `$CARGO_TARGET_DIR/outpost-wasm-cache`, else the
/// workspace's `target/outpost-wasm-cache`, else a temp folder.
fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("OUTPOST_WASM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("outpost-wasm-cache");
    }
    let workspace_target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    if workspace_target.is_dir() {
        return workspace_target.join("outpost-wasm-cache");
    }
    std::env::temp_dir().join("outpost-wasm-cache")
}

fn linker() -> Result<&'static Linker<HostState>, HostError> {
    static LINKER: OnceLock<Result<Linker<HostState>, String>> = OnceLock::new();
    LINKER
        .get_or_init(|| build_linker().map_err(|e| format!("{e:?}")))
        .as_ref()
        .map_err(|e| HostError::Wasmtime(e.clone()))
}

fn build_linker() -> Result<Linker<HostState>, HostError> {
    let mut linker = Linker::new(engine()?);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(HostError::wasmtime)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(HostError::wasmtime)?;
    crate::bindings::spin::postgres4_0_0::postgres::add_to_linker::<_, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(HostError::wasmtime)?;
    crate::bindings::fermyon::spin2_0_0::variables::add_to_linker::<_, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(HostError::wasmtime)?;
    Ok(linker)
}

type CacheSlot = Arc<OnceLock<Result<Arc<Compiled>, String>>>;

/// Compiles (or takes from the process-wide cache) the component in `path`.
/// Blocking: call it from a blocking thread.
pub fn compile(id: &str, path: &Path) -> Result<Arc<Compiled>, HostError> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], CacheSlot>>> = OnceLock::new();
    let err = |message: String| HostError::Component {
        component: id.to_string(),
        message,
    };
    let bytes =
        std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    let slot = {
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| err("component cache poisoned".into()))?;
        cache.entry(hash).or_default().clone()
    };
    slot.get_or_init(|| compile_uncached(&bytes).map_err(|e| format!("{} ({})", e, path.display())))
        .clone()
        .map_err(err)
}

fn compile_uncached(bytes: &[u8]) -> Result<Arc<Compiled>, String> {
    let engine = engine().map_err(|e| e.to_string())?;
    let component = Component::new(engine, bytes).map_err(|e| format!("{e:?}"))?;
    let pre = linker()
        .map_err(|e| e.to_string())?
        .instantiate_pre(&component)
        .map_err(|e| format!("{e:?}"))?;
    let proxy = ProxyPre::new(pre.clone()).ok();
    let cron = SpinCronPre::new(pre.clone()).ok();
    let ty = component.component_type();
    let other_http_exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| {
            name.starts_with("wasi:http/") || name.starts_with("fermyon:spin/inbound-http")
        })
        .filter(|name| !name.starts_with("wasi:http/incoming-handler@0.2."))
        .collect();
    Ok(Arc::new(Compiled {
        component,
        pre,
        proxy,
        cron,
        other_http_exports,
    }))
}

/// The import and export names of the component in `path`, for checking
/// that a `.wasm` asks for nothing real Spin lacks.
pub fn component_world(path: &Path) -> Result<(Vec<String>, Vec<String>), HostError> {
    let engine = engine()?;
    let id = path.display().to_string();
    let compiled = compile(&id, path)?;
    let ty = compiled.component.component_type();
    let imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    Ok((imports, exports))
}

/// Bytes of each linear memory that are reset with memset rather than
/// madvise when an instance is recycled (`OUTPOST_HOST_KEEP_RESIDENT`,
/// default 0). Measured on 2 cores: memset of the whole accessible memory
/// (about 2 MiB for a Rust component) cost 25-75 µs per request and was the
/// host's top symbol; madvise brought instantiation to about 10 µs and
/// raised `/probe/ok` and `/status` throughput.
fn keep_resident() -> usize {
    env_usize("OUTPOST_HOST_KEEP_RESIDENT", 0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
