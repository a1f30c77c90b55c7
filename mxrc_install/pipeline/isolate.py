"""Runtime isolation of the RT CPUs: what only a running kernel can be told.

Run by mxrc-isolation.service (`mxrc-systemd isolate start|stop`) before
mxrc-rt starts and when mxrc.target stops. The cgroup side (slices' cpusets,
PID 1's affinity) is in the drop-ins apply writes; this moves what has no
unit file: unbound workqueues, interrupts, movable kernel threads, and the
RT CPUs' idle-state latency. The original values are saved before anything
is written, so `stop` (and a purge) puts the system back as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from mxrc_install.cpulist import CpuListError, format_cpulist, format_mask, parse_cpulist, parse_mask
from mxrc_install.sysroot import SysRoot

log = logging.getLogger(__name__)

SAVED = "/run/mxrc-systemd/isolation.json"
WORKQUEUE_MASK = "/sys/devices/virtual/workqueue/cpumask"
DEFAULT_IRQ_MASK = "/proc/irq/default_smp_affinity"
IRQ_AFFINITY = "/proc/irq/{irq}/smp_affinity_list"
PM_QOS = "/sys/devices/system/cpu/cpu{cpu}/power/pm_qos_resume_latency_us"
# Wake-up latency an RT CPU may accept from an idle state: C1-class states
# (a few us) stay allowed, deep package states (tens to hundreds of us) not.
RT_WAKEUP_LATENCY_US = "10"
PF_KTHREAD = 0x00200000
PF_NO_SETAFFINITY = 0x04000000


@dataclasses.dataclass(frozen=True)
class Setting:
    path: str
    value: str
    what: str   # for the report: "workqueues", "irq 24", "idle cpu2", ...


def _current_cpus(root: SysRoot, path: str) -> frozenset[int] | None:
    try:
        return parse_cpulist((root.read_text(path) or "").strip())
    except CpuListError:
        return None


def settings_for(root: SysRoot, rt: frozenset[int], housekeeping: frozenset[int]) -> list[Setting]:
    """What to write for this plan, from what the kernel shows now (pure but for reads)."""
    out = []
    if root.exists(WORKQUEUE_MASK):
        out.append(Setting(WORKQUEUE_MASK, format_mask(housekeeping), "unbound workqueues"))
    if root.exists(DEFAULT_IRQ_MASK):
        out.append(Setting(DEFAULT_IRQ_MASK, format_mask(housekeeping), "new interrupts"))
    for path in _irq_affinity_paths(root):
        current = _current_cpus(root, path)
        if current and current & rt:
            out.append(Setting(path, format_cpulist(housekeeping), f"irq {path.split('/')[3]}"))
    for cpu in sorted(rt):
        path = PM_QOS.format(cpu=cpu)
        if root.exists(path):
            out.append(Setting(path, RT_WAKEUP_LATENCY_US, f"idle states of cpu{cpu}"))
    return out


def parse_stat_flags(stat: str) -> int | None:
    """The flags field (9th) of /proc/PID/stat; comm may hold spaces and parentheses."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[6]) if len(fields) > 6 and fields[6].isascii() and fields[6].isdigit() else None


def movable_kernel_threads(root: SysRoot, rt: frozenset[int]) -> list[int]:
    """Kernel threads on an RT CPU that may be moved (not per-CPU: no PF_NO_SETAFFINITY)."""
    out = []
    for path in root.glob("/proc/[0-9]*/stat"):
        flags = parse_stat_flags(root.read_text(path) or "")
        if flags is None or not flags & PF_KTHREAD or flags & PF_NO_SETAFFINITY:
            continue
        pid = int(path.split("/")[2])
        status = root.read_text(f"/proc/{pid}/status") or ""
        allowed = next((line.split(":", 1)[1] for line in status.splitlines()
                        if line.startswith("Cpus_allowed_list:")), "")
        try:
            if parse_cpulist(allowed.strip()) & rt:
                out.append(pid)
        except CpuListError:
            continue
    return out


def _write(root: SysRoot, path: str, value: str) -> str | None:
    """Write a kernel setting; the error text when the kernel refuses (e.g. a managed IRQ)."""
    try:
        with open(root.path(path), "w") as f:
            f.write(value + "\n")
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _load_saved(root: SysRoot) -> dict:
    try:
        saved = json.loads(root.read_text(SAVED) or "{}")
    except json.JSONDecodeError:
        return {}
    return saved if isinstance(saved, dict) else {}


