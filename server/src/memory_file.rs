//! Large bodies kept in memory files, and the plain TCP stream that sends
//! them with `sendfile(2)` instead of copying them.
//!
//! Owns: [`body_in_memory_file`], which puts a body in an anonymous memory
//! file (`memfd_create`) mapped read-only and hands it out as ordinary
//! [`Bytes`]; the registry that maps an address inside one of those
//! mappings back to its file; and [`SendFileStream`], the writer that uses
//! the registry.
//!
//! Why: serving 1 MiB cache hits, a cache node spent 42 % of its CPU in the
//! kernel copying bodies from its heap into socket buffers. `sendfile` from
//! a memory file hands the kernel the file's pages by reference instead, so
//! that copy goes away. Nothing above the socket changes: hyper still
//! writes `Bytes` through `poll_write_vectored`, and the stream recognises
//! a slice that lies inside a memory file by its address and sends that
//! slice from the file. TLS connections (which must encrypt every byte
//! anyway) and small bodies never take this path, and when a memory file
//! cannot be made (no descriptors left, a sandbox without `memfd_create`)
//! the body stays on the heap.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock, PoisonError, RwLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use rustix::fs::MemfdFlags;
use rustix::net::SendFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Bodies shorter than this stay on the heap: below it the copy costs less
/// than a memory file's descriptor and its two extra system calls a write.
pub const MIN_LEN: usize = 64 * 1024;

/// Where each live memory file is mapped: start address → (length, file).
/// Written when a body is made or dropped, read by writes of large slices.
static MAPPED: RwLock<BTreeMap<usize, (usize, Arc<File>)>> = RwLock::new(BTreeMap::new());

/// Memory files alive now, each holding a descriptor.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many memory files may be alive at once. Each holds a descriptor and
/// a mapping, and both run out: half the descriptor limit, so stored bodies
/// never take the descriptors connections need, and half of
/// `vm.max_map_count` (65 530 by default), so the allocator can always map
/// more memory. Past it, bodies stay on the heap.
fn most_files() -> usize {
    static MOST: OnceLock<usize> = OnceLock::new();
    *MOST.get_or_init(|| {
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mappings = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65_530);
        descriptors.min(mappings) / 2
    })
}

/// Bytes sent from memory files since the process started.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Bytes this process has sent with `sendfile` from memory files: how a
/// test or an operator can tell the copy-free path is in use.
pub fn bytes_sent_from_files() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// Publishes [`bytes_sent_from_files`] as the counter
/// `fanout_memory_file_sent_bytes_total`, and the memory files alive (each
/// a descriptor and a mapping) as the gauge `fanout_memory_files`, once
/// per process however many components ask.
pub fn register_metric() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let meter = opentelemetry::global::meter("fanout-server");
        meter
            .u64_observable_counter("fanout_memory_file_sent")
            .with_description(
                "Body bytes sent with sendfile from memory files, without copying them",
            )
            .with_unit("By")
            .with_callback(|o| o.observe(bytes_sent_from_files(), &[]))
            .build();
        meter
            .u64_observable_gauge("fanout_memory_files")
            .with_description(
                "Stored bodies held in memory files, each a file descriptor and a mapping",
            )
            .with_callback(|o| o.observe(LIVE.load(Ordering::Relaxed) as u64, &[]))
            .build();
    });
}

/// The owner behind a memory-file [`Bytes`]: dropping the last `Bytes`
/// unregisters, unmaps and closes the file.
struct MemoryFile {
    map: Mmap,
    _file: Arc<File>,
}

impl AsRef<[u8]> for MemoryFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        MAPPED
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.map.as_ptr() as usize));
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The concatenation of `parts` (`len` bytes in all) as [`Bytes`] backed by
/// a memory file, or `None` when one cannot be made or the parts do not add
/// up to `len`; the caller then keeps the body on the heap.
pub fn body_in_memory_file<'a>(
    len: usize,
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Bytes> {
    if len == 0 || LIVE.load(Ordering::Relaxed) >= most_files() {
        return None;
    }
    let file = File::from(rustix::fs::memfd_create("fanout-body", MemfdFlags::CLOEXEC).ok()?);
    file.set_len(len as u64).ok()?;
    // SAFETY: a mapping is undefined behaviour only if the file changes
    // size or content under it. The file was created just above, has no
    // name anywhere, and its descriptor never leaves this module, which
    // writes it only here, before any reader can see the mapping.
    let mut map = unsafe { MmapOptions::new().len(len).populate().map_mut(&file) }.ok()?;
    let mut at = 0;
    for part in parts {
        map.get_mut(at..at + part.len())?.copy_from_slice(part);
        at += part.len();
    }
    if at != len {
        return None;
    }
    let map = map.make_read_only().ok()?;
    let file = Arc::new(file);
    LIVE.fetch_add(1, Ordering::Relaxed);
    MAPPED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(map.as_ptr() as usize, (len, file.clone()));
    Some(Bytes::from_owner(MemoryFile { map, _file: file }))
}

