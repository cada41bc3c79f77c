//! The HTTP/2 server against a client that writes raw frames, over an
//! in-memory pipe: the protocol as RFC 9113 has it, and the abuse the
//! connection must survive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::{flag, kind, setting, Head, HEADER_LEN, PREFACE};
use super::{Connection, Handler, Limits};
use crate::{full, RequestBody};

const DEADLINE: Duration = Duration::from_secs(10);

/// A frame as the test client reads it.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Bytes,
}

struct Client {
    io: DuplexStream,
    buf: BytesMut,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Client {
    /// Starts a connection with `handler` and sends the preface and empty
    /// settings.
    async fn start(
        handler: Handler,
        limits: Limits,
    ) -> (Client, tokio::task::JoinHandle<std::io::Result<()>>) {
        Client::start_with(handler, limits, &[]).await
    }

    async fn start_with(
        handler: Handler,
        limits: Limits,
        settings: &[(u16, u32)],
    ) -> (Client, tokio::task::JoinHandle<std::io::Result<()>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let conn = Connection::new(
            server,
            BytesMut::new(),
            handler,
            limits,
            Box::new(|| Box::new(())),
        );
        let task = tokio::spawn(conn);
        let mut c = Client {
            io: client,
            buf: BytesMut::new(),
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
        };
        c.io.write_all(PREFACE).await.unwrap();
        let mut s = BytesMut::new();
        super::frame::settings(settings, &mut s);
        c.io.write_all(&s).await.unwrap();
        (c, task)
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut b = BytesMut::new();
        Head::write(kind, flags, stream, payload.len(), &mut b);
        b.put_slice(payload);
        self.io.write_all(&b).await.unwrap();
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.encoder
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    async fn request(&mut self, stream: u32, method: &str, path: &str, end: bool) {
        let block = self.block(&[
            (":method", method),
            (":scheme", "https"),
            (":authority", "a.example"),
            (":path", path),
        ]);
        let flags = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
        self.send(kind::HEADERS, flags, stream, &block).await;
    }

    /// The next frame, or `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        let read = async {
            loop {
                if self.buf.len() >= HEADER_LEN {
                    let head = Head::parse(&self.buf);
                    if self.buf.len() >= HEADER_LEN + head.len as usize {
                        self.buf.advance(HEADER_LEN);
                        let payload = self.buf.split_to(head.len as usize).freeze();
                        return Some(Frame {
                            kind: head.kind,
                            flags: head.flags,
                            stream: head.stream,
                            payload,
                        });
                    }
                }
                if self.io.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a frame in time")
    }

    /// Frames until one matches `want`, skipping SETTINGS, WINDOW_UPDATE and
    /// PING acks.
    async fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let f = self.next().await.expect("the connection is open");
            if want(&f) {
                return f;
            }
        }
    }

