//! Outbound HTTP through `wasi:http/outgoing-handler` (SPIN.md §4): every
//! request is checked against the component's `allowed_outbound_hosts`; a
//! denied one fails with `HTTP-request-denied` (and Spin's log lines), never
//! touching the network. `http://<id>.spin.internal/...` is dispatched
//! in-process to that component (service chaining), with Spin's synthetic
//! route headers. Everything else goes out through wasmtime-wasi-http's
//! default client.

use std::future::Future;
use std::sync::{Arc, Weak};

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::{OutboundUrl, service_chaining_target};
use crate::app::AppInner;
use crate::runtime::ComponentContext;

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

/// The `wasi:http` hooks of one instance.
pub struct OutboundHooks {
    component: Arc<ComponentContext>,
    app: Weak<AppInner>,
}

impl OutboundHooks {
    /// Hooks for an instance of `component` in `app`.
    pub fn new(component: Arc<ComponentContext>, app: Weak<AppInner>) -> Self {
        Self { component, app }
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let component = self.component.clone();
        let app = self.app.clone();
        Box::new(async move {
            let uri = request.uri().to_string();
            let Some(url) = OutboundUrl::parse(&uri, "https") else {
                return Err(HttpError::HttpRequestUriInvalid);
            };
            if !component
                .allowed_hosts
                .allows(&url.scheme, &url.host, url.port)
            {
                let origin = url.origin();
                eprintln!(
                    "outpost-host: ERROR: Outbound network destination not allowed: {origin}\n\
                     Warning: A component tried to make an outbound network connection to disallowed destination '{origin}'.\n\
                     To allow this request, add 'allowed_outbound_hosts = [\"{origin}\"]' to the manifest component section.\n\
                     (component {:?})",
                    component.id
                );
                return Err(HttpError::HttpRequestDenied);
            }
            if let Some(target) = service_chaining_target(&url.host) {
                let Some(app) = app.upgrade() else {
                    return Err(HttpError::InternalError(Some(
                        "the application is shutting down".into(),
                    )));
                };
                let response = app.handle_chained(target, request).await?;
                let io: IoFuture = Box::new(async { Ok(()) });
                return Ok((response, io));
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let response = response.map(http_body_util::BodyExt::boxed_unsync);
            let io: IoFuture = Box::new(io);
            Ok((response, io))
        })
    }
}
