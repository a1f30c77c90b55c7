"""A prometheus_client collector that serves the latest snapshot.

The snapshot is built by the exporter's loop once a second; a scrape never
touches the system, so its cost does not grow with the number of scrapers
and PID 1 never sees it.
"""

from __future__ import annotations

import dataclasses
import threading

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mxrc_monitor.cgroup import CgroupSample
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


def _family(kind, name, doc, labels=("name",)):
    return kind(name, doc, labels=list(labels))


def unit_families(snap: Snapshot):
    """What systemd signalled: the same text for as long as the units' states are equal."""
    known = [u for u in snap.units if u.exists]
    state = _family(GaugeMetricFamily, "systemd_unit_state",
                    "Systemd unit: 1 for the current ActiveState (as systemd_exporter)",
                    ("name", "type", "state"))
    restarts = _family(CounterMetricFamily, "systemd_unit_restart",
                       "Automatic restarts of the unit (from NRestarts, kept monotonic)")
    service_restarts = _family(CounterMetricFamily, "systemd_service_restart",
                               "Service unit count of Restart triggers (as systemd_exporter, kept monotonic)")
    failures = _family(CounterMetricFamily, "systemd_unit_failures",
                       "Failures of the unit by systemd's Result= (watchdog, oom-kill, exit-code, ...)",
                       ("name", "result"))
    wd_timeout = _family(GaugeMetricFamily, "systemd_unit_watchdog_timeout_seconds",
                         "WatchdogSec= in force; 0 when the watchdog is off")
    for u in known:
        for s in STATES:
            state.add_metric([u.name, u.unit_type, s], 1.0 if u.active_state == s else 0.0)
        if u.name.endswith(".service"):
            restarts.add_metric([u.name], u.restarts_total)
            service_restarts.add_metric([u.name], u.restarts_total)
            for result, count in sorted(u.failures_total.items()):
                failures.add_metric([u.name, result], count)
            wd_timeout.add_metric([u.name], u.watchdog_usec / 1e6)
    return state, restarts, service_restarts, failures, wd_timeout


def unit_families_key(snap: Snapshot) -> tuple:
    """Everything unit_families() reads: equal keys, equal text (a ping's timestamp is not in it)."""
    return tuple((u.name, u.exists, u.active_state, u.restarts_total, tuple(u.failures_total.items()),
                  u.watchdog_usec) for u in snap.units)


def watchdog_families(snap: Snapshot):
    wd_age = _family(GaugeMetricFamily, "systemd_unit_watchdog_last_ping_age_seconds",
                     "Seconds since the service's last WATCHDOG=1 (absent while not armed)")
    for u in snap.units:
        if u.exists and u.name in snap.watchdog_ages:
            wd_age.add_metric([u.name], snap.watchdog_ages[u.name])
    yield wd_age


def cgroup_families(snap: Snapshot):
    cpu = _family(CounterMetricFamily, "systemd_unit_cpu_seconds",
                  "Unit CPU time in seconds (cgroup cpu.stat)", ("name", "type", "mode"))
    mem = _family(GaugeMetricFamily, "systemd_unit_memory_bytes", "Memory charged to the unit's cgroup")
    tasks = _family(GaugeMetricFamily, "systemd_unit_tasks_current",
                    "Current number of tasks per Systemd unit (threads included: TasksCurrent)")
    mem_max = _family(GaugeMetricFamily, "systemd_unit_memory_max_bytes",
                      "MemoryMax= in force (absent when unlimited)")
    for unit, s in sorted(snap.cgroups.items()):
        if s.cpu_seconds is not None:
            for mode, seconds in sorted(s.cpu_seconds.items()):
                cpu.add_metric([unit, unit.rpartition(".")[2], mode], seconds)
        if s.memory_bytes is not None:
            mem.add_metric([unit], s.memory_bytes)
        if s.tasks is not None:
            tasks.add_metric([unit], s.tasks)
        if s.memory_max_bytes is not None:
            mem_max.add_metric([unit], s.memory_max_bytes)
    return cpu, mem, tasks, mem_max


def rt_families(snap: Snapshot):
    """Absent as a whole when mxrc-rt has no CPU mask: there is nothing to guard."""
    rt = snap.rt
    if rt is None:
        return
    irqs = CounterMetricFamily("mxrc_rt_cpu_interrupts", "Device interrupts served on an RT CPU "
                               "(numbered lines of /proc/interrupts)", labels=["cpu"])
    for cpu, count in sorted(rt.interrupts.items()):
        irqs.add_metric([str(cpu)], count)
    softirqs = CounterMetricFamily("mxrc_rt_cpu_softirqs", "Softirqs run on an RT CPU (/proc/softirqs)",
                                   labels=["cpu", "type"])
    for (cpu, kind), count in sorted(rt.softirqs.items()):
        softirqs.add_metric([str(cpu), kind], count)
    foreign = GaugeMetricFamily("mxrc_rt_cpu_foreign_tasks", "Tasks allowed on an RT CPU that are neither "
                                "mxrc-rt's nor per-CPU kernel threads", labels=["cpu"])
    for cpu, count in sorted(rt.foreign_tasks.items()):
        foreign.add_metric([str(cpu)], count)
    yield irqs
    yield softirqs
    yield foreign
    if rt.threads_outside is not None:
        yield GaugeMetricFamily("mxrc_rt_threads_outside_rt_cpus",
                                "Threads of mxrc-rt allowed on a CPU outside the RT set",
                                value=rt.threads_outside)


def health_families(snap: Snapshot):
    yield CounterMetricFamily("mxrc_monitor_collection_errors",
                              "Failed reads and D-Bus errors while collecting", value=snap.errors_total)
    yield GaugeMetricFamily("mxrc_monitor_collection_seconds", "Time the last refresh took",
                            value=snap.collection_seconds)
    yield GaugeMetricFamily("mxrc_monitor_last_refresh_timestamp_seconds",
                            "Unix time of the snapshot being served", value=snap.timestamp)
    yield GaugeMetricFamily("mxrc_monitor_dbus_connected",
                            "1 while the exporter holds its systemd connection",
                            value=1.0 if snap.bus_connected else 0.0)
    yield CounterMetricFamily("mxrc_monitor_dbus_reconnects", "Connections to systemd made after the first",
                              value=snap.bus_reconnects_total)


class SnapshotCollector:
    """Every family of the snapshot being served.

    text_parts() splits them for rendering: the units' states change only
    when systemd signals something, so their text (two thirds of the
    samples) is rendered again only then, not at every snapshot.
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
        return self.collect_from(self.snapshot)

    @staticmethod
    def collect_from(snap: Snapshot):
        yield from unit_families(snap)
        yield from SnapshotCollector.moving_families(snap)

    @staticmethod
    def moving_families(snap: Snapshot):
        yield from watchdog_families(snap)
        yield from cgroup_families(snap)
        yield from rt_families(snap)
        yield from health_families(snap)

    def text_parts(self):
        """[(key, collect)]: a part's text may be reused while its key compares equal."""
        snap = self.snapshot
        return [(unit_families_key(snap), lambda: unit_families(snap)),
                (None, lambda: self.moving_families(snap))]
