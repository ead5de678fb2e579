//! One loaded application: manifest, resolved variables, compiled
//! components, routes and cron schedules; and how a request or a cron tick
//! reaches a component.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::cron::{CronFailure, now_seconds, parse_expression};
use crate::cron_bindings::fermyon::spin_cron::cron_types;
use crate::error::HostError;
use crate::manifest::{LoadedManifest, RouteConfig, StaticResponse};
use crate::pg_tls::RootCertificate;
use crate::postgres::PgPools;
use crate::routes::{RouteMatch, Router, Target, WELL_KNOWN_PREFIX};
use crate::runtime::{ACCEPTED_HTTP_EXPORTS, ComponentContext, compile, new_store};
use crate::server::RunningServer;
use crate::variables::{VariableSources, render, resolve_app_variables};

/// How to load an application.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The `spin.toml` to load.
    pub manifest: PathBuf,
    /// Variable providers besides the manifest defaults.
    pub variables: VariableSources,
    /// Fail any `query` that does not return exactly one row holding one
    /// jsonb value (Outpost's house rule).
    pub strict_single_jsonb: bool,
    /// Run the cron schedules while serving.
    pub cron_scheduler: bool,
    /// Load only these components, like `spin up -c <id>`: triggers of other
    /// components are left out (and chaining to them fails). `None` loads all.
    pub components: Option<Vec<String>>,
    /// A PEM root certificate every component's Postgres TLS connections
    /// trust besides the system roots (see [`crate::pg_tls`]).
    pub pg_root_cert: Option<PathBuf>,
}

impl HostConfig {
    /// Defaults: process environment, strict jsonb on, scheduler off.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            variables: VariableSources::default(),
            strict_single_jsonb: true,
            cron_scheduler: false,
            components: None,
            pg_root_cert: None,
        }
    }
}

/// A loaded application, ready to serve. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

/// The shared state behind [`App`].
pub struct AppInner {
    name: String,
    version: Option<String>,
    components: BTreeMap<String, Arc<ComponentContext>>,
    router: Router,
    static_responses: BTreeMap<usize, StaticResponse>,
    chainable: BTreeSet<String>,
    cron: Vec<(String, croner::Cron)>,
    variables: BTreeMap<String, String>,
    strict_single_jsonb: bool,
    cron_scheduler: bool,
}

/// A component that passed the start-up checks, not yet compiled.
struct PreparedComponent {
    source: PathBuf,
    variables: BTreeMap<String, String>,
    environment: Vec<(String, String)>,
    allowed_hosts: AllowedHosts,
}

/// An application that passed every start-up check that needs no compiled
/// code: the manifest, component selection, Spin's host requirements per
/// trigger, variables, templates, allow-lists, routes and cron expressions.
/// [`App::load`] compiles it; [`App::check`] stops here.
pub struct Prepared {
    name: String,
    version: Option<String>,
    router: Router,
    static_responses: BTreeMap<usize, StaticResponse>,
    http_components: BTreeSet<String>,
    cron_components: BTreeSet<String>,
    cron: Vec<(String, croner::Cron)>,
    values: BTreeMap<String, String>,
    components: BTreeMap<String, PreparedComponent>,
    pg_root: Option<RootCertificate>,
}

impl Prepared {
    /// The IDs of the components that would be served.
    pub fn component_ids(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(String::as_str)
    }
}

