"""A watchdog that pings systemd only while the application proves progress.

A helper thread that pings on a timer keeps a hung main loop alive forever:
the watchdog then proves only that the helper runs.  Here the application
calls `beat()` from the work it must keep doing (each main-loop turn, each
control cycle); the pinger thread sends WATCHDOG=1 only if a beat arrived
since its previous ping.  Stop beating and systemd kills and restarts the
process after WatchdogSec, as it should.

With a stall budget (the longest the loop may go without a beat, e.g. 50
turns of a 0.1 s loop: 5 s) the pinger looks every quarter of the budget and,
once the loop has gone longer than that without a beat, sends
WATCHDOG=trigger (systemd >= 243): systemd kills the process at once, as for
a watchdog timeout, instead of after WatchdogSec.  WatchdogSec stays the
backstop for a process frozen as a whole.  The first beat arms the budget,
so start-up is not a stall.
"""

from __future__ import annotations

import enum
import threading
import time

from mxrc_runtime.notify import notify, watchdog_interval

# Ping at a quarter of the timeout: a hang is then detected between 0.75 and
# 1.25 x WatchdogSec after it starts (the last ping may still carry the final
# beats), and a pinger that wakes up late three times in a row costs nothing.
PING_FRACTION = 0.25
# Look at the heartbeat every quarter of the stall budget, but not more often
# than this: the pinger must never become a busy loop.
MIN_CHECK_INTERVAL = 0.001


class Action(enum.Enum):
    NONE = "none"
    PING = "ping"
    TRIGGER = "trigger"


class Watchdog:
    def __init__(self, timeout: float | None = None, send=notify, clock=time.monotonic,
                 stall_budget: float | None = None):
        self.timeout = watchdog_interval() if timeout is None else timeout
        if stall_budget is not None and not stall_budget >= 0:
            raise ValueError(f"stall_budget={stall_budget!r}: give the seconds the loop may go "
                             "without a beat (0 or None: WatchdogSec only)")
        self.stall_budget = stall_budget or None
        self._send = send
        self._clock = clock
        self._beats = 0
        self._seen = 0
        self._pinged = 0
        self._last_progress: float | None = None  # None until the first beat arms the budget
        self._last_ping: float | None = None
        self.triggered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.timeout)

    @property
    def period(self) -> float | None:
        return self.timeout * PING_FRACTION if self.timeout else None

    @property
    def check_interval(self) -> float | None:
        """How often the pinger looks: the ping period, or a quarter of the budget when shorter."""
        if not self.stall_budget:
            return self.period
        quarter = max(self.stall_budget / 4, MIN_CHECK_INTERVAL)
        return min(self.period, quarter) if self.period else quarter

    def beat(self) -> None:
        """Called by the application to prove progress. Cheap: one integer increment."""
        self._beats += 1

    def tick(self, now: float | None = None) -> Action:
        """One pinger step: trigger after a stall beyond the budget, ping after progress when due.

        start()'s thread calls it; call it yourself only instead of start()
        (your own loop, or a test passing `now`), never beside it.
        """
        if self.triggered:
            return Action.NONE  # systemd is already killing us
        now = self._clock() if now is None else now
        beats = self._beats
        if beats != self._seen:
            self._seen, self._last_progress = beats, now
        elif self._stalled(now):
            return self._trigger(now)
        # Half an interval of slack: a wake-up a hair early must not skip a ping.
        due = self._last_ping is None or now - self._last_ping >= self.period - self.check_interval / 2
        if beats == self._pinged or not due:
            return Action.NONE
        self._pinged, self._last_ping = beats, now
        self._send("WATCHDOG=1")
        return Action.PING

    def _stalled(self, now: float) -> bool:
        return bool(self.stall_budget) and self._last_progress is not None \
            and now - self._last_progress > self.stall_budget

    def _trigger(self, now: float) -> Action:
        self.triggered = True
        # STATUS= first: systemd logs "Watchdog request (last status: ...)!".
        self._send(f"STATUS=main loop stalled: no heartbeat for {(now - self._last_progress) * 1000:.0f} ms "
                   f"(budget {self.stall_budget * 1000:.0f} ms)", "WATCHDOG=trigger")
        return Action.TRIGGER

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
        # Tick at once, then every check interval: a beat before start() is pinged immediately.
        self.tick()
        while not self._stop.wait(self.check_interval):
            self.tick()
