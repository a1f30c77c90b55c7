"""Read the machine into frozen facts, every read through one SysRoot.

Each probe is a pure parse_*(text) and a short read_*(root). A file that is
missing gives None (unknown), never a crash: a chroot has no /proc, an old
kernel no /sys/kernel/realtime.
"""

from __future__ import annotations

import dataclasses
import re

from mxrc_install.pipeline import adapters
from mxrc_install.pipeline.cmdline import KernelCmdline, parse_cmdline
from mxrc_install.cpulist import CpuListError, parse_cpulist
from mxrc_install.sysroot import SysRoot
from mxrc_install.pipeline.unitgraph import Edge, read_edges

# Every path the probes read: `mxrc-systemd capture` copies exactly these.
PROBED_PATHS = (
    "/proc/cmdline", "/proc/meminfo", "/proc/cpuinfo", "/proc/sys/kernel/version",
    "/proc/sys/kernel/osrelease", "/proc/self/limits", "/sys/kernel/realtime",
    "/sys/devices/system/cpu/online", "/sys/devices/system/cpu/present",
    "/sys/devices/system/cpu/isolated",
    "/sys/devices/system/cpu/cpu*/topology/thread_siblings_list",
    "/sys/devices/system/cpu/cpu*/topology/physical_package_id",
    "/sys/devices/system/node/node*/cpulist",
    "/sys/fs/cgroup/cgroup.controllers",
    "/etc/os-release", "/usr/lib/os-release",
    "/boot/config-*",
    "/usr/lib/systemd/libsystemd-shared-*.so", "/usr/lib/*/systemd/libsystemd-shared-*.so",
    "/lib/systemd/libsystemd-shared-*.so",
)


@dataclasses.dataclass(frozen=True)
class Cpus:
    online: frozenset[int]
    present: frozenset[int]
    isolated: frozenset[int]
    siblings: dict  # cpu -> frozenset of its SMT siblings (itself included)
    packages: dict  # cpu -> physical package (socket) id

    @property
    def offline(self) -> frozenset[int]:
        return self.present - self.online

    @property
    def smt(self) -> bool:
        return any(len(s) > 1 for s in self.siblings.values())

    @property
    def sockets(self) -> int:
        return len(set(self.packages.values())) or 1


@dataclasses.dataclass(frozen=True)
class Facts:
    cpus: Cpus
    numa_nodes: dict  # node -> frozenset of CPUs
    cmdline: KernelCmdline
    memory_bytes: int | None
    kernel_release: str | None
    preempt_rt: bool | None
    rt_group_sched: bool | None
    systemd_version: int | None
    cgroup_v2: bool
    cgroup_controllers: frozenset[str]
    rlimit_rtprio: str | None
    distro: str | None
    cpu_model: str | None
    cpu_dma_latency: bool
    unit_edges: tuple[Edge, ...] = ()
    cpu_rt_flags: tuple[str, ...] | None = None  # live host only (py-cpuinfo)

    def cpu_node(self, cpu: int) -> int | None:
        return next((n for n, cpus in self.numa_nodes.items() if cpu in cpus), None)


def _cpulist(root: SysRoot, rel: str) -> frozenset[int] | None:
    text = root.read_text(rel)
    if text is None:
        return None
    try:
        cpus = parse_cpulist(text)
    except CpuListError:
        return None
    return cpus or None   # an empty list is no information: never "no CPUs" (CPUAffinity= empty)


def _index(path: str, prefix: str) -> int:
    return int(re.search(prefix + r"(\d+)", path).group(1))


def read_cpus(root: SysRoot) -> Cpus:
    base = "/sys/devices/system/cpu"
    online = _cpulist(root, f"{base}/online")
    present = _cpulist(root, f"{base}/present")
    siblings, packages = {}, {}
    for rel in root.glob(f"{base}/cpu[0-9]*/topology/thread_siblings_list"):
        found = _cpulist(root, rel)
        if found is not None:
            siblings[_index(rel, "cpu")] = found
    for rel in root.glob(f"{base}/cpu[0-9]*/topology/physical_package_id"):
        text = (root.read_text(rel) or "").strip()
        if re.fullmatch(r"-?[0-9]{1,9}", text):
            packages[_index(rel, "cpu")] = int(text)
    if online is None:
        # No sysfs (a chroot): fall back to what topology we saw, else one CPU.
        online = frozenset(siblings) or frozenset({0})
    return Cpus(online=online, present=present or online,
                isolated=_cpulist(root, f"{base}/isolated") or frozenset(),
                siblings=siblings, packages=packages)


