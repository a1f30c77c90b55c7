"""At every boot, before the MXRC services: adapt the units to the machine an image landed on.

mxrc-systemd-hardware.service runs this on the boot's critical path, so it
imports only what comparing the hardware takes; the rest of the pipeline
(plan, render, apply) is imported when there is something to apply.
"""

from __future__ import annotations

from mxrc_install.exits import EXIT_OK, EXIT_WARNINGS
from mxrc_install.pipeline import fingerprint
from mxrc_install.pipeline.paths import FIRST_BOOT
from mxrc_install.sysroot import SysRoot


def boot_check(root: SysRoot) -> int:
    if root.exists(FIRST_BOOT):
        print("mxrc-systemd: first boot after an image build: probing and applying")
        return _apply(root)
    old = fingerprint.recorded(root)
    if old is None:
        return _apply(root)
    changes = fingerprint.changes(old, fingerprint.read(root))
    if not changes:
        print("mxrc-systemd: hardware unchanged since the last apply")
        return EXIT_OK
    print("mxrc-systemd: the hardware changed since the last apply: " + "; ".join(changes))
    from mxrc_install.pipeline import commands
    if commands.load_config(root).reapply_on_hardware_change:
        return _apply(root)
    print("WARNING [hardware-changed] the units still carry the old placement\n"
          "        fix: run mxrc-systemd apply (or set boot.reapply_on_hardware_change = yes)")
    return EXIT_WARNINGS


def _apply(root: SysRoot) -> int:
    from mxrc_install.pipeline import commands
    return commands.run_apply(root, booting=True)
