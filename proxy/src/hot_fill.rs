//! Filling the hot tier: concurrent misses at a proxy for one key collapse
//! into one request to the cache node that owns it, whose body streams to
//! every waiting client as it arrives and is kept when the node says it
//! may be. A flash crowd for a new segment costs one request per proxy at
//! the node, and (the node collapsing those) one at the origin.
//!
//! The request to the node runs in a task of its own, not in the client's
//! that started it, so the first viewer hanging up does not break the
//! response for the ones who joined behind it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fanout_config::{CacheKey, Site};
use fanout_http_cache::collapse::{Fed, Fill, FinishGuard, Head, Role, SharedHead, VaryCheck};
use fanout_http_cache::freshness::{initial_age, shareable_with_authorization, TtlPolicy};
use fanout_http_cache::internal;
use fanout_http_cache::respond::{fill_request_headers, respond, Representation, Source};
use fanout_http_cache::store::owned_headers;
use fanout_http_cache::vary::{secondary_key, storage_key, vary_names};
use fanout_server::interim::Interim;
use fanout_server::{empty, text};
use http::{header, request, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::forward::{Proxy, Upstream, Upstreamed};
use crate::hot_tier::{HotTier, Keep, Outcome, CACHE_STATUS};
use crate::ring::key_hash;
use crate::snapshot::Snapshot;

/// One fill of the hot tier.
struct FillJob {
    hot: Arc<HotTier>,
    snapshot: Arc<Snapshot>,
    site: Arc<Site>,
    key: CacheKey,
    /// The key the fill runs under: `key` and, when the URL varies, the
    /// leader's secondary key.
    lookup: String,
    /// The leader's request, without its conditionals.
    parts: request::Parts,
    fill: Arc<Fill>,
}

impl Proxy {
    /// Answers a GET or HEAD the hot tier does not hold: joins the fill in
    /// flight for its key, or leads a new one. `parts` are ready to go
    /// upstream (forwarding fields added).
    pub(crate) async fn hot_miss(
        self: &Arc<Self>,
        hot: &Arc<HotTier>,
        snapshot: &Arc<Snapshot>,
        site: &Arc<Site>,
        key: CacheKey,
        lookup: String,
        parts: request::Parts,
    ) -> Upstreamed {
        let fwd = if lookup.len() != key.as_str().len() {
            "vary-miss"
        } else {
            "uri-miss"
        };
        let (fill, role) = hot.tier.inflight.join_or_lead(&lookup);
        if role == Role::Leader {
            let mut fill_parts = Request::new(()).into_parts().0;
            fill_parts.method = Method::GET;
            fill_parts.uri = parts.uri.clone();
            fill_parts.version = parts.version;
            fill_parts.headers = fill_request_headers(&parts.headers);
            let job = FillJob {
                hot: hot.clone(),
                snapshot: snapshot.clone(),
                site: site.clone(),
                key: key.clone(),
                lookup: lookup.clone(),
                parts: fill_parts,
                fill: fill.clone(),
            };
            tokio::spawn(self.clone().run_hot_fill(job));
        }
        hot.metrics.count(if role == Role::Leader {
            Outcome::Miss
        } else {
            Outcome::Collapsed
        });
        let collapsed = if role == Role::Follower {
            "; collapsed"
        } else {
            ""
        };
        match fill.head_passing_hints().await {
            Head::Shared(head) => {
                if role == Role::Follower {
                    if let Some(why) = may_not_share(&head, &parts.headers) {
                        return self.alone(hot, snapshot, site, &key, parts, why).await;
                    }
                }
                let age = head.initial_age + head.received_at.elapsed();
                let len = head
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let mut resp = respond(
                    &parts.method,
                    &parts.headers,
                    Representation {
                        status: head.status,
                        headers: &head.headers,
                        len,
                        source: Source::Fill(&fill),
                        age_secs: age.as_secs(),
                    },
                );
                match head.lifetime {
                    Some(lifetime) => hot.add_status(
                        resp.headers_mut(),
                        format_args!(
                            "fwd={fwd}{collapsed}; stored; ttl={}",
                            lifetime.as_secs().saturating_sub(age.as_secs())
                        ),
                    ),
                    None => {
                        hot.add_status(resp.headers_mut(), format_args!("fwd={fwd}{collapsed}"))
                    }
                }
                Upstreamed::by(resp, answered_by(&fill, snapshot))
            }
            // The node's answer is the leader's alone: it may not be kept,
            // so it may not be shared either. Followers ask for their own.
            Head::Private => match (role == Role::Leader)
                .then(|| fill.take_private())
                .flatten()
            {
                Some(mut resp) => {
                    if parts.method == Method::HEAD {
                        *resp.body_mut() = empty();
                    }
                    hot.add_status(resp.headers_mut(), format_args!("fwd={fwd}"));
                    Upstreamed::by(resp, answered_by(&fill, snapshot))
                }
                None => {
                    self.alone(hot, snapshot, site, &key, parts, "fwd=uri-miss")
                        .await
                }
            },
            Head::Failed(_) | Head::Stored(..) => {
                let mut resp = text(StatusCode::BAD_GATEWAY, "bad gateway\n");
                hot.add_status(
                    resp.headers_mut(),
                    format_args!("fwd={fwd}{collapsed}; detail=fill-failed"),
                );
                Upstreamed::by(resp, Upstream::HotTier)
            }
        }
    }

    /// This request to its node, on its own (it may not share the fill it
    /// joined).
    async fn alone(
        &self,
        hot: &HotTier,
        snapshot: &Snapshot,
        site: &Site,
        key: &CacheKey,
        parts: request::Parts,
        status: &str,
    ) -> Upstreamed {
        hot.metrics.count(Outcome::Bypass);
        let mut answer = self
            .to_node(snapshot, site, key_hash(key), parts, empty(), true)
            .await;
        hot.add_status(answer.response.headers_mut(), format_args!("{status}"));
        answer
    }

    /// Runs one fill to its end: the request to the node, then its body
    /// into the fill (and the tier, when the answer may be kept).
    async fn run_hot_fill(self: Arc<Self>, job: FillJob) {
        let FillJob {
            hot,
            snapshot,
            site,
            key,
            lookup,
            mut parts,
            fill,
        } = job;
        let _guard = FinishGuard(fill.clone());
        let request = parts.headers.clone();
        // A blocking playlist reload's wait at the origin is not its fill.
        let origin_hold = if fanout_http_cache::hls::is_blocking_reload(parts.uri.query()) {
            fanout_http_cache::hls::MAX_BLOCKING_HOLD
        } else {
            std::time::Duration::ZERO
        };
        parts.headers.insert(internal::EDGE, hot.edge());
        let sent_at = Instant::now();
        let Upstreamed {
            response,
            upstream,
            hold,
        } = {
            // The node's 103s go to the requests waiting on this fill.
            let waiting = fill.clone();
            let hints = Interim::Relay(Arc::new(move |fields| waiting.push_hints(fields)));
            let answer = self.to_node(&snapshot, &site, key_hash(&key), parts, empty(), true);
            fanout_server::interim::scope(hints, answer).await
        };
        let received_at = Instant::now();
        if let Upstream::Node(i) = upstream {
            fill.set_answered_by(i);
        }
        let (mut head, mut body) = response.into_parts();
        let node_fresh_for = head
            .headers
            .remove(&internal::FRESH_MS)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_millis);
        let keep = match upstream {
            Upstream::Node(_) if !fill.is_purged() => hot.keepable(
                TtlPolicy::of(&site),
                &request,
                head.status,
                &head.headers,
                node_fresh_for,
            ),
            // Failing open: the origin's answer, which no node vouches for.
            Upstream::Origin => Keep::Leader,
            // The proxy's own error, or a fill a purge detached.
            _ if head.status.is_server_error() => Keep::Share,
            _ => Keep::Leader,
        };
        let delay = received_at - sent_at;
        let age = initial_age(&head.headers, delay, SystemTime::now());
        let fresh_for = match keep {
            // The lesser of what the node said, counted from when the
            // request left (the node said it later), and what the
            // response's own fields leave.
            Keep::For(freshness, node) => node
                .saturating_sub(delay)
                .min(freshness.lifetime.saturating_sub(age)),
            _ => Duration::ZERO,
        };
        let shared = match keep {
            Keep::For(..) => !fresh_for.is_zero(),
            Keep::Share => true,
            Keep::TooLarge => {
                hot.pass(key.as_str());
                true
            }
            Keep::Leader => false,
            Keep::Private { pass } => {
                if pass {
                    hot.pass(key.as_str());
                }
                false
            }
        };
        if !shared {
            let body = body
                .map_frame(move |frame| {
                    let _load = &hold;
                    frame
                })
                .boxed_unsync();
            fill.set_private(Response::from_parts(head, body));
            hot.tier.inflight.remove(&lookup, &fill);
            return;
        }
        let kept = !fresh_for.is_zero();
        head.headers.remove(header::AGE);
        let names = vary_names(&head.headers);
        let store_key = storage_key(key.as_str(), &names, &request);
        let vary = (!names.is_empty()).then(|| VaryCheck {
            secondary: secondary_key(&names, &request),
            names: names.clone(),
        });
        // What a hit will answer with: the node's `Cache-Status` describes
        // this fetch, not the hits to come.
        let mut kept_headers = head.headers.clone();
        kept_headers.remove(CACHE_STATUS);
        let kept_headers = owned_headers(&kept_headers);
        let status = head.status;
        fill.set_shared(SharedHead {
            status,
            headers: head.headers,
            received_at,
            initial_age: age,
            lifetime: kept.then_some(age + fresh_for),
            vary,
        });
        let max = hot
            .max_object_size()
            .min(site.cache.max_object_size.bytes());
        let deadline =
            tokio::time::Instant::from_std(sent_at) + site.origin.total_timeout.get() + origin_hold;
        let fed = fill
            .feed(
                &mut body,
                deadline,
                max,
                kept,
                |_| {},
                || {
                    hot.pass(key.as_str());
                    hot.tier.inflight.remove(&lookup, &fill);
                },
            )
            .await;
        let (last_chunk, too_large) = match fed {
            Fed::Complete { last, too_large } => (last, too_large),
            Fed::TimedOut => {
                tracing::warn!(site = %site.name, key = %key, "cache node body too slow; hot-tier fill abandoned");
                hot.tier.inflight.remove(&lookup, &fill);
                return;
            }
            Fed::Broken(e) => {
                tracing::warn!(site = %site.name, key = %key, error = %e, "cache node body broke off; not kept");
                hot.tier.inflight.remove(&lookup, &fill);
                return;
            }
        };
        drop(hold);
        if kept && !too_large {
            hot.tier.vary.record(key.as_str(), &names);
            let kept = HotTier::kept(
                status,
                kept_headers,
                fill.body_bytes_with(last_chunk.as_ref()),
                received_at,
                age,
                fresh_for,
            );
            hot.tier.store_fill(&fill, store_key, Arc::new(kept));
        }
        if let Some(data) = last_chunk {
            fill.push(data);
        }
        fill.finish(true);
        hot.tier.inflight.remove(&lookup, &fill);
    }
}

/// Who answered a fill, as this request's metrics and log name it: the
/// cache node, when it is still on the ring the request was routed by.
fn answered_by(fill: &Fill, snapshot: &Snapshot) -> Upstream {
    match fill.answered_by() {
        Some(i) if i < snapshot.ring.nodes().len() => Upstream::Node(i),
        _ => Upstream::HotTier,
    }
}

/// Why a request that joined a fill another led may not have its answer
/// (its `Cache-Status`), if it may not: the answer varies on a header this
/// one differs in, or it carries `Authorization` and the answer is not
/// shareable with it (RFC 9111 §3.5; the same checks as at the node).
fn may_not_share(head: &SharedHead, request: &HeaderMap) -> Option<&'static str> {
    if let Some(vary) = &head.vary {
        if secondary_key(&vary.names, request) != vary.secondary {
            return Some("fwd=vary-miss");
        }
    }
    (request.contains_key(header::AUTHORIZATION) && !shareable_with_authorization(&head.headers))
        .then_some("fwd=request; detail=authorization")
}
