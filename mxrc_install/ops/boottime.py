"""Boot-time baselining (US8, SC-006): how long the MXRC services take to come up at boot.

A record per boot: each service's initialisation (InactiveExit -> ActiveEnter,
what `systemd-analyze blame` shows, also for Type=simple), when it started
and when basic.target was reached (DefaultDependencies=no lets a service
start before it: US8's "in parallel"), and the time from systemd's start of
userspace to the last MXRC service ready, which is what the optimisation
shortens when the boot is not CPU-bound. The postinst records the boot it
runs in as "before"; mxrc-boot-time.service records every later boot. Pure
except read_records, which goes through the SysRoot (operations.py writes).
"""

from __future__ import annotations

import dataclasses
import json

from mxrc_install import names
from mxrc_install.sysroot import SysRoot

RECORDS = "/var/lib/mxrc-systemd/boot-times.jsonl"
KEEP = 100   # records kept, newest last
SC006_CHANGE = -30.0  # percent
UNIT_PROPERTIES = ("InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic")
MANAGER_PROPERTIES = ("UserspaceTimestampMonotonic", "FinishTimestampMonotonic")
# What DefaultDependencies=yes orders a service after (US8 scenario 2).
BASIC_TARGET = "basic.target"


@dataclasses.dataclass(frozen=True)
class BootRecord:
    boot_id: str
    label: str                 # "before" (postinst) or "boot"
    optimized: bool            # boot.optimize in force (DefaultDependencies=no)
    recorded_at: str
    units: dict                # unit -> seconds from start to ready, for units started by the boot
    ready_seconds: float | None   # userspace start -> last MXRC service ready; None: not started at boot
    userspace_seconds: float | None   # userspace start -> boot finished (systemd-analyze time)
    # Records written before these were kept lack them.
    started: dict = dataclasses.field(default_factory=dict)   # unit -> seconds after userspace start
    basic_target_seconds: float | None = None   # userspace start -> basic.target reached

    @property
    def comparable(self) -> bool:
        return self.ready_seconds is not None

    def started_before_basic(self, unit: str) -> bool | None:
        """Whether the unit started before basic.target was reached: the effect of DefaultDependencies=no."""
        start = self.started.get(unit)
        if start is None or self.basic_target_seconds is None:
            return None
        return start < self.basic_target_seconds


def _usec(props: dict, name: str) -> int:
    return int(props.get(name) or 0)


def measure(units: dict, manager: dict, basic: dict | None = None) -> dict:
    """BootRecord's measured fields from `systemctl show` values (usec strings).

    A unit started after the boot finished (by hand, or restarted) says
    nothing about the boot and is left out; if any is, there is no ready time.
    """
    userspace = _usec(manager, "UserspaceTimestampMonotonic")
    finish = _usec(manager, "FinishTimestampMonotonic")

    def since_userspace(usec: int) -> float | None:
        return round((usec - userspace) / 1e6, 3) if usec and userspace else None

    per_unit, started, ready_at, all_at_boot = {}, {}, 0, True
    for unit in names.SERVICES:
        props = units.get(unit, {})
        start = _usec(props, "InactiveExitTimestampMonotonic")
        ready = _usec(props, "ActiveEnterTimestampMonotonic")
        at_boot = start > 0 and ready >= start and (finish == 0 or start <= finish)
        if not at_boot:
            all_at_boot = False
            continue
        per_unit[unit] = round((ready - start) / 1e6, 3)
        started[unit] = since_userspace(start)
        ready_at = max(ready_at, ready)
    return {
        "units": per_unit,
        "started": {u: s for u, s in started.items() if s is not None},
        "ready_seconds": since_userspace(ready_at) if all_at_boot and per_unit else None,
        "userspace_seconds": since_userspace(finish),
        "basic_target_seconds": since_userspace(_usec(basic or {}, "ActiveEnterTimestampMonotonic")),
    }