def read_numa(root: SysRoot, cpus: Cpus) -> dict:
    nodes = {}
    for rel in root.glob("/sys/devices/system/node/node[0-9]*/cpulist"):
        found = _cpulist(root, rel)
        if found is not None:
            nodes[_index(rel, "node")] = found
    return nodes or {0: cpus.online}


def parse_meminfo(text: str) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def parse_preempt_rt(version: str | None, realtime_flag: str | None) -> bool | None:
    if realtime_flag is not None and realtime_flag.strip() == "1":
        return True
    if version is None:
        return None
    return "PREEMPT_RT" in version


def parse_kconfig(text: str, option: str) -> bool | None:
    if re.search(rf"^{option}=y$", text, re.M):
        return True
    if re.search(rf"^# {option} is not set$", text, re.M):
        return False
    return None


def read_systemd_version(root: SysRoot) -> int | None:
    # libsystemd-shared-NNN.so names the version without running anything.
    for pattern in PROBED_PATHS[-3:]:
        for rel in root.glob(pattern):
            match = re.search(r"libsystemd-shared-(\d+)", rel)
            if match:
                return int(match.group(1))
    return None


def parse_limits(text: str) -> str | None:
    match = re.search(r"^Max realtime priority\s+(\S+)\s+(\S+)", text, re.M)
    return match.group(1) if match else None


def parse_cpu_model(text: str) -> str | None:
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else None


def read_cmdline(root: SysRoot, cpus: Cpus) -> KernelCmdline:
    return parse_cmdline(root.read_text("/proc/cmdline") or "", max(cpus.present) if cpus.present else None)


def read_preempt_rt(root: SysRoot) -> bool | None:
    return parse_preempt_rt(root.read_text("/proc/sys/kernel/version"),
                            root.read_text("/sys/kernel/realtime"))


def read_memory_bytes(root: SysRoot) -> int | None:
    return parse_meminfo(root.read_text("/proc/meminfo") or "")


def read_facts(root: SysRoot) -> Facts:
    cpus = read_cpus(root)
    release = (root.read_text("/proc/sys/kernel/osrelease") or "").strip() or None
    kconfig = root.read_text(f"/boot/config-{release}") if release else None
    controllers = root.read_text("/sys/fs/cgroup/cgroup.controllers")
    return Facts(
        cpus=cpus,
        numa_nodes=read_numa(root, cpus),
        cmdline=read_cmdline(root, cpus),
        memory_bytes=read_memory_bytes(root),
        kernel_release=release,
        preempt_rt=read_preempt_rt(root),
        rt_group_sched=parse_kconfig(kconfig, "CONFIG_RT_GROUP_SCHED") if kconfig else None,
        systemd_version=read_systemd_version(root),
        cgroup_v2=controllers is not None,
        cgroup_controllers=frozenset((controllers or "").split()),
        rlimit_rtprio=parse_limits(root.read_text("/proc/self/limits") or ""),
        distro=adapters.distribution(root),
        cpu_model=parse_cpu_model(root.read_text("/proc/cpuinfo") or ""),
        cpu_dma_latency=root.exists("/dev/cpu_dma_latency"),
        unit_edges=read_edges(root),
    )


def with_live_details(facts: Facts, root: SysRoot) -> Facts:
    """Add what only the live host can tell (py-cpuinfo, udev), for `mxrc-systemd probe`.

    Kept out of read_facts: py-cpuinfo runs cpuid in a child process (about a
    second), which apply and the boot-time check do not need to pay.
    """
    details = adapters.cpu_details(root)
    udev_dma = adapters.udev_has_device(root, "misc", "cpu_dma_latency")
    return dataclasses.replace(
        facts,
        cpu_model=(details or {}).get("model") or facts.cpu_model,
        cpu_rt_flags=tuple(details["rt_flags"]) if details else None,
        cpu_dma_latency=facts.cpu_dma_latency if udev_dma is None else udev_dma,
    )
