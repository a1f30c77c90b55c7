"""The HTTP side: /metrics rendered at most once per snapshot, whatever the number of scrapers.

prometheus_client's own handler renders the registry on every request; here
the text is rendered on the first scrape after a new snapshot and then
served as bytes, so a scrape costs an HTTP exchange and nothing more.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LANDING = (b"<html><head><title>mxrc-monitor</title></head><body><h1>mxrc-monitor</h1>"
           b'<p><a href="/metrics">Metrics</a></p></body></html>\n')


class Exposition:
    """The rendered registry, cached per snapshot (snapshot_of() returns the current one)."""

    def __init__(self, registry: CollectorRegistry, snapshot_of):
        self.registry = registry
        self.snapshot_of = snapshot_of
        self._lock = threading.Lock()
        self._key = None
        self._body = b""
        self.renders = 0

    def body(self) -> bytes:
        with self._lock:
            snapshot = self.snapshot_of()
            if snapshot is not self._key:
                self._body = generate_latest(self.registry)
                self._key = snapshot
                self.renders += 1
            return self._body


def make_server(address: str, port: int, exposition: Exposition) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, exposition.body())
            elif path == "/":
                self._reply(200, "text/html; charset=utf-8", LANDING)
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

        def _reply(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # a scrape per second is not news
            pass

    family = ThreadingHTTPServer
    if ":" in address:
        import socket

        class IPv6Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6
        family = IPv6Server
    server = family((address, port), Handler)
    server.daemon_threads = True
    return server
