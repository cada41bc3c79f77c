"""Abuse at the wire: runs each abusive client against a running Fanout
listener while a well-behaved client keeps requesting, and says for each
case whether the server held.

A case passes when the abusive connections were closed or limited (each
case says what it looked for), the well-behaved client saw no error and a
p99 at most 2x its baseline, and the server's resident memory stayed under
the bound. Run it through loadtest/bench/abuse.sh, which starts the
cluster; it prints one row per case and exits 1 if any failed.

The broken protocol is written as raw frames (HTTP/2) and raw bytes
(HTTP/1.1): a well-behaved library would refuse to send it. Responses are
decoded with the `hpack` package, the HTTP/2 header coder `h2` uses.
"""

import argparse
import multiprocessing
import os
import resource
import select
import socket
import ssl
import statistics
import struct
import sys
import threading
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL, REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x8, 0x7, 0xB
MAX_CONCURRENT_STREAMS = 0x3


# --- the well-behaved client -------------------------------------------------


def viewer(addr, host, path, rate, samples, stop):
    """One viewer: a kept-alive HTTP/1.1 connection asking `rate` times a
    second, each answer's latency (or its error) sent to `samples`."""
    period = 1.0 / rate
    conn = None
    buf = b""
    next_at = time.monotonic()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    while not stop.is_set():
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started = time.monotonic()
        try:
            if conn is None:
                conn = socket.create_connection(addr, timeout=5)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
            conn.sendall(request)
            status, buf = read_h1_response(conn, buf)
            ok = status == 200
            samples.put((started, time.monotonic() - started, None if ok else f"status {status}"))
        except (OSError, ValueError) as e:
            samples.put((started, time.monotonic() - started, type(e).__name__))
            if conn is not None:
                conn.close()
            conn = None


def read_h1_response(conn, buf):
    """Reads one response with a Content-Length body; returns its status and
    what was read past it."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("closed")
        rest += chunk
    return status, rest[length:]


def viewers(addr, host, path, count, rate, samples, stop):
    """The well-behaved client, in a process of its own so that the
    abusive clients' work does not delay its measurements."""
    os.sched_setaffinity(0, {0}) if hasattr(os, "sched_setaffinity") else None
    threads = [
        threading.Thread(target=viewer, args=(addr, host, path, rate, samples, stop), daemon=True)
        for _ in range(count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def readable(socks, timeout):
    """Those of `socks` with something to read (or closed), waiting up to
    `timeout` seconds; poll, since select stops at descriptor 1024."""
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock, select.POLLIN)
        by_fd[sock.fileno()] = sock
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


# --- frames and connections --------------------------------------------------


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value, indexed=False):
    """A header field literal with a new name, not Huffman-coded;
    `indexed` adds it to the decoder's dynamic table."""
    name, value = name.encode(), value.encode()
    first = b"\x40" if indexed else b"\x00"
    return first + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


def request_block(method, path, authority):
    return (
        literal(":method", method)
        + literal(":scheme", "http")
        + literal(":path", path)
        + literal(":authority", authority)
    )


class Target:
    """NAME=http://HOST:PORT (or https), optionally followed by
    ?header_timeout=S&max_connections=N where they differ from the
    command line's."""

    def __init__(self, spec, o):
        self.name, _, url = spec.partition("=")
        url, _, query = url.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        self.header_timeout = float(params.get("header_timeout", o.header_timeout))
        self.max_connections = int(params.get("max_connections", o.max_connections))
        self.tls = url.startswith("https://")
        hostport = url.split("://", 1)[1]
        host, _, port = hostport.rpartition(":")
        self.addr = (host, int(port))

    def connect(self, alpn=None, timeout=5):
        s = socket.create_connection(self.addr, timeout=timeout)
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if alpn:
                ctx.set_alpn_protocols(alpn)
            s = ctx.wrap_socket(s, server_hostname="localhost")
        return s

    def h2(self, timeout=5):
        s = self.connect(alpn=["h2"], timeout=timeout)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        return H2(s)