    fn fields(&mut self, block: &[u8]) -> Vec<(String, String)> {
        self.decoder
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    /// The status and body of the response on `stream`.
    async fn response(&mut self, stream: u32) -> (u16, Vec<u8>) {
        let h = self
            .until(|f| f.kind == kind::HEADERS && f.stream == stream)
            .await;
        let fields = self.fields(&h.payload);
        let status: u16 = fields[0].1.parse().unwrap();
        let mut body = Vec::new();
        if h.flags & flag::END_STREAM == 0 {
            loop {
                let d = self
                    .until(|f| f.kind == kind::DATA && f.stream == stream)
                    .await;
                body.extend_from_slice(&d.payload);
                if d.flags & flag::END_STREAM != 0 {
                    break;
                }
            }
        }
        (status, body)
    }
}

fn handler(
    f: impl Fn(
            Request<RequestBody>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Response<crate::ResponseBody>> + Send>,
        > + Send
        + Sync
        + 'static,
) -> Handler {
    Arc::new(f)
}

fn hello() -> Handler {
    handler(|req| {
        Box::pin(async move {
            let mut r = Response::new(full(format!("{} {}", req.method(), req.uri())));
            r.headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            r
        })
    })
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

#[tokio::test]
async fn settings_are_exchanged_and_a_request_gets_its_response() {
    let (mut c, _task) = Client::start(hello(), Limits::default()).await;
    let first = c.next().await.unwrap();
    assert_eq!(
        first.kind,
        kind::SETTINGS,
        "the server speaks first with SETTINGS"
    );
    assert_eq!(first.flags, 0);
    let advertised: Vec<(u16, u32)> = first
        .payload
        .chunks(6)
        .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32_at(s, 2)))
        .collect();
    assert!(advertised.contains(&(setting::MAX_CONCURRENT_STREAMS, 128)));
    c.request(1, "GET", "/a?b=1", true).await;
    let ack = c.until(|f| f.kind == kind::SETTINGS).await;
    assert_eq!(ack.flags, flag::ACK, "our settings are acknowledged");
    let h = c.until(|f| f.kind == kind::HEADERS).await;
    assert_eq!(h.flags & flag::END_HEADERS, flag::END_HEADERS);
    let fields = c.fields(&h.payload);
    assert_eq!(fields[0], (":status".into(), "200".into()));
    assert!(fields.contains(&("content-type".into(), "text/plain".into())));
    assert!(fields.iter().any(|(n, _)| n == "date"));
    let d = c.until(|f| f.kind == kind::DATA).await;
    assert_eq!(&d.payload[..], b"GET https://a.example/a?b=1");
    assert_eq!(d.flags, flag::END_STREAM);
    // Stream ids go up; more streams on the same connection.
    for id in [3, 5, 7] {
        c.request(id, "HEAD", "/h", true).await;
        let (status, body) = c.response(id).await;
        assert_eq!((status, body.len()), (200, 0), "HEAD: no body");
    }
    c.send(kind::PING, 0, 0, b"12345678").await;
    let pong = c.until(|f| f.kind == kind::PING).await;
    assert_eq!(
        (pong.flags, &pong.payload[..]),
        (flag::ACK, &b"12345678"[..])
    );
}

#[tokio::test]
async fn request_bodies_arrive_whole_past_the_window_as_the_handler_reads() {
    let echo = handler(|req| {
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let sum: u64 = body.iter().map(|&b| b as u64).sum();
            Response::new(full(format!("{} {sum}", body.len())))
        })
    });
    let limits = Limits {
        stream_window: 64 * 1024,
        connection_window: 128 * 1024,
        ..Limits::default()
    };
    let (mut c, _task) = Client::start(echo, limits).await;
    c.request(1, "POST", "/upload", false).await;
    // Three times the stream window, sent as the server's credit allows.
    let total = 3 * 64 * 1024;
    let (mut sent, mut stream_window, mut conn_window) = (0usize, 64 * 1024i64, 65_535i64);
    let mut expected = 0u64;
    while sent < total {
        let n = (total - sent)
            .min(16_384)
            .min(stream_window as usize)
            .min(conn_window as usize);
        if n == 0 {
            let f = c.until(|f| f.kind == kind::WINDOW_UPDATE).await;
            let inc = u32_at(&f.payload, 0) as i64;
            if f.stream == 0 {
                conn_window += inc;
            } else {
                stream_window += inc;
            }
            continue;
        }
        let chunk: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
        expected += chunk.iter().map(|&b| b as u64).sum::<u64>();
        sent += n;
        let end = if sent == total { flag::END_STREAM } else { 0 };
        c.send(kind::DATA, end, 1, &chunk).await;
        stream_window -= n as i64;
        conn_window -= n as i64;
    }
    let (status, body) = c.response(1).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{total} {expected}")
    );
}

#[tokio::test]
async fn responses_wait_for_the_clients_window() {
    let big = handler(|req| {
        Box::pin(async move {
            if req.uri().path() == "/hold" {
                let never = futures_util::stream::pending::<
                    Result<http_body::Frame<Bytes>, crate::BoxError>,
                >();
                return Response::new(BodyExt::boxed_unsync(http_body_util::StreamBody::new(
                    never,
                )));
            }
            Response::new(full(vec![7u8; 1000]))
        })
    });
    let (mut c, _task) = Client::start_with(
        big,
        Limits::default(),
        &[(setting::INITIAL_WINDOW_SIZE, 100)],
    )
    .await;
    c.request(1, "GET", "/", true).await;
    let first = c.until(|f| f.kind == kind::DATA).await;
    assert_eq!(first.payload.len(), 100, "no more than the stream's window");
    assert_eq!(first.flags & flag::END_STREAM, 0);
    c.send(kind::WINDOW_UPDATE, 0, 1, &900u32.to_be_bytes())
        .await;
    let rest = c.until(|f| f.kind == kind::DATA).await;
    assert_eq!(rest.payload.len(), 900);
    assert_eq!(rest.flags, flag::END_STREAM);
    // A window pushed past 2^31-1 is a stream error: stream 3's response
    // waits for its body, so its window stays at 100.
    c.request(3, "GET", "/hold", true).await;
    c.until(|f| f.kind == kind::HEADERS && f.stream == 3).await;
    c.send(kind::WINDOW_UPDATE, 0, 3, &0x7fff_ffffu32.to_be_bytes())
        .await;
    let rst = c.until(|f| f.kind == kind::RST_STREAM).await;
    assert_eq!(
        (rst.stream, u32_at(&rst.payload, 0)),
        (3, 0x3),
        "FLOW_CONTROL_ERROR"
    );
}

