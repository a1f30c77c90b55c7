"""The exporter's state machine: fold systemd's signals, sample cgroups, build snapshots.

Independent of time and of the bus implementation (both are passed in), so
the reconnect and counting rules are tested without a system bus.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from mxrc_install import names
from mxrc_monitor import cgroup, rtcpu
from mxrc_monitor.collector import Snapshot
from mxrc_monitor.systemd_bus import ALL_UNITS, RESEED, SERVICE_IFACE, START_PROPERTIES, UNLOADED, BusError
from mxrc_monitor.unitstate import UnitState

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0
TASK_SCAN_FACTOR = 50   # the RT task scan runs at most every 50x its own duration: <= 2% of one CPU
TASK_SCAN_SECONDS = 10.0  # and at most every 10 s: a task on an RT CPU stays until someone moves it


class Monitor:
    def __init__(self, units, bus, cgroup_root: Path = cgroup.CGROUP_ROOT,
                 clock=time.monotonic, wallclock=time.time, proc_root: Path = Path("/proc"),
                 affinity=os.sched_getaffinity):
        self.states = {u: UnitState(u) for u in units}
        self.proc_root = proc_root
        self.affinity = affinity
        self.rt = None  # the last RtSample, taken at each tick
        self._tasks = None  # (cpus, (foreign, outside)) of the last task scan
        self._next_scan = 0.0
        self.bus = bus
        self.cgroup_root = cgroup_root
        self.clock = clock
        self.wallclock = wallclock
        self.errors = 0
        self.reconnects = 0
        self.connected = False
        self._connected_once = False
        self._next_attempt = 0.0

    # -- D-Bus ---------------------------------------------------------------
    def connect(self) -> bool:
        """Open the bus and seed every unit; on failure retry after RECONNECT_SECONDS."""
        self._next_attempt = self.clock() + RECONNECT_SECONDS
        try:
            self.bus.open()
            for unit, state in self.states.items():
                if self._connected_once:
                    # Failures and restarts while the bus was gone are counted, not skipped.
                    state.reconcile(self.bus.seed(unit))
                else:
                    state.seed(self.bus.seed(unit))
        except BusError as exc:
            self._lost(exc)
            return False
        if self._connected_once:
            self.reconnects += 1
            log.info("reconnected to systemd")
        self._connected_once = True
        self.connected = True
        return True

    def _lost(self, exc) -> None:
        self.errors += 1
        if self.connected or not self._connected_once:
            log.warning("systemd D-Bus connection lost (%s); serving the last known state, "
                        "retrying every %.0f s", exc, RECONNECT_SECONDS)
        self.connected = False
        self.bus.close()

    def listen(self, timeout: float) -> bool:
        """Fold the signals that arrive within timeout seconds; True if any unit changed."""
        if not self.connected:
            time.sleep(max(0.0, timeout))
            return False
        changed_any = False
        try:
            for unit, changed in self.bus.wait(timeout):
                if changed == RESEED:
                    for name in (self.states if unit == ALL_UNITS else (unit,)):
                        self.states[name].reconcile(self.bus.seed(name))
                elif changed == UNLOADED:
                    self.states[unit].forget()
                elif not self.states[unit].exists:
                    # Loaded since we looked (a missed UnitNew): LoadState is never signalled.
                    self.states[unit].reconcile(self.bus.seed(unit))
                elif not self._fold(unit, changed):
                    continue
                changed_any = True
        except BusError as exc:
            self._lost(exc)
        return changed_any

    def _fold(self, unit: str, changed: dict) -> bool:
        """Take one PropertiesChanged; True when it changed what the exporter serves."""
        state = self.states[unit]
        starting = changed.get("ActiveState") == "active" and state.active_state != "active"
        served = state.update(changed)
        if starting and unit.endswith(".service"):
            # Not signalled: a restart may have brought a new WatchdogSec= or slice.
            values = self.bus.get_many([(unit, SERVICE_IFACE, n) for n in START_PROPERTIES])
            state.update(dict(zip(START_PROPERTIES, values)))
        return served

    def _read_watchdog_pings(self) -> None:
        armed = [unit for unit, state in self.states.items()
                 if state.watchdog_usec and state.active_state == "active"]
        if not armed:
            return
        pings = self.bus.get_many([(unit, SERVICE_IFACE, "WatchdogTimestampMonotonic") for unit in armed])
        for unit, usec in zip(armed, pings):
            self.states[unit].update({"WatchdogTimestampMonotonic": usec})

    # -- snapshot ------------------------------------------------------------
    def refresh(self) -> Snapshot:
        """The periodic tick: reconnect when due, read the watchdog pings systemd
        does not signal, snapshot."""
        started = time.perf_counter()
        if not self.connected and self.clock() >= self._next_attempt:
            self.connect()
        if self.connected:
            try:
                self._read_watchdog_pings()
            except BusError as exc:
                self._lost(exc)
        self.rt = self._sample_rt()
        return self.snapshot(started)

    def snapshot(self, started: float | None = None) -> Snapshot:
        """The units as last signalled and their cgroups now; no D-Bus call.

        Also taken between ticks when a signal changed a unit, so a failure or
        restart is on /metrics as soon as systemd says so, not at the next tick.
        """
        started = time.perf_counter() if started is None else started
        ages = {}
        if self.connected:  # a stale ping time would look like a hung service
            now_usec = int(self.clock() * 1e6)
            ages = {u: a for u, s in self.states.items()
                    if (a := s.watchdog_ping_age(now_usec)) is not None}
        return Snapshot(
            units=tuple(s.copy() for s in self.states.values()),
            cgroups=self._sample_cgroups(),
            rt=self.rt,
            watchdog_ages=ages,
            errors_total=self.errors,
            collection_seconds=time.perf_counter() - started,
            bus_connected=self.connected,
            bus_reconnects_total=self.reconnects,
            timestamp=self.wallclock(),
        )

    def rt_cpus(self) -> tuple[int, ...]:
        """The RT CPUs as applied to mxrc-rt.service; none when it has no mask (or is not watched)."""
        state = self.states.get(names.RT)
        if state is None or not state.exists:
            return ()
        return rtcpu.cpus_from_mask(state.cpu_affinity) or rtcpu.cpus_from_mask(state.allowed_cpus)

    def _sample_rt(self):
        """Counters every tick; the task scan every TASK_SCAN_SECONDS, or TASK_SCAN_FACTOR times
        its own last duration when that is longer.

        The scan walks the cgroup tree; at every tick it was a third of the
        exporter's CPU in a TCG VM, for a figure that changes only when a task
        is started or moved. On a slow machine it paces itself to at most
        1/TASK_SCAN_FACTOR of one CPU; its result is kept in between.
        """
        cpus = self.rt_cpus()
        if not cpus:
            self._tasks = None
            return None
        state = self.states.get(names.RT)
        try:
            interrupts, softirqs = rtcpu.counters(cpus, self.proc_root)
            now = self.clock()
            if self._tasks is None or self._tasks[0] != cpus or now >= self._next_scan:
                started = time.perf_counter()
                found = rtcpu.scan_tasks(cpus, state.control_group if state else None, self.cgroup_root,
                                         self.affinity)
                self._tasks = (cpus, found)
                took = time.perf_counter() - started
                self._next_scan = now + max(TASK_SCAN_SECONDS, TASK_SCAN_FACTOR * took)
        except (OSError, ValueError) as exc:
            self.errors += 1
            log.debug("cannot read the RT CPUs' interrupts: %s", exc)
            return None
        foreign, outside = self._tasks[1]
        return rtcpu.RtSample(cpus, interrupts, softirqs, foreign, outside)

    def _sample_cgroups(self) -> dict:
        samples = {}
        for unit, state in self.states.items():
            if not unit.endswith(".service"):
                continue
            try:
                found = cgroup.sample(cgroup.unit_cgroup(unit, state.control_group, self.cgroup_root))
            except (OSError, ValueError) as exc:
                self.errors += 1
                log.debug("cannot read the cgroup of %s: %s", unit, exc)
                continue
            if found is not None:
                samples[unit] = found
        return samples
