"""The mxrc-monitor daemon: fold systemd's signals, snapshot once a second, serve /metrics."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
import time

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, REGISTRY

from mxrc_install import names
from mxrc_monitor.collector import SnapshotCollector
from mxrc_monitor.monitor import Monitor
from mxrc_monitor.serve import Exposition, make_server
from mxrc_monitor.systemd_bus import SystemdBus
from mxrc_runtime.notify import notify, watchdog_interval

log = logging.getLogger("mxrc-monitor")

REFRESH_SECONDS = 1.0
DEFAULT_UNITS = (names.TARGET, *names.SERVICES)


def _address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address (e.g. 0.0.0.0, 127.0.0.1, ::)")
    return value


def _unit(value: str) -> str:
    if "." not in value or "/" in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not a unit name (e.g. mxrc-rt.service)")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="mxrc-monitor",
                                description="Prometheus exporter for the MXRC systemd units.")
    p.add_argument("--listen", default="0.0.0.0", type=_address, metavar="ADDRESS",
                   help="address to listen on (default: 0.0.0.0, so a Prometheus on another host "
                        "can scrape)")
    p.add_argument("--port", type=int, default=9558, help="TCP port (default: 9558)")
    p.add_argument("--unit", action="append", dest="units", type=_unit, metavar="UNIT",
                   help=f"unit to watch; repeatable (default: {' '.join(DEFAULT_UNITS)})")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: must be 1-65535")
    return args




def serve(monitor: Monitor, collector: SnapshotCollector, stop: threading.Event) -> None:
    watchdog = watchdog_interval()
    next_tick = time.monotonic() + REFRESH_SECONDS
    while not stop.is_set():
        changed = monitor.listen(max(0.0, next_tick - time.monotonic()))
        now = time.monotonic()
        if now < next_tick:
            if changed:  # a state change is news now; CPU and memory can wait for the tick
                collector.publish(monitor.snapshot())
            continue
        collector.publish(monitor.refresh())
        # The loop itself proves progress: a ping only follows a refresh.
        if watchdog:
            notify("WATCHDOG=1")
        next_tick = next_tick + REFRESH_SECONDS if now - next_tick < REFRESH_SECONDS else now + REFRESH_SECONDS


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    units = tuple(dict.fromkeys(args.units or DEFAULT_UNITS))
    monitor = Monitor(units, SystemdBus(units))
    collector = SnapshotCollector()
    monitor.connect()
    collector.publish(monitor.refresh())
    REGISTRY.register(collector)
    # process_* (the exporter's own CPU, memory, fds) stays; Python's gc and
    # platform details are not worth rendering every second on a robot.
    for default in (GC_COLLECTOR, PLATFORM_COLLECTOR):
        REGISTRY.unregister(default)
    try:
        server = make_server(args.listen, args.port, Exposition(REGISTRY, lambda: collector.snapshot))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s; choose another address or port "
                  "(dpkg-reconfigure mxrc-systemd, or mxrc-systemd config monitor.port=N)",
                  args.listen, args.port, exc)
        return 1
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    notify("READY=1", f"STATUS=serving {args.listen}:{args.port}, {len(units)} units")
    log.info("serving metrics for %s on %s:%d", ", ".join(units), args.listen, args.port)
    serve(monitor, collector, stop)
    notify("STOPPING=1")
    server.shutdown()
    return 0