/// A handler that never answers and counts how many of it are alive.
fn stuck(alive: Arc<AtomicUsize>) -> Handler {
    handler(move |_| {
        let alive = alive.clone();
        Box::pin(async move {
            struct Alive(Arc<AtomicUsize>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            alive.fetch_add(1, Ordering::SeqCst);
            let _alive = Alive(alive);
            std::future::pending::<()>().await;
            unreachable!()
        })
    })
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_reset_stream_drops_its_handler_and_the_limit_refuses_more() {
    let alive = Arc::new(AtomicUsize::new(0));
    let limits = Limits {
        max_concurrent_streams: 2,
        ..Limits::default()
    };
    let (mut c, _task) = Client::start(stuck(alive.clone()), limits).await;
    c.request(1, "GET", "/", true).await;
    c.request(3, "GET", "/", true).await;
    wait_for("two handlers running", || alive.load(Ordering::SeqCst) == 2).await;
    c.request(5, "GET", "/", true).await;
    let refused = c.until(|f| f.kind == kind::RST_STREAM).await;
    assert_eq!(
        (refused.stream, u32_at(&refused.payload, 0)),
        (5, 0x7),
        "REFUSED_STREAM"
    );
    c.send(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()).await;
    wait_for("the reset stream's handler dropped", || {
        alive.load(Ordering::SeqCst) == 1
    })
    .await;
    c.request(7, "GET", "/", true).await;
    wait_for("room for a new stream", || {
        alive.load(Ordering::SeqCst) == 2
    })
    .await;
}

#[tokio::test]
async fn rapid_resets_end_the_connection() {
    let alive = Arc::new(AtomicUsize::new(0));
    let (mut c, task) = Client::start(stuck(alive.clone()), Limits::default()).await;
    // CVE-2023-44487: open and reset, as fast as the client can, until
    // the server stops taking it.
    let mut id = 1u32;
    for _ in 0..5_000 {
        let block = c.block(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]);
        let mut frames = BytesMut::new();
        Head::write(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            id,
            block.len(),
            &mut frames,
        );
        frames.put_slice(&block);
        Head::write(kind::RST_STREAM, 0, id, 4, &mut frames);
        frames.put_u32(8);
        if c.io.write_all(&frames).await.is_err() {
            break;
        }
        id += 2;
        assert!(alive.load(Ordering::SeqCst) <= 128, "handlers pile up");
    }
    let goaway = c.until(|f| f.kind == kind::GOAWAY).await;
    assert_eq!(u32_at(&goaway.payload, 4), 0xb, "ENHANCE_YOUR_CALM");
    assert!(c.next().await.is_none(), "and then closed");
    task.await.unwrap().unwrap();
    wait_for("every handler dropped", || {
        alive.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_are_reset_and_oversized_headers_get_431() {
    let limits = Limits {
        max_header_list_size: 1024,
        ..Limits::default()
    };
    let (mut c, _task) = Client::start(hello(), limits).await;
    let cases: [&[(&str, &str)]; 5] = [
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("Upper", "x"),
        ],
        &[(":method", "GET"), (":scheme", "https")],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("connection", "close"),
        ],
        &[
            (":method", "GET"),
            ("x", "y"),
            (":scheme", "https"),
            (":path", "/"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":status", "200"),
        ],
    ];
    let mut id = 1;
    for fields in cases {
        let block = c.block(fields);
        c.send(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            id,
            &block,
        )
        .await;
        let rst = c
            .until(|f| f.kind == kind::RST_STREAM || f.kind == kind::HEADERS)
            .await;
        assert_eq!(
            (rst.kind, rst.stream, u32_at(&rst.payload, 0)),
            (kind::RST_STREAM, id, 0x1),
            "{fields:?}"
        );
        id += 2;
    }
    let long = "v".repeat(2000);
    let block = c.block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/"),
        ("x-big", &long),
    ]);
    c.send(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        id,
        &block,
    )
    .await;
    assert_eq!(c.response(id).await.0, 431);
    // The connection still works: the decoder kept up with the client.
    c.request(id + 2, "GET", "/fine", true).await;
    assert_eq!(c.response(id + 2).await.0, 200);
}

