"""What makes the files apply changed take effect on the running system.

Pure: the changed paths in, the commands to run and kernel values to write
out (commands.py carries them out, only on a live root with systemd
running). A reload applies the unit drop-ins and the slices' cpusets; the
manager's own CPU affinity needs a re-exec; irqbalance reads its banned CPUs
only when it starts; GRUB needs update-grub (and a reboot, never ours to do).
Taking a setting away needs more than removing its file: systemd neither
resets PID 1's affinity nor a slice's cpuset when the setting disappears.
"""

from __future__ import annotations

import dataclasses

from mxrc_install.cpulist import format_cpulist
from mxrc_install.pipeline.render import FOREIGN_SLICES, GRUB_CONF, IRQBALANCE, MANAGER_CONF, dropin_path

UPDATE_GRUB = "/usr/sbin/update-grub"
GRUB_CFG = "/boot/grub/grub.cfg"
NOT_LOADED = 5   # systemctl's exit code for a unit that is not installed
# PID 1's boot mask, for the postrm (debian/mxrc-systemd.postrm, restore_init_cpus).
INIT_CPUS_NOTE = "/run/mxrc-systemd/init-cpus"


@dataclasses.dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    ok: tuple[int, ...] = (0,)


def init_cpus(online: frozenset[int], isolated: frozenset[int]) -> frozenset[int]:
    """The mask the kernel gives init at boot: every online CPU but isolcpus='s (domain) ones."""
    return (online - isolated) or online


def commands_for(changed: set[str], removed: set[str] = frozenset(), booting: bool = False,
                 grub_installed: bool = False, online: frozenset[int] = frozenset(),
                 isolated: frozenset[int] = frozenset()) -> list[Command]:
    if not changed:
        return []
    # During boot PID 1 is busy starting units: it reads system.conf.d again at
    # the next boot, and the slices' cpusets already keep everyone else off.
    reexec = MANAGER_CONF in changed and not booting
    out = [Command(("systemctl", "daemon-reexec" if reexec else "daemon-reload"))]
    mask = pid1_mask(removed, booting, online, isolated)
    if mask:
        out.append(Command(("taskset", "-a", "-p", "-c", format_cpulist(mask), "1")))
    if dropin_path(IRQBALANCE) in changed:
        out.append(Command(("systemctl", "try-restart", IRQBALANCE), ok=(0, NOT_LOADED)))
    if GRUB_CONF in changed and grub_installed:
        out.append(Command((UPDATE_GRUB,)))
    return out


def pid1_mask(removed: set[str], booting: bool, online: frozenset[int],
              isolated: frozenset[int]) -> frozenset[int] | None:
    """The CPUs PID 1 gets back when the manager's CPUAffinity= goes away; None: nothing to give back.

    Without CPUAffinity= the re-executed manager keeps its old mask (seen on
    systemd 257), and mid-boot there is no re-exec. Not every CPU: with
    isolcpus= the kernel started init without the isolated ones (seen on
    bookworm: 0,1 before the install, 0-3 after a purge).
    """
    if booting or MANAGER_CONF not in removed or not online:
        return None
    return init_cpus(online, isolated)


def init_cpus_note(removed: set[str], online: frozenset[int], isolated: frozenset[int],
                   booting: bool = False) -> dict[str, str]:
    """File -> text: pid1_mask, for the postrm to give PID 1 again.

    Kernels before 6.2 set every task of a cgroup to the root cpuset's CPUs
    (all of them, isolcpus= or not) when systemd turns the cpuset controller
    off, and systemd does that only once mxrc.slice is gone, after the
    package's unit files (seen on bookworm: PID 1 on 0,1 after the prerm,
    on 0-3 after the purge).
    """
    mask = pid1_mask(removed, booting, online, isolated)
    return {INIT_CPUS_NOTE: format_cpulist(mask) + "\n"} if mask else {}


def cgroup_resets(removed: set[str], online: frozenset[int]) -> dict[str, str]:
    """cgroup file -> value: a slice whose AllowedCPUs= went away gets every CPU back.

    Every online CPU, not the empty default: the kernel refuses an empty
    cpuset for a cgroup with tasks (ENOSPC).
    """
    return {f"/sys/fs/cgroup/{s}/cpuset.cpus": format_cpulist(online)
            for s in FOREIGN_SLICES if dropin_path(s) in removed and online}


def reboot_note(changed: set[str], grub_installed: bool) -> str | None:
    if GRUB_CONF not in changed:
        return None
    if grub_installed:
        return (f"mxrc-systemd: {GRUB_CONF} changed and update-grub ran: the kernel command line takes "
                "effect at the next reboot")
    return (f"mxrc-systemd: {GRUB_CONF} changed, but GRUB is not this system's boot loader: put the same "
            "parameters in /etc/kernel/cmdline (systemd-boot, kernel-install) or your image's boot "
            "configuration, then reboot")
