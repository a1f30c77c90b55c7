"""The HTTP side: one asyncio loop in one thread serves every connection.

Why the standard library and not prometheus_client's handler or another
server: prometheus_client's ThreadingHTTPServer spends a thread per
connection with no timeout and no cap (1,020 idle sockets exhaust the file
limit and the accept loop spins), and the Debian-packaged alternatives
either add the same thread-per-connection model (waitress, cheroot) or a
large framework (aiohttp, tornado, twisted) for one fixed GET. An asyncio
server keeps an idle connection at the cost of one file descriptor, and the
rules a factory network needs are a few lines each:

- a listen backlog of BACKLOG, so bursts of scrapers wait in the kernel;
- at most max_connections open: beyond, the connection idle the longest is
  closed (or, when none is idle, the new one gets 503) — the open-file limit
  of the unit (LimitNOFILE=) leaves room above this cap;
- at most max_requests answered at once, 503 beyond (exporter-toolkit's
  --web.max-requests);
- a request line and headers within header_timeout (slowloris), the next
  request of a kept-alive connection within idle_timeout;
- HTTP/1.1 keep-alive, HEAD, gzip, OpenMetrics by Accept:, and a status
  line on every error; a client that resets is not news.

/metrics is rendered at most once per snapshot and encoding, whatever the
number of scrapers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gzip
import logging
import socket
import ssl
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

log = logging.getLogger(__name__)

BACKLOG = 4096
ACCEPT_BATCH = 4    # accepted per wake-up; evictions lag a few wake-ups: the cap is overshot by ~4 batches
MAX_HEADER_BYTES = 8192
LANDING = (b"<html><head><title>mxrc-monitor</title></head><body><h1>mxrc-monitor</h1>"
           b'<p><a href="/metrics">Metrics</a></p></body></html>\n')
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}
TEXT = "text/plain; charset=utf-8"


class Exposition:
    """The collectors' text, rendered at most once per snapshot (snapshot_of() returns the current one).

    The Prometheus text format is the collectors' texts one after the other,
    so a collector with text_parts() (see SnapshotCollector) has each part
    rendered again only when its key changed; OpenMetrics (one # EOF for the
    whole) is rendered from the registry in one piece.
    """

    def __init__(self, collectors, snapshot_of):
        self.collectors = list(collectors)
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in self.collectors:
            self.registry.register(collector)
        self.snapshot_of = snapshot_of
        self._lock = threading.Lock()
        self._key = None
        self._bodies: dict[tuple[bool, bool], bytes] = {}
        self._parts: dict[tuple[int, int], tuple[object, bytes]] = {}  # (collector, part) -> (key, text)
        self.renders = 0

    def add(self, collector) -> None:
        self.collectors.append(collector)
        self.registry.register(collector)

    def body(self, openmetrics_format: bool = False, gzipped: bool = False) -> bytes:
        with self._lock:
            snapshot = self.snapshot_of()
            if snapshot is not self._key:
                self._bodies = {}
                self._key = snapshot
            key = (openmetrics_format, gzipped)
            if key not in self._bodies:
                if gzipped:
                    plain = self.body_unlocked(openmetrics_format)
                    self._bodies[key] = gzip.compress(plain, compresslevel=6, mtime=0)
                else:
                    self.body_unlocked(openmetrics_format)
            return self._bodies[key]

    def body_unlocked(self, openmetrics_format: bool) -> bytes:
        key = (openmetrics_format, False)
        if key not in self._bodies:
            self._bodies[key] = (openmetrics.generate_latest(self.registry) if openmetrics_format
                                 else self._text())
            self.renders += 1
        return self._bodies[key]

    def _text(self) -> bytes:
        out = []
        for i, collector in enumerate(self.collectors):
            parts = (collector.text_parts() if hasattr(collector, "text_parts")
                     else [(None, collector.collect)])
            for j, (key, collect) in enumerate(parts):
                cached = self._parts.get((i, j))
                if key is None or cached is None or cached[0] != key:
                    cached = (key, generate_latest(_Families(collect)))
                    self._parts[(i, j)] = cached
                out.append(cached[1])
        return b"".join(out)


class _Families:
    """What generate_latest() needs of a registry: collect()."""

    def __init__(self, collect):
        self.collect = collect


@dataclasses.dataclass(frozen=True)
class Limits:
    max_connections: int = 1024
    max_requests: int = 40
    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 10.0


@dataclasses.dataclass
class Stats:
    """What the server counts for mxrc_monitor_http_* (read from another thread: plain ints)."""
    requests: dict = dataclasses.field(default_factory=dict)   # (path, code) -> count
    rejected: dict = dataclasses.field(default_factory=dict)   # reason -> count
    connections_open: int = 0
    connections_peak: int = 0      # the most open at once: how far a flood got past the cap
    requests_in_flight: int = 0
    last_metrics_at: float = dataclasses.field(default_factory=time.monotonic)  # last /metrics answered

    def count(self, path: str, code: int) -> None:
        key = (path if path in ("/metrics", "/") else "other", str(code))
        self.requests[key] = self.requests.get(key, 0) + 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class BadRequest(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def parse_request(head: bytes) -> Request:
    """The request line and headers (without the final blank line); BadRequest names what is wrong."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "undecodable request")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(505, f"unsupported version {version[:20]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], version, headers)


