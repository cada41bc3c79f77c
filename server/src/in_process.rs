//! Components that share a process (`fanout up`, or one edge box running a
//! proxy and its cache node together) reach each other without a socket.
//!
//! A cache node registers its request handler under its listen address; a
//! proxy that would send a request to that address calls the handler
//! instead. The request is the same one the socket would carry (method,
//! origin-form target, the forwarded headers), and the response is the
//! node's own, so caching, `Cache-Status` and metrics do not change; what
//! goes is the loopback round trip: two socket writes, two reads, and both
//! sides' HTTP/1.1 encoding and parsing, which cost a cache hit through a
//! proxy on one core about twice what the hit itself costs.
//!
//! A registration lasts as long as its [`Registration`] guard: a node that
//! stops serving drops it, and proxies go back to reaching that address
//! over the network (where they find nothing, and route around it).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use fanout_config::HostPort;
use http::{Request, Response};

use crate::ResponseBody;

/// A registered component's request handler.
pub type Handler = Arc<
    dyn Fn(Request<ResponseBody>) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
        + Send
        + Sync,
>;

/// The handlers of the components in this process, by listen address.
/// Cloning shares the registry.
#[derive(Clone, Default)]
pub struct InProcess {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Read on every request, written when a node starts or stops.
    entries: ArcSwap<Vec<Entry>>,
    handed_off: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    listen: SocketAddr,
    handler: Handler,
    /// Tells this registration from a later one at the same address.
    id: u64,
}

/// Keeps a handler registered; dropping it unregisters.
#[must_use = "the handler is unregistered when this is dropped"]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl InProcess {
    /// Registers the handler of a component listening at `listen`.
    pub fn register(&self, listen: SocketAddr, handler: Handler) -> Registration {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.inner.entries.rcu(|entries| {
            let mut next: Vec<Entry> = entries
                .iter()
                .filter(|e| e.listen != listen)
                .cloned()
                .collect();
            next.push(Entry {
                listen,
                handler: handler.clone(),
                id,
            });
            next
        });
        Registration {
            registry: self.inner.clone(),
            id,
        }
    }

    /// The handler of the component this process runs at `address`, if any.
    /// A component listening on every address (`0.0.0.0`, `::`) is found at
    /// any loopback or unspecified address with its port.
    pub fn find(&self, address: &HostPort) -> Option<Handler> {
        let entries = self.inner.entries.load();
        if entries.is_empty() {
            return None;
        }
        let ip: IpAddr = address
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        entries
            .iter()
            .find(|e| {
                e.listen.port() == address.port
                    && (e.listen.ip() == ip
                        || (e.listen.ip().is_unspecified()
                            && (ip.is_loopback() || ip.is_unspecified())))
            })
            .map(|e| {
                self.inner.handed_off.fetch_add(1, Ordering::Relaxed);
                e.handler.clone()
            })
    }

    /// How many times [`find`](Self::find) has handed out a handler: the
    /// requests (and health probes) that skipped the network.
    pub fn handed_off(&self) -> u64 {
        self.inner.handed_off.load(Ordering::Relaxed)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.entries.rcu(|entries| {
            entries
                .iter()
                .filter(|e| e.id != self.id)
                .cloned()
                .collect::<Vec<_>>()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text;
    use http::StatusCode;

    fn handler(status: StatusCode) -> Handler {
        Arc::new(move |_req| Box::pin(async move { text(status, "") }))
    }

    fn at(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.to_string(),
            port,
        }
    }

    async fn status_of(h: Handler) -> StatusCode {
        h(Request::new(crate::empty())).await.status()
    }

    #[tokio::test]
    async fn finds_a_handler_by_address_until_its_registration_is_dropped() {
        let local = InProcess::default();
        let reg = local.register("127.0.0.1:9000".parse().unwrap(), handler(StatusCode::OK));
        let found = local.find(&at("127.0.0.1", 9000)).expect("registered");
        assert_eq!(status_of(found).await, StatusCode::OK);
        assert!(local.find(&at("127.0.0.1", 9001)).is_none(), "other port");
        assert!(
            local.find(&at("127.0.0.2", 9000)).is_none(),
            "other address"
        );
        assert!(local.find(&at("cache.internal", 9000)).is_none(), "a name");
        assert_eq!(local.handed_off(), 1);
        drop(reg);
        assert!(local.find(&at("127.0.0.1", 9000)).is_none());
    }

    #[tokio::test]
    async fn a_wildcard_listener_is_found_at_loopback_addresses() {
        let local = InProcess::default();
        let _v4 = local.register("0.0.0.0:9000".parse().unwrap(), handler(StatusCode::OK));
        let _v6 = local.register("[::]:9001".parse().unwrap(), handler(StatusCode::OK));
        assert!(local.find(&at("127.0.0.1", 9000)).is_some());
        assert!(local.find(&at("::1", 9001)).is_some());
        assert!(local.find(&at("[::1]", 9001)).is_some());
        assert!(local.find(&at("10.0.0.1", 9000)).is_none());
    }

    #[tokio::test]
    async fn a_later_registration_replaces_an_earlier_one_and_outlives_its_drop() {
        let local = InProcess::default();
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let old = local.register(addr, handler(StatusCode::OK));
        let _new = local.register(addr, handler(StatusCode::ACCEPTED));
        drop(old);
        let found = local
            .find(&at("127.0.0.1", 9000))
            .expect("still registered");
        assert_eq!(status_of(found).await, StatusCode::ACCEPTED);
    }
}
