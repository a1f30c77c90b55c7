"""`mxrc-systemd jitter`: SC-001 measured the way the spec says, with cyclictest.

cyclictest runs in a transient unit with mxrc-rt's placement and limits (RT
CPUs, FIFO priority, NUMA mask, CPUQuota, MemoryMax, memlock), one thread per
RT CPU, so the figure is the one mxrc-rt would see. Pure except run(), which
starts the units and waits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import threading
import time

from mxrc_install import names, process
from mxrc_install.pipeline import plan
from mxrc_install.cpulist import format_cpulist
from mxrc_install.exits import UserError

SC001_MAX_US = 50
INTERVAL_US = 1000        # 1 kHz, as the RT loop
HISTOGRAM_US = 1000       # buckets 0..999 us; later ones count as overflows
HISTOGRAM_ROWS = 10       # buckets in the printed histogram


class JitterError(UserError):
    pass


@dataclasses.dataclass(frozen=True)
class JitterResult:
    cycles: int              # loops of the thread that finished (cyclictest stops the others then)
    samples: int             # all threads
    min_us: int
    avg_us: float
    p99_us: int
    p999_us: int
    max_us: int
    overflows: int
    histogram: dict          # latency us -> count (all threads)
    cpus: tuple
    priority: int
    load: bool
    preempt_rt: bool | None

    @property
    def passed(self) -> bool:
        return self.max_us <= SC001_MAX_US


def unit_properties(p: plan.Placement) -> list[str]:
    """mxrc-rt's placement and limits, as systemd-run -p arguments."""
    props = [f"CPUAffinity={' '.join(map(str, sorted(p.rt_cpus)))}", "CPUSchedulingPolicy=fifo",
             f"CPUSchedulingPriority={p.rt_priority}", f"LimitRTPRIO={p.rt_priority}",
             "LimitMEMLOCK=infinity", f"CPUQuota={p.cpu_quota_percent}%", f"MemoryMax={p.memory_max}"]
    if p.numa_nodes:
        props += ["NUMAPolicy=bind", f"NUMAMask={' '.join(map(str, sorted(p.numa_nodes)))}"]
    return props


def command(p: plan.Placement, cycles: int, unit: str) -> list[str]:
    cpus = format_cpulist(p.rt_cpus)
    # clock_nanosleep is cyclictest's only mode since rt-tests 2.0 (--nanosleep is gone).
    cyclictest = ["cyclictest", "--mlockall", "--quiet", f"--priority={p.rt_priority}",
                  "--policy=fifo", f"--interval={INTERVAL_US}", f"--loops={cycles}", f"--affinity={cpus}",
                  f"--threads={len(p.rt_cpus)}", f"--histogram={HISTOGRAM_US}"]
    # In mxrc-rt's slice: isolation.mode=auto keeps every other slice off the RT CPUs, so CPUAffinity= to
    # them fails (exit 215) anywhere else; the slice's AllowedCPUs= is the RT CPUs in every mode.
    run = ["systemd-run", f"--unit={unit}", f"--slice={names.RT_SLICE}", "--wait", "--pipe", "--quiet",
           "--collect", "--description=mxrc-systemd jitter measurement"]
    for prop in unit_properties(p):
        run += ["-p", prop]
    return run + cyclictest


def load_command(p: plan.Placement, unit: str, cpus: int) -> list[str]:
    """SCHED_OTHER busy loops on every CPU: the RT threads must preempt them."""
    return ["systemd-run", f"--unit={unit}", "--quiet", "--collect", "--description=mxrc-systemd jitter load",
            "sh", "-c", f"for i in $(seq {cpus}); do (while :; do :; done) & done; wait"]


def parse_cyclictest(text: str) -> dict:
    """Histogram and per-thread summary lines of `cyclictest --histogram` (-q) output."""
    histogram, summary = {}, {}
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, values = line[1:].partition(":")
            numbers = [int(v) for v in values.split() if v.isdigit()]
            if numbers:
                summary[key.strip()] = numbers
            continue
        fields = line.split()
        if len(fields) >= 2 and all(f.isdigit() for f in fields):
            total = sum(int(f) for f in fields[1:])
            if total:
                histogram[int(fields[0])] = histogram.get(int(fields[0]), 0) + total
    if "Max Latencies" not in summary:
        head = " | ".join(text.strip().splitlines()[:3])
        raise JitterError(f"cyclictest printed no summary; it said: {head or 'nothing'}")
    return {"histogram": histogram, "summary": summary}


def percentile(histogram: dict, total: int, fraction: float, overflow_value: int) -> int:
    needed, seen = fraction * total, 0
    for latency in sorted(histogram):
        seen += histogram[latency]
        if seen >= needed:
            return latency
    return overflow_value


def _cycles(summary: dict, samples: int, threads: int) -> int:
    """Loops of the longest-running thread: its histogram Total plus its overflows (not in Total)."""
    totals = summary.get("Total")
    if not totals:
        return samples // max(1, threads)
    overflows = summary.get("Histogram Overflows", [0] * len(totals))
    return max(t + o for t, o in zip(totals, overflows + [0] * len(totals)))


