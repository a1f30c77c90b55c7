"""The hardware a plan was made for, and what changed since.

mxrc-systemd-hardware.service compares it at every boot, on the boot's
critical path (the MXRC services start after it), so this module and what it
imports read only the few files a fingerprint needs; apply records it from the
full probe. Both go through `of`, so they cannot disagree.
"""

from __future__ import annotations

import json
import logging

from mxrc_install.cpulist import format_cpulist
from mxrc_install.pipeline import paths, probe
from mxrc_install.pipeline.cmdline import KernelCmdline
from mxrc_install.pipeline.paths import HARDWARE_RECORD, UnsafePath
from mxrc_install.sysroot import SysRoot

log = logging.getLogger(__name__)

def of(cpus_online, numa_nodes: dict, cmdline: KernelCmdline, preempt_rt, memory_bytes) -> dict:
    """What, when it changes between boots, calls for a new plan."""
    return {
        "cpus_online": format_cpulist(cpus_online),
        "numa_nodes": {str(n): format_cpulist(cpus) for n, cpus in sorted(numa_nodes.items())},
        "isolcpus": format_cpulist(cmdline.isolcpus) if cmdline.isolcpus else None,
        "nohz_full": format_cpulist(cmdline.nohz_full) if cmdline.nohz_full else None,
        "preempt_rt": preempt_rt,
        "memory_gib": round(memory_bytes / 1024**3) if memory_bytes else None,
    }


def from_facts(facts) -> dict:
    return of(facts.cpus.online, facts.numa_nodes, facts.cmdline, facts.preempt_rt, facts.memory_bytes)


def read(root: SysRoot) -> dict:
    """This machine's fingerprint, reading only what it is made of (probe.read_facts reads far more)."""
    cpus = probe.read_cpus(root)
    return of(cpus.online, probe.read_numa(root, cpus), probe.read_cmdline(root, cpus),
              probe.read_preempt_rt(root), probe.read_memory_bytes(root))


def changes(old: dict, new: dict) -> list[str]:
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def render(fingerprint: dict) -> str:
    return json.dumps(fingerprint, indent=2, sort_keys=True) + "\n"


def recorded(root: SysRoot) -> dict | None:
    """The fingerprint of the last apply; None when absent or unusable (then apply runs again)."""
    try:
        data = paths.read_bytes(root, HARDWARE_RECORD)
        value = json.loads(data) if data else None
    except (UnsafePath, ValueError):   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("%s is unreadable; treating the hardware as unknown", HARDWARE_RECORD)
        return None
    return value if isinstance(value, dict) else None
