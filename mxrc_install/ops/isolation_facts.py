"""What the RT isolation checks read: tasks, IRQs, cpusets, kernel knobs, every read through SysRoot.

Each layer that decides who may run on the RT CPUs is read into plain data;
mxrc_install.ops.isolation judges it. Nothing here writes, and a file that is
missing or vanishes while being read (a task that exited) is simply absent, so
unit tests describe a machine as a fake sysroot tree.
"""

from __future__ import annotations

import dataclasses

from mxrc_install import names
from mxrc_install.cpulist import CpuListError, parse_cpulist, parse_mask
from mxrc_install.pipeline.cmdline import KernelCmdline, parse_cmdline
from mxrc_install.pipeline.render import FOREIGN_SLICES, IRQBALANCE, dropin_path

from mxrc_install.sysroot import SysRoot

# include/linux/sched.h
PF_KTHREAD = 0x00200000
PF_NO_SETAFFINITY = 0x04000000
POLICIES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}

CPU = "/sys/devices/system/cpu"
CGROUP = "/sys/fs/cgroup"
RT_SLICE = names.RT_SLICE
# The slices apply confines to the housekeeping CPUs (PID 1 in init.scope gets its mask from system.conf.d).
OTHER_SLICES = FOREIGN_SLICES
WORKQUEUE_CPUMASK = "/sys/devices/virtual/workqueue/cpumask"
IRQ_DEFAULT_AFFINITY = "/proc/irq/default_smp_affinity"
IRQBALANCE_BINARY = "/usr/sbin/irqbalance"
# Where irqbalance's environment comes from, weakest first: mxrc-systemd's drop-in (Environment=),
# then the admin's EnvironmentFile=, which systemd lets override it.
IRQBALANCE_ENV_FILES = (dropin_path(IRQBALANCE), "/etc/default/irqbalance")
FAIR_SERVER = "/sys/kernel/debug/sched/fair_server"
IRQ_DEBUGFS = "/sys/kernel/debug/irq/irqs"


