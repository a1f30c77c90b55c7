"""The mxrc-monitor daemon: fold systemd's signals each second, refresh when scraped, serve /metrics."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import resource
import shlex
import signal
import socket
import sys
import threading
import time

from mxrc_install import names
from mxrc_monitor.collector import SnapshotCollector
from mxrc_monitor.demand import IDLE_REFRESH_SECONDS, Demand
from mxrc_monitor.monitor import Monitor
from mxrc_monitor import serve as serve_mod
from mxrc_monitor import webconfig
from mxrc_monitor.selfmetrics import SelfCollector
from mxrc_monitor.serve import Exposition, Limits
from mxrc_monitor.systemd_bus import SystemdBus
from mxrc_runtime.notify import notify, watchdog_interval

log = logging.getLogger("mxrc-monitor")

REFRESH_SECONDS = 1.0
DEFAULT_UNITS = (names.TARGET, *names.SERVICES)
PROOF_SECONDS = 10.0   # WatchdogSec=30s: three chances to prove serving before systemd restarts us
FD_RESERVE = 64        # besides connections: the bus, cgroup and /proc reads, the probe, serve.ACCEPT_BATCH


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


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return n


def env_args(env=None) -> list[str]:
    """Flags from $ARGS (EnvironmentFile=-/etc/default/mxrc-monitor), split as a shell would."""
    text = (os.environ if env is None else env).get("ARGS", "")
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise SystemExit(f"mxrc-monitor: ARGS={text!r} in /etc/default/mxrc-monitor: {exc}; "
                         "fix the quoting") from None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="mxrc-monitor",
                                description="Prometheus exporter for the MXRC systemd units.")
    p.add_argument("--listen", default="0.0.0.0", type=_address, metavar="ADDRESS",
                   help="address to listen on (default: 0.0.0.0, so a Prometheus on another host "
                        "can scrape)")
    p.add_argument("--port", type=int, default=9558, help="TCP port (default: 9558)")
    p.add_argument("--unit", action="append", dest="units", type=_unit, metavar="UNIT",
                   help=f"unit to watch; repeatable (default: {' '.join(DEFAULT_UNITS)})")
    p.add_argument("--web.max-requests", dest="max_requests", type=_positive, default=Limits.max_requests,
                   metavar="N", help="requests answered at once; 503 beyond (default: %(default)s)")
    p.add_argument("--web.max-connections", dest="max_connections", type=_positive,
                   default=Limits.max_connections, metavar="N",
                   help="open connections; beyond, the longest idle one is closed (default: %(default)s); "
                        "keep it below the unit's LimitNOFILE=")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                   help="TLS and basic auth, in exporter-toolkit's YAML format (see mxrc-monitor(8))")
    p.add_argument("--web.systemd-socket", dest="systemd_socket", action="store_true",
                   help="serve on the sockets systemd passes (mxrc-monitor.socket) instead of "
                        "--listen/--port")
    # Command-line flags first, then $ARGS: the administrator's file wins over the drop-in.
    args = p.parse_args([*(sys.argv[1:] if argv is None else argv), *env_args()])
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: must be 1-65535")
    return args


class ServingProof:
    """The watchdog's condition: the HTTP server answered or accepted within PROOF_SECONDS.

    Collection alone is not enough (a server out of file descriptors spun at
    100% while the loop kept pinging): when no scraper came lately, a local
    connection is made and must reach the server's accept loop.
    """

    def __init__(self, server, probe=serve_mod.probe, clock=time.monotonic):
        self.server, self.probe, self.clock = server, probe, clock
        self.failing = False

    def __call__(self) -> bool:
        ok = self.clock() - self.server.alive_at <= PROOF_SECONDS or self.probe(self.server)
        if ok == self.failing:
            self.failing = not ok
            if ok:
                log.info("the HTTP server accepts connections again")
            else:
                log.warning("the HTTP server does not accept connections; holding back WATCHDOG=1 "
                            "so that systemd restarts mxrc-monitor")
        return ok


def serve(monitor: Monitor, collector: SnapshotCollector, stop: threading.Event,
          serving=lambda: True, demand: Demand | None = None, wait=None) -> None:
    """The 1 s loop: fold the signals that came, refresh when a scrape asks, ping the watchdog while
    serving is proven.

    The loop wakes once a second, not at each signal: systemd's signals wait
    in the bus socket and are folded in order at the tick (a count is never
    lost; a change is on /metrics within REFRESH_SECONDS). The RT loop's
    STATUS= line each second makes two PropertiesChanged a second; waking for
    each was half of what the exporter cost when nobody scraped (measured in
    the VM, bench/README.md).

    A refresh (the reads systemd does not signal, see demand.py) is done when
    a scrape asks for one -- the loop wakes for it at once -- and every
    IDLE_REFRESH_SECONDS when nobody does; with the bus lost, at every tick
    (it reconnects). Between refreshes a signal that changed a unit is published at the
    tick, without the refresh's reads.
    """
    demand = Demand() if demand is None else demand
    wait = demand.wake.wait if wait is None else wait
    watchdog = watchdog_interval()
    next_tick = time.monotonic() + REFRESH_SECONDS
    last_refresh = time.monotonic()
    while not stop.is_set():
        wait(max(0.0, next_tick - time.monotonic()))
        demand.wake.clear()   # before reading what is wanted: a request after this wakes the next wait
        if stop.is_set():
            break
        changed = monitor.listen(0)
        now = time.monotonic()
        # (a lost bus is tried again at every tick: Monitor.refresh() paces it to RECONNECT_SECONDS)
        if demand.wanted or now - last_refresh >= IDLE_REFRESH_SECONDS or not monitor.connected:
            collector.publish(monitor.refresh())
            demand.refreshed()
            last_refresh = now
        elif changed:  # a state change is news; CPU and memory can wait for the next refresh
            collector.publish(monitor.snapshot())
        if now < next_tick:   # woken by a scrape: the tick is still to come
            continue
        # A ping needs both the loop's tick and proof that scrapers are served.
        if watchdog and serving():
            ping()
        next_tick = (next_tick + REFRESH_SECONDS if now - next_tick < REFRESH_SECONDS
                     else now + REFRESH_SECONDS)


def ping() -> None:
    """WATCHDOG=1; a failure (e.g. no descriptor left) skips this ping instead of ending the exporter."""
    try:
        notify("WATCHDOG=1")
    except OSError as exc:
        log.warning("cannot send WATCHDOG=1: %s", exc)


SD_LISTEN_FDS_START = 3


def systemd_sockets(env=None, first_fd: int = SD_LISTEN_FDS_START) -> list[socket.socket]:
    """The listening sockets systemd passed (LISTEN_FDS), as sd_listen_fds(3) reads them."""
    env = os.environ if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(env.get("LISTEN_FDS", "0") or 0)
    socks = [socket.socket(fileno=fd) for fd in range(first_fd, first_fd + count)]
    for sock in socks:
        sock.setblocking(False)
    return socks


def fit_to_file_limit(wanted: int) -> int:
    """The connection cap the open-file limit allows (raising the soft limit when the hard one permits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft < need and (need <= hard or hard == resource.RLIM_INFINITY):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            soft = need
        except OSError:  # the unit's SystemCallFilter= denies setrlimit: LimitNOFILE= decides
            pass
    if soft < need:
        capped = max(1, soft - FD_RESERVE)
        log.warning("open-file limit %d allows %d connections, not %d; raise LimitNOFILE= in the unit "
                    "or lower --web.max-connections", soft, capped, wanted)
        return capped
    return wanted


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    units = tuple(dict.fromkeys(args.units or DEFAULT_UNITS))
    try:
        web = webconfig.load(args.web_config) if args.web_config else webconfig.WebConfig()
    except webconfig.WebConfigError as exc:
        log.error("--web.config.file %s", exc)
        return 1
    if args.systemd_socket:
        sockets = systemd_sockets()
        if not sockets:
            log.error("--web.systemd-socket: systemd passed no socket; start mxrc-monitor.socket, "
                      "or drop the flag to listen on --listen/--port")
            return 1
    else:
        try:
            sockets = [serve_mod.listen(args.listen, args.port)]
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s; choose another address or port "
                      "(dpkg-reconfigure mxrc-systemd, or mxrc-systemd config monitor.port=N)",
                      args.listen, args.port, exc)
            return 1
    limits = Limits(max_connections=fit_to_file_limit(args.max_connections), max_requests=args.max_requests)
    monitor = Monitor(units, SystemdBus(units))
    collector = SnapshotCollector()
    monitor.connect()
    demand = Demand()
    collector.publish(monitor.refresh())
    demand.refreshed()
    exposition = Exposition([collector], lambda: collector.snapshot)
    server = serve_mod.Server(exposition, sockets, limits,
                              ssl_context=web.ssl_context, headers=web.headers,
                              auth=webconfig.BasicAuth(web.users) if web.users else None, demand=demand)
    exposition.add(SelfCollector(lambda: server.stats))
    server.start()
    stop = threading.Event()

    def terminate(*_):
        stop.set()
        demand.wake.set()
    signal.signal(signal.SIGTERM, terminate)
    where = " ".join("%s:%s" % s.getsockname()[:2] for s in sockets)
    notify("READY=1", f"STATUS=serving {where}, {len(units)} units")
    log.info("serving metrics for %s on %s (%s%s; at most %d connections, %d requests at once)",
             ", ".join(units), where, "https" if web.ssl_context else "http",
             ", basic auth" if web.users else "", limits.max_connections, limits.max_requests)
    serve(monitor, collector, stop, ServingProof(server), demand)
    notify("STOPPING=1")
    server.stop()
    return 0
