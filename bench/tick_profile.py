#!/usr/bin/python3
"""Where mxrc-monitor's own CPU goes each second, measured natively on the host (no VM, no system bus).

Each piece of the 1 s tick is timed alone, as the exporter runs it:
  dbus_get   one Properties.Get as SystemdBus.get_many() makes it, without the socket:
             the kept call's bytes with a new serial, a canned reply parsed (x3 per
             tick, sent together: one per unit whose watchdog is armed)
  cgroups    Monitor._sample_cgroups() for 3 services on a cgroup tree of the
             real files' shape
  snapshot   Monitor.snapshot() minus the cgroup reads (copies of unit state)
  render     prometheus_client's generate_latest() of the full registry (what the
             exporter did before it kept the units' part and wrote families itself)
  render_cached_units
             Exposition's text for a new snapshot whose units did not change (what a
             scrape after an ordinary tick costs)
  http_request_new_connection / http_request_keep_alive
             this process's CPU per /metrics request (body already rendered) of a
             client in another process: urllib, a new connection each time (as
             exporter_cost.py scrapes) / http.client on one kept-alive connection
  signal_jeepney / signal_skim
             one PropertiesChanged of the Service interface (as systemd sends for
             each STATUS= line of the RT loop), parsed whole by jeepney / skimmed
             for the properties the exporter serves (dbus_skim.SkimmingParser)
  rt_scan    rtcpu.sample(): /proc/interrupts and /proc/softirqs of a 4-CPU VM's
             size and a cgroup tree of 120 cgroups / 300 threads (sched_getaffinity
             on this process's own thread id stands in for every thread)
Prints JSON (microseconds per call, median of ROUNDS x CALLS).
Usage: bench/tick_profile.py [ROUNDS] > bench/results/tick-profile-host.json
"""
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jeepney import DBusAddress, Properties, new_method_return, new_signal  # noqa: E402
from jeepney.low_level import Parser  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from mxrc_monitor import rtcpu, serve, systemd_bus  # noqa: E402
from mxrc_monitor.collector import SnapshotCollector  # noqa: E402
from mxrc_monitor.dbus_skim import SkimmingParser  # noqa: E402
from mxrc_monitor.monitor import TASK_SCAN_SECONDS, Monitor  # noqa: E402
from mxrc_monitor.selfmetrics import SelfCollector  # noqa: E402
from mxrc_monitor.serve import Exposition  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
CALLS = 200
UNITS = ("mxrc.target", "mxrc-nonrt.service", "mxrc-rt.service", "mxrc-monitor.service")
SERVICE = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "Type": "notify",
           "Result": "success", "NRestarts": 0, "WatchdogUSec": 30_000_000,
           "WatchdogTimestampMonotonic": 100_000_000, "CPUAffinity": bytes([0b1100]), "AllowedCPUs": b""}


class StaticBus:
    def open(self):
        pass

    def close(self):
        pass

    def seed(self, unit):
        props = dict(SERVICE, ControlGroup=f"/system.slice/{unit}")
        return props if unit.endswith(".service") else {"LoadState": "loaded", "ActiveState": "active"}

    def get(self, unit, interface, name):
        return SERVICE[name]

    def get_many(self, wanted):
        return [SERVICE[name] for _, _, name in wanted]

    def wait(self, timeout):
        return []


def interrupts(cpus=4, lines=40):
    head = " " * 11 + "".join(f"CPU{i:<8}" for i in range(cpus)) + "\n"
    rows = "".join(f"{n:>4}:" + "".join(f"{n * 1000 + i:>11}" for i in range(cpus))
                   + "  PCI-MSI  x-edge  dev\n"
                   for n in range(lines))
    arch = "".join(f"{k}:" + "".join(f"{5000:>11}" for _ in range(cpus)) + "  arch\n"
                   for k in ("NMI", "LOC", "SPU", "PMI", "IWI", "RTR", "RES", "CAL", "TLB", "TRM", "THR",
                             "DFR", "MCE"))
    return head + rows + arch