def parse_records(text: str | None) -> list[BootRecord]:
    out = []
    for line in (text or "").splitlines():
        try:
            out.append(BootRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a torn or foreign line costs one record, not the history
    return out


def with_record(records: list[BootRecord], new: BootRecord) -> list[BootRecord]:
    """Replace the same boot's record of the same label (re-runs are idempotent); keep the newest KEEP."""
    kept = [r for r in records if (r.boot_id, r.label) != (new.boot_id, new.label)]
    return (kept + [new])[-KEEP:]


def render_records(records: list[BootRecord]) -> str:
    return "".join(json.dumps(dataclasses.asdict(r), sort_keys=True) + "\n" for r in records)


def read_records(root: SysRoot) -> list[BootRecord]:
    return parse_records(root.read_text(RECORDS))


def choose_pair(records: list[BootRecord], before_id: str | None = None, after_id: str | None = None):
    """(before, after): the postinst's baseline or the newest unoptimised boot,
    against the newest optimised one."""
    def find(boot_id):
        return next((r for r in reversed(records) if r.boot_id.startswith(boot_id) and r.comparable), None)
    usable = [r for r in records if r.comparable]
    before = find(before_id) if before_id else (
        next((r for r in usable if r.label == "before" and not r.optimized), None)
        or next((r for r in reversed(usable) if not r.optimized), None))
    after = find(after_id) if after_id else next((r for r in reversed(usable) if r.optimized), None)
    return before, after


def change_percent(before: float, after: float) -> float:
    return round(100.0 * (after - before) / before, 1) if before else 0.0


def comparison(before: BootRecord, after: BootRecord) -> dict:
    units = {}
    for unit in names.SERVICES:
        b, a = before.units.get(unit), after.units.get(unit)
        units[unit] = {"before": b, "after": a,
                       "change_percent": change_percent(b, a) if b is not None and a is not None else None,
                       "started": {"before": before.started.get(unit), "after": after.started.get(unit)},
                       "started_before_basic_target": {"before": before.started_before_basic(unit),
                                                       "after": after.started_before_basic(unit)}}
    change = change_percent(before.ready_seconds, after.ready_seconds)
    return {"before": dataclasses.asdict(before), "after": dataclasses.asdict(after), "units": units,
            "basic_target": {"before": before.basic_target_seconds, "after": after.basic_target_seconds},
            "ready": {"before": before.ready_seconds, "after": after.ready_seconds, "change_percent": change},
            "sc006_met": change <= SC006_CHANGE}


def comparison_text(c: dict) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.3f} s"

    def pct(v):
        return "" if v is None else f"{v:+.1f}%"

    def start(v, early):
        return fmt(v) + ("*" if early else " ")
    b, a = c["before"], c["after"]
    lines = [f"before: boot {b['boot_id'][:12]} ({b['label']}, optimize={'yes' if b['optimized'] else 'no'}, "
             f"{b['recorded_at']})",
             f"after:  boot {a['boot_id'][:12]} ({a['label']}, optimize={'yes' if a['optimized'] else 'no'}, "
             f"{a['recorded_at']})", "",
             f"{'initialisation':28}{'before':>12}{'after':>12}{'change':>10}"
             f"{'start, before':>17}{'start, after':>16}"]
    for unit, v in c["units"].items():
        early = v["started_before_basic_target"]
        lines.append(f"{unit:28}{fmt(v['before']):>12}{fmt(v['after']):>12}{pct(v['change_percent']):>10}"
                     f"{start(v['started']['before'], early['before']):>17}"
                     f"{start(v['started']['after'], early['after']):>16}")
    basic = c["basic_target"]
    lines.append(f"{'basic.target reached':28}{'':34}{start(basic['before'], False):>17}"
                 f"{start(basic['after'], False):>16}")
    r = c["ready"]
    lines.append(f"{'MXRC ready after userspace':28}{fmt(r['before']):>12}{fmt(r['after']):>12}"
                 f"{pct(r['change_percent']):>10}")
    lines += ["", "start: seconds after userspace start; * before basic.target was reached "
              "(DefaultDependencies=no in effect)",
              f"SC-006 (-30% or better): {'met' if c['sc006_met'] else 'NOT met'}"]
    return "".join(line.rstrip() + "\n" for line in lines)


def records_text(records: list[BootRecord]) -> str:
    if not records:
        return ("no boot recorded yet: mxrc-boot-time.service records every boot; "
                "mxrc-systemd boot-time record records this one\n")

    def secs(v):
        return "-" if v is None else f"{v:.3f} s"

    def unit_text(record, unit, init):
        start = record.started.get(unit)
        return f"{unit.removesuffix('.service')} {init:.3f}" + ("" if start is None else f" @{start:.1f}")
    lines = [f"{'boot':14}{'label':8}{'optimize':10}{'MXRC ready':>12}{'basic.target':>14}{'userspace':>12}"
             "  per unit: initialisation s @start s"]
    for r in records:
        per = ", ".join(unit_text(r, u, s) for u, s in r.units.items()) or "not started at boot"
        lines.append(f"{r.boot_id[:12]:14}{r.label:8}{'yes' if r.optimized else 'no':10}"
                     f"{secs(r.ready_seconds):>12}{secs(r.basic_target_seconds):>14}{secs(r.userspace_seconds):>12}"
                     f"  {per}")
    return "\n".join(lines) + "\n"
