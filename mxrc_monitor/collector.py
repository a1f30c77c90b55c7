"""A prometheus_client collector that serves the latest snapshot.

The snapshot is built by the exporter's loop once a second; a scrape never
touches the system, so its cost does not grow with the number of scrapers
and PID 1 never sees it.
"""

from __future__ import annotations

import dataclasses
import threading

from mxrc_monitor.cgroup import CgroupSample
from mxrc_monitor.families import Family, metrics
from mxrc_monitor.rtcpu import RtSample
from mxrc_monitor.unitstate import STATES, UnitState


@dataclasses.dataclass(frozen=True)
class Snapshot:
    units: tuple[UnitState, ...] = ()
    cgroups: dict[str, CgroupSample] = dataclasses.field(default_factory=dict)
    watchdog_ages: dict[str, float] = dataclasses.field(default_factory=dict)
    errors_total: int = 0
    collection_seconds: float = 0.0
    bus_connected: bool = False
    bus_reconnects_total: int = 0
    timestamp: float = 0.0
    rt: RtSample | None = None


UNIT_STATE = Family("systemd_unit_state", "gauge",
                    "Systemd unit: 1 for the current ActiveState (as systemd_exporter)",
                    ("name", "type", "state"))
UNIT_RESTARTS = Family("systemd_unit_restart", "counter",
                       "Automatic restarts of the unit (from NRestarts, kept monotonic)", ("name",))
SERVICE_RESTARTS = Family("systemd_service_restart", "counter",
                          "Service unit count of Restart triggers (as systemd_exporter, kept monotonic)",
                          ("name",))
UNIT_FAILURES = Family("systemd_unit_failures", "counter",
                       "Failures of the unit by systemd's Result= (watchdog, oom-kill, exit-code, ...)",
                       ("name", "result"))
WATCHDOG_TIMEOUT = Family("systemd_unit_watchdog_timeout_seconds", "gauge",
                          "WatchdogSec= in force; 0 when the watchdog is off", ("name",))
WATCHDOG_AGE = Family("systemd_unit_watchdog_last_ping_age_seconds", "gauge",
                      "Seconds since the service's last WATCHDOG=1 (absent while not armed)", ("name",))
UNIT_CPU = Family("systemd_unit_cpu_seconds", "counter", "Unit CPU time in seconds (cgroup cpu.stat)",
                  ("name", "type", "mode"))
UNIT_MEMORY = Family("systemd_unit_memory_bytes", "gauge", "Memory charged to the unit's cgroup", ("name",))
UNIT_TASKS = Family("systemd_unit_tasks_current", "gauge",
                    "Current number of tasks per Systemd unit (threads included: TasksCurrent)", ("name",))
UNIT_MEMORY_MAX = Family("systemd_unit_memory_max_bytes", "gauge",
                         "MemoryMax= in force (absent when unlimited)", ("name",))
RT_INTERRUPTS = Family("mxrc_rt_cpu_interrupts", "counter",
                       "Device interrupts served on an RT CPU (numbered lines of /proc/interrupts)", ("cpu",))
RT_SOFTIRQS = Family("mxrc_rt_cpu_softirqs", "counter", "Softirqs run on an RT CPU (/proc/softirqs)",
                     ("cpu", "type"))
RT_FOREIGN = Family("mxrc_rt_cpu_foreign_tasks", "gauge",
                    "Tasks allowed on an RT CPU that are neither mxrc-rt's nor per-CPU kernel threads",
                    ("cpu",))
RT_OUTSIDE = Family("mxrc_rt_threads_outside_rt_cpus", "gauge",
                    "Threads of mxrc-rt allowed on a CPU outside the RT set")
COLLECTION_ERRORS = Family("mxrc_monitor_collection_errors", "counter",
                           "Failed reads and D-Bus errors while collecting")
COLLECTION_SECONDS = Family("mxrc_monitor_collection_seconds", "gauge", "Time the last refresh took")
LAST_REFRESH = Family("mxrc_monitor_last_refresh_timestamp_seconds", "gauge",
                      "Unix time of the snapshot being served")
DBUS_CONNECTED = Family("mxrc_monitor_dbus_connected", "gauge",
                        "1 while the exporter holds its systemd connection")
DBUS_RECONNECTS = Family("mxrc_monitor_dbus_reconnects", "counter",
                         "Connections to systemd made after the first")