def softirqs(cpus=4):
    head = " " * 20 + "".join(f"CPU{i:<8}" for i in range(cpus)) + "\n"
    return head + "".join(f"{k:>12}:" + "".join(f"{1000:>11}" for _ in range(cpus)) + "\n"
                          for k in ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET",
                                    "SCHED", "HRTIMER", "RCU"))


def build_tree(root: Path, groups=120, threads=300):
    me = os.getpid()
    per = threads // groups + 1
    for g in range(groups):
        group = root / ("" if g == 0 else f"system.slice/unit-{g}.service")
        group.mkdir(parents=True, exist_ok=True)
        (group / "cgroup.threads").write_text(f"{me}\n" * per)
    for unit in UNITS[1:]:
        group = root / "system.slice" / unit
        group.mkdir(parents=True, exist_ok=True)
        (group / "cgroup.threads").write_text(f"{me}\n")
        (group / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
        (group / "memory.current").write_text("1048576\n")
        (group / "memory.max").write_text("max\n")
        (group / "pids.current").write_text("5\n")


def timed(fn, calls=CALLS):
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return round(statistics.median(samples), 1)


GET_CALL = bytearray(Properties(DBusAddress(systemd_bus.unit_path("mxrc-rt.service"), systemd_bus.SYSTEMD,
                                             systemd_bus.SERVICE_IFACE)).get("WatchdogTimestampMonotonic")
                     .serialise(serial=1))
GET_PARSER = SkimmingParser(systemd_bus.SIGNALLED_PROPERTIES)


def dbus_get_once():
    """As SystemdBus.get_many() does it for one property: the kept call, a new serial, the reply parsed."""
    systemd_bus.SERIAL.pack_into(GET_CALL, systemd_bus.SERIAL_OFFSET, 7)
    data = bytes(GET_CALL)
    GET_PARSER.add_data(REPLY)
    msg = GET_PARSER.get_next_message()
    return len(data), systemd_bus.unwrap(msg.body[0])


CLIENTS = {
    "new_connection": "import urllib.request\nfor _ in range({n}):\n"
                      "    urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read()\n",
    "keep_alive": "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port})\n"
                  "for _ in range({n}):\n    c.request('GET', '/metrics'); c.getresponse().read()\n",
}


def http_request_cpu(exposition, client: str, requests: int = 500) -> float:
    """This process's CPU (all threads) per /metrics request of a client in another process, body cached."""
    sock = serve.listen("127.0.0.1", 0)
    server = serve.Server(exposition, [sock])
    server.start()
    try:
        samples = []
        for _ in range(ROUNDS):
            code = CLIENTS[client].format(n=requests, port=sock.getsockname()[1])
            before = resource.getrusage(resource.RUSAGE_SELF)
            subprocess.run([sys.executable, "-c", code], check=True)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            samples.append(cpu / requests * 1e6)
    finally:
        server.stop()
        sock.close()
    return round(statistics.median(samples), 1)


def _canned_reply() -> bytes:
    call = Properties(DBusAddress(systemd_bus.unit_path("mxrc-rt.service"), systemd_bus.SYSTEMD,
                                  systemd_bus.SERVICE_IFACE)).get("WatchdogTimestampMonotonic")
    parser = Parser()
    parser.add_data(call.serialise(serial=7))
    return new_method_return(parser.get_next_message(), "v", (("t", 123456789),)).serialise(serial=8)


REPLY = _canned_reply()

# The Service interface's emits-change properties that systemd sends again on each STATUS= line
# (names and types as systemd 257's; values of a running reference loop).
EXEC = ("a(sasbttttuii)", [("/usr/libexec/mxrc/mxrc-rt", ["mxrc-rt"], False, 1, 2, 3, 4, 812, 0, 0)])
STATUS_SIGNAL = new_signal(
    DBusAddress(systemd_bus.unit_path("mxrc-rt.service"), interface="org.freedesktop.DBus.Properties"),
    "PropertiesChanged", "sa{sv}as",
    (systemd_bus.SERVICE_IFACE,
     {"MainPID": ("u", 812), "ControlPID": ("u", 0), "StatusText": ("s", "wake-up latency us max 31"),
      "StatusErrno": ("i", 0), "StatusBusError": ("s", ""), "StatusVarlinkError": ("s", ""),
      "Result": ("s", "success"), "ReloadResult": ("s", "success"), "CleanResult": ("s", "success"),
      "NRestarts": ("u", 0), "ExecMainStartTimestamp": ("t", 2 ** 40), "ExecMainStartTimestampMonotonic":
      ("t", 9_000_000), "ExecMainExitTimestamp": ("t", 0), "ExecMainExitTimestampMonotonic": ("t", 0),
      "ExecMainPID": ("u", 812), "ExecMainCode": ("i", 0), "ExecMainStatus": ("i", 0),
      "ExecCondition": EXEC, "ExecStartPre": EXEC, "ExecStart": EXEC, "ExecStartPost": EXEC,
      "ExecReload": EXEC, "ExecStop": EXEC, "ExecStopPost": EXEC}, [])).serialise(serial=9)


def parse_signal(parser):
    parser.add_data(STATUS_SIGNAL)
    return parser.get_next_message()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc = root / "proc"
        proc.mkdir()
        (proc / "interrupts").write_text(interrupts())
        (proc / "softirqs").write_text(softirqs())
        cgroups = root / "cgroup"
        build_tree(cgroups)
        monitor = Monitor(UNITS, StaticBus(), cgroup_root=cgroups, proc_root=proc,
                          affinity=lambda tid: os.sched_getaffinity(0))
        monitor.connect()
        collector = SnapshotCollector()
        registry = CollectorRegistry()
        registry.register(collector)
        registry.register(SelfCollector())
        collector.publish(monitor.refresh())
        exposition = Exposition([collector, SelfCollector()], lambda: collector.snapshot)
        exposition.body()

        def render_cached_units():   # a tick's new snapshot, its units unchanged
            collector.publish(dataclasses.replace(collector.snapshot))
            return exposition.body()
        jeepney_parser, skimming_parser = Parser(), SkimmingParser(systemd_bus.SIGNALLED_PROPERTIES)
        rt_cpus = monitor.rt_cpus()
        rt_group = "/system.slice/mxrc-rt.service"
        pieces = {
            "dbus_get": timed(dbus_get_once),
            "cgroups": timed(monitor._sample_cgroups),
            "snapshot_without_cgroups": None,
            "render": timed(lambda: generate_latest(registry), calls=50),
            "render_cached_units": timed(render_cached_units, calls=50),
            "signal_jeepney": timed(lambda: parse_signal(jeepney_parser)),
            "signal_skim": timed(lambda: parse_signal(skimming_parser)),
            "rt_scan": timed(lambda: rtcpu.sample(rt_cpus, rt_group, proc, cgroups, monitor.affinity),
                             calls=20),
        }
        exposition.body()   # rendered once: the requests below measure serving only
        pieces["http_request_new_connection"] = http_request_cpu(exposition, "new_connection")
        pieces["http_request_keep_alive"] = http_request_cpu(exposition, "keep_alive")
        whole = timed(monitor.snapshot)
        pieces["snapshot_without_cgroups"] = round(max(0.0, whole - pieces["cgroups"]), 1)
    refresh = f"refresh (3 Gets + snapshot + a share of the rt_scan, run every {TASK_SCAN_SECONDS:g} s)"
    per_tick = {refresh: round(3 * pieces["dbus_get"] + whole + pieces["rt_scan"] / TASK_SCAN_SECONDS, 1),
                "render (only when scraped)": pieces["render_cached_units"],
                "signals (2 per second from the RT loop's STATUS=)": round(2 * pieces["signal_skim"], 1),
                "HTTP (2 scrapes per second, each on a new connection)":
                    round(2 * pieces["http_request_new_connection"], 1)}
    print(json.dumps({"what": "microseconds per call, median of rounds, native CPU (not TCG)",
                      "rounds": ROUNDS, "calls": CALLS, "pieces_us": pieces, "per_tick_us": per_tick,
                      "rt_scan_tree": {"cgroups": 120, "threads": 300},
                      "host": {"machine": platform.machine(), "python": platform.python_version(),
                               "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                               "date": time.strftime("%Y-%m-%d")}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
