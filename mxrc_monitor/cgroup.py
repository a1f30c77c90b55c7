"""Per-unit CPU and memory straight from the unit's cgroup: no D-Bus, no PID 1 work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class CgroupSample:
    cpu_seconds: float | None
    memory_bytes: int | None
    tasks: int | None


def parse_cpu_stat(text: str) -> float | None:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def unit_cgroup(unit: str, root: Path = CGROUP_ROOT) -> Path:
    return root / "system.slice" / unit


def sample(unit: str, root: Path = CGROUP_ROOT) -> CgroupSample | None:
    """The unit's cgroup figures, or None when the unit has no cgroup (not running)."""
    group = unit_cgroup(unit, root)
    if not group.is_dir():
        return None
    cpu = _read(group / "cpu.stat")
    memory = _read(group / "memory.current")
    procs = _read(group / "cgroup.procs")
    return CgroupSample(
        cpu_seconds=parse_cpu_stat(cpu) if cpu is not None else None,
        memory_bytes=int(memory) if memory and memory.strip().isdigit() else None,
        tasks=len(procs.split()) if procs is not None else None,
    )
