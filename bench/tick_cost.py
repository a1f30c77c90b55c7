#!/usr/bin/python3
"""Where mxrc-monitor's CPU goes inside the VM, piece by piece, as it really runs (issue 14).

tick_profile.py times each piece alone in a hot loop; under TCG that
understates a piece that runs once a second after other processes ran (the
emulated TLB and translation caches are cold again), so its sum explained
less than half of what exporter_cost.py measured. This script measures in
place, inside the VM with the packages installed and mxrc.target running:

1. the shipped unit: mxrc-monitor.service's main thread and HTTP thread CPU
   (/proc/PID/task/TID/stat), scraped every INTERVAL on a new connection (issue
   5's method), as Prometheus does (one kept-alive connection, OpenMetrics,
   gzip), and not scraped (the 1 s refresh still running);
2. the same phases with the exporter run in this process (as root, outside
   the unit's sandbox), each piece of its work wrapped to add up the thread
   CPU (time.thread_time_ns) it took: ms per second, calls per second, us
   per call. Nested pieces are indented under the piece that calls them; a
   thread's CPU beyond its outermost pieces is the event loop and the kernel
   (select, accept, wake-ups).
The client is another process, with exporter_cost.py's scrapers (scrape:
a new connection each time; PrometheusLike). Prints JSON.
Usage (in the VM, root, exporter_cost.py beside it): tick_cost.py [SECONDS_PER_PHASE];
bench/run-tick-cost runs it.
"""
import collections
import json
import os
import subprocess
import sys
import threading
import time

from exporter_cost import INTERVAL, PrometheusLike, scrape, sh, wait_http

PORT = 9558
URL = f"http://127.0.0.1:{PORT}/metrics"
UNIT = "mxrc-monitor.service"
PHASES = (("new_connection", "new"), ("as_prometheus", "keep"), ("not_scraped", None))
# The client process: its arguments are taken off argv before the imports, which read argv.
CLIENT = ("import sys; kind, seconds = sys.argv[1], float(sys.argv[2]); del sys.argv[1:]; "
          "import tick_cost; tick_cost.client(kind, seconds)")


def client(kind: str, seconds: float) -> None:
    """Scrape every INTERVAL for `seconds`: "new" on a new connection each time, "keep" as Prometheus."""
    scraper = scrape if kind == "new" else PrometheusLike(URL)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        scraper(URL)
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))


def thread_cpu_ms(pid) -> dict[str, float]:
    """"main" or "thread-N" (N-th thread by id) -> its user + system CPU in ms."""
    out = {}
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        name = "main" if tid == str(pid) else f"thread-{len(out)}"
        out[name] = (int(fields[11]) + int(fields[12])) * 10.0   # USER_HZ = 100
    return out


def run_phase(pid, kind, seconds: float) -> tuple[float, dict]:
    before, started = thread_cpu_ms(pid), time.monotonic()
    if kind:
        subprocess.run([sys.executable, "-c", CLIENT, kind, str(seconds)], check=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = thread_cpu_ms(pid)
    return elapsed, {t: round((after[t] - before.get(t, 0.0)) / elapsed, 2) for t in after}


def the_unit(seconds: float) -> dict:
    sh("systemctl", "restart", UNIT)
    wait_http(URL)
    time.sleep(5)
    pid = int(sh("systemctl", "show", "-p", "MainPID", "--value", UNIT))
    out = {}
    for name, kind in PHASES:
        _, out[name] = run_phase(pid, kind, seconds)
    sh("systemctl", "stop", UNIT)
    return out


class Pieces:
    """Thread CPU per wrapped function; nesting is kept per thread."""

    def __init__(self):
        self.totals = collections.defaultdict(lambda: [0, 0])
        self.local = threading.local()

    def wrap(self, owner, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            depth = getattr(self.local, "depth", 0)
            self.local.depth = depth + 1
            started = time.thread_time_ns()
            try:
                return inner(*args, **kwargs)
            finally:
                entry = self.totals[(depth, name)]
                entry[0] += time.thread_time_ns() - started
                entry[1] += 1
                self.local.depth = depth
        setattr(owner, attr, timed)

    def take(self, elapsed: float) -> list[dict]:
        rows = [{"piece": "  " * depth + name, "ms_per_s": round(ns / 1e6 / elapsed, 2),
                 "calls_per_s": round(calls / elapsed, 2), "us_per_call": round(ns / 1e3 / calls, 1)}
                for (depth, name), (ns, calls) in self.totals.items()]
        self.totals.clear()
        return sorted(rows, key=lambda r: -r["ms_per_s"])


def targets() -> list[tuple[object, str, str]]:
    """(owner, attribute, shown name) of every wrapped piece; resolved at import, so a piece renamed in
    mxrc_monitor fails tests/package/test_bench_scripts.py, not a VM run."""
    from mxrc_monitor import connection, main, monitor, rtcpu, serve, systemd_bus
    from mxrc_monitor.collector import SnapshotCollector

    found = [(monitor.Monitor, attr, f"Monitor.{attr}") for attr in
             ("listen", "refresh", "_read_watchdog_pings", "_sample_rt", "_sample_cgroups", "snapshot")]
    found += [(systemd_bus.SystemdBus, "get_many", "SystemdBus.get_many (watchdog ping times)"),
              (systemd_bus.SystemdBus, "wait", "SystemdBus.wait (signals)"),
              (rtcpu, "counters", "rtcpu.counters (/proc/interrupts, /proc/softirqs)"),
              (rtcpu, "scan_tasks", "rtcpu.scan_tasks"),
              (SnapshotCollector, "publish", "SnapshotCollector.publish"),
              (main.ServingProof, "__call__", "ServingProof"),
              (main, "ping", "WATCHDOG=1")]
    found += [(connection.Connection, attr, f"Connection.{attr}") for attr in
              ("connection_made", "data_received", "connection_lost", "respond")]
    found += [(serve.Server, "handle", "Server.handle"),
              (serve.Exposition, "body", "Exposition.body (render once per snapshot)")]
    missing = [f"{getattr(owner, '__name__', owner)}.{attr}" for owner, attr, _ in found
               if not hasattr(owner, attr)]
    if missing:
        raise ImportError(f"tick_cost: mxrc_monitor has no {', '.join(missing)}")
    return found


TARGETS = targets()


def instrumented(seconds: float) -> dict:
    from mxrc_monitor import main as exporter

    pieces = Pieces()
    for owner, attr, name in TARGETS:
        pieces.wrap(owner, attr, name)

    result = {}

    def drive():
        try:
            wait_http(URL)
            time.sleep(5)
            pieces.take(1.0)
            for name, kind in PHASES:
                elapsed, threads = run_phase(os.getpid(), kind, seconds)
                result[name] = {"threads_ms_per_s": threads, "pieces": pieces.take(elapsed)}
        finally:
            os.kill(os.getpid(), 15)   # main.serve's SIGTERM handler ends the exporter

    threading.Thread(target=drive, daemon=True).start()
    exporter.main(["--listen", "127.0.0.1", "--port", str(PORT)])
    return result


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    subprocess.run(["systemctl", "start", "mxrc.target"], check=True)
    results = {"seconds_per_phase": seconds, "scrape_interval_s": INTERVAL,
               "unit_threads_ms_per_s": the_unit(seconds), "in_process": instrumented(seconds)}
    subprocess.run(["systemctl", "start", UNIT], check=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
