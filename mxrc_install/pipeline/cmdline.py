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
    isolcpus_ignored: tuple[str, ...] = ()        # later isolcpus= values: the kernel keeps the first
    isolcpus_unknown_flags: tuple[str, ...] = ()  # flags this kernel skips


def _words(raw: str) -> list[tuple[str, str]]:
    """(key, value) in order, up to "--" (the rest is for init); quotes tolerated."""
    try:
        words = shlex.split(raw)
    except ValueError:
        words = raw.split()
    out = []
    for word in words:
        if word == "--":
            break
        key, _, value = word.partition("=")
        out.append((key, value))
    return out


def parse_isolcpus(value: str, last_cpu: int | None) -> tuple[frozenset[int], frozenset[str],
                                                              tuple[str, ...]]:
    """`isolcpus=[flag,...,]cpulist` read as kernel/sched/isolation.c does.

    Leading alphabetic words followed by a comma are flags; unknown ones are
    skipped (returned third); no flag at all means "domain".
    """
    parts = value.split(",")
    flags, unknown = [], []
    while len(parts) > 1 and parts[0][:1].isascii() and parts[0][:1].isalpha():
        word = parts.pop(0)
        if word in ISOLCPUS_FLAGS:
            flags.append(word)
        elif all(c.isascii() and (c.isalpha() or c == "_") for c in word):
            unknown.append(word)
        else:
            raise CpuListError(f"isolcpus={value!r}: invalid flag {word!r}; "
                               "the kernel ignores this isolcpus=")
    if not parts or not parts[0] or parts[0][:1].isalpha() and parts[0] != "N":
        raise CpuListError(f"isolcpus={value!r}: flags but no CPU list")
    return parse_cpulist(",".join(parts), last_cpu), frozenset(flags or {"domain"}), tuple(unknown)


def parse_cmdline(raw: str, last_cpu: int | None = None) -> KernelCmdline:
    words = _words(raw)
    params = dict(words)  # last value wins, as in the kernel, except for isolcpus=
    isolcpus = [v for k, v in words if k == "isolcpus"]
    found: dict = {}
    errors = []
    if isolcpus:
        found["isolcpus_ignored"] = tuple(isolcpus[1:])
        try:
            found["isolcpus"], found["isolcpus_flags"], found["isolcpus_unknown_flags"] = \
                parse_isolcpus(isolcpus[0], last_cpu)
        except CpuListError as exc:
            errors.append(str(exc))
    for key in ("nohz_full", "rcu_nocbs", "irqaffinity"):
        if key in params and params[key]:
            try:
                found[key] = parse_cpulist(params[key], last_cpu)
            except CpuListError as exc:
                errors.append(f"{key}: {exc}")
    return KernelCmdline(raw=raw.strip(), errors=tuple(errors), **found)
