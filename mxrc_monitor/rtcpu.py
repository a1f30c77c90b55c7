"""Intrusions on the RT CPUs (issue #10, item 6): interrupts, softirqs, foreign tasks, strayed RT threads.

The RT CPU set is not computed here: it is what was applied to mxrc-rt.service
(its CPUAffinity=, else AllowedCPUs=, read over D-Bus as byte-array masks).

Tasks are found through the cgroup tree (cgroup.threads of every cgroup), not
/proc: the unit keeps ProtectProc=invisible, and sched_getaffinity(2) needs no
permission. The classification, without /proc/PID/stat's PF_NO_SETAFFINITY:

- mxrc-rt's: a thread in mxrc-rt's cgroup (or below it);
- a per-CPU kernel thread: a thread of the root cgroup (systemd keeps every
  user-space process in a unit's cgroup, so only kernel threads live there)
  whose mask is that single CPU (kworker/2:1, ksoftirqd/2, migration/2, ...);
- foreign: everything else whose mask includes the CPU, movable kernel
  threads included (kthreadd, unbound kworkers: isolcpus= or the workqueue
  cpumask keeps those off).

Interrupts are the numbered (device) lines of /proc/interrupts; the
architecture's own rows (LOC, RES, CAL, TLB, ...) happen on every CPU by
design and would hide a device IRQ routed to an RT CPU.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RtSample:
    cpus: tuple[int, ...]
    interrupts: dict[int, int]                 # cpu -> device interrupts since boot
    softirqs: dict[tuple[int, str], int]       # (cpu, type) -> count since boot
    foreign_tasks: dict[int, int]              # cpu -> tasks allowed on it that are neither kind
    threads_outside: int | None                # mxrc-rt threads allowed beyond the RT CPUs


def cpus_from_mask(mask) -> tuple[int, ...]:
    """systemd's byte-array CPU mask (byte i, bit j = CPU 8i+j) as sorted CPU numbers."""
    return tuple(8 * i + bit for i, byte in enumerate(bytes(mask or b"")) for bit in range(8)
                 if byte >> bit & 1)


def _columns(header: str) -> list[int]:
    return [int(name[3:]) for name in header.split() if name.startswith("CPU")]


def parse_interrupts(text: str, cpus) -> dict[int, int]:
    """Per RT CPU, the sum of the numbered IRQ lines of /proc/interrupts (only online CPUs have columns)."""
    lines = text.splitlines()
    columns = _columns(lines[0]) if lines else []
    wanted = [(i, cpu) for i, cpu in enumerate(columns) if cpu in cpus]
    totals = {cpu: 0 for _, cpu in wanted}
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        if not label.strip().isdigit():
            continue
        counts = rest.split()
        for i, cpu in wanted:
            if i < len(counts) and counts[i].isdigit():
                totals[cpu] += int(counts[i])
    return totals


def parse_softirqs(text: str, cpus) -> dict[tuple[int, str], int]:
    lines = text.splitlines()
    columns = _columns(lines[0]) if lines else []
    wanted = [(i, cpu) for i, cpu in enumerate(columns) if cpu in cpus]
    out = {}
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        counts = rest.split()
        for i, cpu in wanted:
            if i < len(counts):
                out[(cpu, label.strip())] = int(counts[i])
    return out


def parse_cpulist(text: str) -> set[int]:
    """ "0-1,4" -> {0, 1, 4} (the kernel's cpulist format)."""
    cpus = set()
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def walk_threads(root, rt_cpus=()) -> Iterator[tuple[str, list[bytes]]]:
    """(cgroup path relative to root, [tids as bytes]) for every cgroup that may run on an RT CPU.

    A cgroup whose cpuset.cpus.effective leaves out every RT CPU is skipped
    with all below it: its tasks cannot run there whatever their affinity
    (AllowedCPUs= on the slices makes the walk a handful of reads). Plain
    strings and os.scandir (d_type, no stat): pathlib made it several times slower.
    """
    root = str(root).rstrip("/")
    rt = set(rt_cpus)
    stack = [root]
    while stack:
        group = stack.pop()
        if rt and group != root:
            cpuset = _read_small(group + "/cpuset.cpus.effective")
            if cpuset is not None:
                try:
                    if not parse_cpulist(cpuset.decode()) & rt:
                        continue
                except ValueError:
                    pass  # unreadable: look inside
        tids = _read_small(group + "/cgroup.threads")  # None: removed while walking
        yield group[len(root):] or "/", tids.split() if tids else []
        try:
            with os.scandir(group) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass


def _read_small(path: str) -> bytes | None:
    """A small kernel file in one read(2); os.open costs a fifth of open() for the hundreds per scan."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def classify(groups, rt_group: str | None, cpus, affinity=os.sched_getaffinity):
    """(foreign tasks per RT CPU, mxrc-rt threads allowed beyond the RT CPUs or None without mxrc-rt)."""
    rt = set(cpus)
    foreign = dict.fromkeys(cpus, 0)
    outside = None
    rt_group = rt_group.rstrip("/") if rt_group else None
    for path, tids in groups:
        in_rt = rt_group is not None and (path == rt_group or path.startswith(rt_group + "/"))
        if in_rt and outside is None:
            outside = 0
        for tid in tids:
            try:
                allowed = affinity(int(tid))
            except OSError:  # exited since the cgroup was read
                continue
            if in_rt:
                outside += bool(allowed - rt)
            elif path == "/" and len(allowed) == 1:
                continue  # a per-CPU kernel thread: it belongs there
            else:
                for cpu in allowed & rt:
                    foreign[cpu] += 1
    return foreign, outside


def _read(path: Path) -> str:
    with open(path, "rb", buffering=0) as f:
        return f.read().decode()


def counters(cpus, proc: Path = Path("/proc")) -> tuple[dict, dict]:
    """(interrupts, softirqs) of the RT CPUs: two small reads, every tick."""
    return (parse_interrupts(_read(proc / "interrupts"), cpus),
            parse_softirqs(_read(proc / "softirqs"), cpus))


def scan_tasks(cpus, rt_group: str | None, cgroup_root: Path = Path("/sys/fs/cgroup"),
               affinity=os.sched_getaffinity) -> tuple[dict, int | None]:
    """(foreign tasks per RT CPU, mxrc-rt threads outside): a walk of the cgroup tree."""
    return classify(walk_threads(cgroup_root, cpus), rt_group, cpus, affinity)


def sample(cpus, rt_group: str | None, proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup"),
           affinity=os.sched_getaffinity) -> RtSample | None:
    """One full look at the RT CPUs; None when there are none. Read errors raise OSError."""
    if not cpus:
        return None
    interrupts, softirqs = counters(cpus, proc)
    foreign, outside = scan_tasks(cpus, rt_group, cgroup_root, affinity)
    return RtSample(tuple(cpus), interrupts, softirqs, foreign, outside)