def _save(root: SysRoot, saved: dict) -> None:
    from mxrc_install.pipeline.apply import write_atomic   # one atomic writer for every file we own
    write_atomic(root.path(SAVED), json.dumps(saved, indent=1, sort_keys=True) + "\n", mode=0o600)


def start(root: SysRoot, rt: frozenset[int], housekeeping: frozenset[int]) -> list[str]:
    """Isolate; returns report lines. Originals are saved before the first write."""
    settings = settings_for(root, rt, housekeeping)
    saved = _load_saved(root)
    originals = saved.setdefault("settings", {})
    for s in settings:
        if s.path not in originals:   # a restart keeps the values from before the first start
            originals[s.path] = (root.read_text(s.path) or "").strip()
    # Interrupts requested later (a device opened after boot) inherit our default
    # mask; stop() tells them from the admin's by not being in this list.
    saved.setdefault("irqs", sorted(_irq_numbers(root)))
    saved.setdefault("housekeeping", format_cpulist(housekeeping))
    kthreads = movable_kernel_threads(root, rt)
    moved_threads = saved.setdefault("kthreads", {})
    for pid in kthreads:
        moved_threads.setdefault(str(pid), format_cpulist(_current_cpus_of(root, pid)))
    _save(root, saved)
    lines, refused = [], []
    for s in settings:
        error = _write(root, s.path, s.value)
        (refused if error else lines).append(f"{s.what}: {error}" if error else f"{s.what} -> {s.value}")
    moved = sum(_set_affinity(root, pid, housekeeping) for pid in kthreads)
    lines.append(f"{moved} of {len(kthreads)} movable kernel threads moved to CPUs "
                 f"{format_cpulist(housekeeping)}")
    lines += [f"left on the RT CPUs (the kernel refused): {r}" for r in refused]
    return lines


def _irq_affinity_paths(root: SysRoot) -> list[str]:
    return root.glob("/proc/irq/[0-9]*/smp_affinity_list")


def _irq_numbers(root: SysRoot) -> set[int]:
    return {int(path.split("/")[3]) for path in _irq_affinity_paths(root)}


def _put_back(root: SysRoot, path: str, value: str) -> str:
    """Write an original value back; the report line (with the kernel's refusal, if any)."""
    error = _write(root, path, value)
    return f"{path} <- {value}" + (f" (refused: {error})" if error else "")


def _restore_new_irqs(root: SysRoot, saved: dict) -> list[str]:
    """Give the original default mask to IRQs that appeared while isolated and still have ours."""
    default = parse_mask(saved.get("settings", {}).get(DEFAULT_IRQ_MASK))
    try:
        ours = parse_cpulist(saved.get("housekeeping", ""))
        known = {int(irq) for irq in saved.get("irqs", [])}
    except (CpuListError, TypeError, ValueError):
        return []
    if not default or not ours:
        return []
    lines = []
    for irq in sorted(_irq_numbers(root) - known):
        path = IRQ_AFFINITY.format(irq=irq)
        if _current_cpus(root, path) == ours:
            lines.append(_put_back(root, path, format_cpulist(default)))
    return lines


def _current_cpus_of(root: SysRoot, pid: int) -> frozenset[int]:
    status = root.read_text(f"/proc/{pid}/status") or ""
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            try:
                return parse_cpulist(line.split(":", 1)[1].strip())
            except CpuListError:
                break
    return frozenset()


def _set_affinity(root: SysRoot, pid: int, cpus) -> bool:
    if not root.is_live:   # a fixture tree: its PIDs are not this host's
        return True
    try:
        os.sched_setaffinity(pid, cpus)
        return True
    except OSError:
        return False   # exited, or per-CPU after all


def stop(root: SysRoot) -> list[str]:
    """Put back every value start() changed; returns report lines."""
    saved = _load_saved(root)
    lines = []
    for path, value in sorted(saved.get("settings", {}).items()):
        if value:
            lines.append(_put_back(root, path, value))
    lines += _restore_new_irqs(root, saved)
    for pid, cpus in saved.get("kthreads", {}).items():
        try:
            _set_affinity(root, int(pid), parse_cpulist(cpus))
        except (CpuListError, ValueError):
            continue
    root.path(SAVED).unlink(missing_ok=True)
    return lines
