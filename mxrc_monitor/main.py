"""The mxrc-monitor daemon: refresh once a second, serve /metrics, ping the watchdog."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from prometheus_client import REGISTRY, start_http_server

from mxrc_monitor.collector import MXRC_UNITS, SnapshotCollector
from mxrc_runtime.notify import notify, watchdog_interval

log = logging.getLogger("mxrc-monitor")

REFRESH_SECONDS = 1.0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="mxrc-monitor",
                                description="Prometheus exporter for the MXRC systemd units.")
    p.add_argument("--listen", default="0.0.0.0", metavar="ADDRESS",
                   help="address to listen on (default: all IPv4 addresses, so a Prometheus "
                        "on another host can scrape)")
    p.add_argument("--port", type=int, default=9558, help="TCP port (default: 9558)")
    p.add_argument("--unit", action="append", dest="units", metavar="UNIT",
                   help=f"unit to watch; repeatable (default: {' '.join(MXRC_UNITS)})")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: must be 1-65535")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    collector = SnapshotCollector(args.units or MXRC_UNITS)
    collector.refresh()
    REGISTRY.register(collector)
    try:
        start_http_server(args.port, addr=args.listen)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s; set another address or port in the unit "
                  "(systemctl edit mxrc-monitor)", args.listen, args.port, exc)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watchdog = watchdog_interval()
    notify("READY=1", f"STATUS=serving {args.listen}:{args.port}")
    log.info("serving metrics on %s:%d", args.listen, args.port)
    while not stop.wait(REFRESH_SECONDS):
        collector.refresh()
        # The loop itself proves progress: a ping only follows a refresh.
        if watchdog:
            notify("WATCHDOG=1")
    notify("STOPPING=1")
    return 0