class H2:
    """Reads frames from a connection as they come; knows when the server
    said goodbye."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.goaway = None
        self.closed = False
        self.resets = {}
        self.settings = {}
        self.decoder = hpack.Decoder()
        self.statuses = []

    def pump(self, wait=0.0):
        """Reads what has arrived (waiting up to `wait` for the first bytes)."""
        deadline = time.monotonic() + wait
        while not self.closed:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            timeout = max(0.0, deadline - time.monotonic())
            if not pending and not readable([self.sock], timeout):
                return
            try:
                chunk = self.sock.recv(1 << 16)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            self.buf += chunk
            self._parse()
            deadline = time.monotonic()

    def _parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9 : 9 + length]
            self.buf = self.buf[9 + length :]
            if kind == GOAWAY:
                self.goaway = int.from_bytes(payload[4:8], "big")
            elif kind == RST_STREAM:
                code = int.from_bytes(payload[:4], "big")
                self.resets[code] = self.resets.get(code, 0) + 1
            elif kind == SETTINGS and not flags & 1:
                for i in range(0, len(payload), 6):
                    ident, value = struct.unpack(">HI", payload[i : i + 6])
                    self.settings[ident] = value
            elif kind == HEADERS:
                try:
                    fields = self.decoder.decode(payload)
                    self.statuses += [int(v) for k, v in fields if k in (":status", b":status")]
                except Exception:
                    self.statuses.append(None)

    def send(self, data, stall=3.0):
        """Sends unless the server has gone; returns False when it has, or
        when it stopped reading for `stall` seconds (it limits us)."""
        if self.closed:
            return False
        self.sock.settimeout(stall)
        try:
            self.sock.sendall(data)
            return True
        except socket.timeout:
            self.limited = True
            return False
        except OSError:
            self.closed = True
            return False

    def ended(self):
        return self.closed or self.goaway is not None

    def wait_end(self, seconds=5.0):
        """Reads until the server ends the connection or `seconds` pass.
        What a flood sent may sit in the kernel's buffers, read well after
        the last send returned; and at thousands of connections a second a
        new connection now and then waits a SYN retransmission (a second)
        for its port's old TIME_WAIT."""
        deadline = time.monotonic() + seconds
        while not self.ended() and time.monotonic() < deadline:
            self.pump(wait=0.2)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def closed_by_server(sock, deadline):
    """Waits until the server closes `sock` (EOF or reset) or `deadline`."""
    while time.monotonic() < deadline:
        r = readable([sock], max(0.0, min(0.2, deadline - time.monotonic())))
        if r:
            try:
                if not sock.recv(65536):
                    return True
            except OSError:
                return True
    return False


# --- the cases ---------------------------------------------------------------
# Each returns (held, what it saw). `t` is the target, `o` the options.


def slowloris(t, o):
    """Request heads sent a few bytes a second: each connection must be
    closed at the header-read timeout."""
    socks = []
    for _ in range(o.connections):
        s = t.connect()
        s.sendall(b"GET /1KiB/1 HTTP/1.1\r\nHost: localhost\r\n")
        socks.append(s)
    started = time.monotonic()
    deadline = started + t.header_timeout + 3
    open_ = list(socks)
    closed_at = []
    while open_ and time.monotonic() < deadline:
        for s in list(open_):
            try:
                s.sendall(b"X")
            except OSError:
                open_.remove(s)
                closed_at.append(time.monotonic() - started)
                continue
            s.setblocking(False)
            try:
                if s.recv(65536) == b"":
                    open_.remove(s)
                    closed_at.append(time.monotonic() - started)
            except (BlockingIOError, ssl.SSLWantReadError):
                pass
            except OSError:
                open_.remove(s)
                closed_at.append(time.monotonic() - started)
            s.setblocking(True)
        time.sleep(0.5)
    for s in socks:
        s.close()
    last = max(closed_at, default=0)
    return not open_, f"{len(closed_at)}/{len(socks)} closed, the last after {last:.1f} s"


