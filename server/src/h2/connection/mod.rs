//! One HTTP/2 connection, server side (RFC 9113): frames read and written
//! by one task, every stream's handler and response body polled by that
//! same task, and everything a round of reading produced written in one
//! go.
//!
//! Why its own: hyper's HTTP/2 server (the `h2` crate) spawns a task per
//! request and locks the connection's shared stream state for each frame;
//! on this project's 2-core machine it answered 161-165k trivial requests
//! per second over TLS where a batched frame writer answered 434k, and
//! HAProxy's cache 190-200k (docs/performance.md). Here a request's handler
//! runs inside the connection's task, a response that is ready at once (a
//! hot-tier hit) is encoded straight into the output, and the output goes
//! out with one vectored write per round, so ten streams' responses share a
//! write (and, over TLS, a record).
//!
//! What it guards against (the abuse an edge sees): a stream limit
//! (SETTINGS_MAX_CONCURRENT_STREAMS, with REFUSED_STREAM beyond it); header
//! blocks bounded before decoding (CONTINUATION floods) and after (HPACK
//! bombs: 431); flow control on request bodies, credited only as the
//! handler reads; a reset stream's handler dropped at once, and a client
//! that resets or pings or sends settings faster than any player would
//! (rapid reset, CVE-2023-44487) told ENHANCE_YOUR_CALM; output bounded,
//! so a client that does not read stops being read; a preface and header
//! blocks that must arrive within the header-read timeout.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Aborted};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{self, setting, Reason, HEADER_LEN};
use super::recv_body;
use super::request_headers;
use crate::request_body::RequestBody;
use crate::{BoxError, ResponseBody};

mod receive;
mod send;

/// What a connection calls with each request.
pub type Handler = Arc<
    dyn Fn(Request<RequestBody>) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
        + Send
        + Sync,
>;

/// Counted while a stream is open (the listener's idle timer waits for
/// none); any value whose drop ends the count.
pub type BusyGuard = Box<dyn Send>;

#[derive(Clone)]
pub struct Limits {
    /// Streams a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Decoded header list size (names, values and 32 octets each, as
    /// SETTINGS_MAX_HEADER_LIST_SIZE counts it); beyond it, 431.
    pub max_header_list_size: u32,
    /// Time to send the preface and settings, and each header block.
    pub header_read_timeout: Duration,
    /// How much of a request body a stream may send ahead of its handler.
    pub stream_window: u32,
    /// ... and all of a connection's streams together.
    pub connection_window: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_concurrent_streams: 128,
            max_header_list_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            stream_window: 1 << 20,
            connection_window: 16 << 20,
        }
    }
}

/// Frames this server accepts are at most the default size: a client that
/// sends larger ones has ignored our settings.
const MAX_FRAME: usize = frame::DEFAULT_MAX_FRAME_SIZE as usize;
/// Past this much unwritten output, the connection stops reading requests
/// and pulling response bodies until the client reads.
const OUTPUT_HIGH: usize = 512 * 1024;
/// Control frames (PING, SETTINGS, RST_STREAM, empty DATA) a client may
/// send per second before it is told to calm down; players send a handful.
const CONTROL_FRAMES_PER_SECOND: u32 = 1_000;
/// Iovecs per vectored write.
const IOVECS: usize = 64;

