"""The kernel command line parameters that decide real-time isolation."""

from __future__ import annotations

import dataclasses
import shlex

from mxrc_install.cpulist import CpuListError, parse_cpulist

# isolcpus= flags (Documentation/admin-guide/kernel-parameters.txt).
ISOLCPUS_FLAGS = frozenset({"nohz", "domain", "managed_irq"})


@dataclasses.dataclass(frozen=True)
class KernelCmdline:
    raw: str
    isolcpus: frozenset[int] | None = None
    isolcpus_flags: frozenset[str] = frozenset()
    nohz_full: frozenset[int] | None = None
    rcu_nocbs: frozenset[int] | None = None
    irqaffinity: frozenset[int] | None = None
    errors: tuple[str, ...] = ()


def _params(raw: str) -> dict[str, str]:
    """Last value wins, as in the kernel; quoted values and bare flags tolerated."""
    try:
        words = shlex.split(raw)
    except ValueError:
        words = raw.split()
    params = {}
    for word in words:
        if word == "--":  # the rest is for init
            break
        key, _, value = word.partition("=")
        params[key] = value
    return params


def parse_isolcpus(value: str, last_cpu: int | None) -> tuple[frozenset[int], frozenset[str]]:
    """`isolcpus=[flag,...,]cpulist`: flags come first; the CPU list may itself contain commas."""
    parts = value.split(",")
    flags = []
    while parts and parts[0] in ISOLCPUS_FLAGS:
        flags.append(parts.pop(0))
    if not parts:
        raise CpuListError(f"isolcpus={value!r}: flags but no CPU list")
    return parse_cpulist(",".join(parts), last_cpu), frozenset(flags or {"domain"})


def parse_cmdline(raw: str, last_cpu: int | None = None) -> KernelCmdline:
    params = _params(raw)
    found: dict = {}
    errors = []
    if "isolcpus" in params:
        try:
            found["isolcpus"], found["isolcpus_flags"] = parse_isolcpus(params["isolcpus"], last_cpu)
        except CpuListError as exc:
            errors.append(str(exc))
    for key in ("nohz_full", "rcu_nocbs", "irqaffinity"):
        if key in params and params[key]:
            try:
                found[key] = parse_cpulist(params[key], last_cpu)
            except CpuListError as exc:
                errors.append(f"{key}: {exc}")
    return KernelCmdline(raw=raw.strip(), errors=tuple(errors), **found)