def trickled_body(t, o):
    """Request bodies a byte at a time: the connections are held (limited by
    max_connections and each request's body limit), the rest served."""
    socks = []
    for _ in range(o.connections // 4):
        s = t.connect()
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
        socks.append(s)
    end = time.monotonic() + o.duration
    sent = 0
    while time.monotonic() < end:
        for s in socks:
            try:
                s.sendall(b"x")
                sent += 1
            except OSError:
                pass
        time.sleep(0.5)
    for s in socks:
        s.close()
    return True, f"{len(socks)} connections trickled {sent} bytes"


def never_reads(t, o):
    """Clients that ask for many 1 MiB objects and never read: the server
    must stop producing rather than buffer them."""
    socks = []
    request = b"GET /1MiB/1 HTTP/1.1\r\nHost: localhost\r\n\r\n" * 64
    for _ in range(16):
        s = t.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(1)
        try:
            s.sendall(request)
        except OSError:
            pass
        socks.append(s)
    time.sleep(o.duration)
    for s in socks:
        s.close()
    return True, f"{len(socks)} connections asked for {len(socks) * 64} MiB, read none"


def idle_flood(t, o):
    """More idle connections than the connection limit: each accepted one
    closed at the header-read timeout, the viewers' connections kept."""
    socks = []
    for _ in range(t.max_connections + 100):
        try:
            s = socket.create_connection(t.addr, timeout=5)
        except OSError:
            break
        socks.append(s)
    started = time.monotonic()
    # Those past the limit wait in the backlog until a slot frees.
    deadline = started + 2 * t.header_timeout + 5
    closed = 0
    pending = list(socks)
    while pending and time.monotonic() < deadline:
        r = readable(pending, 0.2)
        for s in r:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                pending.remove(s)
                closed += 1
    for s in socks:
        s.close()
    return not pending, f"{len(socks)} opened (limit {t.max_connections}), {closed} closed by the server"


def rapid_reset(t, o):
    """HEADERS then RST_STREAM, as fast as the client can (CVE-2023-44487):
    each connection must be told to calm down or closed."""
    told, streams = 0, []
    for _ in range(4):
        c = t.h2()
        sent = 0
        stream = 1
        while sent < 50_000 and not c.ended():
            batch = b""
            for _ in range(100):
                batch += frame(HEADERS, END_STREAM | END_HEADERS, stream, request_block("GET", "/1KiB/1", "localhost"))
                batch += frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL))
                stream += 2
            if not c.send(batch):
                break
            sent += 100
            c.pump()
        c.wait_end()
        told += c.goaway == ENHANCE_YOUR_CALM or c.closed
        streams.append(sent)
        c.close()
    return told == 4, f"{told}/4 connections ended, after {min(streams)}-{max(streams)} reset streams"


def continuation_flood(t, o):
    """A header block that never ends: CONTINUATION frames without
    END_HEADERS. The server must end the connection after a bounded amount."""
    c = t.h2()
    block = request_block("GET", "/1KiB/1", "localhost")
    c.send(frame(HEADERS, END_STREAM, 1, block))
    junk = literal("x-junk", "a" * 16000)
    sent = 0
    while sent < 64 << 20 and not c.ended():
        if not c.send(frame(CONTINUATION, 0, 1, junk)):
            break
        sent += len(junk)
        c.pump()
    c.wait_end()
    ended = c.ended() or getattr(c, "limited", False)
    c.close()
    return ended, f"connection ended after {sent >> 10} KiB of CONTINUATION (GOAWAY code {c.goaway})"


def hpack_bomb(t, o):
    """A 4 KiB header entered in the HPACK table once and referenced 4000
    times: 16 MiB decoded from 8 KiB sent. A 431 or a reset, never a 200."""
    c = t.h2()
    block = request_block("GET", "/1KiB/1", "localhost") + literal("x-bomb", "b" * 4000, indexed=True)
    block += b"\xbe" * 4000  # index 62: the entry just added
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not (c.statuses or c.resets or c.ended()):
        c.pump(wait=0.2)
    refused = c.statuses == [431] or bool(c.resets) or c.ended()
    c.close()
    return refused and 200 not in c.statuses, f"statuses {c.statuses}, resets {c.resets}, GOAWAY {c.goaway}"


def control_flood(kind, payload):
    def case(t, o):
        c = t.h2()
        sent = 0
        while sent < 200_000 and not c.ended():
            if not c.send(frame(kind, 0, 0, payload) * 1000):
                break
            sent += 1000
        c.wait_end()
        limited = getattr(c, "limited", False)
        ok = c.ended() or limited
        c.close()
        how = "stopped reading" if limited and not c.ended() else f"GOAWAY code {c.goaway}, closed {c.closed}"
        return ok, f"after {sent} frames: {how}"

    return case