#[tokio::test]
async fn a_continuation_flood_ends_the_connection() {
    let limits = Limits {
        max_header_list_size: 4096,
        ..Limits::default()
    };
    let (mut c, task) = Client::start(hello(), limits).await;
    let block = c.block(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]);
    c.send(kind::HEADERS, 0, 1, &block).await;
    // Fields that decode, but far more of them than the header list may hold.
    let mut field = vec![0x40, 8];
    field.extend_from_slice(b"x-filler");
    // 500 as an HPACK integer with a 7-bit prefix: 127, then 373.
    field.extend_from_slice(&[127, 0x80 | (373 % 128) as u8, (373 / 128) as u8]);
    field.extend_from_slice(&[b'f'; 500]);
    for _ in 0..100 {
        c.send(kind::CONTINUATION, 0, 1, &field).await;
    }
    let goaway = c.until(|f| f.kind == kind::GOAWAY).await;
    assert_eq!(u32_at(&goaway.payload, 4), 0xb, "ENHANCE_YOUR_CALM");
    assert!(c.next().await.is_none());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn protocol_errors_end_the_connection_with_goaway() {
    // A frame on stream 0 that belongs to a stream, and an even stream id.
    for (kind_, stream) in [(kind::DATA, 0), (kind::HEADERS, 2)] {
        let (mut c, task) = Client::start(hello(), Limits::default()).await;
        let block = c.block(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]);
        c.send(kind_, flag::END_HEADERS | flag::END_STREAM, stream, &block)
            .await;
        let goaway = c.until(|f| f.kind == kind::GOAWAY).await;
        assert_eq!(u32_at(&goaway.payload, 4), 0x1, "PROTOCOL_ERROR");
        assert!(c.next().await.is_none());
        task.await.unwrap().unwrap();
    }
    // Not the preface at all.
    let (client, server) = tokio::io::duplex(4096);
    let conn = Connection::new(
        server,
        BytesMut::new(),
        hello(),
        Limits::default(),
        Box::new(|| Box::new(())),
    );
    let task = tokio::spawn(conn);
    let mut client = client;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_streams_in_flight_and_refuses_new_ones() {
    let (release, wait) = tokio::sync::watch::channel(false);
    let slow = handler(move |_| {
        let mut wait = wait.clone();
        Box::pin(async move {
            let _ = wait.wait_for(|go| *go).await;
            Response::new(full("done"))
        })
    });
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut conn = Connection::new(
        server,
        BytesMut::new(),
        slow,
        Limits::default(),
        Box::new(|| Box::new(())),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::pin!(stopped);
        let mut stopped_once = false;
        loop {
            tokio::select! {
                r = &mut conn => return r,
                _ = &mut stopped, if !stopped_once => {
                    stopped_once = true;
                    conn.graceful_shutdown();
                }
            }
        }
    });
    let mut c = Client {
        io: client,
        buf: BytesMut::new(),
        encoder: loona_hpack::Encoder::new(),
        decoder: loona_hpack::Decoder::new(),
    };
    c.io.write_all(PREFACE).await.unwrap();
    c.send(kind::SETTINGS, 0, 0, &[]).await;
    c.request(1, "GET", "/", true).await;
    c.until(|f| f.kind == kind::SETTINGS && f.flags == flag::ACK)
        .await;
    // Let the server take stream 1 before it goes away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    let goaway = c.until(|f| f.kind == kind::GOAWAY).await;
    assert_eq!(
        (u32_at(&goaway.payload, 0), u32_at(&goaway.payload, 4)),
        (1, 0),
        "last stream 1, NO_ERROR"
    );
    c.request(3, "GET", "/", true).await;
    let refused = c.until(|f| f.kind == kind::RST_STREAM).await;
    assert_eq!((refused.stream, u32_at(&refused.payload, 0)), (3, 0x7));
    release.send(true).unwrap();
    let (status, body) = c.response(1).await;
    assert_eq!((status, &body[..]), (200, &b"done"[..]));
    assert!(
        c.next().await.is_none(),
        "closed once stream 1 was answered"
    );
    task.await.unwrap().unwrap();
}

