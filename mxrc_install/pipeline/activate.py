"""What makes the files apply changed take effect on the running system.

Pure: the changed paths in, the commands to run out (commands.py runs them,
only on a live root with systemd running). A reload applies the unit
drop-ins and the slices' cpusets; the manager's own CPU affinity needs a
re-exec; irqbalance reads its banned CPUs only when it starts; GRUB needs
update-grub (and a reboot, which is never ours to do).
"""

from __future__ import annotations

from mxrc_install.pipeline.render import GRUB_CONF, IRQBALANCE, MANAGER_CONF
from mxrc_install.pipeline.report import dropin_path

UPDATE_GRUB = "/usr/sbin/update-grub"
GRUB_CFG = "/boot/grub/grub.cfg"


def commands_for(changed: set[str], booting: bool = False, grub_installed: bool = False) -> list[list[str]]:
    if not changed:
        return []
    # During boot PID 1 is busy starting units: it reads system.conf.d again at
    # the next boot, and the slices' cpusets already keep everyone else off.
    reexec = MANAGER_CONF in changed and not booting
    out = [["systemctl", "daemon-reexec" if reexec else "daemon-reload"]]
    if dropin_path(IRQBALANCE) in changed:
        out.append(["systemctl", "try-restart", IRQBALANCE])
    if GRUB_CONF in changed and grub_installed:
        out.append([UPDATE_GRUB])
    return out


def reboot_note(changed: set[str], grub_installed: bool) -> str | None:
    if GRUB_CONF not in changed:
        return None
    if grub_installed:
        return (f"mxrc-systemd: {GRUB_CONF} changed and update-grub ran: the kernel command line takes "
                "effect at the next reboot")
    return (f"mxrc-systemd: {GRUB_CONF} changed, but GRUB is not this system's boot loader: put the same "
            "parameters in /etc/kernel/cmdline (systemd-boot, kernel-install) or your image's boot "
            "configuration, then reboot")