def unit_families(snap: Snapshot) -> list:
    """What systemd signalled: the same text for as long as the units' states are equal."""
    known = [u for u in snap.units if u.exists]
    services = [u for u in known if u.name.endswith(".service")]
    restarts = [((u.name,), u.restarts_total) for u in services]   # under both names
    return [
        (UNIT_STATE, [((u.name, u.unit_type, s), 1.0 if u.active_state == s else 0.0)
                      for u in known for s in STATES]),
        (UNIT_RESTARTS, restarts),
        (SERVICE_RESTARTS, restarts),
        (UNIT_FAILURES, [((u.name, result), count) for u in services
                         for result, count in sorted(u.failures_total.items())]),
        (WATCHDOG_TIMEOUT, [((u.name,), u.watchdog_usec / 1e6) for u in services]),
    ]


def unit_families_key(snap: Snapshot) -> tuple:
    """Everything unit_families() reads: equal keys, equal text (a ping's timestamp is not in it)."""
    return tuple((u.name, u.exists, u.active_state, u.restarts_total, tuple(u.failures_total.items()),
                  u.watchdog_usec) for u in snap.units)


def watchdog_families(snap: Snapshot) -> list:
    return [(WATCHDOG_AGE, [((u.name,), snap.watchdog_ages[u.name]) for u in snap.units
                            if u.exists and u.name in snap.watchdog_ages])]


def cgroup_families(snap: Snapshot) -> list:
    cpu, mem, tasks, mem_max = [], [], [], []
    for unit, s in sorted(snap.cgroups.items()):
        if s.cpu_seconds is not None:
            kind = unit.rpartition(".")[2]
            cpu += [((unit, kind, mode), seconds) for mode, seconds in sorted(s.cpu_seconds.items())]
        if s.memory_bytes is not None:
            mem.append(((unit,), s.memory_bytes))
        if s.tasks is not None:
            tasks.append(((unit,), s.tasks))
        if s.memory_max_bytes is not None:
            mem_max.append(((unit,), s.memory_max_bytes))
    return [(UNIT_CPU, cpu), (UNIT_MEMORY, mem), (UNIT_TASKS, tasks), (UNIT_MEMORY_MAX, mem_max)]


def rt_families(snap: Snapshot) -> list:
    """Absent as a whole when mxrc-rt has no CPU mask: there is nothing to guard."""
    rt = snap.rt
    if rt is None:
        return []
    out = [(RT_INTERRUPTS, [((str(cpu),), count) for cpu, count in sorted(rt.interrupts.items())]),
           (RT_SOFTIRQS, [((str(cpu), kind), count) for (cpu, kind), count in sorted(rt.softirqs.items())]),
           (RT_FOREIGN, [((str(cpu),), count) for cpu, count in sorted(rt.foreign_tasks.items())])]
    if rt.threads_outside is not None:
        out.append((RT_OUTSIDE, [((), rt.threads_outside)]))
    return out


def health_families(snap: Snapshot) -> list:
    return [(COLLECTION_ERRORS, [((), snap.errors_total)]),
            (COLLECTION_SECONDS, [((), snap.collection_seconds)]),
            (LAST_REFRESH, [((), snap.timestamp)]),
            (DBUS_CONNECTED, [((), 1.0 if snap.bus_connected else 0.0)]),
            (DBUS_RECONNECTS, [((), snap.bus_reconnects_total)])]


class SnapshotCollector:
    """Every family of the snapshot being served.

    parts() splits them for rendering: the units' states change only when
    systemd signals something, so their text (two thirds of the samples) is
    rendered again only then, not at every snapshot.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._snapshot = Snapshot()

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def collect(self):
        """prometheus_client's collector protocol (a registry, OpenMetrics tests)."""
        return metrics(self.families_of(self.snapshot))

    @staticmethod
    def families_of(snap: Snapshot) -> list:
        return unit_families(snap) + SnapshotCollector.moving_families(snap)

    @staticmethod
    def moving_families(snap: Snapshot) -> list:
        return watchdog_families(snap) + cgroup_families(snap) + rt_families(snap) + health_families(snap)

    def parts(self):
        """[(key, families)]: a part's text may be reused while its key compares equal (None: never)."""
        snap = self.snapshot
        return [(unit_families_key(snap), lambda: unit_families(snap)),
                (None, lambda: self.moving_families(snap))]