def stream_limit(t, o):
    """1000 streams opened in one write, none ended by the client (GETs
    whose request never ends): every one is either answered (the server
    ends the request itself, RST_STREAM NO_ERROR) or refused
    (REFUSED_STREAM) past the advertised limit, and the connection stays."""
    c = t.h2()
    c.pump(wait=1.0)
    limit = c.settings.get(MAX_CONCURRENT_STREAMS)
    batch = b""
    for i in range(1000):
        batch += frame(HEADERS, END_HEADERS, 1 + 2 * i, request_block("GET", "/1KiB/1", "localhost"))
    c.send(batch)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(c.statuses) + c.resets.get(REFUSED_STREAM, 0) < 1000:
        c.pump(wait=0.2)
    refused = c.resets.get(REFUSED_STREAM, 0)
    answered = len(c.statuses)
    c.close()
    ok = limit is not None and refused > 0 and refused + answered == 1000 and c.goaway is None
    return ok, f"limit {limit}: {answered} answered, {refused} refused"


def smuggling(t, o):
    """Request shapes that could hide a second request: each must get one
    answer and a closed connection; a 400, except that Content-Length with
    Transfer-Encoding is framed by the latter (RFC 9112 §6.3) and answered."""
    hidden = b"GET /1KiB/2 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    shapes = {
        "CL and TE": b"POST /1KiB/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two CLs": b"POST /1KiB/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
        "TE not chunked last": b"POST /1KiB/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "space before colon": b"POST /1KiB/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "obs-fold TE": b"POST /1KiB/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        "bad chunk size": b"POST /1KiB/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n+0\r\n\r\n",
    }
    bad = []
    for what, request in shapes.items():
        s = t.connect()
        s.sendall(request + hidden)
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        s.close()
        answers = data.count(b"HTTP/1.1 ")
        refused = data.startswith(b"HTTP/1.1 400") or what == "CL and TE"
        if answers != 1 or not refused:
            bad.append(f"{what}: {answers} answers, {data[:12]!r}")
    return not bad, "; ".join(bad) or f"{len(shapes)} shapes: one answer each, connection closed"


def tls_stalled_handshake(t, o):
    """TLS connections that never finish the handshake: closed at the
    header-read timeout."""
    socks = [socket.create_connection(t.addr) for _ in range(o.connections)]
    for s in socks:
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's first bytes, and no more
    deadline = time.monotonic() + t.header_timeout + 3
    closed = sum(closed_by_server(s, deadline) for s in socks)
    for s in socks:
        s.close()
    return closed == len(socks), f"{closed}/{len(socks)} closed"


H1_CASES = {
    "slowloris": slowloris,
    "trickled-body": trickled_body,
    "never-reads": never_reads,
    "idle-flood": idle_flood,
    "smuggling": smuggling,
}
H2_CASES = {
    "h2-rapid-reset": rapid_reset,
    "h2-continuation-flood": continuation_flood,
    "h2-hpack-bomb": hpack_bomb,
    "h2-settings-flood": control_flood(SETTINGS, b""),
    "h2-ping-flood": control_flood(PING, b"12345678"),
    "h2-stream-limit": stream_limit,
}
TLS_CASES = {"tls-stalled-handshake": tls_stalled_handshake}


def cases_for(target, only):
    if target.tls:
        chosen = {**TLS_CASES, **H2_CASES, "slowloris": slowloris, "never-reads": never_reads}
    else:
        chosen = {**H1_CASES, **H2_CASES}
    return {k: v for k, v in chosen.items() if not only or k in only}


# --- measuring ---------------------------------------------------------------


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The server's resident memory, every 50 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.alive = pid, 0, True

    def run(self):
        while True:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                self.alive = False
                return
            time.sleep(0.05)


def drain(samples, into):
    while not samples.empty():
        into.append(samples.get())


