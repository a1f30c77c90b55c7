#!/usr/bin/python3
"""What watching the MXRC units costs: mxrc-monitor against node_exporter's systemd collector.

Runs inside a test VM with both installed (see run-exporter-cost). Per round,
phases of the same length with mxrc.target running: no exporter (baseline),
mxrc-monitor alone, node_exporter alone with only its systemd collector,
restricted to the MXRC units and with restart counts on (so both report the
same units' state and restarts). In each phase a client scrapes every
INTERVAL seconds, each time on a new connection (urllib: issue 5's method).
Measured: the exporter's CPU time (its cgroup), PID 1's and the D-Bus
daemon's CPU time above the baseline, and the scrape latency (connect to
last byte). Then the same length again with a client that scrapes as a
Prometheus server does (PrometheusLike: one kept-alive connection, its
Accept header, gzip): the exporters' CPU that way (as_prometheus).

Then, per exporter: its CPU with nobody scraping, bursts of 50 and 500
concurrent scrapes (p50/p99, errors), and
100 slowloris + 1,100 idle connections while a scraper scrapes (its p99 and
errors, and whether the exporter is still the same process afterwards).
ROUNDS rounds; the summary gives the median and the spread (min, max).
Prints JSON.
"""
import asyncio
import http.client
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
INTERVAL = 0.5
BURSTS = (50, 500)
BURST_REPEATS = 3
FLOOD_IDLE, FLOOD_SLOW = 1100, 100
# After the last scrape nobody asks for a refresh (mxrc_monitor/demand.py); until commit c607e29
# the refresh went on every second for 60 s after the last scrape, and this waited 65 s.
MXRC_IDLE_AFTER = 5
UNITS_RE = r"(mxrc-rt|mxrc-nonrt|mxrc-monitor)\.service|mxrc\.target"
NODE_UNIT = "bench-node-exporter.service"
NODE_ARGS = ["/usr/bin/prometheus-node-exporter", "--web.listen-address=127.0.0.1:9100",
             "--collector.disable-defaults", "--collector.systemd",
             f"--collector.systemd.unit-include={UNITS_RE}",
             "--collector.systemd.enable-restarts-metrics"]
EXPORTERS = {
    "mxrc-monitor": ("mxrc-monitor.service", "http://127.0.0.1:9558/metrics"),
    "node_exporter-systemd": (NODE_UNIT, "http://127.0.0.1:9100/metrics"),
}


def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def pid_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, USER_HZ=100


def unit_cpu_seconds(unit: str) -> float:
    return int(sh("systemctl", "show", "-p", "CPUUsageNSec", "--value", unit)) / 1e9


def bus_pid() -> int:
    for unit in ("dbus.service", "dbus-broker.service"):
        pid = sh("systemctl", "show", "-p", "MainPID", "--value", unit)
        if pid not in ("", "0"):
            return int(pid)
    raise SystemExit("no D-Bus daemon")


