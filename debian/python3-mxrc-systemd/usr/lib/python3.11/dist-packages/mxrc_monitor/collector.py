"""A prometheus_client collector that serves the latest snapshot.

The snapshot is refreshed by the exporter's main loop once a second; a
scrape never touches the system, so its cost does not grow with scrapers.
"""

from __future__ import annotations

import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mxrc_monitor import cgroup

MXRC_UNITS = ("mxrc-nonrt.service", "mxrc-rt.service", "mxrc-monitor.service")


class SnapshotCollector:
    def __init__(self, units=MXRC_UNITS, cgroup_root=cgroup.CGROUP_ROOT):
        self.units = tuple(units)
        self.cgroup_root = cgroup_root
        self._lock = threading.Lock()
        self._samples: dict[str, cgroup.CgroupSample] = {}
        self._errors = 0
        self._duration = 0.0

    def refresh(self) -> None:
        started = time.perf_counter()
        samples, errors = {}, 0
        for unit in self.units:
            try:
                found = cgroup.sample(unit, self.cgroup_root)
            except (OSError, ValueError):
                errors += 1
                continue
            if found is not None:
                samples[unit] = found
        with self._lock:
            self._samples = samples
            self._errors += errors
            self._duration = time.perf_counter() - started

    def collect(self):
        with self._lock:
            samples, errors, duration = dict(self._samples), self._errors, self._duration
        cpu = CounterMetricFamily("systemd_unit_cpu_seconds", "CPU time used by the unit's cgroup",
                                  labels=["name"])
        mem = GaugeMetricFamily("systemd_unit_memory_bytes", "Memory charged to the unit's cgroup",
                                labels=["name"])
        tasks = GaugeMetricFamily("systemd_unit_tasks_current", "Processes in the unit's cgroup",
                                  labels=["name"])
        for unit, s in sorted(samples.items()):
            if s.cpu_seconds is not None:
                cpu.add_metric([unit], s.cpu_seconds)
            if s.memory_bytes is not None:
                mem.add_metric([unit], s.memory_bytes)
            if s.tasks is not None:
                tasks.add_metric([unit], s.tasks)
        yield cpu
        yield mem
        yield tasks
        yield CounterMetricFamily("mxrc_monitor_collection_errors", "Failed reads while collecting",
                                  value=errors)
        yield GaugeMetricFamily("mxrc_monitor_collection_seconds", "Time the last refresh took",
                                value=duration)