impl App {
    /// Runs every start-up check that needs no compiled code (see
    /// [`Prepared`]), so a manifest can be vetted without its `.wasm` files.
    pub fn check(config: &HostConfig) -> Result<Prepared, HostError> {
        let mut loaded = LoadedManifest::load(&config.manifest)?;
        if let Some(selected) = &config.components {
            for id in selected {
                if !loaded.manifest.component.contains_key(id) {
                    return Err(HostError::NoSuchComponent(format!(
                        "component {id:?} is not in the manifest"
                    )));
                }
            }
            let keep = |id: &str| selected.iter().any(|s| s == id);
            let m = &mut loaded.manifest;
            m.trigger.http.retain(|t| t.component_id().is_none_or(keep));
            m.trigger.cron.retain(|t| keep(&t.component));
        }
        let m = &loaded.manifest;
        // Spin's triggers check their components' host requirements before
        // anything else of theirs runs, and one refusal stops the app.
        crate::requirements::check(m)?;
        let values = resolve_app_variables(m, &config.variables)?;

        let mut cron = Vec::new();
        for t in &m.trigger.cron {
            cron.push((
                t.component.clone(),
                parse_expression(&t.component, &t.cron_expression)?,
            ));
        }
        let (router, warnings) =
            Router::build(&m.trigger.http).map_err(|message| HostError::Manifest {
                path: loaded.path.clone(),
                message,
            })?;
        for w in warnings {
            eprintln!("outpost-host: {w}");
        }

        let mut http_components = BTreeSet::new();
        let mut static_responses = BTreeMap::new();
        for (i, t) in m.trigger.http.iter().enumerate() {
            match t.component_id() {
                Some(id) => {
                    http_components.insert(id.to_string());
                }
                None => {
                    if let (Some(s), RouteConfig::Route(_)) = (&t.static_response, &t.route) {
                        static_responses.insert(i, s.clone());
                    }
                }
            }
        }
        let cron_components: BTreeSet<String> =
            m.trigger.cron.iter().map(|t| t.component.clone()).collect();

        let mut components = BTreeMap::new();
        for id in http_components.union(&cron_components) {
            let Some(def) = m.component.get(id) else {
                continue;
            };
            let mut variables = BTreeMap::new();
            for (key, template) in &def.variables {
                variables.insert(key.clone(), render(template, &values)?);
            }
            let mut hosts = Vec::new();
            for entry in &def.allowed_outbound_hosts {
                hosts.push(render(entry, &values)?);
            }
            for entry in &def.allowed_http_hosts {
                // The deprecated form: a bare host means http and https.
                if entry == "insecure:allow-all" {
                    hosts.push("*://*:*".into());
                } else if entry.contains("://") {
                    hosts.push(render(entry, &values)?);
                } else {
                    let h = render(entry, &values)?;
                    hosts.push(format!("http://{h}"));
                    hosts.push(format!("https://{h}"));
                }
            }
            let allowed_hosts =
                AllowedHosts::parse(&hosts).map_err(|message| HostError::AllowedHost {
                    component: id.clone(),
                    message,
                })?;
            components.insert(
                id.clone(),
                PreparedComponent {
                    source: loaded.source_path(id)?,
                    variables,
                    environment: def
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    allowed_hosts,
                },
            );
        }
        let pg_root = config
            .pg_root_cert
            .as_deref()
            .map(RootCertificate::from_file)
            .transpose()?;

        Ok(Prepared {
            name: m.application.name.clone(),
            version: m.application.version.clone(),
            router,
            static_responses,
            http_components,
            cron_components,
            cron,
            values,
            components,
            pg_root,
        })
    }

