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
The client is another process. Prints JSON.
Usage (in the VM, root): tick_cost.py [SECONDS_PER_PHASE]; bench/run-tick-cost runs it.
"""
import collections
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--client" else 40.0
INTERVAL = 0.5
PORT = 9558
URL = f"http://127.0.0.1:{PORT}/metrics"
UNIT = "mxrc-monitor.service"
# Prometheus 2.x's Accept header (as exporter_cost.PrometheusLike sends it)
ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
          "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
PHASES = (("new_connection", "new"), ("as_prometheus", "keep"), ("not_scraped", None))


def client(kind: str, seconds: float) -> None:
    conn = None
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        if kind == "new":
            urllib.request.urlopen(URL, timeout=10).read()
        else:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            conn.request("GET", "/metrics", headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"})
            conn.getresponse().read()
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


def run_phase(pid, kind) -> tuple[float, dict]:
    before, started = thread_cpu_ms(pid), time.monotonic()
    if kind:
        subprocess.run([sys.executable, __file__, "--client", kind, str(SECONDS)], check=True)
    else:
        time.sleep(SECONDS)
    elapsed = time.monotonic() - started
    after = thread_cpu_ms(pid)
    return elapsed, {t: round((after[t] - before.get(t, 0.0)) / elapsed, 2) for t in after}


def wait_http() -> None:
    for _ in range(240):
        try:
            urllib.request.urlopen(URL, timeout=5).read()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"tick_cost: nothing answers on {URL}")


def sh(*cmd) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def the_unit() -> dict:
    sh("systemctl", "restart", UNIT)
    wait_http()
    time.sleep(5)
    pid = int(sh("systemctl", "show", "-p", "MainPID", "--value", UNIT))
    out = {}
    for name, kind in PHASES:
        _, out[name] = run_phase(pid, kind)
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


def instrumented() -> dict:
    from mxrc_monitor import main

    pieces = Pieces()
    for owner, attr, name in TARGETS:
        pieces.wrap(owner, attr, name)

    result = {}

    def drive():
        try:
            wait_http()
            time.sleep(5)
            pieces.take(1.0)
            for name, kind in PHASES:
                elapsed, threads = run_phase(os.getpid(), kind)
                result[name] = {"threads_ms_per_s": threads, "pieces": pieces.take(elapsed)}
        finally:
            os.kill(os.getpid(), 15)   # main.serve's SIGTERM handler ends the exporter

    threading.Thread(target=drive, daemon=True).start()
    main.main(["--listen", "127.0.0.1", "--port", str(PORT)])
    return result


def main_() -> int:
    if sys.argv[1:2] == ["--client"]:
        client(sys.argv[2], float(sys.argv[3]))
        return 0
    subprocess.run(["systemctl", "start", "mxrc.target"], check=True)
    results = {"seconds_per_phase": SECONDS, "scrape_interval_s": INTERVAL,
               "unit_threads_ms_per_s": the_unit(), "in_process": instrumented()}
    subprocess.run(["systemctl", "start", UNIT], check=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
