"""A running robot's RT isolation state as a fake sysroot: tasks, IRQs, cpusets, kernel knobs.

`robot()` lays out a 4-CPU robot (RT CPUs 2-3) where isolation.mode=auto holds
every layer; tests then break one layer at a time with the write_* helpers.
"""

from __future__ import annotations

from pathlib import Path

from sysroots import Hardware, build, write

from mxrc_install.cpulist import format_cpulist
from mxrc_install.ops.isolation_facts import PF_KTHREAD, PF_NO_SETAFFINITY

FULL_CMDLINE = "BOOT_IMAGE=/vmlinuz root=/dev/vda ro isolcpus=managed_irq,domain,2-3 nohz_full=2-3 " \
               "rcu_nocbs=2-3 irqaffinity=0-1"
POLICY = {"other": 0, "fifo": 1, "rr": 2}
RT_CGROUP = "/mxrc.slice/mxrc-rt.service"


def stat_line(pid: int, comm: str, flags: int, priority: int, policy: int) -> str:
    # Fields 3..52 of /proc/PID/stat; only flags (9), rt_priority (40) and policy (41) matter here.
    fields = ["S"] + ["0"] * 49
    fields[6], fields[37], fields[38] = str(flags), str(priority), str(policy)
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def write_task(root: Path, pid: int, comm: str, allowed, cgroup: str, tid: int | None = None, flags: int = 0,
               policy: str = "other", priority: int = 0, vmlck_kb: int | None = None) -> None:
    tid = tid or pid
    base = f"/proc/{pid}/task/{tid}"
    write(root, f"{base}/stat", stat_line(tid, comm, flags, priority, POLICY[policy]))
    write(root, f"{base}/status", f"Name:\t{comm}\nCpus_allowed_list:\t{format_cpulist(allowed)}\n")
    write(root, f"/proc/{pid}/cgroup", f"0::{cgroup}\n")
    if vmlck_kb is not None:
        write(root, f"/proc/{pid}/status", f"Name:\t{comm}\nVmLck:\t{vmlck_kb:>8} kB\n")


def write_kthread(root: Path, pid: int, comm: str, allowed, per_cpu: bool = False) -> None:
    write_task(root, pid, comm, allowed, "/", flags=PF_KTHREAD | (PF_NO_SETAFFINITY if per_cpu else 0))


def write_irq(root: Path, number: int, name: str, effective, managed: bool | None = False,
              requested=None) -> None:
    write(root, f"/proc/irq/{number}/smp_affinity_list", format_cpulist(requested or effective) + "\n")
    write(root, f"/proc/irq/{number}/effective_affinity_list", format_cpulist(effective) + "\n")
    lines = (root / "proc/interrupts").read_text() if (root / "proc/interrupts").exists() else \
        "           CPU0       CPU1       CPU2       CPU3\n"
    lines += f" {number:>3}:   1   2   3   4  PCI-MSIX-0000:00:02.0   0-edge      {name}\n"
    write(root, "/proc/interrupts", lines)
    if managed is not None:
        flags = "IRQD_AFFINITY_MANAGED" if managed else "IRQD_IRQ_STARTED"
        write(root, f"/sys/kernel/debug/irq/irqs/{number}",
              f"handler:  handle_edge_irq\ndstate: 0x0\n  {flags}\n")


def write_cpuset(root: Path, path: str, effective, partition: str | None = "member") -> None:
    write(root, f"/sys/fs/cgroup/{path}/cpuset.cpus.effective", format_cpulist(effective) + "\n")
    if partition is not None:
        write(root, f"/sys/fs/cgroup/{path}/cpuset.cpus.partition", partition + "\n")


def write_idle(root: Path, cpu: int, pm_qos: str, states=(("POLL", 0), ("C1", 1), ("C6", 170))) -> None:
    base = f"/sys/devices/system/cpu/cpu{cpu}"
    write(root, f"{base}/power/pm_qos_resume_latency_us", pm_qos + "\n")
    for i, (name, latency) in enumerate(states):
        write(root, f"{base}/cpuidle/state{i}/name", name + "\n")
        write(root, f"{base}/cpuidle/state{i}/latency", f"{latency}\n")


def robot(root: Path, cmdline: str = FULL_CMDLINE) -> Path:
    """Every layer of isolation.mode=auto in place, mxrc-rt running with two threads."""
    build(root, Hardware(cpus=4, cmdline=cmdline, preempt_rt=True))
    cpu = "/sys/devices/system/cpu"
    write(root, f"{cpu}/isolated", "2-3\n")
    write(root, f"{cpu}/nohz_full", "2-3\n")
    write_cpuset(root, "mxrc.slice", {2, 3}, "isolated")
    write_cpuset(root, "mxrc.slice/mxrc-rt.service", {2, 3})
    for path in ("system.slice", "user.slice", "init.scope"):
        write_cpuset(root, path, {0, 1})
    write_task(root, 1, "systemd", {0, 1}, "/init.scope")
    write_task(root, 640, "sshd", {0, 1}, "/system.slice/ssh.service")
    write_kthread(root, 2, "kthreadd", {0, 1})
    write_kthread(root, 30, "kworker/2:0", {2}, per_cpu=True)
    write_kthread(root, 31, "ksoftirqd/3", {3})
    write_task(root, 900, "mxrc-rt", {2, 3}, RT_CGROUP, policy="fifo", priority=80, vmlck_kb=65536)
    write_task(root, 900, "mxrc-rt-log", {2, 3}, RT_CGROUP, tid=901)
    write_irq(root, 24, "virtio0-config", {0})
    write_irq(root, 25, "virtio1-req.0", {1}, managed=True)
    write(root, "/proc/irq/default_smp_affinity", "3\n")
    write(root, "/sys/devices/virtual/workqueue/cpumask", "00000003\n")
    for c in (2, 3):
        write_idle(root, c, "n/a")
    write(root, "/proc/sys/kernel/sched_rt_runtime_us", "950000\n")
    write(root, "/proc/sys/kernel/sched_rt_period_us", "1000000\n")
    for c in range(4):
        write(root, f"/sys/kernel/debug/sched/fair_server/cpu{c}/runtime", "50000000\n")
    return root
