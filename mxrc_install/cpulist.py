"""The kernel's two ways of naming a set of CPUs.

The cpulist ("0-3,8,10-15:2/4", "N" for the last CPU), used by sysfs
(cpu/online, node*/cpulist) and by kernel parameters (isolcpus=, nohz_full=,
rcu_nocbs=, irqaffinity=); and the hex bitmap ("00000000,0000000f"), used by
/proc/irq/*/smp_affinity, default_smp_affinity and the workqueue cpumask.
"""

from __future__ import annotations

import re

# The kernel's upper bound on CPU numbers (CONFIG_NR_CPUS is at most 8192):
# a larger number is a typo, and "0-4294967295" must not allocate billions.
MAX_CPUS = 8192

# ASCII digits only: str.isdigit() accepts "²" and other Unicode digits.
_DIGITS = re.compile(r"[0-9]+")


class CpuListError(ValueError):
    pass


def is_ascii_number(token: str) -> bool:
    return _DIGITS.fullmatch(token) is not None


def parse_cpulist(text: str, last_cpu: int | None = None) -> frozenset[int]:
    """Parse a cpulist; `last_cpu` resolves "N". Raises CpuListError naming the bad part."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        cpus |= _parse_part(part.strip(), text, last_cpu)
    return frozenset(cpus)


def _number(token: str, whole: str, last_cpu: int | None) -> int:
    if token == "N":
        if last_cpu is None:
            raise CpuListError(f"CPU list {whole!r}: 'N' (last CPU) needs the CPU count")
        return last_cpu
    if not is_ascii_number(token):
        raise CpuListError(f"CPU list {whole!r}: {token!r} is not a CPU number")
    if len(token) > 5 or int(token) >= MAX_CPUS:
        raise CpuListError(f"CPU list {whole!r}: CPU {token} is beyond the kernel's limit "
                           f"of {MAX_CPUS} CPUs (0-{MAX_CPUS - 1})")
    return int(token)


def _parse_part(part: str, whole: str, last_cpu: int | None) -> set[int]:
    if not part:
        raise CpuListError(f"CPU list {whole!r}: empty element")
    stride_used, stride_group = None, None
    if ":" in part:
        part, _, stride = part.partition(":")
        used, _, group = stride.partition("/")
        if (not (is_ascii_number(used) and is_ascii_number(group)) or len(group) > 5
                or int(group) == 0 or int(used) > int(group)):
            raise CpuListError(f"CPU list {whole!r}: bad group stride {stride!r} (want used/group)")
        stride_used, stride_group = int(used), int(group)
    first, dash, last = part.partition("-")
    lo = _number(first, whole, last_cpu)
    hi = _number(last, whole, last_cpu) if dash else lo
    if hi < lo:
        raise CpuListError(f"CPU list {whole!r}: range {part!r} runs backwards")
    cpus = range(lo, hi + 1)
    if stride_group:
        cpus = [c for c in cpus if (c - lo) % stride_group < stride_used]
    return set(cpus)


def format_cpulist(cpus) -> str:
    """Compact form: {0,1,2,5} -> "0-2,5"."""
    out, run = [], []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(_run(run))
        run = [cpu]
    if run:
        out.append(_run(run))
    return ",".join(out)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def format_mask(cpus) -> str:
    """The kernel's bitmap format: hex words of 32 CPUs, comma-separated, most significant first."""
    bits = sum(1 << c for c in cpus)
    words = []
    while True:
        words.append(f"{bits & 0xffffffff:08x}")
        bits >>= 32
        if not bits:
            break
    return ",".join(reversed(words))


def parse_mask(text: str | None) -> frozenset | None:
    """A kernel hex CPU mask ("00000000,0000000f") as a CPU set; None when unreadable."""
    if text is None:
        return None
    digits = text.strip().replace(",", "")
    if not digits or not re.fullmatch(r"[0-9a-fA-F]+", digits):
        return None
    value = int(digits, 16)
    return frozenset(i for i in range(value.bit_length()) if value >> i & 1)
