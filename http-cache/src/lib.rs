//! The HTTP cache both of Fanout's cache tiers are built from: the cache
//! node, in front of the origin, and the hot tier in every proxy, in front
//! of the cache nodes.
//!
//! Owns the rules a shared cache follows, once, so the two tiers cannot
//! disagree: what may be stored and for how long ([`freshness`], RFC 9111
//! §3 and §4.2), the client's own directives ([`request_directives`]),
//! secondary keys for responses that vary ([`vary`]), the answer a client
//! gets from a stored or filling representation, with conditionals, ranges
//! and HEAD applied ([`respond`]), partial content and slices ([`slice`]),
//! and purges by URL, prefix or surrogate
//! key ([`purge`]), and the HLS playlists and DASH MPDs a cache node prefetches by
//! ([`hls`], [`dash`]). Also the state a tier keeps ([`Tier`]): the byte-weighted
//! moka store ([`store`]) and the fills in flight, whose bodies stream to
//! every request that joined them ([`collapse`]).
//!
//! Does not own: where a fill gets its response from (the origin for a
//! cache node, a cache node for a proxy), listeners, or metrics.

pub mod cmcd;
pub mod collapse;
pub mod dash;
pub mod freshness;
pub mod hls;
pub mod preload;
pub mod purge;
pub mod request_directives;
pub mod respond;
pub mod slice;
pub mod store;
pub mod targeted;
mod tier;
pub mod vary;

pub use tier::Tier;

/// Headers only Fanout's own parts exchange, on the hop from a proxy to a
/// cache node and between cache nodes. A proxy removes them from what
/// clients send and from what it answers with.
pub mod internal {
    use http::HeaderName;

    /// On a request from a proxy: the sequence number of the last purge the
    /// proxy has applied. It asks the node to say how long its answer stays
    /// fresh ([`FRESH_MS`]), which the node does only for an answer it
    /// would serve fresh itself and only once it has applied that purge too.
    pub const EDGE: HeaderName = HeaderName::from_static("fanout-edge");
    /// On a cache node's answer to [`EDGE`]: milliseconds the response
    /// stays fresh at the node. `Age` and `ttl` are whole seconds, too
    /// coarse to bound a copy of a one-second live playlist.
    pub const FRESH_MS: HeaderName = HeaderName::from_static("fanout-fresh-ms");
    /// On a request a proxy sends to a cache node that is not the key's
    /// owner (bounded loads spilled it): the owner's id. On a miss the node
    /// fills from that peer rather than the origin, so the origin still
    /// sees one request per object.
    pub const FILL_FROM: HeaderName = HeaderName::from_static("fanout-fill-from");

    /// On a request from one cache node to another: fill this object (the
    /// receiver owns it on the ring) within the site's prefetch budget,
    /// and answer at once, with no body: 202 when a fill started, 200 when
    /// it is stored or filling already, 503 when the budget dropped it.
    pub const PREFETCH: HeaderName = HeaderName::from_static("fanout-prefetch");

    /// Every internal header, for stripping.
    pub const ALL: [HeaderName; 4] = [EDGE, FRESH_MS, FILL_FROM, PREFETCH];
}
