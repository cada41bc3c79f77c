//! Objects read from the origin slice by slice, on sites that set
//! `cache.slice` (as NGINX's slice module and ATS's slice plugin do).
//!
//! A request with nothing stored under its object's key starts with the
//! slice holding its first byte: one collapsed fill with a `Range` for
//! that slice's bytes. The answer decides the rest. A 206 that is part of
//! a larger object is stored under the slice's own key, and the client
//! gets the object (or its range) assembled from that slice and the ones
//! after it, each looked up, revalidated or filled in turn as the client
//! reads, every one checked to be part of the same object (length and
//! validators). Anything else (a small object answered whole, an origin
//! that ignores ranges, an error) is an ordinary fill of the object.
//!
//! A slice of another version than the first one read means the object
//! changed at the origin: the response breaks off (its headers are gone),
//! and every stored slice of the object is dropped, so the next request
//! fetches it anew.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fanout_config::Site;
use fanout_http_cache::collapse::{Fill, Head, Role, SharedHead};
use fanout_http_cache::respond::{fill_request_headers, respond, Representation, Source};
use fanout_http_cache::slice::{self, Object};
use fanout_http_cache::store::StoredResponse;
use fanout_server::{full, BoxError, ResponseBody};
use futures_util::stream;
use http::{header, request, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::fill::{FillJob, SliceJob};
use crate::handler::{CacheNode, Internal, Keys, Miss};
use crate::metrics::Outcome;

/// A fill of the slice a request starts in, under the object's key.
pub struct Sliced {
    pub job: SliceJob,
    /// The key the object is looked up under (with its variant, if any).
    pub object_key: String,
    /// The object's primary key (site, path, query).
    pub primary: String,
    /// The peer to fill from, when the proxy spilled the key here.
    pub fill_from: Option<String>,
}

impl Sliced {
    pub fn piece_key(&self) -> String {
        slice::piece_key(&self.object_key, self.job.index)
    }

    /// Whether an answer is the slice asked for, of an object larger than
    /// it: only then is the object read slice by slice.
    pub fn first_of_object(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        Object::of_piece(status, headers)
            .is_some_and(|o| o.holds(self.job.index, self.job.size, status, headers))
    }
}

/// The slice a sliced response starts with, as the request found it.
pub enum FirstPiece {
    Stored(Arc<StoredResponse>),
    Fill(Arc<Fill>, Arc<SharedHead>),
}

impl CacheNode {
    /// A GET or HEAD on a slicing site with nothing stored under the
    /// object's own key: answered from the stored slice it starts in, or
    /// through a fill of that slice.
    pub(crate) async fn sliced(
        self: Arc<Self>,
        site: Arc<Site>,
        key: Keys,
        parts: request::Parts,
        size: u64,
        fwd: &'static str,
        asked: Internal,
    ) -> Response<ResponseBody> {
        let sliced = Sliced {
            job: SliceJob {
                index: slice::first_slice(&parts.headers, size),
                size,
            },
            object_key: key.lookup.clone(),
            primary: key.primary.clone(),
            fill_from: asked.fill_from.clone(),
        };
        let now = Instant::now();
        let stored = self
            .tier
            .store
            .get(&sliced.piece_key())
            .filter(|p| sliced.first_of_object(p.status, &p.headers));
        let stale = match stored {
            Some(piece) if piece.is_fresh(now) => {
                crate::metrics::decided(Outcome::Hit);
                let (_, ttl) = piece.age_and_ttl_secs(now);
                let status = format!("hit; ttl={ttl}; detail=slices");
                return self.serve_sliced(&parts, site, sliced, FirstPiece::Stored(piece), &status);
            }
            stale => stale,
        };
        let fwd = if stale.is_some() { "stale" } else { fwd };
        let miss = Miss {
            stale,
            fwd,
            slice: Some(sliced),
        };
        self.miss(site, key, parts, miss, asked).await
    }

    /// The object `first` is a slice of, as `parts` asks for it: its
    /// conditionals and range applied to the whole, the body read slice
    /// by slice as the client takes it.
    pub(crate) fn serve_sliced(
        self: &Arc<Self>,
        parts: &request::Parts,
        site: Arc<Site>,
        sliced: Sliced,
        first: FirstPiece,
        status: &str,
    ) -> Response<ResponseBody> {
        let (piece_status, piece_headers, age) = match &first {
            FirstPiece::Stored(p) => (p.status, &p.headers, p.age(Instant::now())),
            FirstPiece::Fill(_, head) => (
                head.status,
                &head.headers,
                head.initial_age + head.received_at.elapsed(),
            ),
        };
        let Some(object) = Object::of_piece(piece_status, piece_headers) else {
            // `first_of_object` held before this was called.
            return fanout_server::text(StatusCode::BAD_GATEWAY, "not a slice\n");
        };
        let mut headers = piece_headers.clone();
        headers.remove(header::CONTENT_RANGE);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.length));
        let reader = Arc::new(SliceReader {
            node: self.clone(),
            site,
            object_key: sliced.object_key,
            primary: sliced.primary,
            path_and_query: crate::handler::origin_form(parts),
            headers: fill_request_headers(&parts.headers),
            fill_from: sliced.fill_from,
            size: sliced.job.size,
            object,
            first: (sliced.job.index, first),
        });
        let make = |from: u64, to: u64| reader.clone().body(from, to);
        let mut resp = respond(
            &parts.method,
            &parts.headers,
            Representation {
                status: StatusCode::OK,
                headers: &headers,
                len: Some(reader.object.length),
                source: Source::Ranges(&make),
                age_secs: age.as_secs(),
            },
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{}; {status}", self.name)) {
            resp.headers_mut().append(crate::handler::CACHE_STATUS, v);
        }
        resp
    }

    /// Drops every stored slice of the object under `object_key`, and the
    /// fills of its slices in flight.
    fn forget_slices(&self, object_key: &str) {
        let prefix = slice::pieces_prefix(object_key);
        let prefix = prefix.as_str();
        self.tier
            .inflight
            .detach_matching(|key, _| key.starts_with(prefix));
        self.tier
            .store
            .purge_matching(|key, _| key.starts_with(prefix), false, Instant::now());
    }
}