/// A 100 KB response body that counts how often it is asked for data.
struct Counted {
    polls: Arc<AtomicUsize>,
    left: bool,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, crate::BoxError>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let left = std::mem::take(&mut self.left);
        std::task::Poll::Ready(
            left.then(|| Ok(http_body::Frame::data(Bytes::from(vec![1u8; 100_000])))),
        )
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_being_read() {
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    let big = handler(move |_| {
        let polls = counted.clone();
        Box::pin(async move { Response::new(BodyExt::boxed_unsync(Counted { polls, left: true })) })
    });
    let (mut c, _task) = Client::start_with(
        big,
        Limits::default(),
        &[(setting::INITIAL_WINDOW_SIZE, 1 << 30)],
    )
    .await;
    c.send(
        kind::WINDOW_UPDATE,
        0,
        0,
        &((1u32 << 30) - 65_535).to_be_bytes(),
    )
    .await;
    // Requests keep coming (windows wide open), and no response is read
    // past what the 64 KiB pipe holds.
    let mut id = 1;
    let sent = async {
        while id <= 2_001 {
            c.request(id, "GET", "/", true).await;
            id += 2;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), sent).await;
    // Each poll brings 100 KB; the output stops being filled past 512 KiB.
    let taken = polls.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&taken),
        "{taken} response bodies read while the client read nothing: output is not bounded"
    );
}

#[tokio::test]
async fn early_hints_go_out_as_a_headers_frame_before_the_response() {
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = std::sync::Mutex::new(Some(gate));
    let h = handler(move |_req| {
        let gate = gate.lock().unwrap().take();
        Box::pin(async move {
            let mut hints = http::HeaderMap::new();
            hints.insert("link", "</a.css>; rel=preload".parse().unwrap());
            crate::interim::send_early_hints(hints);
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Response::new(full("done"))
        })
    });
    let (mut c, _task) = Client::start(h, Limits::default()).await;
    c.request(1, "GET", "/", true).await;
    // The hint arrives while the handler still waits for its answer.
    let hint = c.until(|f| f.kind == kind::HEADERS && f.stream == 1).await;
    assert_eq!(
        hint.flags & flag::END_STREAM,
        0,
        "a 103 does not end the stream"
    );
    let fields = c.fields(&hint.payload);
    assert_eq!(fields[0], (":status".to_string(), "103".to_string()));
    assert!(fields.contains(&("link".to_string(), "</a.css>; rel=preload".to_string())));
    release.send(()).unwrap();
    assert_eq!(c.response(1).await, (200, b"done".to_vec()));
    // A second request's handler sends hints too, and answers at once:
    // they still precede its response.
    c.request(3, "GET", "/", true).await;
    let first = c.until(|f| f.kind == kind::HEADERS && f.stream == 3).await;
    assert_eq!(c.fields(&first.payload)[0].1, "103");
    assert_eq!(c.response(3).await, (200, b"done".to_vec()));
}

