"""Third-party probes behind small adapters, so the rest of the probe layer never imports them.

python3-distro takes a root directory, so it works on captured machines and
image roots alike. (py-cpuinfo and pyudev read the running host only and
cannot be re-rooted: the facts we plan from come from sysfs and /proc through
the SysRoot instead.)
"""

from __future__ import annotations

from mxrc_install.sysroot import SysRoot


def distribution(root: SysRoot) -> str | None:
    """'Debian GNU/Linux 13 (trixie)', from the root's os-release; None when unknown."""
    try:
        import distro
    except ImportError:
        return None
    # No lsb_release, uname or oslevel: those would run programs on the host.
    info = distro.LinuxDistribution(root_dir=str(root.root), include_lsb=False, include_uname=False,
                                    include_oslevel=False)
    return info.name(pretty=True) or None
