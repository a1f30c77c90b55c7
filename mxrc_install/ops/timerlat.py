"""`mxrc-systemd jitter --tool timerlat`: the size of a latency spike AND its cause.

cyclictest says how late the RT loop woke up; rtla's timerlat tracer (Debian
package rtla, kernel tracer "timerlat") also says why: it stops at the first
wake-up later than SC-001's 50 us and its auto-analysis splits that latency
into IRQ handler delay (e.g. exit from a deep idle state), a blocking thread,
IRQ / softirq / thread / NMI interference, naming the IRQ or thread. Pure
except run().
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path

from mxrc_install import process
from mxrc_install.cpulist import format_cpulist
from mxrc_install.ops.jitter import SC001_MAX_US, JitterError
from mxrc_install.pipeline import plan
from mxrc_install.sysroot import SysRoot

TRACERS = ("/sys/kernel/tracing/available_tracers", "/sys/kernel/debug/tracing/available_tracers")
TRACE_FILE = "timerlat_trace.txt"   # where rtla -a saves the stopped trace (in its working directory)
# The cause when rtla could not split an IRQ-context stop on an idle CPU: its parts are all 0 us,
# and only its closing "Max timerlat IRQ latency from idle" line says where the time went.
IDLE_EXIT = "Exit from idle"

# What each part of rtla's analysis points at, and where to look next.
HINTS = {
    "IRQ handler delay": "the timer interrupt started late: interrupts were off, or the CPU woke from a deep "
                         "idle state (doctor: isolation:cstates)",
    "Previous IRQ interference": "another interrupt was still running on the RT CPU (doctor: isolation:irqs)",
    "Timerlat IRQ duration": "the timer interrupt handler itself was slow",
    "Blocking thread": "the named thread ran with preemption or interrupts off "
                       "(see its stack trace in the trace file)",
    "NMI interference": "NMIs (perf or the NMI watchdog): nmi_watchdog=0 on the kernel command line",
    "IRQ interference": "device interrupts ran on the RT CPU (doctor: isolation:irqs)",
    "Softirq interference": "softirqs (network, block, timers) ran on the RT CPU: move their IRQs off it",
    "Thread interference": "another thread ran first on the RT CPU "
                           "(doctor: isolation:tasks, isolation:kthreads)",
    IDLE_EXIT: "the CPU was idle when the timer fired and woke late: a deep idle state (doctor: "
               "isolation:cstates); in a VM, also the host running the vCPU late",
}
TOTALS = ("IRQ latency", "Thread latency")
# "  Blocking thread:        23.19 us (68.12 %)", "  IRQ handler delay: (exit from idle)  1.00 us (1.1 %)",
# "  Previous IRQ interference:   up to  5.00 us"; interference lines carry no colon.
PART_RE = re.compile(r"^ {2}(?P<label>[A-Z][A-Za-z ]*?[^\W\d_A-Z]):?\s+"
                     r"(?P<idle>\(exit from idle\))?\s*(?:up to\s+)?"
                     r"(?P<us>\d+\.\d+) us(?: \((?P<pct>\d+(?:\.\d+)?) ?%\))?\s*$")
# "\t                 objtool:49256   \t\t   23.19 us" (the duration is missing for an IRQ-context stop;
# trixie's rtla 6.12 in the VM printed the idle task as "<spaces>:0", tabs expanded, the name empty)
SOURCE_RE = re.compile(r"^(?:\t| {4})\s*(?P<name>[^\t]*?):(?P<id>\d+)\s*(?:(?P<us>\d+\.\d+) us)?\s*$")
FROM_IDLE_RE = re.compile(r"^Max timerlat (?:IRQ|Thread) latency from idle: [\d.]+ us in cpu (\d+)")
CPU_RE = re.compile(r"^## CPU (\d+) hit stop tracing")
TOP_RE = re.compile(r"^\s*(?P<cpu>\d+) #\d+\s*\|(?P<rest>.*)$")


@dataclasses.dataclass(frozen=True)
class Part:
    label: str
    us: float
    percent: float | None
    sources: tuple = ()          # "name:id (us)" of the IRQs, softirqs or threads behind it
    idle_exit: bool = False


@dataclasses.dataclass(frozen=True)
class Spike:
    cpu: int
    context: str                 # "Thread" or "IRQ": which latency crossed the threshold
    total_us: float
    parts: tuple
    from_idle: bool = False      # rtla: "Max timerlat IRQ latency from idle ... in cpu N"

    @property
    def cause(self) -> Part | None:
        """The part of the latency that weighs most (rtla's percentages), the totals aside.

        None when rtla could not split it (every part 0 us), unless the CPU was idle: then the
        exit from idle is the cause, as rtla's closing line says.
        """
        candidates = [p for p in self.parts if p.label not in TOTALS]
        weighed = max(candidates, key=lambda p: p.us, default=None)
        if weighed is not None and weighed.us > 0:
            return weighed
        return Part(IDLE_EXIT, self.total_us, None) if self.from_idle else None


@dataclasses.dataclass(frozen=True)
class TimerlatResult:
    cpus: tuple
    priority: int
    seconds: int
    irq_max_us: dict             # cpu -> max IRQ latency
    thread_max_us: dict          # cpu -> max thread latency
    spikes: tuple
    trace_file: str | None
    load: bool

    @property
    def max_us(self) -> float:
        return max([*self.thread_max_us.values(), *(s.total_us for s in self.spikes)], default=0)

    @property
    def passed(self) -> bool:
        return self.max_us <= SC001_MAX_US


def tracer_available(root: SysRoot) -> bool | None:
    """True / False from tracefs; None when tracefs is not readable (not mounted, not root)."""
    for path in TRACERS:
        text = root.read_text(path)
        if text is not None:
            return "timerlat" in text.split()
    return None


def require_timerlat(root: SysRoot, rtla_path: str | None) -> None:
    available = tracer_available(root)
    if available is False:
        raise JitterError("this kernel has no timerlat tracer (CONFIG_TIMERLAT_TRACER): "
                          "use --tool cyclictest, or boot a kernel with it "
                          "(Debian's 6.x kernels, linux-image-rt-amd64 included)")
    if available is None:
        raise JitterError(f"cannot read {TRACERS[0]}: run as root with tracefs mounted "
                          "(mount -t tracefs nodev /sys/kernel/tracing)")
    if not rtla_path:
        raise JitterError("rtla not found: apt install rtla")


def command(p: plan.Placement, seconds: int, options: frozenset) -> list[str]:
    """rtla timerlat top, stopping at the first latency above SC-001 and analysing it.

    `options`: the long options this rtla knows (from its --help): newer ones
    default to user-space threads, which the RT cpuset would refuse, so ask for
    the kernel's timerlat threads, and keep rtla's own threads off the RT CPUs.
    """
    cmd = ["rtla", "timerlat", "top", "-q", "-c", format_cpulist(p.rt_cpus), "-P", f"f:{p.rt_priority}",
           "-d", f"{seconds}s", "-a", str(SC001_MAX_US)]
    if "--kernel-threads" in options:
        cmd.append("-k")
    if "--house-keeping" in options and p.nonrt_cpus:
        cmd += ["-H", format_cpulist(p.nonrt_cpus)]
    return cmd


def known_options(help_text: str) -> frozenset:
    return frozenset(re.findall(r"--\w[\w-]+", help_text))


def parse_top(text: str) -> tuple[dict, dict]:
    """Max IRQ and thread latency per CPU from the summary table of `rtla timerlat top -q`."""
    irq, thread = {}, {}
    for line in text.splitlines():
        m = TOP_RE.match(line)
        if not m:
            continue
        groups = [g.split() for g in m.group("rest").split("|")]
        if len(groups) >= 2 and len(groups[0]) == 4 and len(groups[1]) == 4:
            cpu = int(m.group("cpu"))
            if groups[0][3].isdigit():
                irq[cpu] = int(groups[0][3])
            if groups[1][3].isdigit():   # "-" when rtla stopped in IRQ context before the thread ran
                thread[cpu] = int(groups[1][3])
    return irq, thread


def parse_analysis(text: str) -> tuple:
    """Every "## CPU N hit stop tracing" block of rtla's auto-analysis, as Spikes."""
    spikes, cpu, parts, total, context = [], None, [], None, "Thread"

    def close():
        if cpu is not None:
            spikes.append(Spike(cpu, context, total if total is not None else 0.0, tuple(parts)))

    for line in text.splitlines():
        m = CPU_RE.match(line)
        if m:
            close()
            cpu, parts, total, context = int(m.group(1)), [], None, "Thread"
            continue
        if cpu is None:
            continue
        if line.startswith("----"):
            continue
        m = PART_RE.match(line)
        if m:
            label, us = m.group("label"), float(m.group("us"))
            pct = float(m.group("pct")) if m.group("pct") else None
            # The total closes the block with (100%); when rtla stopped before printing it (an
            # IRQ-context stop, seen with trixie's rtla under emulation) the bare line is the total.
            if label in TOTALS and (pct == 100 or (pct is None and total is None)):
                total, context = us, label.split()[0]
                continue
            parts.append(Part(label, us, pct, (), bool(m.group("idle"))))
            continue
        s = SOURCE_RE.match(line)
        if s and parts:
            comm = s.group("name").strip() or ("idle" if s.group("id") == "0" else "?")
            name = f"{comm}:{s.group('id')}" + (f" ({s.group('us')} us)" if s.group("us") else "")
            parts[-1] = dataclasses.replace(parts[-1], sources=parts[-1].sources + (name,))
        elif line.strip() == "Blocking thread:":   # an IRQ-context stop: the thread that had IRQs off
            parts.append(Part("Blocking thread", 0.0, None))
    close()
    idle_cpus = {int(m.group(1)) for m in map(FROM_IDLE_RE.match, text.splitlines()) if m}
    return tuple(dataclasses.replace(s, from_idle=s.cpu in idle_cpus) for s in spikes)


def result_from(text: str, p: plan.Placement, seconds: int, load: bool,
                trace_file: str | None) -> TimerlatResult:
    irq, thread = parse_top(text)
    spikes = parse_analysis(text)
    if not (irq or thread or spikes):
        head = " | ".join(text.strip().splitlines()[:3])
        raise JitterError(f"rtla timerlat printed no summary; it said: {head or 'nothing'}")
    return TimerlatResult(tuple(sorted(p.rt_cpus)), p.rt_priority, seconds, irq, thread, spikes, trace_file,
                          load)


def describe(part: Part) -> str:
    share = f" ({part.percent:g} %)" if part.percent is not None else ""
    idle = " (exit from idle)" if part.idle_exit else ""
    sources = f": {', '.join(part.sources)}" if part.sources else ""
    size = "" if part.us == 0 and part.percent is None else f" {part.us:.2f} us"   # IRQ-context: a name only
    return f"{part.label}{idle}{size}{share}{sources}"


def result_text(r: TimerlatResult) -> str:
    lines = [f"timerlat (rtla): {r.seconds} s at 1 kHz on CPUs {format_cpulist(r.cpus)}, timer threads "
             f"SCHED_FIFO {r.priority}" + (", under load" if r.load else "")]
    for cpu in sorted(r.irq_max_us.keys() | r.thread_max_us.keys()):
        lines.append(f"  CPU {cpu}: IRQ max {r.irq_max_us.get(cpu, '-')} us, thread max "
                     f"{r.thread_max_us.get(cpu, '-')} us")
    for s in r.spikes:
        cause = s.cause
        lines.append(f"spike on CPU {s.cpu}: {s.context.lower()} latency {s.total_us:.2f} us")
        if cause:
            lines.append(f"  cause: {describe(cause)}")
            lines.append(f"  what it means: {HINTS.get(cause.label, 'see the trace file')}")
        else:
            lines.append("  cause: rtla's analysis did not split it: see the trace file")
        for part in s.parts:
            if part is not cause:
                lines.append(f"    {describe(part)}")
    if r.trace_file:
        lines.append(f"  trace: {r.trace_file}")
    verdict = "PASS" if r.passed else "FAIL"
    lines.append(f"{verdict}: max {r.max_us:g} us {'<=' if r.passed else '>'} {SC001_MAX_US} us (SC-001)")
    return "\n".join(lines) + "\n"


def result_json(r: TimerlatResult) -> str:
    data = dataclasses.asdict(r)
    data["irq_max_us"] = {str(k): v for k, v in sorted(r.irq_max_us.items())}
    data["thread_max_us"] = {str(k): v for k, v in sorted(r.thread_max_us.items())}
    for spike, out in zip(r.spikes, data["spikes"]):
        out["cause"] = dataclasses.asdict(spike.cause) if spike.cause else None
        out["hint"] = HINTS.get(spike.cause.label, "") if spike.cause else ""
    data.update(max_us=r.max_us, passed=r.passed, limit_us=SC001_MAX_US, tool="timerlat")
    return json.dumps(data, indent=2) + "\n"


def run(root: SysRoot, p: plan.Placement, cycles: int, load: bool, load_run) -> TimerlatResult:
    """Measure; `load_run` starts and stops the SCHED_OTHER load (jitter's) around it when asked."""
    rtla = shutil.which("rtla")
    require_timerlat(root, rtla)
    seconds = max(1, -(-cycles // 1000))
    help_text = process.run([rtla, "timerlat", "top", "--help"])
    workdir = Path(tempfile.mkdtemp(prefix="mxrc-timerlat-"))
    with load_run(load):
        options = known_options(help_text.stdout + help_text.stderr)
        proc = process.run(command(p, seconds, options), cwd=workdir)
    trace = workdir / TRACE_FILE
    output = proc.stdout + proc.stderr
    if proc.rc not in (0, 2) and not any(parse_top(output)):
        raise JitterError(f"rtla timerlat failed (exit {proc.rc}): {output.strip()[-500:]}")
    return result_from(output, p, seconds, load, str(trace) if trace.exists() else None)