/// Whether `slice` lies inside a memory file: a stored body that already
/// does (a proxy's copy of a body a cache node in its own process holds)
/// can be kept as it is, without a copy of its own.
pub fn is_in_memory_file(slice: &[u8]) -> bool {
    slice.len() >= MIN_LEN && file_of(slice).is_some()
}

/// The memory file `slice` lies in, and the slice's offset in it.
fn file_of(slice: &[u8]) -> Option<(Arc<File>, u64)> {
    let start = slice.as_ptr() as usize;
    let mapped = MAPPED.read().unwrap_or_else(PoisonError::into_inner);
    let (&base, (len, file)) = mapped.range(..=start).next_back()?;
    (start + slice.len() <= base + len).then(|| (file.clone(), (start - base) as u64))
}

/// A plain TCP connection whose writes send any slice that lies in a
/// memory file with `sendfile`, and everything else as usual.
///
/// Except for large slices on connections whose congestion control is
/// BBR: BBR paces each socket, in the kernel itself where no `fq` qdisc
/// does it (loopback, most LAN hops), and `sendfile` hands TCP 64 KiB at a
/// time, each sent at the pacing rate, where one `writev` hands it all.
/// Measured here (2026-12-03: a minimal server, wrk with 64 connections,
/// one core each; responses/s, `writev` against `sendfile`):
///
/// | size    | BBR                       | CUBIC            |
/// |---------|---------------------------|------------------|
/// | 100 KiB | 50 100 vs **57 800**      |                  |
/// | 256 KiB | 22 000-22 500 vs **25 200-28 500** |         |
/// | 512 KiB | **11 800-11 900** vs 5 800-6 200 |           |
/// | 1 MiB   | **5 970-6 050** vs 2 150  | 5 560-5 610 vs **7 090-7 350** |
/// | 2 MiB   | **2 560-2 590** vs 800-815 |                 |
///
/// So each connection takes the path that wins under the congestion
/// control it has, whatever the machine's default is.
pub struct SendFileStream {
    inner: TcpStream,
    /// The largest slice sent with `sendfile`; larger ones are written.
    sendfile_up_to: usize,
}

/// Under BBR, slices up to this size still go with `sendfile` (above).
const PACED_SENDFILE_MAX: usize = 256 * 1024;

impl SendFileStream {
    pub fn new(inner: TcpStream) -> SendFileStream {
        let paced =
            rustix::net::sockopt::tcp_congestion(&inner).is_ok_and(|name| name.starts_with("bbr"));
        SendFileStream {
            inner,
            sendfile_up_to: if paced {
                PACED_SENDFILE_MAX
            } else {
                usize::MAX
            },
        }
    }

    /// Whether a slice of `len` bytes in a memory file goes with `sendfile`.
    pub fn sends_with_sendfile(&self, len: usize) -> bool {
        (MIN_LEN..=self.sendfile_up_to).contains(&len)
    }