#[tokio::test]
async fn an_hpack_bomb_gets_431_without_expanding_and_the_connection_goes_on() {
    let (mut c, _task) = Client::start(hello(), Limits::default()).await;
    // One 4 000-byte value put in the dynamic table, then referenced
    // 16 000 times by its one-byte index (62, the newest entry): 16 KB
    // on the wire that decodes to 64 MB (RFC 7541 §7.3).
    let mut block = c.block(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]);
    block.push(0x40); // literal with incremental indexing, new name
    block.push(5);
    block.extend_from_slice(b"x-big");
    // 4000 as a 7-bit prefix integer (§5.1): 127, then 3873 in 7-bit groups.
    block.extend_from_slice(&[0x7f, 0x80 | (3873 % 128) as u8, (3873 / 128) as u8]);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0x80 | 62, 16_000));
    let mut frames = BytesMut::new();
    let mut rest = &block[..];
    let mut first = true;
    while !rest.is_empty() {
        let n = rest.len().min(16_384);
        let (kind, mut flags) = if first {
            (kind::HEADERS, flag::END_STREAM)
        } else {
            (kind::CONTINUATION, 0)
        };
        if n == rest.len() {
            flags |= flag::END_HEADERS;
        }
        Head::write(kind, flags, 1, n, &mut frames);
        frames.put_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
    }
    c.io.write_all(&frames).await.unwrap();
    assert_eq!(c.response(1).await.0, 431);
    // The decoder kept its table in step with the client's.
    c.request(3, "GET", "/after", true).await;
    let (status, body) = c.response(3).await;
    assert_eq!(status, 200);
    assert!(
        body.ends_with(b"/after"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn ping_and_settings_floods_end_the_connection() {
    for flood in [kind::PING, kind::SETTINGS] {
        let (mut c, task) = Client::start(hello(), Limits::default()).await;
        let mut frames = BytesMut::new();
        for _ in 0..5_000 {
            if flood == kind::PING {
                Head::write(kind::PING, 0, 0, 8, &mut frames);
                frames.put_u64(7);
            } else {
                super::frame::settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)], &mut frames);
            }
        }
        // The server may close before it has read all of it.
        let _ = c.io.write_all(&frames).await;
        let goaway = c.until(|f| f.kind == kind::GOAWAY).await;
        assert_eq!(
            u32_at(&goaway.payload, 4),
            0xb,
            "ENHANCE_YOUR_CALM for {flood}"
        );
        while c.next().await.is_some() {}
        task.await.unwrap().unwrap();
    }
}

/// More frames in one write than a task's budget handles in a turn, small
/// ones and then full-size ones: the connection goes on reading after each
/// turn until the whole body has arrived, and answers it.
#[tokio::test]
async fn a_burst_larger_than_a_turn_is_read_to_its_end() {
    let echo = handler(|req| {
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let sum: u64 = body.iter().map(|&b| b as u64).sum();
            Response::new(full(format!("{} {sum}", body.len())))
        })
    });
    for small in [120, 127, 128, 129, 300] {
        let (mut c, _task) = Client::start(echo.clone(), Limits::default()).await;
        let block = c.block(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "a.example"),
            (":path", "/upload"),
        ]);
        let mut frames = BytesMut::new();
        Head::write(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            block.len(),
            &mut frames,
        );
        frames.put_slice(&block);
        let (mut len, mut sum) = (0usize, 0u64);
        for i in 0..small {
            let chunk = [(i % 251) as u8; 7];
            Head::write(kind::DATA, 0, 1, chunk.len(), &mut frames);
            frames.put_slice(&chunk);
            len += chunk.len();
            sum += chunk.iter().map(|&b| b as u64).sum::<u64>();
        }
        for i in 0..3 {
            let chunk = vec![(i + 1) as u8; 16_000];
            let end = if i == 2 { flag::END_STREAM } else { 0 };
            Head::write(kind::DATA, end, 1, chunk.len(), &mut frames);
            frames.put_slice(&chunk);
            len += chunk.len();
            sum += chunk.iter().map(|&b| b as u64).sum::<u64>();
        }
        // Under the connection's initial window of 65 535 octets.
        assert!(len < 65_535);
        c.io.write_all(&frames).await.unwrap();
        let (status, body) = c.response(1).await;
        assert_eq!(status, 200, "{small} small frames first");
        assert_eq!(String::from_utf8(body).unwrap(), format!("{len} {sum}"));
    }
}

/// Frames that produce nothing (extension frames, which a server ignores)
/// in a burst larger than a turn, then a request: a turn that starts with
/// a full buffer and handles the rest of it must still go on to read.
#[tokio::test]
async fn a_burst_of_ignored_frames_does_not_stall_the_request_behind_it() {
    for tiny in (100..=260).step_by(8) {
        let (mut c, _task) = Client::start(hello(), Limits::default()).await;
        c.until(|f| f.kind == kind::SETTINGS && f.flags == flag::ACK)
            .await;
        let mut frames = BytesMut::new();
        for _ in 0..tiny {
            Head::write(0xfa, 0, 0, 1, &mut frames);
            frames.put_u8(0);
        }
        for _ in 0..4 {
            Head::write(0xfa, 0, 0, 16_000, &mut frames);
            frames.put_slice(&[0; 16_000]);
        }
        c.io.write_all(&frames).await.unwrap();
        c.request(1, "GET", "/after", true).await;
        let (status, body) = c.response(1).await;
        assert_eq!(status, 200, "after {tiny} small frames");
        assert_eq!(body, b"GET https://a.example/after");
    }
}
