//! The origin side of a fill: fetch the key once for every request waiting
//! on it, decide what may be stored and shared, stream the body into the
//! shared fill, and store the result. With a stale copy in hand, the fetch
//! is a revalidation (RFC 9111 §4.3): a 304 refreshes the stored headers,
//! and an origin failure may be answered with the stale copy (RFC 5861).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fanout_config::{SetCookiePolicy, Site};
use fanout_server::{empty, remove_hop_by_hop, trace, ResponseBody};
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use tokio::sync::OwnedSemaphorePermit;

use crate::handler::{CacheNode, CACHE_STATUS};
use crate::metrics::OriginFailure;
use fanout_http_cache::collapse::{Failure, Fed, Fill, FinishGuard, SharedHead, VaryCheck, Via};
use fanout_http_cache::freshness::{classify, initial_age, NotStored, Storability, TtlPolicy};
use fanout_http_cache::slice;
use fanout_http_cache::store::StoredResponse;
use fanout_http_cache::vary::{secondary_key, storage_key, vary_names};
use fanout_server::interim::HintSink;
use fanout_server::origin::FetchError;

/// One fill: what to fetch, and the stale copy to revalidate, if any.
pub struct FillJob {
    pub site: Arc<Site>,
    /// The key the fill is in flight under (and a revalidation stores under).
    pub key: String,
    /// Site, path and query: what `Vary` adds a secondary key to.
    pub primary: String,
    pub path_and_query: String,
    /// The client's headers without its own conditionals.
    pub headers: HeaderMap,
    pub stale: Option<Arc<StoredResponse>>,
    pub fill: Arc<Fill>,
    /// The id of the peer that owns the key, to fill from instead of the
    /// origin (the proxy spilled the key here).
    pub fill_from: Option<String>,
    /// The slice of the object this fill fetches, on a site that slices.
    pub slice: Option<SliceJob>,
    /// Started by a prefetch rather than a request: it goes to the origin,
    /// and what it fetches prefetches nothing more.
    pub prefetch: bool,
}

/// A fill of one aligned slice of an object (see
/// [`fanout_http_cache::slice`]): it asks for the slice's bytes, and
/// stores the 206 under the slice's key, or, when the answer turns out to
/// be the whole object (a small one, or an origin that ignores ranges),
/// under the object's key as the 200 it is.
#[derive(Debug, Clone, Copy)]
pub struct SliceJob {
    pub index: u64,
    pub size: u64,
}

/// What a fill fetched: the response, and the origin-request slot it holds
/// until the fill ends (none for a peer's answer).
type Fetched = (Response<ResponseBody>, Option<OwnedSemaphorePermit>);

