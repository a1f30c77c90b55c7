"""Render a Placement into the files apply writes: one home for their text.

Unit drop-ins are keyed by unit (apply puts them in
/etc/systemd/system/<unit>.d/50-mxrc-hardware.conf); the other owned files
(the manager's CPU affinity, the kernel command line for GRUB) by path.
Everything here is pure: the placement in, text out.
"""

from __future__ import annotations

from mxrc_install import names
from mxrc_install.cpulist import format_cpulist

# The slices the rest of the system runs in: in isolation mode auto their
# cpuset is the housekeeping set, so no service, user session or container
# can be placed on an RT CPU, whatever its own CPUAffinity= says.
FOREIGN_SLICES = ("system.slice", "user.slice", "machine.slice")
IRQBALANCE = "irqbalance.service"
MANAGER_CONF = "/etc/systemd/system.conf.d/50-mxrc-isolation.conf"
GRUB_CONF = "/etc/default/grub.d/60-mxrc.cfg"
CPUSET_PARTITION = f"/sys/fs/cgroup/{names.RT_SLICE}/cpuset.cpus.partition"

# List settings (CPUAffinity=, NUMAMask=) add to the unit's value: an empty
# assignment first replaces it.
HEADER = ("# Written by mxrc-systemd apply from this machine's hardware; do not edit.\n"
          "# Override with a later drop-in (systemctl edit {unit}) or in /etc/mxrc/mxrc-systemd.conf.\n")
DROPIN_NAME = "50-mxrc-hardware.conf"


def dropin_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/{DROPIN_NAME}"


FILE_HEADER = ("# Written by mxrc-systemd apply from this machine's hardware; do not edit.\n"
               "# Change /etc/mxrc/mxrc-systemd.conf instead (see mxrc-systemd(8)).\n")


def _spaced(cpus) -> str:
    return " ".join(map(str, sorted(cpus)))


def mxrc_dropins(p) -> dict:
    rt, nonrt = _spaced(p.rt_cpus), _spaced(p.nonrt_cpus)
    # Without the boot optimisation the services keep systemd's default
    # dependencies (after basic.target): the "before" of SC-006.
    unit_section = "" if p.boot_optimize else "[Unit]\nDefaultDependencies=yes\n\n"
    # AllowedCPUs= is the cgroup's cpuset: unlike CPUAffinity= (the starting
    # mask) no thread of mxrc-rt can leave it, whatever it calls. Like
    # CPUAffinity= it adds to the unit's value: an empty assignment first.
    partition = ("" if p.isolation != "auto" else
                 f"# Where the kernel supports it, the RT CPUs become an isolated cpuset partition\n"
                 f"# (no load balancing onto them); '-': an older kernel keeps a plain cpuset.\n"
                 f"ExecStartPre=+-/bin/sh -c 'echo isolated > {CPUSET_PARTITION}'\n")
    return {
        names.RT: (f"{unit_section}[Service]\nCPUAffinity=\nCPUAffinity={rt}\n"
                   f"AllowedCPUs=\nAllowedCPUs={rt}\n"
                   f"NUMAMask=\nNUMAMask={' '.join(map(str, sorted(p.numa_nodes)))}\n"
                   f"CPUSchedulingPriority={p.rt_priority}\nLimitRTPRIO={p.rt_priority}\n"
                   f"CPUQuota={p.cpu_quota_percent}%\nMemoryMax={p.memory_max}\n"
                   f"WatchdogSec={p.watchdog_sec}s\n{partition}"),
        names.RT_SLICE: f"[Slice]\nAllowedCPUs=\nAllowedCPUs={rt}\n",
        names.NONRT: (f"{unit_section}[Service]\nCPUAffinity=\nCPUAffinity={nonrt}\n"
                      f"AllowedCPUs=\nAllowedCPUs={nonrt}\n"
                      f"MemoryMax={p.memory_max}\nWatchdogSec={p.watchdog_sec}s\n"),
        names.MONITOR: (f"{unit_section}[Service]\nCPUAffinity=\nCPUAffinity={nonrt}\n"
                        f"AllowedCPUs=\nAllowedCPUs={nonrt}\n"
                        f"ExecStart=\nExecStart=/usr/bin/mxrc-monitor --listen {p.monitor_listen} "
                        f"--port {p.monitor_port}\n"),
    }


def isolation_dropins(p) -> dict:
    """Runtime isolation (mode auto): everything else off the RT CPUs, no reboot needed."""
    if not p.isolates_at_runtime:
        return {}
    housekeeping, rt = _spaced(p.nonrt_cpus), format_cpulist(p.rt_cpus)
    out = {s: f"[Slice]\nAllowedCPUs=\nAllowedCPUs={housekeeping}\n" for s in FOREIGN_SLICES}
    # irqbalance (1.8+, Debian 12 has 1.9) leaves banned CPUs' interrupts alone;
    # its own /etc/default/irqbalance still wins (EnvironmentFile= overrides).
    out[IRQBALANCE] = f"[Service]\nEnvironment=IRQBALANCE_BANNED_CPULIST={rt}\n"
    return out


def render_dropins(p) -> dict:
    """unit -> drop-in text."""
    dropins = mxrc_dropins(p) | isolation_dropins(p)
    return {unit: HEADER.format(unit=unit) + body for unit, body in dropins.items()}


def kernel_cmdline(p) -> str:
    """What only the boot loader can give the RT CPUs (TuneD's realtime profile sets the same)."""
    rt, housekeeping = format_cpulist(p.rt_cpus), format_cpulist(p.nonrt_cpus)
    return (f"isolcpus=managed_irq,domain,{rt} nohz_full={rt} rcu_nocbs={rt} "
            f"irqaffinity={housekeeping}")


def render_files(p) -> dict:
    """path -> text of the owned files that are not unit drop-ins."""
    files = {}
    if p.isolation == "auto" and p.rt_cpus != p.nonrt_cpus:
        # PID 1 and everything it forks before a unit's cgroup takes over;
        # takes effect at the next daemon-reexec (apply runs one when it changes).
        files[MANAGER_CONF] = f"{FILE_HEADER}[Manager]\nCPUAffinity={_spaced(p.nonrt_cpus)}\n"
    if p.boot_cmdline and p.rt_cpus != p.nonrt_cpus:
        # Sourced by grub-mkconfig after /etc/default/grub: the admin's own
        # line stays as it is, ours is appended to it.
        files[GRUB_CONF] = (f"{FILE_HEADER}# Takes effect after update-grub and a reboot.\n"
                            f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {kernel_cmdline(p)}"\n')
    return files
