"""The HTTP side: one asyncio loop in one thread serves every connection.

Why the standard library and not prometheus_client's handler or another
server: prometheus_client's ThreadingHTTPServer spends a thread per
connection with no timeout and no cap (1,020 idle sockets exhaust the file
limit and the accept loop spins), and the Debian-packaged alternatives
either add the same thread-per-connection model (waitress, cheroot) or a
large framework (aiohttp, tornado, twisted) for one fixed GET. An asyncio
server keeps an idle connection at the cost of one file descriptor (each
connection is a Protocol with timers, see connection.py), and the rules a
factory network needs are a few lines each:

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

from mxrc_monitor import families
from mxrc_monitor.connection import TEXT, Connection
from mxrc_monitor.demand import WAIT_SECONDS, Demand

log = logging.getLogger(__name__)

BACKLOG = 4096
ACCEPT_BATCH = 4    # accepted per wake-up; evictions lag a few wake-ups: the cap is overshot by ~4 batches
LANDING = (b"<html><head><title>mxrc-monitor</title></head><body><h1>mxrc-monitor</h1>"
           b'<p><a href="/metrics">Metrics</a></p></body></html>\n')
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}


class Exposition:
    """The collectors' text, rendered at most once per snapshot (snapshot_of() returns the current one).

    Both formats are the collectors' texts one after the other (OpenMetrics
    then ends with # EOF), so a collector with parts() (see
    SnapshotCollector) has each part written again only when its key
    changed, with families.Family's cached header and label text. Another
    collector (collect() only) goes through prometheus_client.
    """

    def __init__(self, collectors, snapshot_of):
        self.collectors = list(collectors)
        self.snapshot_of = snapshot_of
        self._lock = threading.Lock()
        self._key = None
        self._bodies: dict[tuple[bool, bool], bytes] = {}
        self._parts: dict[tuple, tuple[object, str]] = {}  # (collector, part, openmetrics) -> (key, text)
        self.renders = 0

    def add(self, collector) -> None:
        self.collectors.append(collector)

    @property
    def registry(self) -> CollectorRegistry:
        """The same collectors as prometheus_client sees them (serving does not use it: a yardstick)."""
        registry = CollectorRegistry(auto_describe=False)
        for collector in self.collectors:
            registry.register(collector)
        return registry

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
            self._bodies[key] = self._text(openmetrics_format).encode()
            self.renders += 1
        return self._bodies[key]

    def _text(self, om: bool) -> str:
        out = []
        for i, collector in enumerate(self.collectors):
            if not hasattr(collector, "parts"):
                out.append(_foreign_text(collector, om))
                continue
            for j, (key, families_of) in enumerate(collector.parts()):
                cached = self._parts.get((i, j, om))
                if key is None or cached is None or cached[0] != key:
                    cached = (key, families.render(families_of(), om))
                    self._parts[(i, j, om)] = cached
                out.append(cached[1])
        if om:
            out.append("# EOF\n")
        return "".join(out)


def _foreign_text(collector, om: bool) -> str:
    """A prometheus_client collector's text (OpenMetrics without its # EOF)."""
    registry = _Families(collector.collect)
    if om:
        return openmetrics.generate_latest(registry).decode().removesuffix("# EOF\n")
    return generate_latest(registry).decode()


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
                 ssl_context: ssl.SSLContext | None = None, auth=None, headers: dict | None = None,
                 demand: Demand | None = None):
        self.exposition = exposition
        self.demand = demand        # /metrics waits for a refresh when its numbers are older (demand.py)
        self._refresh: asyncio.Future | None = None   # the refresh the waiting scrapes share
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
        self.idle: dict[Connection, float] = {}   # connection -> waiting for a request since (monotonic)
        self.connections: set[Connection] = set()
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
        for connection in list(self.connections):
            connection.evict()
        await asyncio.sleep(0)   # connection_lost() runs in the next iteration
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
                ssl_handshake_timeout=self.limits.header_timeout if self.ssl_context else None,
                # a TLS close waits for the client's close_notify: as long as a write may, not asyncio's 30 s
                ssl_shutdown_timeout=self.limits.write_timeout if self.ssl_context else None))
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
        return Connection(self)

    # -- connections (called by Connection, in the loop's thread) --------------------
    def opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.stats.connections_open = len(self.connections)
        self.stats.connections_peak = max(self.stats.connections_peak, len(self.connections))

    def closed(self, connection: Connection) -> None:
        self.idle.pop(connection, None)
        self.connections.discard(connection)
        self.stats.connections_open = len(self.connections)

    def evict_idle(self) -> bool:
        """Close the connection that has waited longest for a request; False when none waits."""
        if not self.idle:
            return False
        oldest = min(self.idle, key=self.idle.get)
        del self.idle[oldest]
        oldest.evict()
        self.stats.reject("evicted_idle")
        return True

    def handle(self, connection: Connection, head: bytes) -> None:
        """One request's head: answered now, or once the numbers are refreshed (demand.py) and bcrypt has
        checked its password."""
        stats = self.stats
        try:
            request = parse_request(head)
            if "transfer-encoding" in request.headers or int(request.headers.get("content-length", 0) or 0):
                raise BadRequest(413, "request bodies are not accepted")
        except (BadRequest, ValueError) as exc:
            code = exc.code if isinstance(exc, BadRequest) else 400
            stats.count("other", code)
            connection.respond(code, TEXT, f"{exc}\n".encode(), keep=False)
            return
        if request.method not in ("GET", "HEAD"):
            stats.count(request.path, 405)
            connection.respond(405, TEXT, b"only GET and HEAD\n", keep=False, extra={"Allow": "GET, HEAD"})
            return
        if request.path == "/metrics" and self.demand is not None and not self.demand.fresh():
            # Waiting for the refresh that scrapers share holds a connection, not a max_requests slot:
            # a burst of scrapes with stale numbers is one refresh, not a wall of 503s.
            connection.busy = True
            self._refreshed().add_done_callback(lambda _: self._resume(connection, request))
            return
        self._admit(connection, request)

    def _resume(self, connection: Connection, request: Request) -> None:
        """A /metrics request that waited for the refresh, on as if it had just arrived."""
        connection.busy = False
        self._admit(connection, request)
        if not connection.busy:   # answered now (not waiting for bcrypt): go on with what is buffered
            connection.answered_later()

    def _admit(self, connection: Connection, request: Request) -> None:
        stats = self.stats
        if stats.requests_in_flight >= self.limits.max_requests:
            stats.reject("max_requests")
            stats.count(request.path, 503)
            connection.respond(503, TEXT, b"too many requests in flight, try again\n", keep=False)
            return
        # In flight: authorising and rendering. Writing is bounded by the connection cap and write_timeout,
        # so a slow reader holds a connection, not one of the max_requests slots.
        stats.requests_in_flight += 1
        verdict = True if self.auth is None else self.auth.cached(request.headers)
        if verdict is not None:
            self._answer(connection, request, verdict)
            return
        connection.busy = True
        future = self._loop.run_in_executor(self._auth_pool, self.auth.check, request.headers)
        future.add_done_callback(lambda f: self._answered_later(connection, request, f))

    def _refreshed(self) -> asyncio.Future:
        """Done once the collection loop has refreshed, or after WAIT_SECONDS in any case.

        One future, one request to the loop and one timer for every scrape that waits meanwhile:
        a burst of stale scrapes costs the loop's thread one call back, not one per scrape.
        """
        if self._refresh is not None and not self._refresh.done():
            return self._refresh
        done = self._refresh = self._loop.create_future()

        def settle():
            if not done.done():
                done.set_result(None)
        self.demand.ask(lambda: self._loop.call_soon_threadsafe(settle))
        self._loop.call_later(WAIT_SECONDS, settle)
        return done

    def _answered_later(self, connection: Connection, request: Request, future) -> None:
        verdict = not future.cancelled() and future.exception() is None and future.result()
        try:
            self._answer(connection, request, verdict)
        except Exception:
            connection.transport.abort()   # as on the synchronous path; the loop's handler logs it
            raise
        finally:
            connection.answered_later()

    def _answer(self, connection: Connection, request: Request, authorized: bool) -> None:
        stats = self.stats
        try:
            if authorized:
                code, ctype, body, extra = self._route(request)
        finally:
            stats.requests_in_flight -= 1
        if not authorized:
            stats.count(request.path, 401)
            connection.respond(401, TEXT, b"unauthorized\n", keep=request.keep_alive,
                               extra={"WWW-Authenticate": 'Basic realm="mxrc-monitor"'})
            return
        stats.count(request.path, code)
        self.alive_at = time.monotonic()
        connection.respond(code, ctype, body, keep=request.keep_alive, extra=extra,
                           head_only=request.method == "HEAD")

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

    def response_head(self, code: int, ctype: str, length: int, keep: bool, extra: dict | None) -> bytes:
        headers = [f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}", f"Content-Type: {ctype}",
                   f"Content-Length: {length}", "Connection: " + ("keep-alive" if keep else "close")]
        headers += [f"{k}: {v}" for k, v in {**self.headers, **(extra or {})}.items()]
        return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")


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