impl CacheNode {
    /// The answer of the peer named `fill_from`, when it is a peer other
    /// than this node and it answers; `None` sends the fill to the origin.
    async fn fetch_from_peer(
        &self,
        site: &Site,
        fill_from: Option<&str>,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Option<(Response<ResponseBody>, Option<OwnedSemaphorePermit>)> {
        let id = fill_from.filter(|id| *id != self.id)?;
        let address = self.peers.address(id)?;
        let timeout = site.origin.connect_timeout.get()
            + site.origin.response_timeout.get()
            + self.blocking_hold(site, path_and_query);
        match self
            .peers
            .fetch(id, &address, path_and_query, headers, timeout)
            .await
        {
            Ok(mut resp) => {
                self.metrics.peer_fill();
                // The peer's own report and hints describe its hop, not ours.
                resp.headers_mut().remove(CACHE_STATUS);
                for h in &fanout_http_cache::internal::ALL {
                    resp.headers_mut().remove(h);
                }
                Some((resp, None))
            }
            Err(e) => {
                tracing::warn!(site = %site.name, error = %e, "filling from the owning peer failed; going to the origin");
                None
            }
        }
    }

    /// Runs `job` to the end. Spawned as its own task, so the request that
    /// started it may go away without breaking it for the others.
    pub async fn run_fill(self: Arc<Self>, job: FillJob) {
        let FillJob {
            site,
            key,
            primary,
            path_and_query,
            headers,
            stale,
            fill,
            fill_from,
            slice,
            prefetch,
        } = job;
        let _guard = FinishGuard(fill.clone());
        let mut request_headers = headers.clone();
        if let Some(stale) = &stale {
            add_validators(&mut request_headers, &stale.headers);
        }
        if let Some(s) = slice {
            request_headers.insert(header::RANGE, slice::range_header(s.index, s.size));
        }
        // One span for the whole fetch, head to last byte; it ends when
        // this task does.
        let span =
            trace::Span::from_headers("origin fetch", SpanKind::Client, &request_headers, || {
                vec![
                    KeyValue::new("fanout.site", site.name.clone()),
                    KeyValue::new("url.path", path_and_query.clone()),
                ]
            });
        if let Some(span) = &span {
            span.inject(&mut request_headers);
        }
        let started = Instant::now();
        let hold = self.blocking_hold(&site, &path_and_query);
        let _reload = (!hold.is_zero())
            .then(|| self.reload_fill(&site, &path_and_query))
            .flatten();
        let mut from_origin = false;
        let fetched = match self
            .fetch_from_peer(
                &site,
                fill_from.as_deref(),
                &path_and_query,
                &request_headers,
            )
            .await
        {
            Some(answer) => Ok(answer),
            None => {
                from_origin = true;
                self.metrics.origin_fetch();
                // The origin's 103s go to the requests waiting on the fill.
                let waiting = fill.clone();
                let hints: HintSink = Arc::new(move |fields| waiting.push_hints(fields));
                let request = (
                    Method::GET,
                    path_and_query.as_str(),
                    &request_headers,
                    empty(),
                );
                self.origins
                    .load_full()
                    .fetch_held(&site, request, Some(hints), hold)
                    .await
                    .map(|r| {
                        let (p, b) = r.response.into_parts();
                        let body = b.map_err(Into::into).boxed_unsync();
                        (Response::from_parts(p, body), Some(r.permit))
                    })
            }
        };
        let received_at = Instant::now();
        // A blocking reload's wait is the origin keeping its word, not a
        // slow origin: it stays out of the origin's latency.
        if fetched.is_ok() && hold.is_zero() {
            self.metrics.origin_answered(received_at - started);
        }
        if let Some(span) = &span {
            match &fetched {
                Ok((r, _)) => span.status(r.status().as_u16()),
                Err(e) => span.error(e.to_string()),
            }
        }
        let (mut resp, _permit): Fetched = match fetched {
            Ok((r, permit)) => {
                if r.status().is_server_error() {
                    self.metrics.origin_error(OriginFailure::Status);
                    tracing::warn!(site = %site.name, key = %key, status = %r.status(), "origin answered with a server error");
                    // A stale copy stands in for the error where its
                    // directives and the site allow; otherwise the client
                    // gets the origin's own answer, status, fields and body.
                    if let Some(s) = stale.clone().filter(|s| s.may_serve_on_error(received_at)) {
                        fill.set_stored(s, Via::StaleOnError(Some(r.status())));
                        self.tier.inflight.remove(&key, &fill);
                        return;
                    }
                }
                (r, permit)
            }
            Err(e) => {
                let failure = match &e {
                    FetchError::Timeout { .. } => Failure::Timeout,
                    _ => Failure::Unreachable,
                };
                self.metrics.origin_error(match failure {
                    Failure::Timeout => OriginFailure::Timeout,
                    _ => OriginFailure::Unreachable,
                });
                tracing::warn!(site = %site.name, key = %key, error = %e, "origin fetch failed");
                // An origin in trouble gets neither hit-for-pass (which would
                // end collapsing) nor a stored error.
                match stale.filter(|s| s.may_serve_on_error(received_at)) {
                    Some(s) => fill.set_stored(s, Via::StaleOnError(None)),
                    None => fill.fail(failure),
                }
                self.tier.inflight.remove(&key, &fill);
                return;
            }
        };
        if let Some(what) = fanout_http_cache::freshness::anomaly(resp.headers()) {
            self.metrics.origin_anomaly(&site.name);
            if !self.anomalies_logged.contains_key(&site.name) {
                self.anomalies_logged.insert(site.name.clone(), ());
                tracing::warn!(site = %site.name, key = %key, "origin sent {what}; taken as not storable or stale at once (logged once a minute per site; fanout_cache_origin_anomalies_total counts them all)");
            }
        }
        if site.prefetch.origin_hints && from_origin && !prefetch {
            self.origin_hints(&site, &headers, &path_and_query, resp.headers());
        }
        if site.cache.set_cookie == SetCookiePolicy::Strip {
            resp.headers_mut().remove(header::SET_COOKIE);
        }
        if let (StatusCode::NOT_MODIFIED, Some(stale)) = (resp.status(), &stale) {
            let refreshed = self.refresh(
                &site,
                (&fill, &key),
                &headers,
                stale,
                resp.headers(),
                (started, received_at),
            );
            fill.set_stored(refreshed, Via::Revalidated);
            self.tier.inflight.remove(&key, &fill);
            return;
        }
        let (piece, passed_on) = what_part(&mut resp, slice);
        let storability = if passed_on {
            Storability::Transient
        } else {
            // A slice's freshness is that of the object it is part of.
            let status = if piece.is_some() {
                StatusCode::OK
            } else {
                resp.status()
            };
            classify(
                &Method::GET,
                &headers,
                status,
                resp.headers(),
                TtlPolicy::of(&site),
            )
        };
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let max = site.cache.max_object_size.bytes();
        let (mut parts, mut body) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let freshness = match storability {
            Storability::Store(f) if length.is_none_or(|n| n <= max) => Some(f),
            Storability::Transient => None,
            // Private, or too large to store: this key's requests go to the
            // origin on their own for a while. Not when it is private only
            // because this request carried `Authorization`: the next
            // anonymous request's answer may well be shared.
            Storability::Store(_) | Storability::Private(_) => {
                // A server error says nothing lasting about the key, and
                // hit-for-pass would end collapsing while the origin is
                // in trouble.
                if storability != Storability::Private(NotStored::Authorization)
                    && !parts.status.is_server_error()
                {
                    // A slice's answer speaks for its whole object.
                    let marked = if slice.is_some() { &primary } else { &key };
                    self.hit_for_pass.insert(marked.clone(), ());
                }
                fill.set_private(Response::from_parts(parts, body));
                self.tier.inflight.remove(&key, &fill);
                return;
            }
        };
        let deadline =
            tokio::time::Instant::from_std(started) + site.origin.total_timeout.get() + hold;
        let playlist = crate::prefetch::Candidate {
            site: &site,
            from_origin,
            prefetch,
            status: parts.status,
            whole: piece.is_none(),
            stored: freshness.is_some(),
            path_and_query: &path_and_query,
            headers: &parts.headers,
            length,
        };
        if playlist.holds() {
            // One round of prefetches per new version from the origin (not
            // a peer's copy, not a prefetch's), before anyone sees it.
            match self
                .hold_playlist(&site, (&primary, &path_and_query), &headers, body, deadline)
                .await
            {
                Ok(whole) => body = whole,
                Err(e) => {
                    tracing::warn!(site = %site.name, key = %key, error = %e, "playlist body failed; not stored");
                    self.metrics.origin_error(OriginFailure::Body);
                    fill.fail(Failure::Unreachable);
                    self.tier.inflight.remove(&key, &fill);
                    return;
                }
            }
        }
        let initial_age = initial_age(&parts.headers, received_at - started, SystemTime::now());
        parts.headers.remove(header::AGE);
        let names = vary_names(&parts.headers);
        // Stored under the key its own Vary implies, which the index learns
        // so that later lookups find it.
        let mut store_key = storage_key(&primary, &names, &headers);
        if let Some(index) = piece {
            store_key = slice::piece_key(&store_key, index);
        }
        if freshness.is_some() {
            self.tier.vary.record(&primary, &names);
            if piece.is_some() {
                self.tier.sliced.insert(primary.clone(), ());
            }
        }
        // A blocking reload's answer is also its playlist's newest version.
        let reload_vary = (!hold.is_zero()).then(|| names.clone());
        let vary = (!names.is_empty()).then(|| VaryCheck {
            secondary: secondary_key(&names, &headers),
            names,
        });
        let (status, stored_headers) = (
            parts.status,
            fanout_http_cache::store::owned_headers(&parts.headers),
        );
        fill.set_shared(SharedHead {
            status: parts.status,
            headers: parts.headers,
            received_at,
            initial_age,
            lifetime: freshness.map(|f| f.lifetime),
            vary,
        });

        let fed = fill
            .feed(
                &mut body,
                deadline,
                max,
                freshness.is_some(),
                |n| self.metrics.origin_body(n),
                // Only possible without Content-Length: keep feeding the
                // waiters we have, take no more, store nothing.
                || self.tier.inflight.remove(&key, &fill),
            )
            .await;
        let (last_chunk, too_large) = match fed {
            Fed::Complete { last, too_large } => (last, too_large),
            Fed::TimedOut => {
                tracing::warn!(site = %site.name, key = %key, timeout = %site.origin.total_timeout, "origin body too slow; fill abandoned, not stored");
                self.metrics.origin_error(OriginFailure::Timeout);
                self.tier.inflight.remove(&key, &fill);
                return;
            }
            Fed::Broken(e) => {
                tracing::warn!(site = %site.name, key = %key, error = %e, "origin body broke off; not stored");
                self.metrics.origin_error(OriginFailure::Body);
                self.tier.inflight.remove(&key, &fill);
                return;
            }
        };
        if let (false, Some(freshness)) = (too_large, freshness) {
            let stored = StoredResponse {
                status,
                headers: stored_headers,
                body: fill.body_bytes_with(last_chunk.as_ref()),
                stored_at: received_at,
                initial_age,
                freshness,
                stale_on_error: site.cache.stale_on_error.get(),
            };
            let stored = Arc::new(stored);
            if let Some(vary) = &reload_vary {
                let keys = (store_key.as_str(), primary.as_str(), vary.as_slice());
                self.reload_stored(&site, &path_and_query, keys, &stored);
            }
            // Stored before the fill is retired, so no request finds neither;
            // not at all if a purge matched the fill meanwhile.
            self.tier.store_fill(&fill, store_key, stored);
        }
        if let Some(data) = last_chunk {
            fill.push(data);
        }
        tracing::debug!(key = %key, chunks = fill.chunk_count(), bytes = fill.received(), "fill complete");
        fill.finish(true);
        self.tier.inflight.remove(&key, &fill);
    }

    /// A 304 confirmed `stale`: store it again with the 304's fields
    /// (RFC 9111 §4.3.4) and a freshness computed from them.
    fn refresh(
        &self,
        site: &Site,
        (fill, key): (&Fill, &str),
        request: &HeaderMap,
        stale: &StoredResponse,
        not_modified: &HeaderMap,
        (sent_at, received_at): (Instant, Instant),
    ) -> Arc<StoredResponse> {
        let response_delay = received_at - sent_at;
        let headers = fanout_http_cache::store::owned_headers(&refreshed_headers(
            &stale.headers,
            not_modified,
        ));
        let storability = classify(
            &Method::GET,
            request,
            stale.status,
            &headers,
            TtlPolicy::of(site),
        );
        let freshness = match storability {
            Storability::Store(f) => f,
            // The origin no longer allows storing it: answer the waiters
            // with it once, as already expired, and keep nothing.
            _ => fanout_http_cache::freshness::Freshness::new(std::time::Duration::ZERO),
        };
        let refreshed = Arc::new(StoredResponse {
            status: stale.status,
            headers,
            body: stale.body.clone(),
            stored_at: received_at,
            initial_age: initial_age(not_modified, response_delay, SystemTime::now()),
            freshness,
            stale_on_error: site.cache.stale_on_error.get(),
        });
        if matches!(storability, Storability::Store(_)) {
            self.tier
                .store_fill(fill, key.to_string(), refreshed.clone());
        } else {
            self.tier.store.remove(key);
        }
        refreshed
    }
}

/// What a fill's answer is a part of: `(Some(index), _)` for the slice
/// `slice` asked for, to be stored under that slice's key; `(_, true)` for
/// an answer to be passed on but never stored (a part that is not the one
/// asked for, or anything but the object itself in answer to a later
/// slice, such as a 416 past its end); `(None, false)` for the object,
/// which a 206 that covers all of it is rewritten into (RFC 9111 §3.4).
fn what_part(resp: &mut Response<ResponseBody>, slice: Option<SliceJob>) -> (Option<u64>, bool) {
    let (mut parts, body) = std::mem::replace(resp, Response::new(empty())).into_parts();
    slice::whole_206_as_200(&mut parts.status, &mut parts.headers);
    let answer = match (slice, parts.status) {
        (_, StatusCode::PARTIAL_CONTENT) => {
            let asked = slice.filter(|s| {
                slice::ContentRange::of(&parts.headers).is_some_and(|r| {
                    r.first == slice::slice_bounds(s.index, s.size).0 && r.complete.is_some()
                })
            });
            match asked {
                Some(s) => (Some(s.index), false),
                None => (None, true),
            }
        }
        (Some(s), status) if s.index > 0 && status != StatusCode::OK => (None, true),
        _ => (None, false),
    };
    *resp = Response::from_parts(parts, body);
    answer
}

/// Asks the origin whether `stored` is still current (§4.3.1).
fn add_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

/// The stored fields updated with those of a 304, except the ones that
/// describe the 304 itself rather than the stored body (§3.2).
fn refreshed_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH || name == header::AGE {
            continue;
        }
        headers.remove(name);
        for v in not_modified.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    remove_hop_by_hop(&mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_304_replaces_fields_but_not_the_body_length() {
        let mut stored = HeaderMap::new();
        stored.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        stored.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        stored.insert(header::ETAG, HeaderValue::from_static("\"a\""));
        let mut nm = HeaderMap::new();
        nm.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        nm.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        nm.insert(header::AGE, HeaderValue::from_static("3"));
        let h = refreshed_headers(&stored, &nm);
        assert_eq!(h[header::CACHE_CONTROL], "max-age=60");
        assert_eq!(h[header::CONTENT_LENGTH], "1000");
        assert_eq!(h[header::ETAG], "\"a\"");
        assert!(!h.contains_key(header::AGE));
    }
}
