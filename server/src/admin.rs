//! The admin listener each component runs: `/healthz` (the process is up),
//! `/readyz` (it can do its job: listeners bound, config loaded) and
//! `/metrics` (Prometheus text from the default registry).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::request_body::RequestBody;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use prometheus::Encoder;
use tokio_util::sync::CancellationToken;

use crate::body::{full, text, ResponseBody};
use crate::listener::{bind, serve, ServeOptions};

/// Whether a component is ready for traffic; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A component's own admin routes, asked for any path the built-in ones
/// do not answer (it answers 404 for paths it does not know either).
pub type AdminRoutes = Arc<
    dyn Fn(Request<RequestBody>) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
        + Send
        + Sync,
>;

/// Binds `addr` and serves the admin endpoints until `shutdown`.
pub async fn serve_admin(
    what: &str,
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
    routes: Option<AdminRoutes>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = bind(&format!("{what} admin"), addr).await?;
    let options = ServeOptions {
        max_connections: 256,
        ..ServeOptions::default()
    };
    Ok(tokio::spawn(serve(
        listener,
        move |req: Request<RequestBody>, _| {
            let ready = readiness.is_ready();
            let routes = routes.clone();
            async move {
                let read = req.method() == Method::GET || req.method() == Method::HEAD;
                match (read, req.uri().path()) {
                    (true, "/healthz") => text(StatusCode::OK, "ok\n"),
                    (true, "/readyz") if ready => text(StatusCode::OK, "ready\n"),
                    (true, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
                    (true, "/metrics") => metrics(),
                    (false, "/healthz" | "/readyz" | "/metrics") => {
                        text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
                    }
                    _ => match routes {
                        Some(routes) => routes(req).await,
                        None => text(StatusCode::NOT_FOUND, "not found\n"),
                    },
                }
            }
        },
        shutdown,
        options,
    )))
}

/// Prometheus text of every instrument in this process.
pub fn metrics() -> Response<crate::body::ResponseBody> {
    let encoder = prometheus::TextEncoder::new();
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    }
    let mut r = Response::new(full(Bytes::from(out)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
