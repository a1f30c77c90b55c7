"""Per-unit CPU and memory straight from the unit's cgroup: no D-Bus, no PID 1 work."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class CgroupSample:
    cpu_seconds: dict[str, float] | None   # {"user": s, "system": s}, systemd_exporter's modes
    memory_bytes: int | None
    tasks: int | None                      # pids.current: threads included, = TasksCurrent
    memory_max_bytes: int | None = None    # None: no MemoryMax= ("max")


def parse_cpu_stat(text: str) -> dict[str, float] | None:
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    if "user_usec" not in fields or "system_usec" not in fields:
        return None
    return {"user": int(fields["user_usec"]) / 1e6, "system": int(fields["system_usec"]) / 1e6}


def parse_memory_max(text: str) -> int | None:
    value = text.strip()
    return None if value == "max" else int(value)


def _read(path: str) -> str | None:
    # os.open on a plain string: this runs for every unit every second, and
    # pathlib's joins and read_text cost several times as much (profiled in
    # the VM) for these tiny kernel files.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.read(fd, 4096).decode()
    except OSError as exc:
        if exc.errno == errno.ENODEV:  # the cgroup was removed between open() and read()
            return None
        raise
    finally:
        os.close(fd)


def unit_cgroup(unit: str, control_group: str | None = None, root: Path = CGROUP_ROOT) -> str:
    """The unit's cgroup directory: systemd's ControlGroup= when known, else the default slice."""
    return os.path.join(root, (control_group or f"/system.slice/{unit}").lstrip("/"))


def sample(group: str | os.PathLike) -> CgroupSample | None:
    """The cgroup's figures, or None when it does not exist (unit not running).

    A file that exists but cannot be read or parsed raises (OSError,
    ValueError): that is a collection error, not an absent unit.
    """
    group = os.fspath(group)
    if not os.path.isdir(group):
        return None
    cpu = _read(group + "/cpu.stat")
    memory = _read(group + "/memory.current")
    tasks = _read(group + "/pids.current")
    memory_max = _read(group + "/memory.max")
    return CgroupSample(
        cpu_seconds=parse_cpu_stat(cpu) if cpu is not None else None,
        memory_bytes=int(memory) if memory is not None else None,
        tasks=int(tasks) if tasks is not None else None,
        memory_max_bytes=parse_memory_max(memory_max) if memory_max is not None else None,
    )