    /// Loads, validates and compiles an application. Errors are start-up
    /// errors: bad manifest, host requirements a trigger does not support,
    /// missing required variables, bad templates, allow-lists or cron
    /// expressions, an unreadable Postgres root certificate, components that
    /// do not compile or do not export what their triggers need.
    pub async fn load(config: HostConfig) -> Result<Self, HostError> {
        let prepared = Self::check(&config)?;
        let mut components = BTreeMap::new();
        for (id, c) in prepared.components {
            let compiled = {
                let id = id.clone();
                let path = c.source.clone();
                tokio::task::spawn_blocking(move || compile(&id, &path))
                    .await
                    .map_err(|e| HostError::Wasmtime(e.to_string()))??
            };
            let err = |message: String| HostError::Component {
                component: id.clone(),
                message,
            };
            let served_by_http = prepared.http_components.contains(&id);
            if served_by_http && compiled.proxy.is_none() {
                return Err(err(format!(
                    "Expected component to export one of {ACCEPTED_HTTP_EXPORTS}; it exports {:?}",
                    compiled.other_http_exports
                )));
            }
            if served_by_http && !compiled.other_http_exports.is_empty() {
                return Err(err(format!(
                    "component exports multiple different handlers: wasi:http/incoming-handler@0.2.* and {:?}",
                    compiled.other_http_exports
                )));
            }
            if prepared.cron_components.contains(&id) && compiled.cron.is_none() {
                return Err(err(
                    "has a [[trigger.cron]] but does not export the world fermyon:spin-cron@2.0.0/spin-cron (handle-cron-event)".into(),
                ));
            }
            components.insert(
                id.clone(),
                Arc::new(ComponentContext {
                    id: id.clone(),
                    variables: c.variables,
                    environment: c.environment,
                    allowed_hosts: c.allowed_hosts,
                    pg_pools: PgPools::new(prepared.pg_root.clone()),
                    compiled,
                }),
            );
        }

        Ok(Self {
            inner: Arc::new(AppInner {
                name: prepared.name,
                version: prepared.version,
                components,
                router: prepared.router,
                static_responses: prepared.static_responses,
                chainable: prepared.http_components,
                cron: prepared.cron,
                variables: prepared.values,
                strict_single_jsonb: config.strict_single_jsonb,
                cron_scheduler: config.cron_scheduler,
            }),
        })
    }

    /// Serves on `listener` (and runs the cron schedules if configured).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<RunningServer, HostError> {
        let scheduler = self
            .inner
            .cron_scheduler
            .then(|| crate::cron::spawn_scheduler(self.inner.clone()));
        Ok(crate::server::start(
            self.inner.clone(),
            listener,
            scheduler,
        )?)
    }

    /// Fires a cron component now, as a tick of its schedule would.
    pub async fn fire_cron(&self, component: &str) -> Result<(), CronFailure> {
        self.inner.fire_cron(component).await
    }

    /// A resolved application variable.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.inner.variables.get(name).map(String::as_str)
    }

    /// A component's resolved variables (what its guest can read).
    pub fn component_variables(&self, component: &str) -> Option<&BTreeMap<String, String>> {
        self.inner.components.get(component).map(|c| &c.variables)
    }

    /// The IDs of the loaded components.
    pub fn component_ids(&self) -> impl Iterator<Item = &str> {
        self.inner.components.keys().map(String::as_str)
    }

    /// Closes every Postgres pool, so no idle connection outlives the app.
    pub fn close(&self) {
        for c in self.inner.components.values() {
            c.pg_pools.close();
        }
    }

    /// Average time to create a store and instantiate `component` (from its
    /// pre-instantiated form) over `iterations` runs: the per-request cost.
    pub async fn measure_instantiation(
        &self,
        component: &str,
        iterations: u32,
    ) -> Result<Duration, HostError> {
        let comp = self.inner.component(component)?;
        let weak = Arc::downgrade(&self.inner);
        let start = Instant::now();
        for _ in 0..iterations {
            let mut store = new_store(&comp, weak.clone(), self.inner.strict_single_jsonb)?;
            comp.compiled
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(HostError::wasmtime)?;
        }
        Ok(start.elapsed() / iterations.max(1))
    }
}

fn empty() -> HyperOutgoingBody {
    full(Bytes::new())
}

