//! How Fanout's components listen.
//!
//! Owns: the accept loop every HTTP listener uses (HTTP/1.1 and HTTP/2 on
//! one port, each with a server of its own for the requests that matter
//! most and hyper for the rest of HTTP/1.1, over TCP or TLS, a connection cap, back-off on accept errors, graceful drain on
//! shutdown), the admin listener with `/healthz`, `/readyz` and `/metrics`,
//! the body type responses are built from, and the HTTP message rules every
//! forwarding component shares (hop-by-hop headers, HTTP-dates and
//! delta-seconds ([`time_fields`]), conditional requests
//! and byte ranges), the pooled client for sites' origins (used by cache
//! nodes for fills and by proxies when they fail open), and the refusal of malformed and smuggling-shaped
//! requests on every listener.
//! Also the registry through which components in one process reach each
//! other without a socket ([`in_process`]), and the framing of HTTP/1.1
//! response bodies for the clients that read them from a socket
//! ([`h1_body`]), and large bodies kept in memory files that plain TCP
//! connections send with `sendfile` ([`memory_file`]), and the socket
//! options of accepted connections, send buffers sized by path length
//! ([`socket_tuning`]).
//!
//! Does not own: what any request means. Components hand it a service.
//! Metrics are rendered from the Prometheus default registry, which the
//! binary connects to the OpenTelemetry SDK; this crate never configures
//! telemetry.

mod admin;
mod body;
pub mod conditional;
mod framing;
mod h1;
pub mod h1_body;
pub mod h2;
mod hop;
pub mod in_process;
pub mod interim;
mod listener;
pub mod memory_file;
pub mod origin;
pub mod overload;
mod request_body;
pub mod socket_tuning;
pub mod time_fields;
pub mod tls;
pub mod trace;

pub use admin::{metrics, serve_admin, AdminRoutes, Readiness};
pub use body::{empty, full, text, BoxError, ResponseBody};
pub use hop::remove_hop_by_hop;
pub use listener::{bind, serve, ConnInfo, ServeOptions};
pub use request_body::{caused_by_client_body, ClientBodyError, RequestBody};
