//! Socket options for accepted connections.
//!
//! Owns: Nagle off (responses are written whole) and the choice of each
//! connection's send buffer. Linux autotunes a socket's send buffer up to
//! `tcp_wmem`'s maximum (4 MiB by default) as its congestion window grows.
//! On a short path that window grows far past what the path needs: on
//! loopback under BBR each connection's buffer reached 3.8 MiB, and 1 MiB
//! cache hits ran 30–100 % slower than with a fixed 256 KiB buffer (the
//! kernel paces every byte it holds; docs/performance.md). A buffer only
//! has to hold one bandwidth-delay product, so a connection whose handshake
//! measured a round trip of at most [`SHORT_PATH_RTT`] gets a fixed
//! [`SHORT_PATH_SEND_BUFFER`]; the rest (viewers across the internet) keep
//! the kernel's autotuning. An operator's fixed `send_buffer` overrides both.

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::TcpStream;

/// The longest handshake round trip treated as a short path.
pub const SHORT_PATH_RTT: Duration = Duration::from_millis(1);

/// The send buffer asked for on a short path. Linux doubles it for its
/// bookkeeping; the 512 KiB that results carries 4 Gbit/s per connection at
/// [`SHORT_PATH_RTT`], and far more on the microsecond round trips of one
/// host or one rack.
pub const SHORT_PATH_SEND_BUFFER: usize = 256 * 1024;

/// Turns Nagle off and sets the send buffer: `fixed` when the operator
/// configured one, [`SHORT_PATH_SEND_BUFFER`] when the path is short, and
/// nothing otherwise. A failure leaves the kernel's defaults.
pub(crate) fn tune_accepted(stream: &TcpStream, fixed: Option<usize>) {
    let _ = stream.set_nodelay(true);
    let bytes = fixed.or_else(|| short_path_send_buffer(handshake_rtt(stream)?));
    if let Some(bytes) = bytes {
        if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(stream, bytes) {
            tracing::debug!(error = %e, bytes, "cannot set the send buffer");
        }
    }
}

/// The send buffer for a connection whose smoothed round trip is `rtt`, or
/// `None` to leave it to the kernel.
fn short_path_send_buffer(rtt: Duration) -> Option<usize> {
    (rtt <= SHORT_PATH_RTT).then_some(SHORT_PATH_SEND_BUFFER)
}

/// The kernel's smoothed round-trip estimate for a connection, which for an
/// accepted one is measured between its SYN-ACK and the client's ACK.
/// `None` when the kernel has no sample (a SYN cookie handshake) or the
/// option cannot be read.
fn handshake_rtt(stream: &TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable `tcp_info` of `len` bytes, the kernel
    // writes at most `len` bytes into it and reports how many it wrote;
    // the descriptor is borrowed from a live socket for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let rtt_present = std::mem::offset_of!(libc::tcp_info, tcpi_rtt) + 4;
    (rc == 0 && len as usize >= rtt_present && info.tcpi_rtt > 0)
        .then(|| Duration::from_micros(info.tcpi_rtt.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn send_buffer(s: &TcpStream) -> usize {
        rustix::net::sockopt::socket_send_buffer_size(s).unwrap()
    }

    async fn accepted(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_configured_send_buffer_replaces_the_kernels_choice() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_client, fixed) = accepted(&listener).await;
        tune_accepted(&fixed, Some(96 * 1024));
        // Linux reports twice what was asked (the other half is its
        // bookkeeping).
        assert_eq!(send_buffer(&fixed), 2 * 96 * 1024);
        assert!(fixed.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_loopback_connection_gets_the_short_path_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_client, untouched) = accepted(&listener).await;
        let (_client, tuned) = accepted(&listener).await;
        let rtt = handshake_rtt(&tuned).expect("the handshake gave a sample");
        assert!(rtt <= SHORT_PATH_RTT, "loopback round trip {rtt:?}");
        tune_accepted(&tuned, None);
        assert_eq!(send_buffer(&tuned), 2 * SHORT_PATH_SEND_BUFFER);
        // Without the cap the socket would start at tcp_wmem's default
        // and grow from there.
        assert_ne!(send_buffer(&untouched), 2 * SHORT_PATH_SEND_BUFFER);
        assert!(tuned.nodelay().unwrap());
    }

    #[test]
    fn only_short_round_trips_are_capped() {
        let capped = |micros| short_path_send_buffer(Duration::from_micros(micros));
        assert_eq!(capped(30), Some(SHORT_PATH_SEND_BUFFER));
        assert_eq!(capped(1_000), Some(SHORT_PATH_SEND_BUFFER));
        // A viewer 2 ms away or more keeps autotuning: 512 KiB per round
        // trip would hold it below 2 Gbit/s, and at 100 ms below 42 Mbit/s.
        assert_eq!(capped(1_001), None);
        assert_eq!(capped(100_000), None);
    }
}
