"""Reads the running system for doctor and boot-time: systemctl, the RT process, journald, the exporter.

The only module of mxrc_install that talks to a live systemd; everything it
returns is plain data that the pure modules judge.
"""

from __future__ import annotations

import datetime
import os
import urllib.error
import urllib.request

from mxrc_install import names, process
from mxrc_install.ops import boottime, doctor
from mxrc_install.pipeline import plan
from mxrc_install.showparse import parse_one, parse_show

SHOW_PROPERTIES = sorted({"LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID",
                          "DropInPaths"} | doctor.PROPERTY_NAMES)
POLICIES = {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo", os.SCHED_RR: "rr",
            os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}


def _run(*cmd: str) -> str:
    return process.run(cmd).stdout


def show(units, properties) -> dict:
    text = _run("systemctl", "show", "-p", ",".join(["Id", *properties]), *units)
    by_id = {d.get("Id"): d for d in parse_show(text)}
    return {u: by_id.get(u, {"LoadState": "not-found"}) for u in units}


def scheduling(pid: int) -> doctor.Scheduling | None:
    try:
        return doctor.Scheduling(POLICIES.get(os.sched_getscheduler(pid), "unknown"),
                                 os.sched_getparam(pid).sched_priority,
                                 frozenset(os.sched_getaffinity(pid)))
    except (ProcessLookupError, PermissionError, OSError):
        return None


def exposure(unit: str) -> float | None:
    return doctor.parse_exposure(_run("systemd-analyze", "security", "--no-pager", unit))


def kills_this_boot(unit: str) -> dict:
    text = _run("journalctl", "-b", "-q", "-o", "cat", "--no-pager", "-u", unit)
    return {why: text.count(f"Failed with result '{why}'") for why in ("watchdog", "oom-kill")}


def fetch_metrics(listen: str, port: int) -> tuple[str | None, str]:
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(listen, f"[{listen}]" if ":" in listen else listen)
    # The exporter is on this machine: never through an http_proxy from the environment.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(f"http://{host}:{port}/metrics", timeout=5) as resp:
            return resp.read().decode(errors="replace"), ""
    except (OSError, urllib.error.URLError) as exc:
        return None, str(exc)


def gather(placement: plan.Placement) -> doctor.LiveState:
    sandboxed = [*names.SERVICES, names.FAILOVER_TEMPLATE.replace("@", "@doctor"), names.HARDWARE_CHECK,
                 names.BOOT_TIME]
    props = show([*sandboxed, names.TARGET, names.ISOLATION], SHOW_PROPERTIES)
    pid = int(props[names.RT].get("MainPID", "0") or 0)
    sched = {names.RT: s for s in [scheduling(pid) if pid else None] if s}
    installed = [u for u in sandboxed if props[u].get("LoadState") != "not-found"]
    metrics, error = fetch_metrics(placement.monitor_listen, placement.monitor_port)
    return doctor.LiveState(
        properties=props,
        scheduling=sched,
        exposure={u: exposure(u) for u in installed},
        journald=doctor.parse_journald_config(_run("systemd-analyze", "cat-config", "systemd/journald.conf")),
        exporter_metrics=metrics,
        exporter_error=error,
        kills={u: kills_this_boot(u) for u in (names.RT, names.NONRT)},
    )


def boot_record(root, label: str, optimized: bool):
    """This boot's record, read from systemd now."""
    units = show([*names.SERVICES, boottime.BASIC_TARGET], boottime.UNIT_PROPERTIES)
    manager = parse_one(_run("systemctl", "show", "-p", ",".join(boottime.MANAGER_PROPERTIES)))
    measured = boottime.measure(units, manager, units[boottime.BASIC_TARGET])
    boot_id = (root.read_text("/proc/sys/kernel/random/boot_id") or "unknown").strip()
    return boottime.BootRecord(boot_id=boot_id, label=label, optimized=optimized,
                               recorded_at=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                               **measured)