def window(all_samples, start, end):
    inside = [s for s in all_samples if start <= s[0] < end]
    latencies = sorted(s[1] for s in inside)
    errors = [s[2] for s in inside if s[2]]
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    return len(inside), errors, p99


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", required=True, help="NAME=http://HOST:PORT or NAME=https://HOST:PORT")
    p.add_argument("--viewer", required=True, help="HOST:PORT the well-behaved client asks (plain HTTP/1.1)")
    p.add_argument("--pid", type=int, required=True, help="the server process, for its memory")
    p.add_argument("--rss-bound-mib", type=int, default=512)
    p.add_argument("--header-timeout", type=float, default=10)
    p.add_argument("--max-connections", type=int, default=10000)
    p.add_argument("--connections", type=int, default=200, help="abusive connections per case")
    p.add_argument("--duration", type=float, default=5, help="seconds the timed cases run")
    p.add_argument("--baseline", type=float, default=5, help="seconds of the well-behaved client alone")
    p.add_argument("--case", action="append", help="run only these cases")
    p.add_argument(
        "--no-p99-gate",
        dest="p99_gate",
        action="store_false",
        help="report a p99 over 2x the baseline without failing the run (CI: timing on a shared machine)",
    )
    o = p.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    host, _, port = o.viewer.rpartition(":")
    samples = multiprocessing.Queue()
    stop = multiprocessing.Event()
    client = multiprocessing.Process(
        target=viewers, args=((host, int(port)), "localhost", "/1KiB/1", 4, 50, samples, stop), daemon=True
    )
    client.start()
    # The abusive clients yield to the well-behaved one.
    os.nice(10)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    sampler = Sampler(o.pid)
    sampler.start()
    got = []
    time.sleep(1)  # the viewers' connections open
    start = time.monotonic()
    time.sleep(o.baseline)
    drain(samples, got)
    n, errors, base_p99 = window(got, start, time.monotonic())
    base_rss = rss_kib(o.pid)
    print(f"baseline: {n} requests, {len(errors)} errors, p99 {base_p99 * 1000:.2f} ms, server RSS {base_rss >> 10} MiB")
    if errors or n == 0:
        print("the well-behaved client fails without abuse: nothing to compare with", file=sys.stderr)
        return 1
    print(f"{'target':<6} {'case':<22} {'held':<5} {'reqs':>5} {'errors':>6} {'p99 ms':>7} {'x base':>6} {'peak RSS':>9}  what the case saw")
    failed = slow = 0
    for spec in o.target:
        t = Target(spec, o)
        for name, case in cases_for(t, o.case).items():
            sampler.peak = 0
            start = time.monotonic()
            # Repeated until the window holds enough of the viewers'
            # requests for a p99: an attacker does not stop after one go.
            held, rounds = True, 0
            while held and (rounds == 0 or time.monotonic() - start < o.duration):
                try:
                    ok, saw = case(t, o)
                except Exception as e:  # the harness itself failed: say so, count it
                    ok, saw = False, f"harness error: {type(e).__name__}: {e}"
                held &= ok
                rounds += 1
            if rounds > 1:
                saw += f" (x{rounds})"
            time.sleep(0.5)  # answers to requests sent during the case
            end = time.monotonic()
            drain(samples, got)
            n, errors, p99 = window(got, start, end)
            ratio = p99 / base_p99
            peak = sampler.peak >> 10
            fast = ratio <= 2.0
            ok = held and not errors and n > 0 and peak <= o.rss_bound_mib and sampler.alive
            failed += not ok or (o.p99_gate and not fast)
            slow += not fast
            verdict = "" if ok and fast else "  <- FAILED" if not ok else "  <- p99 NOT met"
            print(
                f"{t.name:<6} {name:<22} {'yes' if held else 'NO':<5} {n:>5} {len(errors):>6} {p99 * 1000:>7.2f}"
                f" {ratio:>6.2f} {peak:>5} MiB  {saw}{verdict}",
                flush=True,
            )
            if errors:
                print(f"       viewer errors: {sorted(set(errors))}")
            if not sampler.alive:
                print("the server process is gone", file=sys.stderr)
                return 1
    stop.set()
    client.join(timeout=5)
    print(
        f"\n{failed} of the cases failed (pass: held, 0 viewer errors, RSS <= {o.rss_bound_mib} MiB"
        f"{', p99 <= 2x baseline' if o.p99_gate else ''}); p99 <= 2x baseline NOT met in {slow}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
