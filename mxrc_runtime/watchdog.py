"""A watchdog that pings systemd only while the application proves progress.

A helper thread that pings on a timer keeps a hung main loop alive forever:
the watchdog then proves only that the helper runs.  Here the application
calls `beat()` from the work it must keep doing (each main-loop turn, each
control cycle); the pinger thread sends WATCHDOG=1 only if a beat arrived
since its previous ping.  Stop beating and systemd kills and restarts the
process after WatchdogSec, as it should.
"""

from __future__ import annotations

import threading
import time

from mxrc_runtime.notify import notify, watchdog_interval

# Ping at a quarter of the timeout: a hang is then detected between 0.75 and
# 1.25 x WatchdogSec after it starts (the last ping may still carry the final
# beats), and a pinger that wakes up late three times in a row costs nothing.
PING_FRACTION = 0.25


class Watchdog:
    def __init__(self, timeout: float | None = None, send=notify, clock=time.monotonic):
        self.timeout = watchdog_interval() if timeout is None else timeout
        self._send = send
        self._clock = clock
        self._beats = 0
        self._seen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.timeout)

    @property
    def period(self) -> float | None:
        return self.timeout * PING_FRACTION if self.timeout else None

    def beat(self) -> None:
        """Called by the application to prove progress. Cheap: one integer increment."""
        self._beats += 1

    def tick(self) -> bool:
        """One pinger step: ping if the application made progress since the last step."""
        beats = self._beats
        if beats == self._seen:
            return False
        self._seen = beats
        self._send("WATCHDOG=1")
        return True

    def start(self) -> "Watchdog":
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mxrc-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.tick()
