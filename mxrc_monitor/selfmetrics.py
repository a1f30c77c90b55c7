"""The exporter's own figures, read in a way the shipped unit's sandbox allows.

prometheus_client's process collector needs /proc/stat (for the boot time),
which ProcSubset=pid hides, so under the unit it returned nothing. Here CPU
comes from times(2), memory from /proc/self/statm, file descriptors from
/proc/self/fd (all of them this process's own, visible under ProcSubset=pid),
and the start time from CLOCK_BOOTTIME instead of /proc/stat's btime.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from mxrc_install import __version__

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def start_time(proc_self: Path, now: float, boottime: float) -> float | None:
    """Unix time this process started: field 22 of stat (ticks after boot) plus the boot's wall time."""
    try:
        stat = (proc_self / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return now - boottime + int(fields[19]) / TICKS


def process_families(proc_self: Path = Path("/proc/self"), now=time.time,
                     boottime=lambda: time.clock_gettime(time.CLOCK_BOOTTIME), started=None):
    """process_*; started (the start time, which never changes) saves a read when the caller keeps it."""
    times = os.times()
    yield CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                              value=times.user + times.system)
    try:
        size, resident = (int(x) * PAGE_SIZE for x in (proc_self / "statm").read_text().split()[:2])
    except OSError:
        pass
    else:
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.", value=size)
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                value=resident)
    try:
        fds = len(os.listdir(proc_self / "fd"))
    except OSError:
        pass
    else:
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=fds)
    yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if started is None:
        started = start_time(proc_self, now(), boottime())
    if started is not None:
        yield GaugeMetricFamily("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.", value=started)


def build_info():
    info = InfoMetricFamily("mxrc_monitor_build", "mxrc-monitor's version (always 1)")
    info.add_metric([], {"version": __version__})
    return info


def http_families(stats):
    requests = CounterMetricFamily("mxrc_monitor_http_requests", "HTTP requests answered, by path and status",
                                   labels=["path", "code"])
    for (path, code), count in sorted(dict(stats.requests).items()):
        requests.add_metric([path, code], count)
    rejected = CounterMetricFamily("mxrc_monitor_http_rejected",
                                   "Connections and requests refused or closed to protect the server",
                                   labels=["reason"])
    for reason in ("max_connections", "max_requests", "evicted_idle", "header_timeout"):
        rejected.add_metric([reason], stats.rejected.get(reason, 0))
    yield requests
    yield rejected
    yield GaugeMetricFamily("mxrc_monitor_http_connections", "Open HTTP connections",
                            value=stats.connections_open)


class SelfCollector:
    """process_*, build info and the HTTP server's counters, read at scrape time (they are cheap)."""

    def __init__(self, stats_of=lambda: None, proc_self: Path = Path("/proc/self")):
        self.stats_of = stats_of
        self.proc_self = proc_self
        self.started = None

    def collect(self):
        if self.started is None:
            self.started = start_time(self.proc_self, time.time(), time.clock_gettime(time.CLOCK_BOOTTIME))
        yield from process_families(self.proc_self, started=self.started)
        yield build_info()
        stats = self.stats_of()
        if stats is not None:
            yield from http_families(stats)
