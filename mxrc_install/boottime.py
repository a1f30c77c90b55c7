"""Boot-time baselining (US8, SC-006): how long the MXRC services take to come up at boot.

A record per boot: each service's initialisation (InactiveExit -> ActiveEnter,
what `systemd-analyze blame` shows, also for Type=simple) and the time from
systemd's start of userspace to the last MXRC service ready, which is what
DefaultDependencies=no shortens. The postinst records the boot it runs in as
"before"; mxrc-boot-time.service records every later boot. Pure except
read_records/save_record, which go through the SysRoot.
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


@dataclasses.dataclass(frozen=True)
class BootRecord:
    boot_id: str
    label: str                 # "before" (postinst) or "boot"
    optimized: bool            # boot.optimize in force (DefaultDependencies=no)
    recorded_at: str
    units: dict                # unit -> seconds from start to ready, for units started by the boot
    ready_seconds: float | None   # userspace start -> last MXRC service ready; None: not started at boot
    userspace_seconds: float | None   # userspace start -> boot finished (systemd-analyze time)

    @property
    def comparable(self) -> bool:
        return self.ready_seconds is not None


def measure(units: dict, manager: dict) -> tuple[dict, float | None, float | None]:
    """(per-unit seconds, ready seconds, userspace seconds) from `systemctl show` values (usec strings).

    A unit started after the boot finished (by hand, or restarted) says
    nothing about the boot and is left out; if any is, there is no ready time.
    """
    userspace = int(manager.get("UserspaceTimestampMonotonic") or 0)
    finish = int(manager.get("FinishTimestampMonotonic") or 0)
    per_unit, ready_at, all_at_boot = {}, 0, True
    for unit in names.SERVICES:
        props = units.get(unit, {})
        start = int(props.get("InactiveExitTimestampMonotonic") or 0)
        ready = int(props.get("ActiveEnterTimestampMonotonic") or 0)
        at_boot = start > 0 and ready >= start and (finish == 0 or start <= finish)
        if not at_boot:
            all_at_boot = False
            continue
        per_unit[unit] = round((ready - start) / 1e6, 3)
        ready_at = max(ready_at, ready)
    ready_seconds = round((ready_at - userspace) / 1e6, 3) if all_at_boot and per_unit and userspace else None
    userspace_seconds = round((finish - userspace) / 1e6, 3) if finish and userspace else None
    return per_unit, ready_seconds, userspace_seconds


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
    """(before, after): the postinst's baseline or the newest unoptimised boot, against the newest optimised one."""
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
                       "change_percent": change_percent(b, a) if b is not None and a is not None else None}
    change = change_percent(before.ready_seconds, after.ready_seconds)
    return {"before": dataclasses.asdict(before), "after": dataclasses.asdict(after), "units": units,
            "ready": {"before": before.ready_seconds, "after": after.ready_seconds, "change_percent": change},
            "sc006_met": change <= SC006_CHANGE}


def comparison_text(c: dict) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.3f} s"

    def pct(v):
        return "" if v is None else f"{v:+.1f}%"
    b, a = c["before"], c["after"]
    lines = [f"before: boot {b['boot_id'][:12]} ({b['label']}, optimize={'yes' if b['optimized'] else 'no'}, "
             f"{b['recorded_at']})",
             f"after:  boot {a['boot_id'][:12]} ({a['label']}, optimize={'yes' if a['optimized'] else 'no'}, "
             f"{a['recorded_at']})", "",
             f"{'':28}{'before':>12}{'after':>12}{'change':>10}"]
    for unit, v in c["units"].items():
        lines.append(f"{unit:28}{fmt(v['before']):>12}{fmt(v['after']):>12}{pct(v['change_percent']):>10}")
    r = c["ready"]
    lines.append(f"{'MXRC ready after userspace':28}{fmt(r['before']):>12}{fmt(r['after']):>12}"
                 f"{pct(r['change_percent']):>10}")
    lines.append("")
    lines.append(f"SC-006 (-30% or better): {'met' if c['sc006_met'] else 'NOT met'}")
    return "\n".join(lines) + "\n"


def records_text(records: list[BootRecord]) -> str:
    if not records:
        return ("no boot recorded yet: mxrc-boot-time.service records every boot; "
                "mxrc-systemd boot-time record records this one\n")
    lines = [f"{'boot':14}{'label':8}{'optimize':10}{'MXRC ready':>12}{'userspace':>12}  per unit (s)"]
    for r in records:
        ready = "-" if r.ready_seconds is None else f"{r.ready_seconds:.3f} s"
        user = "-" if r.userspace_seconds is None else f"{r.userspace_seconds:.3f} s"
        per = ", ".join(f"{u.removesuffix('.service')} {s:.3f}" for u, s in r.units.items()) or "not started at boot"
        lines.append(f"{r.boot_id[:12]:14}{r.label:8}{'yes' if r.optimized else 'no':10}{ready:>12}{user:>12}  {per}")
    return "\n".join(lines) + "\n"