fn full(bytes: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn status(code: u16) -> http::Response<HyperOutgoingBody> {
    let mut r = http::Response::new(empty());
    *r.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

impl AppInner {
    fn component(&self, id: &str) -> Result<Arc<ComponentContext>, HostError> {
        self.components.get(id).cloned().ok_or_else(|| {
            HostError::NoSuchComponent(format!("no component {id:?} in the application"))
        })
    }

    pub(crate) fn cron_schedules(&self) -> Vec<(String, croner::Cron)> {
        self.cron.clone()
    }

    /// Answers one incoming request.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: hyper::Request<crate::drain::DrainOnDrop>,
        client: SocketAddr,
    ) -> http::Response<HyperOutgoingBody> {
        let path = req.uri().path().to_string();
        if path.starts_with(WELL_KNOWN_PREFIX) {
            return self.well_known(&path);
        }
        let host = match req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
        {
            Some(h) => h,
            None => return status(400),
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let full_url = format!("http://{host}{path_and_query}");
        let Some(m) = self.router.route(&path) else {
            return status(404);
        };
        match &m.target {
            Target::Static(i) => self.static_response(*i),
            Target::Component(id) => {
                let headers = m.spin_headers(&full_url, &client.to_string());
                let (mut parts, body) = req.into_parts();
                parts.uri = match http::Uri::try_from(full_url.as_str()) {
                    Ok(u) => u,
                    Err(_) => return status(400),
                };
                let req = http::Request::from_parts(parts, body);
                self.run_http(id, req, headers).await
            }
        }
    }

    fn well_known(&self, path: &str) -> http::Response<HyperOutgoingBody> {
        match path.strip_prefix(WELL_KNOWN_PREFIX) {
            Some("health") => http::Response::new(full("OK")),
            Some("info") => {
                let mut info = serde_json::Map::new();
                info.insert("name".into(), self.name.clone().into());
                if let Some(v) = &self.version {
                    info.insert("version".into(), v.clone().into());
                }
                let body = serde_json::to_string_pretty(&info).unwrap_or_default();
                let mut r = http::Response::new(full(body));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
            _ => status(404),
        }
    }

    fn static_response(&self, index: usize) -> http::Response<HyperOutgoingBody> {
        let Some(s) = self.static_responses.get(&index) else {
            return status(500);
        };
        let mut r = status(s.status_code.unwrap_or(200));
        *r.body_mut() = full(s.body.clone().unwrap_or_default());
        for (k, v) in &s.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k.as_str()),
                http::HeaderValue::try_from(v.as_str()),
            ) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }

    /// Service chaining: `http://<target>.spin.internal/...` from a component.
    pub(crate) async fn handle_chained(
        self: Arc<Self>,
        target: &str,
        req: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, wasmtime_wasi_http::Error> {
        if !self.chainable.contains(target) {
            eprintln!(
                "outpost-host: service chaining to unknown component {target:?} (it needs an HTTP trigger; `route = {{ private = true }}` is enough)"
            );
            return Err(wasmtime_wasi_http::Error::InternalError(Some(format!(
                "unknown service chaining target {target:?}"
            ))));
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let path = req.uri().path().to_string();
        let full_url = format!("http://{target}.spin.internal{path_and_query}");
        let headers = RouteMatch::chained(target, &path).spin_headers(&full_url, "0.0.0.0:0");
        Ok(self.run_http(target, req, headers).await)
    }

    /// Runs one request through a fresh instance of `id`. Any failure before
    /// a response is a 500 with an empty body, as in Spin.
    async fn run_http<B>(
        self: Arc<Self>,
        id: &str,
        req: http::Request<B>,
        spin_headers: BTreeMap<String, String>,
    ) -> http::Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        match self.clone().try_run_http(id, req, spin_headers).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("outpost-host: Error processing request for component {id:?}: {e}");
                status(500)
            }
        }
    }

    async fn try_run_http<B>(
        self: Arc<Self>,
        id: &str,
        req: http::Request<B>,
        spin_headers: BTreeMap<String, String>,
    ) -> Result<http::Response<HyperOutgoingBody>, String>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let comp = self.component(id).map_err(|e| e.to_string())?;
        let proxy = comp
            .compiled
            .proxy
            .clone()
            .ok_or_else(|| format!("component {id:?} has no HTTP handler"))?;
        let (mut parts, body) = req.into_parts();
        for (k, v) in spin_headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k.as_str()),
                http::HeaderValue::try_from(v.as_str()),
            ) {
                parts.headers.insert(k, v);
            }
        }
        let req = http::Request::from_parts(parts, body);
        let mut store = new_store(&comp, Arc::downgrade(&self), self.strict_single_jsonb)
            .map_err(|e| e.to_string())?;
        let wasi_req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| format!("{e:?}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| format!("{e:?}"))?;
        let task = tokio::spawn(async move {
            let proxy = proxy.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, wasi_req, out)
                .await
        });
        match rx.await {
            Ok(Ok(response)) => {
                let id = id.to_string();
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => eprintln!(
                            "outpost-host: component {id:?} failed after sending its response: {e:?}"
                        ),
                        Err(e) => eprintln!("outpost-host: component {id:?} task failed: {e}"),
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => Err(format!("component set an error response: {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err("component returned without setting a response".into()),
                Ok(Err(e)) => Err(format!("component trapped: {e:?}")),
                Err(e) => Err(format!("component task failed: {e}")),
            },
        }
    }

    /// One cron tick for `component`.
    pub(crate) async fn fire_cron(self: &Arc<Self>, component: &str) -> Result<(), CronFailure> {
        if !self.cron.iter().any(|(c, _)| c == component) {
            return Err(CronFailure::NotCron(format!(
                "component {component:?} has no [[trigger.cron]]"
            )));
        }
        let comp = self
            .component(component)
            .map_err(|e| CronFailure::NotCron(e.to_string()))?;
        let Some(pre) = comp.compiled.cron.clone() else {
            return Err(CronFailure::NotCron(format!(
                "component {component:?} does not export handle-cron-event"
            )));
        };
        let mut store = new_store(&comp, Arc::downgrade(self), self.strict_single_jsonb)
            .map_err(|e| CronFailure::Trap(e.to_string()))?;
        let metadata = cron_types::Metadata {
            timestamp: now_seconds(),
        };
        // Run in its own task so a trap cannot take the caller down with it.
        let result = tokio::spawn(async move {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_handle_cron_event(&mut store, metadata).await
        })
        .await
        .map_err(|e| CronFailure::Trap(e.to_string()))?;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cron_types::Error::Other(message))) => Err(CronFailure::Guest(message)),
            Err(e) => Err(CronFailure::Trap(format!("{e:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's manifest with only its required variables given
    /// (placeholders, as `outpost up` fills them in); everything else keeps
    /// its default.
    fn product_config(manifest: PathBuf) -> HostConfig {
        let mut config = HostConfig::new(manifest);
        config.variables = VariableSources {
            overrides: [
                ("database_url", "postgres://outpost@127.0.0.1:5432/outpost"),
                ("database_address", "postgres://127.0.0.1:5432"),
                ("job_secret", "a-placeholder-job-secret"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            env: Some(BTreeMap::new()),
        };
        config
    }

    #[test]
    fn the_repository_spin_toml_passes_every_start_up_check() {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spin.toml");
        let prepared = match App::check(&product_config(manifest)) {
            Ok(p) => p,
            Err(e) => panic!("spin.toml would not start: {e}"),
        };
        // Every component with a trigger is vetted, none skipped.
        assert!(prepared.component_ids().any(|id| id == "status"));
        assert!(prepared.component_ids().count() >= 10);
    }

    #[test]
    fn a_refused_manifest_is_refused_before_any_wasm_is_read() {
        let dir = std::env::temp_dir().join(format!("outpost-req-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("spin.toml");
        std::fs::write(
            &manifest,
            r#"
spin_manifest_version = 2
[application]
name = "t"
[[trigger.cron]]
component = "claim"
cron_expression = "0 * * * * *"
[[trigger.http]]
route = { private = true }
component = "publish"
[component.claim]
source = "missing-claim.wasm"
allowed_outbound_hosts = ["http://publish.spin.internal"]
[component.publish]
source = "missing-publish.wasm"
"#,
        )
        .unwrap();
        let e = App::check(&HostConfig::new(&manifest))
            .err()
            .map(|e| e.to_string());
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            e.as_deref(),
            Some(
                "This application requires the following features that are not available in this version of the 'cron' trigger: local_service_chaining"
            )
        );
    }
}