def scrape(url: str) -> tuple[float, int]:
    """One scrape on a new connection (urllib): the method of issue 5's figures."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as resp:
        size = len(resp.read())
    return time.perf_counter() - started, size


# What Prometheus 2.x sends by default (scrape_protocols OpenMetricsText1.0.0, OpenMetricsText0.0.1,
# PrometheusText0.0.4), on one kept-alive connection with gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;"
              "q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip", "User-Agent": "Prometheus/2.53", "X-Prometheus-Scrape-Timeout-Seconds": "10"}


class PrometheusLike:
    """Scrapes as a Prometheus server does: one kept-alive connection, its Accept headers, gzip."""

    def __init__(self, url: str):
        self.host, self.port, self.path = _split(url)
        self.conn = None

    def __call__(self, url: str) -> tuple[float, int]:
        started = time.perf_counter()
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            self.conn.request("GET", self.path, headers=PROMETHEUS_HEADERS)
            resp = self.conn.getresponse()
            size = len(resp.read())
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if resp.status != 200:
            raise ConnectionError(f"HTTP {resp.status}")
        return time.perf_counter() - started, size


def phase(unit: str | None, url: str | None, scraper=scrape) -> dict:
    bus = bus_pid()
    pid1_0, bus_0 = pid_cpu_seconds(1), pid_cpu_seconds(bus)
    exp_0 = unit_cpu_seconds(unit) if unit else 0.0
    started = time.monotonic()
    latencies, size = [], 0
    while time.monotonic() - started < DURATION:
        tick = time.monotonic()
        if url:
            latency, size = scraper(url)
            latencies.append(latency)
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))
    elapsed = time.monotonic() - started
    out = {"seconds": round(elapsed, 1),
           "pid1_cpu_s": pid_cpu_seconds(1) - pid1_0,
           "dbus_cpu_s": pid_cpu_seconds(bus) - bus_0}
    if unit:
        exporter = unit_cpu_seconds(unit) - exp_0
        latencies.sort()
        out.update({
            "scrapes": len(latencies), "response_bytes": size,
            "exporter_cpu_s": round(exporter, 3),
            "exporter_cpu_ms_per_s": round(1000 * exporter / elapsed, 2),
            "exporter_cpu_ms_per_scrape": round(1000 * exporter / len(latencies), 2),
            "scrape_ms_p50": round(1000 * statistics.median(latencies), 2),
            "scrape_ms_p99": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
        })
    return out


def wait_http(url: str) -> None:
    for _ in range(120):
        try:
            scrape(url)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} never answered")


async def _one_scrape(host: str, port: int, path: str) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    if not data.startswith(b"HTTP/1.1 200") and not data.startswith(b"HTTP/1.0 200"):
        raise ConnectionError(data[:40])
    return time.perf_counter() - started


def _split(url: str):
    rest = url.split("//", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


def burst(url: str, n: int) -> dict:
    """n scrapes started at once, BURST_REPEATS times: latency percentiles and errors."""
    host, port, path = _split(url)

    async def run():
        return await asyncio.gather(*(asyncio.wait_for(_one_scrape(host, port, path), 60) for _ in range(n)),
                                    return_exceptions=True)
    latencies, errors = [], 0
    for _ in range(BURST_REPEATS):
        for r in asyncio.run(run()):
            if isinstance(r, BaseException):
                errors += 1
            else:
                latencies.append(r)
        time.sleep(2)
    return {"concurrent": n, "scrapes": n * BURST_REPEATS, "errors": errors, **percentiles(latencies)}


def percentiles(latencies) -> dict:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    latencies = sorted(latencies)
    return {"p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)}


def flood(unit: str, url: str, seconds: float) -> dict:
    """FLOOD_IDLE silent + FLOOD_SLOW slowloris connections while one client scrapes every INTERVAL."""
    host, port, _ = _split(url)
    pid = sh("systemctl", "show", "-p", "MainPID", "--value", unit)
    held, refused = [], 0
    for i in range(FLOOD_IDLE + FLOOD_SLOW):
        try:
            sock = socket.create_connection((host, port), timeout=5)
            if i >= FLOOD_IDLE:
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(sock)
        except OSError:
            refused += 1
    latencies, errors = [], 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        try:
            latencies.append(scrape(url)[0])
        except OSError:
            errors += 1
        for sock in held[FLOOD_IDLE:]:
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                pass
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))
    for sock in held:
        sock.close()
    time.sleep(2)
    try:
        scrape(url)
        recovered = True
    except OSError:
        recovered = False
    return {"connections_refused": refused, "scrapes": len(latencies) + errors, "errors": errors,
            **percentiles(latencies), "recovered": recovered,
            "same_process": sh("systemctl", "show", "-p", "MainPID", "--value", unit) == pid,
            "active": subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                                     text=True).stdout.strip()}


def idle_cpu(unit: str, seconds: float) -> float:
    """The exporter's CPU ms per second with nobody scraping."""
    before = unit_cpu_seconds(unit)
    time.sleep(seconds)
    return round(1000 * (unit_cpu_seconds(unit) - before) / seconds, 2)


def start_node_exporter() -> None:
    # Same CPUs as mxrc-monitor (the non-RT ones), as root like its Debian unit.
    affinity = sh("systemctl", "show", "-p", "CPUAffinity", "--value", "mxrc-nonrt.service")
    subprocess.run(["systemd-run", f"--unit={NODE_UNIT}", "-p", f"CPUAffinity={affinity}", *NODE_ARGS],
                   check=True, capture_output=True)
    wait_http(EXPORTERS["node_exporter-systemd"][1])


def stop_node_exporter() -> None:
    subprocess.run(["systemctl", "stop", NODE_UNIT], check=True)
    subprocess.run(["systemctl", "reset-failed", NODE_UNIT], capture_output=True)


def one_round() -> dict:
    subprocess.run(["systemctl", "stop", "mxrc-monitor.service"], check=True)
    time.sleep(5)
    results = {"baseline": phase(None, None)}

    subprocess.run(["systemctl", "start", "mxrc-monitor.service"], check=True)
    wait_http(EXPORTERS["mxrc-monitor"][1])
    time.sleep(5)
    results["mxrc-monitor"] = phase(*EXPORTERS["mxrc-monitor"])
    unit, url = EXPORTERS["mxrc-monitor"]
    results["mxrc-monitor"]["as_prometheus"] = phase(unit, url, PrometheusLike(url))
    # Idle before the bursts and the flood, whose aftermath (connections timing out) is not idling.
    time.sleep(MXRC_IDLE_AFTER)  # nobody scrapes: no refresh is asked for
    results["mxrc-monitor"]["idle_cpu_ms_per_s"] = idle_cpu(unit, DURATION / 2)
    results["mxrc-monitor"]["bursts"] = [burst(url, n) for n in BURSTS]
    results["mxrc-monitor"]["flood"] = flood(unit, url, DURATION / 2)
    subprocess.run(["systemctl", "stop", "mxrc-monitor.service"], check=True)

    start_node_exporter()
    time.sleep(5)
    results["node_exporter-systemd"] = phase(*EXPORTERS["node_exporter-systemd"])
    unit, url = EXPORTERS["node_exporter-systemd"]
    results["node_exporter-systemd"]["as_prometheus"] = phase(unit, url, PrometheusLike(url))
    results["node_exporter-systemd"]["idle_cpu_ms_per_s"] = idle_cpu(unit, DURATION / 2)
    results["node_exporter-systemd"]["bursts"] = [burst(url, n) for n in BURSTS]
    results["node_exporter-systemd"]["flood"] = flood(unit, url, DURATION / 2)
    stop_node_exporter()
    subprocess.run(["systemctl", "start", "mxrc-monitor.service"], check=True)
    add_extras(results)
    return results


