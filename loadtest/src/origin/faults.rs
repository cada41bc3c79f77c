//! Injected faults on the origin's response bodies: a throughput cap (a
//! slow origin, so a cache's fill takes real time) and a connection that
//! breaks after some bytes (an origin crash mid-body).

use std::time::Duration;

use bytes::Bytes;
use fanout_server::{BoxError, ResponseBody};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::time::Instant;

/// Pieces a throttled body is cut into, so bytes trickle rather than burst.
const PIECE: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("injected fault: connection broken after {0} body bytes")]
struct Aborted(u64);

struct Shaper {
    body: ResponseBody,
    pending: Bytes,
    sent: u64,
    started: Instant,
    throughput: Option<u64>,
    abort_after: Option<u64>,
}

/// Wraps `body` so it obeys `throughput` (bytes/s) and breaks after
/// `abort_after` bytes.
pub fn shape(
    body: ResponseBody,
    throughput: Option<u64>,
    abort_after: Option<u64>,
) -> ResponseBody {
    let shaper = Shaper {
        body,
        pending: Bytes::new(),
        sent: 0,
        started: Instant::now(),
        throughput,
        abort_after,
    };
    let frames = stream::unfold(shaper, |mut s| async move {
        loop {
            if let Some(limit) = s.abort_after {
                if s.sent >= limit {
                    return Some((
                        Err::<Frame<Bytes>, BoxError>(Box::new(Aborted(s.sent))),
                        s.finished(),
                    ));
                }
            }
            if s.pending.is_empty() {
                match s.body.frame().await? {
                    Ok(f) => match f.into_data() {
                        Ok(data) => s.pending = data,
                        Err(trailers) => return Some((Ok(trailers), s)),
                    },
                    Err(e) => return Some((Err(e), s)),
                }
                continue;
            }
            let mut n = s.pending.len();
            if s.throughput.is_some() {
                n = n.min(PIECE);
            }
            if let Some(limit) = s.abort_after {
                n = n.min((limit - s.sent) as usize);
            }
            let piece = s.pending.split_to(n);
            s.sent += n as u64;
            if let Some(rate) = s.throughput {
                // Wait until the bytes sent so far are due at this rate.
                let due = s.started + Duration::from_secs_f64(s.sent as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
            return Some((Ok(Frame::data(piece)), s));
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

impl Shaper {
    /// After an abort the stream ends: replace the body with an empty one.
    fn finished(mut self) -> Self {
        self.body = fanout_server::empty();
        self.pending = Bytes::new();
        self.abort_after = None;
        self
    }
}
