"""The spec's expected unit values, as `systemctl show` prints them: one home.

doctor compares the running units with them, `verify` the planned subset, and
the unit tests read them too.
"""

from __future__ import annotations

from mxrc_install import names
from mxrc_install.cpulist import format_cpulist
from mxrc_install.pipeline import plan


def _timespan(seconds: int) -> str:
    """How systemctl show prints a whole number of seconds (30s, 1min, 1min 30s)."""
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    return f"{m}min" + (f" {s}s" if s else "")


# Every property expected_properties() may name: what live.gather asks systemctl for.
PROPERTY_NAMES = frozenset({
    "Restart", "RestartUSec", "StartLimitBurst", "StartLimitIntervalUSec", "WatchdogUSec", "User",
    "MemoryMax", "CPUAffinity", "AllowedCPUs", "CPUSchedulingPriority", "NUMAPolicy", "NUMAMask", "IOWeight",
    "CPUQuotaPerSecUSec", "Type"})
# The subset the plan decides per machine: what `mxrc-systemd verify` compares.
PLANNED = {names.RT: ("CPUAffinity", "AllowedCPUs", "CPUSchedulingPriority", "NUMAMask", "WatchdogUSec"),
           names.NONRT: ("CPUAffinity",)}


def planned_properties(p: plan.Placement) -> dict:
    full = expected_properties(p)
    return {unit: {k: full[unit][k] for k in keys} for unit, keys in PLANNED.items()}


def expected_properties(p: plan.Placement) -> dict:
    """unit -> {property: value as systemctl show prints it}: the plan and the spec's FRs."""
    # systemctl show prints CPU and node sets as ranges separated by spaces ("0-1 4").
    rt_cpus = format_cpulist(p.rt_cpus).replace(",", " ")
    nonrt_cpus = format_cpulist(p.nonrt_cpus).replace(",", " ")
    common = {"Restart": "on-failure", "RestartUSec": "5s", "StartLimitBurst": "5",
              "StartLimitIntervalUSec": "1min", "WatchdogUSec": _timespan(p.watchdog_sec),
              "User": "mxrc", "MemoryMax": str(p.memory_max)}
    rt = {**common, "CPUAffinity": rt_cpus, "AllowedCPUs": rt_cpus,
          "CPUSchedulingPriority": str(p.rt_priority),
          "NUMAPolicy": "bind", "NUMAMask": format_cpulist(p.numa_nodes).replace(",", " "), "IOWeight": "500"}
    if p.cpu_quota_percent % 100 == 0:  # other quotas print with fractions that vary by version
        rt["CPUQuotaPerSecUSec"] = _timespan(p.cpu_quota_percent // 100)
    return {
        names.RT: rt,
        names.NONRT: {**common, "CPUAffinity": nonrt_cpus, "IOWeight": "100"},
        names.MONITOR: {"CPUAffinity": nonrt_cpus, "User": "mxrc-monitor", "Type": "notify"},
    }