def add_extras(results: dict) -> None:
    base = results["baseline"]
    for name in EXPORTERS:
        r = results[name]
        # What the exporter makes PID 1 and the bus do, per second, above an idle system.
        r["pid1_extra_cpu_ms_per_s"] = round(1000 * (r["pid1_cpu_s"] / r["seconds"]
                                                     - base["pid1_cpu_s"] / base["seconds"]), 2)
        r["dbus_extra_cpu_ms_per_s"] = round(1000 * (r["dbus_cpu_s"] / r["seconds"]
                                                     - base["dbus_cpu_s"] / base["seconds"]), 2)
    mine, peer = results["mxrc-monitor"], results["node_exporter-systemd"]
    results["exporter_cpu_ratio"] = round(mine["exporter_cpu_s"] / peer["exporter_cpu_s"], 3)
    results["exporter_cpu_ratio_as_prometheus"] = round(mine["as_prometheus"]["exporter_cpu_s"]
                                                        / peer["as_prometheus"]["exporter_cpu_s"], 3)
    results["exporter_plus_pid1_plus_dbus_ratio"] = round(
        (mine["exporter_cpu_ms_per_s"] + max(0, mine["pid1_extra_cpu_ms_per_s"])
         + max(0, mine["dbus_extra_cpu_ms_per_s"]))
        / (peer["exporter_cpu_ms_per_s"] + max(0, peer["pid1_extra_cpu_ms_per_s"])
           + max(0, peer["dbus_extra_cpu_ms_per_s"])), 3)


def spread(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}


def summarize(rounds: list[dict]) -> dict:
    out = {"rounds": len(rounds),
           "exporter_cpu_ratio": spread([r["exporter_cpu_ratio"] for r in rounds]),
           "exporter_cpu_ratio_as_prometheus": spread([r["exporter_cpu_ratio_as_prometheus"]
                                                       for r in rounds]),
           "exporter_plus_pid1_plus_dbus_ratio": spread([r["exporter_plus_pid1_plus_dbus_ratio"]
                                                         for r in rounds])}
    for name in EXPORTERS:
        mine = [r[name] for r in rounds]
        out[name] = {key: spread([m[key] for m in mine]) for key in (
            "exporter_cpu_ms_per_s", "idle_cpu_ms_per_s", "pid1_extra_cpu_ms_per_s",
            "dbus_extra_cpu_ms_per_s", "scrape_ms_p50", "scrape_ms_p99")}
        out[name]["as_prometheus"] = {key: spread([m["as_prometheus"][key] for m in mine]) for key in (
            "exporter_cpu_ms_per_s", "scrape_ms_p50", "scrape_ms_p99", "response_bytes")}
        for i, n in enumerate(BURSTS):
            out[name][f"burst_{n}"] = {key: spread([m["bursts"][i][key] for m in mine])
                                       for key in ("p50_ms", "p99_ms", "errors")}
        out[name]["flood"] = {key: spread([m["flood"][key] for m in mine])
                              for key in ("p50_ms", "p99_ms", "errors", "connections_refused")}
        out[name]["flood"]["recovered_all"] = all(m["flood"]["recovered"] for m in mine)
        out[name]["flood"]["same_process_all"] = all(m["flood"]["same_process"] for m in mine)
    out["goal"] = "exporter CPU <= 0.15x node_exporter's; with no scrape it should cost almost nothing"
    out["cpu_goal_met"] = out["exporter_cpu_ratio"]["median"] <= 0.15
    out["cpu_goal_met_as_prometheus"] = out["exporter_cpu_ratio_as_prometheus"]["median"] <= 0.15
    return out


def main() -> int:
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))  # the flood's client side
    subprocess.run(["systemctl", "start", "mxrc.target"], check=True)
    rounds = [one_round() for _ in range(ROUNDS)]
    node_version = sh("/usr/bin/prometheus-node-exporter", "--version").splitlines()[0]
    print(json.dumps({"duration_s": DURATION, "scrape_interval_s": INTERVAL, "units": UNITS_RE,
                      "bursts": list(BURSTS), "burst_repeats": BURST_REPEATS,
                      "flood": {"idle": FLOOD_IDLE, "slowloris": FLOOD_SLOW},
                      "node_exporter": node_version, "node_exporter_args": NODE_ARGS[1:],
                      "summary": summarize(rounds), "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