@dataclasses.dataclass(frozen=True)
class Task:
    pid: int                 # the thread group (process)
    tid: int
    comm: str
    allowed: frozenset       # Cpus_allowed_list
    flags: int               # /proc/PID/stat field 9
    policy: str
    priority: int
    unit: str                # the systemd unit (or cgroup path) it runs in

    @property
    def kernel(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def per_cpu(self) -> bool:
        """A kernel thread bound to its CPU: expected on every CPU, RT ones included."""
        return bool(self.flags & PF_NO_SETAFFINITY) or len(self.allowed) == 1


@dataclasses.dataclass(frozen=True)
class Irq:
    number: int
    name: str                # the device column of /proc/interrupts
    effective: frozenset     # where it is delivered now
    managed: bool | None     # None: debugfs not readable, cannot tell
    requested: frozenset | None = None   # smp_affinity_list: where it was asked to go

    @property
    def moving(self) -> bool:
        """Asked off the CPUs it is on: x86 moves such an IRQ at its next interrupt,
        so it may sit there a while."""
        return self.requested is not None and not self.effective & self.requested


@dataclasses.dataclass(frozen=True)
class Cpuset:
    path: str                # relative to /sys/fs/cgroup
    effective: frozenset | None   # None: no cpuset controller there (inherits the parent's)
    partition: str | None


@dataclasses.dataclass(frozen=True)
class Irqbalance:
    installed: bool
    banned: frozenset | None      # IRQBALANCE_BANNED_CPULIST (or the older hex IRQBALANCE_BANNED_CPUS)
    source: str                   # the file that set it


@dataclasses.dataclass(frozen=True)
class IsolationFacts:
    online: frozenset
    cmdline: KernelCmdline
    sys_isolated: frozenset
    sys_nohz_full: frozenset | None     # None: the kernel was built without CONFIG_NO_HZ_FULL
    rt_cgroup: Cpuset | None            # the RT slice (or mxrc-rt's own cgroup), None: not found
    slices: tuple                       # Cpuset of each other top-level slice that exists
    tasks: tuple                        # Task of every thread
    irqs: tuple                         # Irq of every IRQ with an effective affinity
    irq_default: frozenset | None
    workqueue_cpumask: frozenset | None
    irqbalance: Irqbalance
    pm_qos: dict                        # cpu -> pm_qos_resume_latency_us as read ("0", "n/a", "5")
    idle_states: dict                   # cpu -> ((name, exit latency us), ...)
    rt_runtime_us: int | None
    rt_period_us: int | None
    fair_server_ns: dict | None         # cpu -> runtime ns per period; None: debugfs not readable
    rt_group_sched: bool | None
    locked_kb: dict                     # pid -> VmLck in kB, for mxrc-rt's processes


def _cpulist(text: str | None) -> frozenset | None:
    if text is None:
        return None
    try:
        return parse_cpulist(text.strip())
    except CpuListError:
        return None


def _status_field(status: str, key: str) -> str | None:
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    return None


def unit_of(cgroup_text: str | None) -> str:
    """The unit a task runs in, from /proc/PID/cgroup (v2 line "0::/system.slice/ssh.service")."""
    path = next((line[3:] for line in (cgroup_text or "").splitlines() if line.startswith("0::")), "")
    parts = [p for p in path.split("/") if p]
    unit = next((p for p in reversed(parts) if p.endswith((".service", ".scope"))), None)
    return unit or (path or "/")


def parse_stat(text: str) -> tuple[str, int, int, int] | None:
    """comm, flags, rt_priority, policy from /proc/PID/stat (comm may hold spaces and parentheses)."""
    head, sep, tail = text.rpartition(")")
    if not sep or "(" not in head:
        return None
    fields = tail.split()
    if len(fields) < 39:
        return None
    # tail starts at field 3 (state): flags is field 9, rt_priority 40, policy 41.
    return head.partition("(")[2], int(fields[6]), int(fields[37]), int(fields[38])


def read_task(root: SysRoot, pid: int, tid: int, unit: str) -> Task | None:
    base = f"/proc/{pid}/task/{tid}"
    stat, status = root.read_text(f"{base}/stat"), root.read_text(f"{base}/status")
    parsed = parse_stat(stat) if stat else None
    allowed = _cpulist(_status_field(status, "Cpus_allowed_list")) if status else None
    if parsed is None or allowed is None:
        return None  # exited while being read
    comm, flags, priority, policy = parsed
    return Task(pid, tid, comm, allowed, flags, POLICIES.get(policy, str(policy)), priority, unit)


def read_tasks(root: SysRoot) -> tuple:
    tasks = []
    for proc in root.glob("/proc/[0-9]*"):
        pid = int(proc.rsplit("/", 1)[1])
        unit = unit_of(root.read_text(f"{proc}/cgroup"))
        for task_dir in root.glob(f"{proc}/task/[0-9]*"):
            task = read_task(root, pid, int(task_dir.rsplit("/", 1)[1]), unit)
            if task:
                tasks.append(task)
    return tuple(sorted(tasks, key=lambda t: (t.pid, t.tid)))


def interrupt_names(text: str | None) -> dict:
    """IRQ number -> device name from /proc/interrupts (the columns after the per-CPU counts)."""
    lines = (text or "").splitlines()
    if not lines:
        return {}
    ncpus = len(lines[0].split())
    names = {}
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        if label.strip().isdigit():
            fields = rest.split()[ncpus:]
            names[int(label)] = fields[-1] if fields else ""
    return names


def irq_managed(root: SysRoot, number: int) -> bool | None:
    text = root.read_text(f"{IRQ_DEBUGFS}/{number}")
    return None if text is None else "AFFINITY_MANAGED" in text


def read_irqs(root: SysRoot) -> tuple:
    names = interrupt_names(root.read_text("/proc/interrupts"))
    irqs = []
    for d in root.glob("/proc/irq/[0-9]*"):
        number = int(d.rsplit("/", 1)[1])
        requested = _cpulist(root.read_text(f"{d}/smp_affinity_list"))
        effective = _cpulist(root.read_text(f"{d}/effective_affinity_list"))
        if effective is None:
            effective = requested
        if effective:  # empty: not started, delivered nowhere
            irqs.append(Irq(number, names.get(number, ""), effective, irq_managed(root, number), requested))
    return tuple(sorted(irqs, key=lambda i: i.number))


def read_cpuset(root: SysRoot, path: str) -> Cpuset | None:
    base = f"{CGROUP}/{path}"
    if not root.exists(base):
        return None
    partition = root.read_text(f"{base}/cpuset.cpus.partition")
    return Cpuset(path, _cpulist(root.read_text(f"{base}/cpuset.cpus.effective")),
                  partition.strip() if partition is not None else None)


def read_irqbalance(root: SysRoot) -> Irqbalance:
    banned, source = None, ""
    for path in IRQBALANCE_ENV_FILES:
        for line in (root.read_text(path) or "").splitlines():
            line = line.strip().removeprefix("Environment=").strip('"')
            key, _, value = line.partition("=")
            value = value.strip().strip('"')
            if key == "IRQBALANCE_BANNED_CPULIST":
                banned, source = _cpulist(value), path
            elif key == "IRQBALANCE_BANNED_CPUS":
                banned, source = parse_mask(value), path
    return Irqbalance(root.exists(IRQBALANCE_BINARY), banned, source)


def read_idle(root: SysRoot, cpus) -> tuple[dict, dict]:
    pm_qos, states = {}, {}
    for cpu in sorted(cpus):
        value = root.read_text(f"{CPU}/cpu{cpu}/power/pm_qos_resume_latency_us")
        if value is not None:
            pm_qos[cpu] = value.strip()
        found = []
        for state in root.glob(f"{CPU}/cpu{cpu}/cpuidle/state[0-9]*"):
            latency = (root.read_text(f"{state}/latency") or "").strip()
            if latency.isdigit():
                found.append(((root.read_text(f"{state}/name") or state).strip(), int(latency)))
        states[cpu] = tuple(found)
    return pm_qos, states


def read_fair_server(root: SysRoot) -> dict | None:
    if not root.exists(FAIR_SERVER):
        return None
    out = {}
    for d in root.glob(f"{FAIR_SERVER}/cpu[0-9]*"):
        runtime = (root.read_text(f"{d}/runtime") or "").strip()
        if runtime.isdigit():
            out[int(d.rsplit("cpu", 1)[1])] = int(runtime)
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def rt_cgroup(root: SysRoot, tasks: tuple, rt_unit: str) -> Cpuset | None:
    """The RT slice (names.RT_SLICE) when the enforcement created it,
    else the cgroup mxrc-rt's processes run in."""
    found = read_cpuset(root, RT_SLICE)
    if found:
        return found
    pid = next((t.pid for t in tasks if t.unit == rt_unit), None)
    if pid is None:
        return None
    path = next((line[3:] for line in (root.read_text(f"/proc/{pid}/cgroup") or "").splitlines()
                 if line.startswith("0::")), "")
    return read_cpuset(root, path.strip("/")) if path.strip("/") else None


def without_pids(facts: IsolationFacts, pids) -> IsolationFacts:
    """The facts without some processes' tasks (doctor's own: it runs wherever its shell does)."""
    return dataclasses.replace(facts, tasks=tuple(t for t in facts.tasks if t.pid not in pids))


def read(root: SysRoot, online: frozenset, rt_cpus: frozenset, rt_group_sched: bool | None,
         rt_unit: str) -> IsolationFacts:
    tasks = read_tasks(root)
    nohz = root.read_text(f"{CPU}/nohz_full")
    pm_qos, idle_states = read_idle(root, rt_cpus)
    return IsolationFacts(
        online=online,
        cmdline=parse_cmdline(root.read_text("/proc/cmdline") or "", max(online, default=0)),
        sys_isolated=_cpulist(root.read_text(f"{CPU}/isolated")) or frozenset(),
        # The file exists only with CONFIG_NO_HZ_FULL; older kernels print "(null)" when none is set.
        sys_nohz_full=None if nohz is None else (_cpulist(nohz.replace("(null)", "")) or frozenset()),
        rt_cgroup=rt_cgroup(root, tasks, rt_unit),
        slices=tuple(s for s in (read_cpuset(root, p) for p in OTHER_SLICES) if s),
        tasks=tasks,
        irqs=read_irqs(root),
        irq_default=parse_mask(root.read_text(IRQ_DEFAULT_AFFINITY)),
        workqueue_cpumask=parse_mask(root.read_text(WORKQUEUE_CPUMASK)),
        irqbalance=read_irqbalance(root),
        pm_qos=pm_qos,
        idle_states=idle_states,
        rt_runtime_us=_int(root.read_text("/proc/sys/kernel/sched_rt_runtime_us")),
        rt_period_us=_int(root.read_text("/proc/sys/kernel/sched_rt_period_us")),
        fair_server_ns=read_fair_server(root),
        rt_group_sched=rt_group_sched,
        locked_kb={pid: _int((_status_field(root.read_text(f"/proc/{pid}/status") or "", "VmLck") or "")
                             .removesuffix("kB"))
                   for pid in sorted({t.pid for t in tasks if t.unit == rt_unit})},
    )