/// Reads one response's bytes from the slices of one object.
struct SliceReader {
    node: Arc<CacheNode>,
    site: Arc<Site>,
    object_key: String,
    primary: String,
    path_and_query: String,
    /// The client's request headers without its conditionals and range.
    headers: HeaderMap,
    fill_from: Option<String>,
    size: u64,
    /// What every slice must be a part of.
    object: Object,
    /// The slice the request started in, already in hand.
    first: (u64, FirstPiece),
}

type Sent = Result<Frame<Bytes>, BoxError>;

/// A slice as [`SliceReader::find`] found it.
enum Found {
    Stored(Arc<StoredResponse>),
    Filling(Arc<Fill>),
}

impl SliceReader {
    /// Bytes `[from, to)` of the object. A task reads the slices one after
    /// another, a frame or two ahead of the client and with the next
    /// slice's fill started; it stops when the client goes away.
    fn body(self: Arc<Self>, from: u64, to: u64) -> ResponseBody {
        let (tx, rx) = tokio::sync::mpsc::channel::<Sent>(2);
        tokio::spawn(async move { self.send(from, to.min(self.object.length), tx).await });
        let frames = stream::unfold(rx, |mut rx| async move {
            let frame = rx.recv().await?;
            Some((frame, rx))
        });
        StreamBody::new(frames).boxed_unsync()
    }

    async fn send(&self, from: u64, to: u64, tx: tokio::sync::mpsc::Sender<Sent>) {
        if from >= to {
            return;
        }
        let last = (to - 1) / self.size;
        let mut next = None;
        for index in from / self.size..=last {
            let (lo, hi) = slice::slice_bounds(index, self.size);
            let hi = hi.min(self.object.length);
            let (a, b) = (from.max(lo) - lo, to.min(hi) - lo);
            let found = next.take().unwrap_or_else(|| self.find(index));
            let mut body = match self.piece(index, found, a, b).await {
                Ok(body) => body,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            // Read one slice ahead: its fill runs while this one streams,
            // so a full read does not wait an origin round trip per slice.
            if index < last {
                next = Some(self.find(index + 1));
            }
            while let Some(frame) = body.frame().await {
                let broken = frame.is_err();
                if tx.send(frame).await.is_err() || broken {
                    return;
                }
            }
        }
    }

    /// Where slice `index` comes from: the slice in hand, the store, or a
    /// fill, started here unless one is in flight (a revalidation when a
    /// stale copy of this object's slice is stored).
    fn find(&self, index: u64) -> Found {
        if index == self.first.0 {
            return match &self.first.1 {
                FirstPiece::Stored(p) => Found::Stored(p.clone()),
                FirstPiece::Fill(fill, _) => Found::Filling(fill.clone()),
            };
        }
        let key = slice::piece_key(&self.object_key, index);
        let stale = match self.node.tier.store.get(&key) {
            Some(p) if self.object.holds(index, self.size, p.status, &p.headers) => {
                if p.is_fresh(Instant::now()) {
                    return Found::Stored(p);
                }
                Some(p)
            }
            // Another version's slice: fetched anew below.
            _ => None,
        };
        let (fill, role) = self.node.tier.inflight.join_or_lead(&key);
        if role == Role::Leader {
            let job = FillJob {
                site: self.site.clone(),
                key,
                primary: self.primary.clone(),
                path_and_query: self.path_and_query.clone(),
                headers: self.headers.clone(),
                stale,
                fill: fill.clone(),
                fill_from: self.fill_from.clone(),
                slice: Some(SliceJob {
                    index,
                    size: self.size,
                }),
                prefetch: false,
            };
            tokio::spawn(self.node.clone().run_fill(job));
        }
        Found::Filling(fill)
    }

    /// Bytes `[a, b)` of slice `index`, once what `found` holds is known to
    /// be a slice of this object.
    async fn piece(
        &self,
        index: u64,
        found: Found,
        a: u64,
        b: u64,
    ) -> Result<ResponseBody, BoxError> {
        let cut = |body: &Bytes| full(body.slice(a as usize..b as usize));
        let holds =
            |status, headers: &HeaderMap| self.object.holds(index, self.size, status, headers);
        let fill = match found {
            Found::Stored(p) => return Ok(cut(&p.body)),
            Found::Filling(fill) => fill,
        };
        match fill.head().await {
            Head::Shared(head) if holds(head.status, &head.headers) => Ok(fill.body_range(a, b)),
            Head::Stored(p, _) if holds(p.status, &p.headers) => Ok(cut(&p.body)),
            Head::Failed(failure) => Err(format!("slice {index}: {failure:?}").into()),
            _ => {
                tracing::warn!(site = %self.site.name, key = %self.object_key, slice = index, "the object changed at the origin while it was read slice by slice; its stored slices are dropped");
                self.node.forget_slices(&self.object_key);
                Err(format!("slice {index} is of another version of the object").into())
            }
        }
    }
}
