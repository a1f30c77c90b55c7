#!/usr/bin/python3
"""Scrape latency of mxrc-monitor's serving path on this machine's own CPU (no emulation).

The VM benchmark (exporter_cost.py) compares costs side by side with
node_exporter, but under TCG every figure is tens of times slower than on
a robot, so the p99 < 5 ms goal is judged here: the real exporter code
(collector, exposition cache, HTTP server) serving a snapshot of four units
that is replaced every second, scraped over loopback. prometheus_client's
own handler, which renders on every request, is measured the same way for
reference. The servers run in a child process and the client speaks plain
HTTP/1.0 over a socket, so neither the client's work nor a shared GIL is
counted as the exporter's latency. Prints JSON.
"""
import json
import multiprocessing
import socket
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from http.server import ThreadingHTTPServer  # noqa: E402

from prometheus_client import CollectorRegistry, ProcessCollector  # noqa: E402
from prometheus_client.exposition import MetricsHandler  # noqa: E402

from mxrc_monitor.cgroup import CgroupSample  # noqa: E402
from mxrc_monitor.collector import Snapshot, SnapshotCollector  # noqa: E402
from mxrc_monitor.serve import Exposition, Server, listen  # noqa: E402
from mxrc_monitor.unitstate import UnitState  # noqa: E402

SCRAPES = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
UNITS = ("mxrc.target", "mxrc-nonrt.service", "mxrc-rt.service", "mxrc-monitor.service")


def snapshot(tick: int) -> Snapshot:
    units = tuple(UnitState(u, "loaded", "active", "running", "notify", "success", 2, 30_000_000,
                            restarts_total=2) for u in UNITS)
    cgroups = {u: CgroupSample({"user": 90.0 + tick, "system": 10.0}, 50_000_000, 3, 2**31) for u in UNITS
               if u.endswith(".service")}
    return Snapshot(units, cgroups, {u: 0.25 for u in cgroups}, errors_total=0, collection_seconds=0.0004,
                    bus_connected=True, timestamp=time.time())


def scrape(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        size = 0
        while chunk := sock.recv(65536):
            size += len(chunk)
    return size


def measure(port: int) -> dict:
    latencies = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        size = scrape(port)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {"scrapes": SCRAPES, "response_bytes": size,
            "p50_ms": round(1000 * statistics.median(latencies), 3),
            "p99_ms": round(1000 * latencies[int(0.99 * len(latencies))], 3),
            "max_ms": round(1000 * latencies[-1], 3)}


def serve(kind: str, ports) -> None:
    """Child process: one server of the given kind, its snapshot replaced every second."""
    collector = SnapshotCollector()
    stop = threading.Event()

    def refresher():
        tick = 0
        while not stop.wait(1.0):
            tick += 1
            collector.publish(snapshot(tick))
    collector.publish(snapshot(0))
    threading.Thread(target=refresher, daemon=True).start()

    if kind == "cached":
        sock = listen("127.0.0.1", 0)
        Server(Exposition([collector, ProcessCollector(registry=None)], lambda: collector.snapshot),
               [sock]).start()
        ports.put(sock.getsockname()[1])
        stop.wait()
    else:
        registry = CollectorRegistry()
        registry.register(collector)
        registry.register(ProcessCollector(registry=None))
        server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
        ports.put(server.server_address[1])
        server.serve_forever()


def run(kind: str) -> dict:
    ports = multiprocessing.Queue()
    child = multiprocessing.Process(target=serve, args=(kind, ports), daemon=True)
    child.start()
    port = ports.get(timeout=30)
    scrape(port)  # warm up
    try:
        return measure(port)
    finally:
        child.terminate()
        child.join()


def main() -> int:
    cached, per_request = run("cached"), run("per-request")
    print(json.dumps({
        "goal": "scrape p99 < 5 ms",
        "mxrc-monitor (rendered once per snapshot)": cached,
        "prometheus_client handler (rendered per request)": per_request,
        "goal_met": cached["p99_ms"] < 5,
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": multiprocessing.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
