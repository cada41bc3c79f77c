//! Admission at the edge: the priority of each request (a playlist
//! refresh, a segment for a viewer already watching, or a new viewer's
//! first request), the server's overload gate
//! ([`fanout_server::overload`]) it passes, and the fast `503` with
//! `Retry-After` a refused request gets, counted by priority and reason.

use std::sync::Arc;

use fanout_server::overload::{Overload, Priority, Settings, Shed};
use fanout_server::{text, ResponseBody};
use http::{header, HeaderValue, Response, StatusCode};
use opentelemetry::metrics::BoundCounter;
use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;

pub struct Admission {
    pub overload: Arc<Overload>,
    retry_after: HeaderValue,
    entry_files: Vec<String>,
    /// `fanout_proxy_shed_total`, by priority then reason.
    shed: [[BoundCounter<u64>; 2]; 3],
}

impl Admission {
    /// `None` when the file turns overload protection off. The probe runs
    /// on the runtime this is called on until `shutdown`.
    pub fn new(
        proxy: &str,
        config: &fanout_config::Overload,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Admission>> {
        if !config.enabled {
            return None;
        }
        let overload = Overload::new(Settings {
            max_delay: config.max_delay.get(),
            max_in_flight: config.max_in_flight(),
            queue_timeout: config.queue_timeout.get(),
        });
        overload.spawn_probe(shutdown.clone());
        let meter = opentelemetry::global::meter("fanout-proxy");
        let counter = meter
            .u64_counter("fanout_proxy_shed")
            .with_description(
                "Requests refused with 503 and Retry-After because the proxy was overloaded, by priority (playlist, media, entry) and reason (delay, in_flight)",
            )
            .build();
        let proxy_attr = KeyValue::new("proxy", proxy.to_string());
        let shed = Priority::ALL.map(|p| {
            [Shed::Delay, Shed::InFlight].map(|why| {
                counter.clone().bind(&[
                    proxy_attr.clone(),
                    KeyValue::new("priority", p.as_str()),
                    KeyValue::new("reason", why.as_str()),
                ])
            })
        });
        let gauges = Arc::downgrade(&overload);
        meter
            .f64_observable_gauge("fanout_proxy_scheduling_delay")
            .with_description("The last 100 ms window's minimum scheduling delay: how long a ready task waits for a worker")
            .with_unit("s")
            .with_callback({
                let (gauges, attrs) = (gauges.clone(), [proxy_attr.clone()]);
                move |o| {
                    if let Some(g) = gauges.upgrade() {
                        o.observe(g.delay().as_secs_f64(), &attrs);
                    }
                }
            })
            .build();
        meter
            .u64_observable_gauge("fanout_proxy_admitted_in_flight")
            .with_description(
                "Requests admitted and waiting on a cache node or origin for their response head",
            )
            .with_callback({
                let attrs = [proxy_attr];
                move |o| {
                    if let Some(g) = gauges.upgrade() {
                        o.observe(g.in_flight() as u64, &attrs);
                    }
                }
            })
            .build();
        let seconds = config.retry_after.get().as_secs().max(1);
        Some(Arc::new(Admission {
            overload,
            retry_after: HeaderValue::from(seconds),
            entry_files: config.entry_files.clone(),
            shed,
        }))
    }

    /// A request's priority, from its path: a configured entry file name
    /// (the multivariant playlist a player asks for first), another
    /// playlist or manifest, or anything else.
    pub fn priority(&self, path: &str) -> Priority {
        let name = path.rsplit('/').next().unwrap_or(path);
        if self.entry_files.iter().any(|f| f == name) {
            Priority::Entry
        } else if name.ends_with(".m3u8") || name.ends_with(".mpd") {
            Priority::Playlist
        } else {
            Priority::Media
        }
    }

    /// The answer to a refused request, counted.
    pub fn refusal(&self, p: Priority, why: Shed) -> Response<ResponseBody> {
        let at = Priority::ALL.iter().position(|&q| q == p).unwrap_or(0);
        self.shed[at][(why == Shed::InFlight) as usize].add(1);
        let mut resp = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: try again after the time in Retry-After\n",
        );
        let headers = resp.headers_mut();
        headers.insert(header::RETRY_AFTER, self.retry_after.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paths_get_their_priorities() {
        let on = fanout_config::Overload {
            enabled: true,
            ..Default::default()
        };
        assert!(Admission::new("p", &Default::default(), &CancellationToken::new()).is_none());
        let a = Admission::new("p", &on, &CancellationToken::new()).unwrap();
        assert_eq!(a.priority("/live/main/master.m3u8"), Priority::Entry);
        assert_eq!(a.priority("/live/main/720p/index.m3u8"), Priority::Playlist);
        assert_eq!(a.priority("/dash/stream.mpd"), Priority::Playlist);
        assert_eq!(a.priority("/live/main/720p/seg-00042.ts"), Priority::Media);
        assert_eq!(a.priority("/static/logo.png"), Priority::Media);
        assert_eq!(a.priority("/"), Priority::Media);
    }
}
