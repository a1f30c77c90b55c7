"""Scrapes ask for fresh numbers; the collection loop reads them (#14).

What a refresh reads -- the watchdog ping times over D-Bus, /proc/interrupts
and /proc/softirqs, the cgroup files, the RT task scan -- was read every
second whoever scraped: most of the exporter's CPU with Prometheus scraping
every 15 s (bench/README.md). Now a /metrics request whose numbers are older
than MAX_AGE asks for a refresh and is answered after it, as node_exporter
reads at scrape time; scrapes closer together than MAX_AGE share one. So a
scrape still sees numbers at most MAX_AGE old (SC-004), and nobody scraping
costs a refresh every IDLE_REFRESH_SECONDS plus the signals.

The HTTP thread never reads them itself: the collection loop owns the bus.
A scrape waits for it at most WAIT_SECONDS (a bus call that hangs), then is
answered with what there is.
"""

from __future__ import annotations

import threading
import time

MAX_AGE = 1.0
WAIT_SECONDS = 2.0
IDLE_REFRESH_SECONDS = 10.0   # the collection loop's refresh when no scrape asks for one


class Demand:
    def __init__(self, clock=time.monotonic, max_age: float = MAX_AGE):
        self.clock = clock
        self.max_age = max_age
        self.wake = threading.Event()   # ends the collection loop's sleep: a scrape waits (or a stop)
        self._lock = threading.Lock()
        self._waiting: list = []
        self.refreshed_at = float("-inf")

    def fresh(self) -> bool:
        return self.clock() - self.refreshed_at <= self.max_age

    def ask(self, callback) -> None:
        """Call callback() (from the collection loop's thread) once it has refreshed."""
        with self._lock:
            self._waiting.append(callback)
        self.wake.set()

    @property
    def wanted(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def refreshed(self) -> None:
        """The loop published a refresh: answer whoever waited for it."""
        with self._lock:
            self.refreshed_at = self.clock()
            waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()