    /// Sends `before` (corked, so it shares packets with what follows),
    /// then `len` bytes of `file` from `offset`. Reports what went out; an
    /// error only when nothing did.
    fn send(
        &self,
        before: &[IoSlice<'_>],
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let mut sent = 0;
        let head: usize = before.iter().map(|b| b.len()).sum();
        if head > 0 {
            let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
            sent = rustix::net::sendmsg(&self.inner, before, &mut Default::default(), flags)?;
            if sent < head {
                return Ok(sent);
            }
        }
        let mut at = offset;
        match rustix::fs::sendfile(&self.inner, file, Some(&mut at), len) {
            Ok(n) => {
                SENT.fetch_add(n as u64, Ordering::Relaxed);
                Ok(sent + n)
            }
            // What went out is reported; the error, if it lasts, comes back
            // on the next write.
            Err(_) if sent > 0 => Ok(sent),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsyncRead for SendFileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendFileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let found = bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| self.sends_with_sendfile(b.len()))
            .find_map(|(i, b)| file_of(b).map(|(file, offset)| (i, file, offset)));
        let Some((i, file, offset)) = found else {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        };
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                self.send(&bufs[..i], &file, offset, bufs[i].len())
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_body_reads_back_as_written_and_is_found_by_address() {
        let data = pattern(3 * MIN_LEN + 17);
        let (a, b) = data.split_at(MIN_LEN + 5);
        let body = body_in_memory_file(data.len(), [a, b]).expect("a memory file");
        assert!(body[..] == data[..]);
        let (_, offset) = file_of(&body[1000..MIN_LEN + 1000]).expect("a slice of it is found");
        assert_eq!(offset, 1000);
        assert!(file_of(&data).is_none(), "heap bytes are not in a file");
    }

    #[test]
    fn memory_files_leave_half_the_descriptors_and_mappings_to_others() {
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |n| n as usize);
        let mappings: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(most_files() > 0);
        assert!(most_files() <= descriptors / 2);
        assert!(most_files() <= mappings / 2);
    }

    #[test]
    fn parts_that_do_not_add_up_make_no_file() {
        let data = pattern(MIN_LEN);
        assert!(body_in_memory_file(MIN_LEN + 1, [&data[..]]).is_none());
        assert!(body_in_memory_file(MIN_LEN - 1, [&data[..]]).is_none());
        assert!(body_in_memory_file(0, []).is_none());
    }

    #[test]
    fn the_file_closes_with_the_last_reference() {
        let data = pattern(MIN_LEN);
        let body = body_in_memory_file(MIN_LEN, [&data[..]]).unwrap();
        let file = Arc::downgrade(&file_of(&body).unwrap().0);
        let slice = body.slice(10..20);
        drop(body);
        assert!(file.upgrade().is_some(), "a slice keeps the file");
        assert_eq!(&slice[..], &data[10..20]);
        drop(slice);
        assert!(file.upgrade().is_none(), "unregistered and closed");
    }

    /// What hyper does with a response: head and body in one vectored
    /// write, then whatever is left on later calls.
    async fn write_response(stream: &mut SendFileStream, mut head: &[u8], mut body: &[u8]) {
        while !head.is_empty() || !body.is_empty() {
            let n = stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await
                .unwrap();
            assert!(n > 0);
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
    }

    #[tokio::test]
    async fn a_body_crosses_a_slow_connection_intact() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A small receive buffer drained slowly: sendfile stops part way
        // again and again, and the writer must wait and go on from there.
        let reader = tokio::spawn(async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(16 * 1024).unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                tokio::task::yield_now().await;
            }
        });
        let (stream, _) = listener.accept().await.unwrap();
        // CUBIC, whatever this machine's default: the sendfile path.
        rustix::net::sockopt::set_tcp_congestion(&stream, "cubic").unwrap();
        let mut stream = SendFileStream::new(stream);
        assert!(stream.sends_with_sendfile(4 << 20));
        let data = pattern(4 << 20);
        let body = body_in_memory_file(data.len(), [&data[..]]).unwrap();
        let before = bytes_sent_from_files();
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 4182031\r\n\r\n";
        // From an offset: a range's slice of a stored body.
        write_response(&mut stream, head, &body[12_273..]).await;
        stream.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(&got[..head.len()], head);
        assert!(
            got[head.len()..] == data[12_273..],
            "the body arrives intact"
        );
        assert!(bytes_sent_from_files() - before >= (data.len() - 12_273) as u64);
    }

    #[tokio::test]
    async fn a_bbr_connection_writes_large_memory_file_slices() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            got
        });
        let (stream, _) = listener.accept().await.unwrap();
        if let Err(e) = rustix::net::sockopt::set_tcp_congestion(&stream, "bbr") {
            eprintln!("skipped: this kernel offers no BBR ({e})");
            return;
        }
        let mut stream = SendFileStream::new(stream);
        assert!(stream.sends_with_sendfile(256 * 1024));
        assert!(
            !stream.sends_with_sendfile(256 * 1024 + 1),
            "BBR: large slices are copied"
        );
        let data = pattern(1 << 20);
        let body = body_in_memory_file(data.len(), [&data[..]]).unwrap();
        write_response(&mut stream, b"head", &body).await;
        stream.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got[4..] == data[..], "the body arrives intact");
    }

    #[tokio::test]
    async fn small_writes_and_heap_bodies_take_the_ordinary_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            got
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = SendFileStream::new(stream);
        let heap = pattern(2 * MIN_LEN);
        write_response(&mut stream, b"head", &heap).await;
        stream.write_all(b"tail").await.unwrap();
        stream.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..4 + heap.len()] == heap[..]);
        assert_eq!(&got[4 + heap.len()..], b"tail");
    }
}
