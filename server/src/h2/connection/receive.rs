//! What the connection does with each frame a client sends: settings,
//! flow control, resets, request headers (decoded, checked, handed to the
//! handler) and request bodies.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connection, ConnectionError, PartialBlock, Stream, MAX_FRAME, OUTPUT_HIGH};
use crate::h2::frame::{self, flag, kind, setting, Head, Reason, HEADER_LEN, PREFACE};
use crate::h2::recv_body::{self, RecvBody};
use crate::h2::request_fields::{content_length, Fields, TooLarge};
use crate::request_body::RequestBody;

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<I> {
    /// Reads every complete frame in the read buffer.
    /// Handles the complete frames read so far, one unit of the task's
    /// budget each (tokio's cooperative scheduling): a client that sends
    /// frames faster than they are handled (a flood of streams, resets or
    /// control frames) has its burst handled a budget at a time, with the
    /// runtime's other connections served in between. Returns `false` when
    /// the budget ran out with frames left; the task is woken to go on.
    pub(super) fn read_frames(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnectionError> {
        if !self.preface_seen {
            let have = self.rbuf.len().min(PREFACE.len());
            if self.rbuf[..have] != PREFACE[..have] {
                return Err(ConnectionError(
                    Reason::ProtocolError,
                    "not an HTTP/2 preface",
                ));
            }
            if have < PREFACE.len() {
                return Ok(true);
            }
            self.rbuf.advance(PREFACE.len());
            self.preface_seen = true;
        }
        while self.rbuf.len() >= HEADER_LEN && self.out.len < OUTPUT_HIGH && !self.closing {
            let head = Head::parse(&self.rbuf[..HEADER_LEN]);
            if head.len as usize > MAX_FRAME {
                return Err(ConnectionError(
                    Reason::FrameSizeError,
                    "frame larger than our SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if self.rbuf.len() < HEADER_LEN + head.len as usize {
                break;
            }
            let Poll::Ready(budget) = tokio::task::coop::poll_proceed(cx) else {
                return Ok(false);
            };
            budget.made_progress();
            let mut bytes = self.rbuf.split_to(HEADER_LEN + head.len as usize);
            bytes.advance(HEADER_LEN);
            let payload = bytes.freeze();
            if !self.settings_seen && head.kind != kind::SETTINGS {
                return Err(ConnectionError(
                    Reason::ProtocolError,
                    "the preface must be followed by SETTINGS",
                ));
            }
            if self.partial.is_some() && head.kind != kind::CONTINUATION {
                return Err(ConnectionError(
                    Reason::ProtocolError,
                    "a header block was interrupted",
                ));
            }
            self.frame(head, payload)?;
        }
        Ok(true)
    }

    pub(super) fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnectionError> {
        match head.kind {
            kind::DATA => self.data(head, payload),
            kind::HEADERS => self.headers(head, payload),
            kind::CONTINUATION => self.continuation(head, payload),
            kind::PRIORITY => {
                if head.stream == 0 {
                    return Err(ConnectionError(
                        Reason::ProtocolError,
                        "PRIORITY on stream 0",
                    ));
                }
                if payload.len() != 5 {
                    self.reset(head.stream, Reason::FrameSizeError);
                }
                Ok(())
            }
            kind::RST_STREAM => self.rst_stream(head, &payload),
            kind::SETTINGS => self.settings(head, &payload),
            kind::PUSH_PROMISE => Err(ConnectionError(
                Reason::ProtocolError,
                "clients do not push",
            )),
            kind::PING => {
                if head.stream != 0 {
                    return Err(ConnectionError(Reason::ProtocolError, "PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err(ConnectionError(
                        Reason::FrameSizeError,
                        "PING of the wrong size",
                    ));
                }
                if head.flags & flag::ACK == 0 {
                    self.count_control()?;
                    self.out.put(|b| frame::ping_ack(&payload, b));
                }
                Ok(())
            }
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err(ConnectionError(Reason::ProtocolError, "GOAWAY on a stream"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(head, &payload),
            // Unknown frame types are ignored (§4.1, §5.5).
            _ => Ok(()),
        }
    }

    pub(super) fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream != 0 {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "SETTINGS on a stream",
            ));
        }
        if head.flags & flag::ACK != 0 {
            if !payload.is_empty() {
                return Err(ConnectionError(
                    Reason::FrameSizeError,
                    "SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if payload.len() % 6 != 0 {
            return Err(ConnectionError(
                Reason::FrameSizeError,
                "SETTINGS of the wrong size",
            ));
        }
        if self.settings_seen {
            self.count_control()?;
        }
        self.settings_seen = true;
        if self.partial.is_none() {
            self.deadline = None;
        }
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(ConnectionError(
                        Reason::ProtocolError,
                        "SETTINGS_ENABLE_PUSH is not 0 or 1",
                    ));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value as i64 > frame::MAX_WINDOW {
                        return Err(ConnectionError(
                            Reason::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = value as i64 - self.peer_initial_window;
                    self.peer_initial_window = value as i64;
                    let mut opened = Vec::new();
                    for (id, s) in self.streams.iter_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(ConnectionError(
                                Reason::FlowControlError,
                                "a stream window overflowed",
                            ));
                        }
                        if delta > 0 && (!s.pending.is_empty() || s.parked.is_some()) {
                            opened.push(*id);
                        }
                    }
                    for id in opened {
                        self.flush_stream(id);
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value)
                    {
                        return Err(ConnectionError(
                            Reason::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                // The encoder keeps no dynamic table (response_headers), so
                // the peer's table size and stream limit do not matter.
                _ => {}
            }
        }
        self.out.put(frame::settings_ack);
        Ok(())
    }

    pub(super) fn window_update(
        &mut self,
        head: Head,
        payload: &[u8],
    ) -> Result<(), ConnectionError> {
        if payload.len() != 4 {
            return Err(ConnectionError(
                Reason::FrameSizeError,
                "WINDOW_UPDATE of the wrong size",
            ));
        }
        let increment = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & 0x7fff_ffff) as i64;
        if head.stream == 0 {
            if increment == 0 {
                return Err(ConnectionError(
                    Reason::ProtocolError,
                    "a zero WINDOW_UPDATE",
                ));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(ConnectionError(
                    Reason::FlowControlError,
                    "the connection window overflowed",
                ));
            }
            for _ in 0..self.blocked.len() {
                let Some(id) = self.blocked.pop_front() else {
                    break;
                };
                self.flush_stream(id);
            }
            return Ok(());
        }
        if head.stream > self.last_stream {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            // A closed stream: harmless (§6.9).
            return Ok(());
        };
        if increment == 0 {
            self.reset(head.stream, Reason::ProtocolError);
            return Ok(());
        }
        s.send_window += increment;
        if s.send_window > frame::MAX_WINDOW {
            self.reset(head.stream, Reason::FlowControlError);
            return Ok(());
        }
        self.flush_stream(head.stream);
        Ok(())
    }

    pub(super) fn rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "RST_STREAM on stream 0",
            ));
        }
        if payload.len() != 4 {
            return Err(ConnectionError(
                Reason::FrameSizeError,
                "RST_STREAM of the wrong size",
            ));
        }
        if head.stream > self.last_stream {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "RST_STREAM on an idle stream",
            ));
        }
        self.count_control()?;
        if let Some(s) = self.streams.remove(&head.stream) {
            s.abort.abort();
            if let Some(r) = &s.recv {
                r.fail("the client reset the stream");
            }
        }
        Ok(())
    }

    pub(super) fn data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(ConnectionError(Reason::ProtocolError, "DATA on stream 0"));
        }
        // Flow control counts the whole payload, padding included (§6.9.1).
        let len = payload.len() as i64;
        self.recv_window -= len;
        if self.recv_window < 0 {
            return Err(ConnectionError(
                Reason::FlowControlError,
                "the connection window was overrun",
            ));
        }
        let end = head.flags & flag::END_STREAM != 0;
        let Some(data) = frame::unpadded(head.flags, &payload) else {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "DATA padding longer than the frame",
            ));
        };
        let data = payload.slice_ref(data);
        // Padding is credited at once; so is everything when the stream is
        // gone or its handler no longer reads.
        self.recv_credit += (payload.len() - data.len()) as u32;
        if data.is_empty() && !end {
            self.count_control()?;
        }
        if head.stream > self.last_stream {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "DATA on an idle stream",
            ));
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            // A stream this side reset or finished: its frames are ignored
            // (§5.1, "closed"), their data credited back.
            self.recv_credit += data.len() as u32;
            return Ok(());
        };
        if s.received {
            self.recv_credit += data.len() as u32;
            self.reset(head.stream, Reason::StreamClosed);
            return Ok(());
        }
        s.recv_window -= len;
        s.received_bytes += data.len() as u64;
        let overran = s.recv_window < 0;
        let length_wrong = s
            .content_length
            .is_some_and(|n| s.received_bytes > n || (end && s.received_bytes != n));
        if overran || length_wrong {
            self.recv_credit += data.len() as u32;
            let reason = if overran {
                Reason::FlowControlError
            } else {
                Reason::ProtocolError
            };
            self.reset(head.stream, reason);
            return Ok(());
        }
        let n = data.len() as u32;
        let kept = match &s.recv {
            Some(r) => r.push(data, end),
            None => false,
        };
        if !kept {
            self.recv_credit += n;
        }
        if end {
            s.received = true;
            s.recv = None;
            self.close_if_done(head.stream);
        }
        Ok(())
    }

    pub(super) fn headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "HEADERS on stream 0",
            ));
        }
        let Some(fragment) = frame::headers_fragment(head.flags, &payload) else {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "HEADERS padding or priority do not fit",
            ));
        };
        let mut block = BytesMut::with_capacity(fragment.len());
        block.extend_from_slice(fragment);
        let partial = PartialBlock {
            stream: head.stream,
            end_stream: head.flags & flag::END_STREAM != 0,
            block,
        };
        if head.flags & flag::END_HEADERS != 0 {
            return self.header_block(partial);
        }
        self.partial = Some(partial);
        self.deadline = Some(Box::pin(tokio::time::sleep(
            self.limits.header_read_timeout,
        )));
        Ok(())
    }

    pub(super) fn continuation(
        &mut self,
        head: Head,
        payload: Bytes,
    ) -> Result<(), ConnectionError> {
        let Some(mut partial) = self.partial.take() else {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "CONTINUATION without HEADERS",
            ));
        };
        if partial.stream != head.stream {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "CONTINUATION on another stream",
            ));
        }
        partial.block.extend_from_slice(&payload);
        // A compressed block longer than the decoded list may be is never
        // worth decoding (a CONTINUATION flood).
        if partial.block.len() > self.limits.max_header_list_size as usize {
            return Err(ConnectionError(
                Reason::EnhanceYourCalm,
                "a header block larger than the header list limit",
            ));
        }
        if head.flags & flag::END_HEADERS != 0 {
            self.deadline = None;
            return self.header_block(partial);
        }
        self.partial = Some(partial);
        Ok(())
    }

    /// A complete header block: a new request, or a request's trailers.
    pub(super) fn header_block(&mut self, partial: PartialBlock) -> Result<(), ConnectionError> {
        let PartialBlock {
            stream: id,
            end_stream,
            block,
        } = partial;
        // Decoded in full even when it will be refused: the decoder's table
        // must follow the client's.
        let limit = self.limits.max_header_list_size as usize;
        let mut fields = Fields::default();
        self.decoder
            .decode(&block, |name, value| fields.add(name, value, limit))
            .map_err(|_| ConnectionError(Reason::CompressionError, "undecodable header block"))?;
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers: they must end the stream, and are not passed on.
            if !end_stream || s.received {
                self.reset(id, Reason::ProtocolError);
                return Ok(());
            }
            s.received = true;
            if let Some(r) = s.recv.take() {
                r.push(Bytes::new(), true);
            }
            self.close_if_done(id);
            return Ok(());
        }
        if id % 2 == 0 || id <= self.last_stream {
            return Err(ConnectionError(
                Reason::ProtocolError,
                "a stream id that is not new and odd",
            ));
        }
        self.last_stream = id;
        if self.going_away.is_some_and(|last| id > last) || self.peer_going_away {
            self.out
                .put(|b| frame::rst_stream(id, Reason::RefusedStream, b));
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_concurrent_streams as usize {
            self.count_control()?;
            self.out
                .put(|b| frame::rst_stream(id, Reason::RefusedStream, b));
            return Ok(());
        }
        let request = match fields.into_request() {
            Ok(r) => r,
            Err(TooLarge) => {
                self.respond_now(id, end_stream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                return Ok(());
            }
        };
        let Some(request) = request else {
            self.out
                .put(|b| frame::rst_stream(id, Reason::ProtocolError, b));
            return Ok(());
        };
        let content_length = match content_length(request.headers()) {
            Ok(n) => n,
            Err(()) => {
                self.out
                    .put(|b| frame::rst_stream(id, Reason::ProtocolError, b));
                return Ok(());
            }
        };
        if end_stream && content_length.is_some_and(|n| n > 0) {
            self.out
                .put(|b| frame::rst_stream(id, Reason::ProtocolError, b));
            return Ok(());
        }
        let (recv, body) = if end_stream {
            (None, RequestBody::Empty)
        } else {
            let shared = recv_body::Shared::new(self.credit_waker.clone());
            let body = RecvBody::new(shared.clone(), content_length);
            (Some(shared), RequestBody::Http2(body))
        };
        let head = request.method() == Method::HEAD;
        let request = request.map(|()| body);
        let (abort, registration) = AbortHandle::new_pair();
        let interim = crate::interim::Interim::Queue(self.hints.clone(), id);
        let future = Abortable::new(
            crate::interim::scope(interim, (self.handler)(request)),
            registration,
        );
        self.handlers
            .push(Box::pin(async move { (id, future.await) }));
        self.streams.insert(
            id,
            Stream {
                send_window: self.peer_initial_window,
                pending: VecDeque::new(),
                parked: None,
                end_after_pending: false,
                sent: false,
                responded: false,
                received: end_stream,
                recv,
                recv_window: self.limits.stream_window as i64,
                content_length,
                received_bytes: 0,
                head,
                abort,
                _busy: Some((self.busy)()),
            },
        );
        Ok(())
    }

    /// A response the connection gives itself, without the handler.
    pub(super) fn respond_now(&mut self, id: u32, end_stream: bool, status: StatusCode) {
        let (abort, _) = AbortHandle::new_pair();
        self.streams.insert(
            id,
            Stream {
                send_window: self.peer_initial_window,
                pending: VecDeque::new(),
                parked: None,
                end_after_pending: false,
                sent: false,
                responded: false,
                received: end_stream,
                recv: None,
                recv_window: self.limits.stream_window as i64,
                content_length: None,
                received_bytes: 0,
                head: false,
                abort,
                _busy: None,
            },
        );
        self.start_response(id, crate::text(status, "request header fields too large\n"));
    }

    /// Credits the client with what handlers have read of request bodies.
    pub(super) fn credit(&mut self) {
        let mut updates = Vec::new();
        for (id, s) in self.streams.iter_mut() {
            let Some(r) = &s.recv else { continue };
            let n = r.take_consumed();
            if n > 0 {
                self.recv_credit += n;
                s.recv_window += n as i64;
                updates.push((*id, n));
            }
        }
        for (id, n) in updates {
            self.out.put(|b| frame::window_update(id, n, b));
        }
        if self.recv_credit >= 64 * 1024 || (self.recv_credit > 0 && self.streams.is_empty()) {
            let n = std::mem::take(&mut self.recv_credit);
            self.recv_window += n as i64;
            self.out.put(|b| frame::window_update(0, n, b));
        }
    }
}