/// Why the connection must end.
#[derive(Debug)]
struct ConnectionError(Reason, &'static str);

struct Stream {
    /// What the client's window lets this stream send.
    send_window: i64,
    /// Data waiting for window, oldest first.
    pending: VecDeque<Bytes>,
    /// The response's body, when it waits for window rather than in `bodies`.
    parked: Option<ResponseBody>,
    /// END_STREAM is owed once `pending` is out.
    end_after_pending: bool,
    /// END_STREAM has been written: the response is complete.
    sent: bool,
    /// The final response's head has been written: no more 103s.
    responded: bool,
    /// The request has ended (END_STREAM received, or it will never come).
    received: bool,
    /// The request body's shared state, while it streams in.
    recv: Option<Arc<recv_body::Shared>>,
    /// What the client may still send before our next WINDOW_UPDATE.
    recv_window: i64,
    /// Declared Content-Length and what has arrived, to check they agree.
    content_length: Option<u64>,
    received_bytes: u64,
    /// HEAD: the response's body is not sent.
    head: bool,
    /// Cancels the handler or the body polling when the stream is reset.
    abort: AbortHandle,
    _busy: Option<BusyGuard>,
}

/// A response's next body frame, for the stream it belongs to.
type NextFrame = Pin<Box<dyn Future<Output = BodyPoll> + Send>>;
type BodyPoll = (
    u32,
    Result<
        (
            ResponseBody,
            Option<Result<http_body::Frame<Bytes>, BoxError>>,
        ),
        Aborted,
    >,
);
type HandlerPoll = (u32, Result<Response<ResponseBody>, Aborted>);

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

/// The output: frame headers and small payloads gathered in `staging`,
/// bodies' data kept as the `Bytes` they came in, written together.
#[derive(Default)]
struct Output {
    queue: VecDeque<Bytes>,
    staging: BytesMut,
    len: usize,
}

impl Output {
    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.queue.push_back(self.staging.split().freeze());
        }
    }

    fn push(&mut self, data: Bytes) {
        self.seal();
        self.len += data.len();
        self.queue.push_back(data);
    }

    /// Appends with `f` into the staging buffer.
    fn put(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let before = self.staging.len();
        f(&mut self.staging);
        self.len += self.staging.len() - before;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.queue.front_mut().expect("written bytes were queued");
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

pub struct Connection<I> {
    io: I,
    rbuf: BytesMut,
    out: Output,
    /// Output written but maybe not flushed (TLS buffers records).
    unflushed: bool,
    handler: Handler,
    limits: Limits,
    busy: Box<dyn Fn() -> BusyGuard + Send>,
    decoder: request_headers::Decoder,
    preface_seen: bool,
    settings_seen: bool,
    peer_max_frame: usize,
    peer_initial_window: i64,
    send_window: i64,
    recv_window: i64,
    /// Request-body data read by handlers or discarded, owed back to the
    /// client as connection-level credit.
    recv_credit: u32,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    /// The highest stream a client opened (or this server refused).
    last_stream: u32,
    handlers: FuturesUnordered<Pin<Box<dyn Future<Output = HandlerPoll> + Send>>>,
    bodies: FuturesUnordered<NextFrame>,
    /// Streams whose data waits for the connection's send window.
    blocked: VecDeque<u32>,
    partial: Option<PartialBlock>,
    /// When the preface or a header block must be complete by.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// GOAWAY sent: streams after this one are refused.
    going_away: Option<u32>,
    /// The client sent GOAWAY.
    peer_going_away: bool,
    /// A connection error: write what is queued (its GOAWAY) and close.
    closing: bool,
    read_closed: bool,
    /// Woken by request bodies that have credit to give back.
    credit_waker: Arc<AtomicWaker>,
    control: ControlCount,
    /// 103 Early Hints handlers sent (see [`crate::interim`]), by stream.
    hints: Arc<crate::interim::Queue>,
}

/// Control frames counted per second.
struct ControlCount {
    since: Instant,
    count: u32,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<I> {
    /// A connection whose client has already sent `read` (part or all of
    /// its preface, when it was read to tell HTTP/2 from HTTP/1.1).
    pub fn new(
        io: I,
        read: BytesMut,
        handler: Handler,
        limits: Limits,
        busy: Box<dyn Fn() -> BusyGuard + Send>,
    ) -> Connection<I> {
        // Our SETTINGS_HEADER_TABLE_SIZE is the default, 4096 octets.
        let decoder = request_headers::Decoder::new(4096);
        let mut c = Connection {
            io,
            rbuf: read,
            out: Output::default(),
            unflushed: false,
            deadline: Some(Box::pin(tokio::time::sleep(limits.header_read_timeout))),
            handler,
            busy,
            decoder,
            preface_seen: false,
            settings_seen: false,
            peer_max_frame: MAX_FRAME,
            peer_initial_window: frame::DEFAULT_WINDOW,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: limits.connection_window as i64,
            recv_credit: 0,
            streams: HashMap::default(),
            last_stream: 0,
            handlers: FuturesUnordered::new(),
            bodies: FuturesUnordered::new(),
            blocked: VecDeque::new(),
            partial: None,
            going_away: None,
            peer_going_away: false,
            closing: false,
            read_closed: false,
            credit_waker: Arc::new(AtomicWaker::new()),
            hints: crate::interim::Queue::new(),
            control: ControlCount {
                since: Instant::now(),
                count: 0,
            },
            limits,
        };
        let l = &c.limits;
        let ours = [
            (setting::MAX_CONCURRENT_STREAMS, l.max_concurrent_streams),
            (setting::INITIAL_WINDOW_SIZE, l.stream_window),
            (setting::MAX_HEADER_LIST_SIZE, l.max_header_list_size),
            (setting::ENABLE_PUSH, 0),
        ];
        let window = l.connection_window as i64 - frame::DEFAULT_WINDOW;
        c.out.put(|b| {
            frame::settings(&ours, b);
            // The connection window starts at 65 535 whatever the settings say.
            frame::window_update(0, window as u32, b);
        });
        c
    }

    /// Stops taking new streams (GOAWAY naming the last one taken) and
    /// ends once the streams in flight are answered.
    pub fn graceful_shutdown(&mut self) {
        if self.going_away.is_none() {
            let last = self.last_stream;
            self.going_away = Some(last);
            self.out.put(|b| frame::goaway(last, Reason::NoError, b));
        }
    }

    fn fail(&mut self, e: ConnectionError) {
        if self.closing {
            return;
        }
        tracing::debug!(reason = ?e.0, why = e.1, "HTTP/2 connection error");
        let last = self.last_stream;
        self.out.put(|b| frame::goaway(last, e.0, b));
        self.closing = true;
        self.going_away.get_or_insert(last);
        for (_, s) in self.streams.drain() {
            s.abort.abort();
            if let Some(r) = &s.recv {
                r.fail("the connection failed");
            }
        }
        self.blocked.clear();
    }

    fn count_control(&mut self) -> Result<(), ConnectionError> {
        let now = Instant::now();
        if now.duration_since(self.control.since) >= Duration::from_secs(1) {
            self.control = ControlCount {
                since: now,
                count: 0,
            };
        }
        self.control.count += 1;
        if self.control.count > CONTROL_FRAMES_PER_SECOND {
            return Err(ConnectionError(
                Reason::EnhanceYourCalm,
                "too many control frames or resets",
            ));
        }
        Ok(())
    }

    /// Writes the output; `wrote` says whether anything went out (room was
    /// made for what waited on it).
    fn poll_write(&mut self, cx: &mut Context<'_>, wrote: &mut bool) -> Poll<io::Result<()>> {
        self.out.seal();
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); IOVECS];
            let mut n = 0;
            for chunk in self.out.queue.iter().take(IOVECS) {
                slices[n] = IoSlice::new(chunk);
                n += 1;
            }
            let written = if self.io.is_write_vectored() {
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])
            } else {
                Pin::new(&mut self.io).poll_write(cx, &slices[0])
            };
            match written {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(w)) => {
                    self.out.advance(w);
                    self.unflushed = true;
                    *wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.credit_waker.register(cx.waker());
        loop {
            let mut progress = false;
            if let Some(d) = self.deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    self.deadline = None;
                    tracing::debug!("HTTP/2 preface or header block not complete in time");
                    self.fail(ConnectionError(Reason::ProtocolError, "too slow"));
                }
            }
            // Read, unless the output is backed up (a client that does not
            // read its responses is not read from either) or frames read
            // earlier still wait for their turn.
            let backlog = self.rbuf.len() >= MAX_FRAME + HEADER_LEN;
            if !self.read_closed && !self.closing && self.out.len < OUTPUT_HIGH && !backlog {
                self.rbuf.reserve(MAX_FRAME + HEADER_LEN);
                let before = self.rbuf.len();
                let mut read = ReadBuf::uninit(self.rbuf.spare_capacity_mut());
                match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        // SAFETY: `poll_read` initialised these `n` bytes of
                        // the spare capacity.
                        unsafe { self.rbuf.set_len(before + n) };
                        if n == 0 {
                            self.read_closed = true;
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let caught_up = match self.read_frames(cx) {
                Ok(caught_up) => caught_up,
                Err(e) => {
                    self.fail(e);
                    true
                }
            };
            // The backlog that kept this round from reading is handled: go
            // round again to read, since nothing else may wake this task
            // (the frames may have produced no output and no request).
            if backlog && self.rbuf.len() < MAX_FRAME + HEADER_LEN {
                progress = true;
            }
            while let Poll::Ready(Some((id, answered))) = self.handlers.poll_next_unpin(cx) {
                progress = true;
                // Hints a handler sent before it answered go first.
                self.send_early_hints();
                if let Ok(response) = answered {
                    self.start_response(id, response);
                }
            }
            self.send_early_hints();
            if self.out.len < OUTPUT_HIGH {
                while let Poll::Ready(Some((id, polled))) = self.bodies.poll_next_unpin(cx) {
                    progress = true;
                    if let Ok((body, frame)) = polled {
                        self.body_frame(id, body, frame);
                    }
                    if self.out.len >= OUTPUT_HIGH {
                        break;
                    }
                }
            }
            self.credit();
            match self.poll_write(cx, &mut progress) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let done = self.closing
                        || ((self.read_closed
                            || self.peer_going_away
                            || self.going_away.is_some())
                            && self.streams.is_empty());
                    if done {
                        return Pin::new(&mut self.io).poll_shutdown(cx);
                    }
                }
                Poll::Pending => {}
            }
            // Out of budget: the runtime wakes this task again once the
            // others have had their turn.
            if !progress || !caught_up {
                return Poll::Pending;
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Future for Connection<I> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_connection(cx)
    }
}
