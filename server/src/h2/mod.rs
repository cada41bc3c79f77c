//! Fanout's HTTP/2 server (RFC 9113), for every listener's HTTP/2
//! connections: TLS ones that chose `h2` by ALPN, and cleartext ones that
//! open with the HTTP/2 preface (prior knowledge, h2c). HTTP/1.1 stays
//! with hyper. See [`connection`] for why it is not hyper's, and what it
//! guards against.
//!
//! Owns: framing ([`frame`]), the connection state machine
//! ([`connection`]), request bodies ([`recv_body`]), request fields
//! ([`request_fields`]) and HPACK: decoding request headers
//! ([`request_headers`], with [`huffman`]) and encoding response headers
//! ([`response_headers`]).

mod connection;
mod frame;
mod huffman;
mod recv_body;
mod request_fields;
mod request_headers;
mod response_headers;
#[cfg(test)]
mod tests;

pub use connection::{BusyGuard, Connection, Handler, Limits};
pub use frame::PREFACE;
pub use recv_body::RecvBody;