def result_from(parsed: dict, p: plan.Placement, load: bool, preempt_rt: bool | None) -> JitterResult:
    s, histogram = parsed["summary"], parsed["histogram"]
    overflows = sum(s.get("Histogram Overflows", []))
    counted = sum(histogram.values())
    total = counted + overflows
    max_us = max(s["Max Latencies"])
    avgs, mins = s.get("Avg Latencies", [0]), s.get("Min Latencies", [0])
    return JitterResult(
        cycles=_cycles(s, total, len(p.rt_cpus)), samples=total, min_us=min(mins),
        avg_us=round(sum(avgs) / len(avgs), 1), p99_us=percentile(histogram, total, 0.99, max_us),
        p999_us=percentile(histogram, total, 0.999, max_us),
        max_us=max_us, overflows=overflows, histogram=histogram, cpus=tuple(sorted(p.rt_cpus)),
        priority=p.rt_priority, load=load, preempt_rt=preempt_rt)


def histogram_rows(histogram: dict, rows: int = HISTOGRAM_ROWS) -> list[tuple[str, int]]:
    """The histogram in `rows` equal-width latency bands up to the highest non-empty bucket."""
    if not histogram:
        return []
    top = max(histogram) + 1
    width = max(1, -(-top // rows))
    bands = []
    for start in range(0, top, width):
        count = sum(c for lat, c in histogram.items() if start <= lat < start + width)
        bands.append((f"{start}-{start + width - 1} us", count))
    return bands


def result_text(r: JitterResult) -> str:
    verdict = "PASS" if r.passed else "FAIL"
    lines = [f"cyclictest: {r.cycles} cycles per CPU at {1_000_000 // INTERVAL_US} Hz on CPUs "
             f"{format_cpulist(r.cpus)}, SCHED_FIFO {r.priority}, mxrc-rt's limits"
             + (", under load" if r.load else ""),
             f"  min {r.min_us} us   avg {r.avg_us} us   p99 {r.p99_us} us   p99.9 {r.p999_us} us   "
             f"max {r.max_us} us", ""]
    rows = histogram_rows(r.histogram)
    peak = max((c for _, c in rows), default=0) or 1
    for label, count in rows:
        lines.append(f"  {label:>12} {count:>9}  {'#' * round(40 * count / peak)}")
    if r.overflows:
        lines.append(f"  {'>= ' + str(HISTOGRAM_US) + ' us':>12} {r.overflows:>9}")
    lines.append("")
    lines.append(f"{verdict}: max {r.max_us} us {'<=' if r.passed else '>'} {SC001_MAX_US} us (SC-001)")
    if r.preempt_rt is False:
        lines.append("note: this kernel is not PREEMPT_RT; "
                     "install linux-image-rt-amd64 for the spec's figure")
    return "\n".join(lines) + "\n"


def result_json(r: JitterResult) -> str:
    data = dataclasses.asdict(r)
    data["histogram"] = {str(k): v for k, v in sorted(r.histogram.items())}
    data["passed"] = r.passed
    data["limit_us"] = SC001_MAX_US
    return json.dumps(data, indent=2) + "\n"


def _progress(stop: threading.Event, seconds: float, out=sys.stderr) -> None:
    started, tty, last = time.monotonic(), out.isatty(), -10
    while not stop.wait(1.0):
        pct = min(99, int(100 * (time.monotonic() - started) / seconds))
        if tty:
            out.write(f"\rmeasuring: {pct:3d}%")
        elif pct >= last + 10:
            out.write(f"measuring: {pct}%\n")
            last = pct
        out.flush()
    if tty:
        out.write("\r" + " " * 20 + "\r")


def load_running(p: plan.Placement, online_cpus: int):
    """A context manager factory: `with load_running(p, n)(wanted):` runs the busy loops while inside."""
    @contextlib.contextmanager
    def running(wanted: bool):
        load_unit = f"mxrc-jitter-load-{os.getpid()}"
        if wanted:
            process.run(load_command(p, load_unit, online_cpus), check=True)
        try:
            yield
        finally:
            if wanted:
                process.run(["systemctl", "stop", f"{load_unit}.service"])
    return running


def run(p: plan.Placement, cycles: int, load: bool, preempt_rt: bool | None,
        online_cpus: int) -> JitterResult:
    if not shutil.which("cyclictest"):
        raise JitterError("cyclictest not found: apt install rt-tests")
    stop = threading.Event()
    ticker = threading.Thread(target=_progress, args=(stop, cycles * INTERVAL_US / 1e6), daemon=True)
    with load_running(p, online_cpus)(load):
        ticker.start()
        try:
            proc = process.run(command(p, cycles, f"mxrc-jitter-{os.getpid()}"))
        finally:
            stop.set()
            ticker.join()
    if not proc.ok:
        raise JitterError(f"cyclictest failed (exit {proc.rc}): {proc.stderr.strip()[-500:]}")
    return result_from(parse_cyclictest(proc.stdout + proc.stderr), p, load, preempt_rt)
