"""One HTTP client connection, as an asyncio Protocol: callbacks and timers, no task per connection.

The first server was written with asyncio streams: a task per connection and
two wait_for() per request. Measured natively on Python 3.11, a kept-alive
scrape cost ~355 us of CPU that way and ~52 us as a Protocol; a scrape on a
new connection ~260 us and ~190 us (bench/README.md). Under TCG the
difference is tens of times larger, and it is most of what mxrc-monitor
spends per scrape.

A connection is in one of three states:
- waiting for a request (in the server's idle set: the longest waiting is
  evicted first when the connection cap is reached); the timer is
  idle_timeout before the first byte of a kept-alive connection's next
  request, header_timeout once a request has begun (and for the first one);
- answering (bcrypt may run in the server's worker thread), or waiting for
  a client that does not read what it asked for: reading is paused, so what
  the client sends meanwhile waits in the kernel, not in our buffer;
- closing.
"""

from __future__ import annotations

import asyncio
import time

MAX_HEADER_BYTES = 8192
TEXT = "text/plain; charset=utf-8"


class Connection(asyncio.Protocol):
    def __init__(self, server):
        self.server = server
        self.transport = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.writing_paused = False   # the client does not read: answer nothing more until it does
        self.answered = 0        # requests answered: after the first, the idle timeout applies
        self.busy = False        # a request is being authorised
        self.eof = False         # the client will send nothing more

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        server.opened(self)
        if len(server.connections) > server.limits.max_connections and not server.evict_idle():
            server.stats.reject("max_connections")
            self.respond(503, TEXT, b"too many connections, try again\n", keep=False)
            return
        self.wait_for_request()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if not self.buffer and self.answered and not self.busy:
            # A kept-alive connection's next request has begun: the rest within header_timeout.
            self.set_timer(self.server.limits.header_timeout, self.head_timeout)
        self.buffer += data
        self.take_requests()

    def eof_received(self):
        self.eof = True
        # Keep the transport open (not under TLS, where asyncio closes it) while requests wait.
        return True if self.busy or self.writing_paused else None

    def connection_lost(self, exc) -> None:
        self.cancel_timer()
        if self.write_timer is not None:
            self.write_timer.cancel()
        self.server.closed(self)

    def pause_writing(self) -> None:
        # The client does not read what it asked for: ask nothing more of it until it does.
        self.writing_paused = True
        self.flow()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.take_requests()

    def flow(self) -> None:
        """Read only while requests can be answered: the rest waits in the kernel, not in self.buffer."""
        if self.transport.is_closing():
            return
        if self.busy or self.writing_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- requests --------------------------------------------------------------------
    def take_requests(self) -> None:
        """Answer the complete requests in the buffer, one at a time; then read on if there is room."""
        try:
            self._take_requests()
        finally:
            self.flow()

    def _take_requests(self) -> None:
        while not self.busy and not self.writing_paused and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0 and len(self.buffer) <= MAX_HEADER_BYTES:
                if self.eof:
                    self.transport.close()
                return
            if end < 0 or end > MAX_HEADER_BYTES:
                self.server.stats.count("other", 431)
                self.respond(431, TEXT, b"request head too large\n", keep=False)
                return
            head = bytes(self.buffer[:end])
            del self.buffer[:end + 4]
            self.cancel_timer()
            self.server.idle.pop(self, None)
            self.server.handle(self, head)

    def wait_for_request(self) -> None:
        """Between requests: evictable, and timed (see the module's docstring)."""
        self.server.idle[self] = time.monotonic()
        limits = self.server.limits
        if self.answered and not self.buffer:
            self.set_timer(limits.idle_timeout, self.head_timeout)
        else:
            self.set_timer(limits.header_timeout, self.head_timeout)

    def head_timeout(self) -> None:
        self.timer = None
        self.server.stats.reject("header_timeout")
        if self.buffer:  # a slow request gets its status line; a silent client is just closed
            self.respond(408, TEXT, b"request not complete in time\n", keep=False)
        else:
            self.transport.close()

    def respond(self, code: int, ctype: str, body: bytes, keep: bool,
                extra: dict | None = None, head_only: bool = False) -> None:
        """Write one response; then wait for the next request, or close."""
        if self.transport.is_closing():
            return
        self.transport.write(self.server.response_head(code, ctype, len(body), keep, extra)
                             + (b"" if head_only else body))
        self.answered += 1
        if self.transport.get_write_buffer_size():
            # The kernel did not take it all: the client has write_timeout to read it.
            if self.write_timer is not None:
                self.write_timer.cancel()
            self.write_timer = asyncio.get_running_loop().call_later(
                self.server.limits.write_timeout, self.write_timeout)
        if not keep or (self.eof and self.buffer.find(b"\r\n\r\n") < 0):
            self.cancel_timer()
            self.server.idle.pop(self, None)
            self.transport.close()
            return
        self.wait_for_request()

    def write_timeout(self) -> None:
        self.write_timer = None
        if self.transport.get_write_buffer_size():   # also when closing: a client that does not read
            self.transport.abort()

    def answered_later(self) -> None:
        """The answer of an authorised request was written: go on with what is buffered."""
        self.busy = False
        if not self.transport.is_closing():
            self.take_requests()

    # -- timers ------------------------------------------------------------------------
    def set_timer(self, seconds: float, callback) -> None:
        self.cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(seconds, callback)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def evict(self) -> None:
        self.cancel_timer()
        self.transport.abort()
