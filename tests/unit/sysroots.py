"""Fake machines as sysroot trees: the files the probes read, laid out as a kernel would."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mxrc_install.cpulist import format_cpulist


@dataclasses.dataclass(frozen=True)
class Hardware:
    cpus: int = 4
    numa_nodes: int = 1
    smt: bool = False               # siblings are (0, n/2), (1, n/2+1), ... as on x86
    offline: tuple[int, ...] = ()
    cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"
    preempt_rt: bool = False
    rt_group_sched: bool = False
    cgroup_v2: bool = True
    memory_gib: float = 8             # MemTotal; a real 4 GiB robot reports ~3.8
    systemd: int = 257
    sockets: int = 1


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build(root: Path, hw: Hardware) -> Path:
    present = set(range(hw.cpus))
    online = present - set(hw.offline)
    cpu = "/sys/devices/system/cpu"
    write(root, f"{cpu}/present", format_cpulist(present) + "\n")
    write(root, f"{cpu}/online", format_cpulist(online) + "\n")
    write(root, f"{cpu}/isolated", "\n")
    half = hw.cpus // 2
    for c in sorted(online):
        siblings = {c % half, c % half + half} if hw.smt else {c}
        write(root, f"{cpu}/cpu{c}/topology/thread_siblings_list", format_cpulist(siblings) + "\n")
        write(root, f"{cpu}/cpu{c}/topology/physical_package_id",
              f"{c * hw.sockets // hw.cpus}\n")
    per_node = hw.cpus // hw.numa_nodes
    for n in range(hw.numa_nodes):
        write(root, f"/sys/devices/system/node/node{n}/cpulist",
              format_cpulist(set(range(n * per_node, (n + 1) * per_node)) & online) + "\n")
    release = "6.12.57+deb13-rt-amd64" if hw.preempt_rt else "6.12.57+deb13-amd64"
    kind = "PREEMPT_RT" if hw.preempt_rt else "PREEMPT_DYNAMIC"
    write(root, "/proc/sys/kernel/osrelease", release + "\n")
    write(root, "/proc/sys/kernel/version", f"#1 SMP {kind} Debian 6.12.57-1 (2025-11-05)\n")
    if hw.preempt_rt:
        write(root, "/sys/kernel/realtime", "1\n")
    write(root, f"/boot/config-{release}",
          "CONFIG_RT_GROUP_SCHED=y\n" if hw.rt_group_sched else "# CONFIG_RT_GROUP_SCHED is not set\n")
    write(root, "/proc/cmdline", hw.cmdline + "\n")
    write(root, "/proc/meminfo", f"MemTotal:       {int(hw.memory_gib * 1024 * 1024)} kB\nMemFree: 1 kB\n")
    write(root, "/proc/cpuinfo", "processor\t: 0\nmodel name\t: Fake CPU @ 2.0GHz\n")
    write(root, "/proc/self/limits", "Limit  Soft Limit Hard Limit Units\n"
                                     "Max realtime priority     0                    0\n")
    if hw.cgroup_v2:
        write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    write(root, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\n')
    write(root, f"/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-{hw.systemd}.so", "")
    return root


def golden_plan(machine: Path) -> tuple[dict, dict]:
    """(summary, files) the plan makes for a fixture machine: what expected.json and dropins/ hold."""
    from mxrc_install.pipeline import plan, probe
    from mxrc_install.sysroot import SysRoot
    result = plan.make_plan(probe.read_facts(SysRoot(machine / "root")))
    p = result.placement
    summary = {"rt_cpus": sorted(p.rt_cpus), "nonrt_cpus": sorted(p.nonrt_cpus),
               "numa_nodes": sorted(p.numa_nodes), "cpu_quota_percent": p.cpu_quota_percent,
               "memory_max": p.memory_max, "findings": sorted(f.id for f in result.findings)}
    files = {path.lstrip("/").replace("/", "_"): text for path, text in result.files.items()}
    return summary, result.dropins | files


def write_golden(machine: Path) -> None:
    summary, dropins = golden_plan(machine)
    (machine / "expected.json").write_text(json.dumps(summary, indent=2) + "\n")
    (machine / "dropins").mkdir(exist_ok=True)
    for unit, text in dropins.items():
        (machine / "dropins" / f"{unit}.conf").write_text(text)
