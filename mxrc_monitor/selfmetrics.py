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

from mxrc_install import __version__
from mxrc_monitor.families import Family, metrics

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


PROCESS_CPU = Family("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.")
PROCESS_VIRTUAL = Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
PROCESS_RESIDENT = Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
PROCESS_FDS = Family("process_open_fds", "gauge", "Number of open file descriptors.")
PROCESS_MAX_FDS = Family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
PROCESS_START = Family("process_start_time_seconds", "gauge",
                       "Start time of the process since unix epoch in seconds.")
BUILD = Family("mxrc_monitor_build", "info", "mxrc-monitor's version (always 1)", ("version",))
HTTP_REQUESTS = Family("mxrc_monitor_http_requests", "counter", "HTTP requests answered, by path and status",
                       ("path", "code"))
HTTP_REJECTED = Family("mxrc_monitor_http_rejected", "counter",
                       "Connections and requests refused or closed to protect the server", ("reason",))
HTTP_CONNECTIONS = Family("mxrc_monitor_http_connections", "gauge", "Open HTTP connections")
REJECT_REASONS = ("max_connections", "max_requests", "evicted_idle", "header_timeout")


def process_families(proc_self: Path = Path("/proc/self"), now=time.time,
                     boottime=lambda: time.clock_gettime(time.CLOCK_BOOTTIME), started=None) -> list:
    """process_*; started (the start time, which never changes) saves a read when the caller keeps it."""
    times = os.times()
    out = [(PROCESS_CPU, [((), times.user + times.system)])]
    try:
        size, resident = (int(x) * PAGE_SIZE for x in (proc_self / "statm").read_text().split()[:2])
    except OSError:
        pass
    else:
        out += [(PROCESS_VIRTUAL, [((), size)]), (PROCESS_RESIDENT, [((), resident)])]
    try:
        fds = len(os.listdir(proc_self / "fd"))
    except OSError:
        pass
    else:
        out.append((PROCESS_FDS, [((), fds)]))
    out.append((PROCESS_MAX_FDS, [((), resource.getrlimit(resource.RLIMIT_NOFILE)[0])]))
    if started is None:
        started = start_time(proc_self, now(), boottime())
    if started is not None:
        out.append((PROCESS_START, [((), started)]))
    return out


def build_info() -> tuple:
    return BUILD, [((__version__,), 1.0)]


def http_families(stats) -> list:
    requests = sorted(dict(stats.requests).items())
    return [(HTTP_REQUESTS, [((path, code), count) for (path, code), count in requests]),
            (HTTP_REJECTED, [((reason,), stats.rejected.get(reason, 0)) for reason in REJECT_REASONS]),
            (HTTP_CONNECTIONS, [((), stats.connections_open)])]


class SelfCollector:
    """process_*, build info and the HTTP server's counters, read at scrape time (they are cheap)."""

    def __init__(self, stats_of=lambda: None, proc_self: Path = Path("/proc/self")):
        self.stats_of = stats_of
        self.proc_self = proc_self
        self.started = None

    def families(self) -> list:
        if self.started is None:
            self.started = start_time(self.proc_self, time.time(), time.clock_gettime(time.CLOCK_BOOTTIME))
        out = process_families(self.proc_self, started=self.started) + [build_info()]
        stats = self.stats_of()
        if stats is not None:
            out += http_families(stats)
        return out

    def collect(self):
        return metrics(self.families())

    def parts(self):
        return [(None, self.families)]