def accepts(header: str, token: str) -> bool:
    """True when an Accept/Accept-Encoding header lists token with a non-zero q."""
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() == token:
            q = params.replace(" ", "").lower()
            return not (q.startswith("q=0") and q.strip("q=0.") == "")
    return False


class Server:
    """The asyncio server in its own thread; alive_at says when it last proved it serves."""

    def __init__(self, exposition: Exposition, sockets: list[socket.socket], limits: Limits = Limits(),
                 ssl_context: ssl.SSLContext | None = None, auth=None, headers: dict | None = None):
        self.exposition = exposition
        self.sockets = sockets
        self.limits = limits
        self.ssl_context = ssl_context
        self.auth = auth            # webconfig.BasicAuth or None
        self.headers = dict(headers or {})
        # bcrypt takes ~0.1 s by design: one worker off the loop, queued requests count as in flight.
        self._auth_pool = concurrent.futures.ThreadPoolExecutor(1, "auth") if auth else None
        self.stats = Stats()
        self.alive_at = time.monotonic()
        self.accepted = 0
        self._idle: dict[asyncio.Task, float] = {}   # connection task -> waiting since (monotonic)
        self._tasks: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._ready = threading.Event()
        self._servers = []

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        """Close the listeners and every connection, then end the loop's thread."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
        if self._auth_pool is not None:
            self._auth_pool.shutdown(wait=False)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._loop.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._loop_error)
        for sock in self.sockets:
            # With TLS, a connection is counted once its handshake is done; until then it is
            # bounded by the handshake timeout (header_timeout), not by max_connections
            # (per-connection start_tls() loses the ClientHello on Python 3.11).
            # asyncio accepts up to `backlog` connections per wake-up before any of them runs, so
            # a flood could open thousands of descriptors past the cap in one go (seen in the VM:
            # EMFILE, then the process died). It gets ACCEPT_BATCH; the kernel keeps BACKLOG.
            server = self._loop.run_until_complete(self._loop.create_server(
                self._protocol, sock=sock, backlog=ACCEPT_BATCH, ssl=self.ssl_context,
                ssl_handshake_timeout=self.limits.header_timeout if self.ssl_context else None))
            sock.listen(BACKLOG)
            self._servers.append(server)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    @staticmethod
    def _loop_error(loop, context) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return  # a client that reset or failed its handshake is not news
        log.warning("http: %s%s", context.get("message"), f": {exc!r}" if exc else "")

    def _protocol(self):
        # Called by the accept loop before any TLS handshake: proof that accept() works.
        self.alive_at = time.monotonic()
        self.accepted += 1
        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES, loop=self._loop)
        return asyncio.StreamReaderProtocol(reader, self._connection, loop=self._loop)

    # -- connections -------------------------------------------------------------
    async def _connection(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.stats.connections_open = len(self._tasks)
        self.stats.connections_peak = max(self.stats.connections_peak, len(self._tasks))
        clean = False
        try:
            if len(self._tasks) > self.limits.max_connections and not self._evict_idle():
                self.stats.reject("max_connections")
                await self._respond(writer, 503, TEXT, b"too many connections, try again\n", keep=False)
            else:
                await self._serve(reader, writer)
            clean = True
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError,
                asyncio.CancelledError):
            pass  # the client went away, timed out, or was evicted: not news
        finally:
            self._idle.pop(task, None)
            self._tasks.discard(task)
            self.stats.connections_open = len(self._tasks)
            if clean:
                writer.close()  # flushes what drain() left below the high-water mark
            else:
                writer.transport.abort()

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest for a request; False when none waits."""
        if not self._idle:
            return False
        oldest = min(self._idle, key=self._idle.get)
        del self._idle[oldest]
        oldest.cancel()
        self.stats.reject("evicted_idle")
        return True

    async def _serve(self, reader, writer) -> None:
        task = asyncio.current_task()
        first = True
        while True:
            self._idle[task] = time.monotonic()
            head = await self._read_head(reader, writer, first)
            self._idle.pop(task, None)
            if head is None:
                return
            first = False
            try:
                request = parse_request(head)
                if ("transfer-encoding" in request.headers
                        or int(request.headers.get("content-length", 0) or 0)):
                    raise BadRequest(413, "request bodies are not accepted")
            except (BadRequest, ValueError) as exc:
                code = exc.code if isinstance(exc, BadRequest) else 400
                self.stats.count("other", code)
                await self._respond(writer, code, TEXT, f"{exc}\n".encode(), keep=False)
                return
            if not await self._answer(request, writer):
                return

    async def _read_head(self, reader, writer, first: bool) -> bytes | None:
        """The next request's head; None when the client closed or timed out (answered 408 if mid-request)."""
        limits = self.limits
        try:
            if not first:  # a kept-alive connection may wait idle_timeout for its next request
                start = await asyncio.wait_for(reader.read(1), limits.idle_timeout)
                if not start:
                    return None
            else:
                start = b""
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limits.header_timeout)
            return (start + rest)[:-4]
        except asyncio.IncompleteReadError:
            return None  # closed by the client, mid-request or between requests
        except asyncio.LimitOverrunError:
            self.stats.count("other", 431)
            await self._respond(writer, 431, TEXT, b"request head too large\n", keep=False)
            return None
        except TimeoutError:
            self.stats.reject("header_timeout")
            if reader._buffer:  # noqa: SLF001 - a slow request gets its status line
                await self._respond(writer, 408, TEXT, b"request not complete in time\n", keep=False)
            return None

    async def _answer(self, request: Request, writer) -> bool:
        """Answer one request; True to keep the connection for the next one."""
        stats = self.stats
        if request.method not in ("GET", "HEAD"):
            stats.count(request.path, 405)
            await self._respond(writer, 405, TEXT, b"only GET and HEAD\n", keep=False,
                                extra={"Allow": "GET, HEAD"})
            return False
        if stats.requests_in_flight >= self.limits.max_requests:
            stats.reject("max_requests")
            stats.count(request.path, 503)
            await self._respond(writer, 503, TEXT, b"too many requests in flight, try again\n", keep=False)
            return False
        # In flight: authorising and rendering. Writing is bounded by the connection cap and write_timeout,
        # so a slow reader holds a connection, not one of the max_requests slots.
        stats.requests_in_flight += 1
        try:
            authorized = await self._authorized(request)
            if authorized:
                code, ctype, body, extra = self._route(request)
        finally:
            stats.requests_in_flight -= 1
        if not authorized:
            stats.count(request.path, 401)
            await self._respond(writer, 401, TEXT, b"unauthorized\n", keep=request.keep_alive,
                                extra={"WWW-Authenticate": 'Basic realm="mxrc-monitor"'})
            return request.keep_alive
        stats.count(request.path, code)
        self.alive_at = time.monotonic()
        if request.path == "/metrics":
            stats.last_metrics_at = self.alive_at
        await self._respond(writer, code, ctype, body, keep=request.keep_alive, extra=extra,
                            head_only=request.method == "HEAD")
        return request.keep_alive

    async def _authorized(self, request: Request) -> bool:
        if self.auth is None:
            return True
        verdict = self.auth.cached(request.headers)
        if verdict is None:
            verdict = await self._loop.run_in_executor(self._auth_pool, self.auth.check, request.headers)
        return verdict

    def _route(self, request: Request):
        if request.path == "/metrics":
            om = accepts(request.headers.get("accept", ""), "application/openmetrics-text")
            gz = accepts(request.headers.get("accept-encoding", ""), "gzip")
            ctype = openmetrics.CONTENT_TYPE_LATEST if om else CONTENT_TYPE_LATEST
            extra = {"Vary": "Accept, Accept-Encoding"}
            if gz:
                extra["Content-Encoding"] = "gzip"
            return 200, ctype, self.exposition.body(om, gz), extra
        if request.path == "/":
            return 200, "text/html; charset=utf-8", LANDING, {}
        return 404, TEXT, b"not found: try /metrics\n", {}

    async def _respond(self, writer, code: int, ctype: str, body: bytes, keep: bool,
                       extra: dict | None = None, head_only: bool = False) -> None:
        headers = [f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}", f"Content-Type: {ctype}",
                   f"Content-Length: {len(body)}", "Connection: " + ("keep-alive" if keep else "close")]
        headers += [f"{k}: {v}" for k, v in {**self.headers, **(extra or {})}.items()]
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        if writer.transport.get_write_buffer_size():  # the kernel did not take it all: wait, bounded
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout)


def listen(address: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (IPv6 when the address has a colon)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def probe_address(sock: socket.socket) -> tuple:
    """Where a local client reaches this listener (a wildcard address is reached over loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def probe(server: Server, timeout: float = 2.0) -> bool:
    """Connect to the server as a scraper would; True when its accept loop took the connection."""
    before = server.accepted
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(probe_address(server.sockets[0]), timeout=timeout):
            while time.monotonic() < deadline:
                if server.accepted != before:
                    return True
                time.sleep(0.005)
    except OSError:
        return False
    return False
