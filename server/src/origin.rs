//! Requests to a site's origin pool: one pooled client per site (so each
//! site's connect timeout and trust apply), addresses taken round-robin,
//! the response-header timeout named by the site, and a cap on the origin
//! requests the component has open. https origins are verified against the
//! system's CA certificates plus the site's `ca_file`, with SNI from the
//! address's host name, and HTTP/2 is used when the origin offers it (ALPN).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::{remove_hop_by_hop, ResponseBody};
use fanout_config::{ClusterConfig, HostPort, Scheme, Site};
use http::{header, HeaderMap, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("every origin request slot stayed busy for {timeout:?}")]
    Busy { timeout: Duration },
    #[error("origin {address} did not send response headers within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("origin {address}: {source}")]
    Failed {
        address: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("site {site} has no origin pool (it was removed by a config change)")]
    UnknownSite { site: String },
    #[error("request to origin {address} could not be built: {source}")]
    BadRequest {
        address: String,
        source: http::Error,
    },
}

struct Pool {
    client: Client<HttpsConnector<HttpConnector>, ResponseBody>,
    scheme: Scheme,
    addresses: Vec<HostPort>,
    next: AtomicUsize,
    response_timeout: Duration,
    host_header: Option<HeaderValue>,
}

pub struct Origins {
    pools: HashMap<String, Pool>,
    /// Origin requests this component may have open at once.
    open: Arc<Semaphore>,
    max_open: usize,
    /// At the cap, wait for a slot (up to the site's response timeout)
    /// rather than fail at once.
    queue: bool,
}

/// An origin response and its place among the open origin requests,
/// which it holds until dropped: keep it as long as the body is read.
pub struct OriginResponse {
    pub response: Response<Incoming>,
    pub permit: OwnedSemaphorePermit,
}

/// An origin pool that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OriginSetupError {
    #[error("site {site}: ca_file {}: {source}", file.display())]
    CaFile {
        site: String,
        file: std::path::PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("site {site}: https origin with no trusted CA certificates (the system has none; set ca_file)")]
    NoTrust { site: String },
}

/// The system's CA certificates, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(
                errors = found.errors.len(),
                "some system CA certificates could not be read"
            );
        }
        found.certs
    })
}

fn tls_config(site: &Site) -> Result<rustls::ClientConfig, OriginSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    if site.origin.scheme == Scheme::Https {
        roots.add_parsable_certificates(system_roots().iter().cloned());
        if let Some(file) = &site.origin.ca_file {
            let err = |source| OriginSetupError::CaFile {
                site: site.name.clone(),
                file: file.clone(),
                source,
            };
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            roots.add_parsable_certificates(certs);
        }
        if roots.is_empty() {
            return Err(OriginSetupError::NoTrust {
                site: site.name.clone(),
            });
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Origins {
    pub fn new(cluster: &ClusterConfig, max_open: u32) -> Result<Origins, OriginSetupError> {
        let mut pools = HashMap::new();
        for site in &cluster.sites {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(site.origin.connect_timeout.get()));
            connector.set_nodelay(true);
            // The connector must see https:// URIs to do TLS.
            connector.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(site)?)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
            pools.insert(
                site.name.clone(),
                Pool {
                    client,
                    scheme: site.origin.scheme,
                    addresses: site.origin.addresses.clone(),
                    next: AtomicUsize::new(0),
                    response_timeout: site.origin.response_timeout.get(),
                    host_header: site
                        .origin
                        .host_header
                        .as_deref()
                        .and_then(|h| HeaderValue::from_str(h).ok()),
                },
            );
        }
        Ok(Origins {
            pools,
            open: Arc::new(Semaphore::new(max_open as usize)),
            max_open: max_open as usize,
            queue: true,
        })
    }

    /// Whether at least one in `share` of the origin slots is free: work
    /// that must not compete with clients' (prefetch) starts only then.
    pub fn has_spare(&self, share: usize) -> bool {
        self.open.available_permits() * share >= self.max_open
    }

    /// At the cap, fail with [`FetchError::Busy`] at once instead of
    /// queueing: for callers that would rather refuse than pile up.
    pub fn without_queue(mut self) -> Origins {
        self.queue = false;
        self
    }

    /// Sends `method path_and_query` with the client's end-to-end headers to
    /// the next origin of the site's pool. The fields of each 103 Early
    /// Hints the origin sends before its response go to `hints` (HTTP/1.1
    /// origins; see [`crate::interim`]).
    pub async fn fetch(
        &self,
        site: &Site,
        method: http::Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
        body: ResponseBody,
        hints: Option<crate::interim::HintSink>,
    ) -> Result<OriginResponse, FetchError> {
        let request = (method, path_and_query, client_headers, body);
        self.fetch_held(site, request, hints, Duration::ZERO).await
    }

    /// [`Origins::fetch`] of a request the origin may hold for up to
    /// `hold` before it answers, on top of the site's response timeout:
    /// an LL-HLS blocking playlist reload (RFC 8216bis §6.2.5.2).
    pub async fn fetch_held(
        &self,
        site: &Site,
        (method, path_and_query, client_headers, body): (
            http::Method,
            &str,
            &HeaderMap,
            ResponseBody,
        ),
        hints: Option<crate::interim::HintSink>,
        hold: Duration,
    ) -> Result<OriginResponse, FetchError> {
        let Some(pool) = self.pools.get(&site.name) else {
            return Err(FetchError::UnknownSite {
                site: site.name.clone(),
            });
        };
        // At the cap, wait for a turn, but no longer than the origin itself
        // would be given to answer.
        let permit = if self.queue {
            let wait =
                tokio::time::timeout(pool.response_timeout, self.open.clone().acquire_owned());
            wait.await.ok().and_then(Result::ok)
        } else {
            self.open.clone().try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            return Err(FetchError::Busy {
                timeout: if self.queue {
                    pool.response_timeout
                } else {
                    Duration::ZERO
                },
            });
        };
        let address =
            &pool.addresses[pool.next.fetch_add(1, Ordering::Relaxed) % pool.addresses.len()];
        let uri: Result<Uri, _> = format!("{}://{address}{path_and_query}", pool.scheme).parse();
        let mut builder = Request::builder().method(method);
        if let Ok(uri) = uri {
            builder = builder.uri(uri);
        }
        let mut req = builder
            .body(body)
            .map_err(|source| FetchError::BadRequest {
                address: address.to_string(),
                source,
            })?;
        if let Some(hints) = hints {
            hyper::ext::on_informational(&mut req, move |interim| {
                if interim.status() == http::StatusCode::EARLY_HINTS {
                    hints(interim.headers().clone());
                }
            });
        }
        let headers = req.headers_mut();
        headers.clone_from(client_headers);
        remove_hop_by_hop(headers);
        if let Some(h) = &pool.host_header {
            headers.insert(header::HOST, h.clone());
        }
        let timeout = pool.response_timeout + hold;
        match tokio::time::timeout(timeout, pool.client.request(req)).await {
            Err(_) => Err(FetchError::Timeout {
                address: address.to_string(),
                timeout,
            }),
            Ok(Err(source)) => Err(FetchError::Failed {
                address: address.to_string(),
                source,
            }),
            Ok(Ok(response)) => Ok(OriginResponse { response, permit }),
        }
    }
}
