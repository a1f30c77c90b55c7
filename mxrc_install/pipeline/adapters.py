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


# CPU features that matter to a real-time loop's timing, when the live CPU reports them.
RT_CPU_FLAGS = ("constant_tsc", "nonstop_tsc", "tsc_deadline_timer", "invtsc", "ht")


def cpu_details(root: SysRoot) -> dict | None:
    """py-cpuinfo's view of the running host's CPU (model, flags), only on the live root.

    py-cpuinfo reads the host directly (and runs cpuid in a child process), so
    it is never asked about a captured machine or an image being built.
    """
    if not root.is_live:
        return None
    try:
        import cpuinfo
    except ImportError:
        return None
    info = cpuinfo.get_cpu_info()
    flags = set(info.get("flags", ()))
    return {"model": info.get("brand_raw") or None,
            "rt_flags": sorted(f for f in RT_CPU_FLAGS if f in flags)}


def udev_has_device(root: SysRoot, subsystem: str, name: str) -> bool | None:
    """Whether udev knows the device (e.g. misc/cpu_dma_latency); None off the live root."""
    if not root.is_live:
        return None
    try:
        import pyudev
    except ImportError:
        return None
    context = pyudev.Context()
    return any(d.sys_name == name for d in context.list_devices(subsystem=subsystem))
