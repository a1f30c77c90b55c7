"""How facts and plans are shown: text for people, JSON for tools. Pure functions."""

from __future__ import annotations

import dataclasses
import difflib
import json

from mxrc_install.cpulist import format_cpulist
from mxrc_install.pipeline.plan import Plan
from mxrc_install.pipeline.probe import Facts

from mxrc_install.pipeline.render import DROPIN_NAME, dropin_path  # noqa: F401  (re-exported)


def _jsonable(value):
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def facts_json(facts: Facts) -> str:
    return json.dumps(_jsonable(facts), indent=2, sort_keys=True)


def _yes_no(value) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def facts_text(facts: Facts) -> str:
    c, cmd = facts.cpus, facts.cmdline
    rows = [
        ("distribution", facts.distro or "unknown"),
        ("CPU model", facts.cpu_model or "unknown"),
        ("CPUs online", format_cpulist(c.online)),
        ("CPUs offline", format_cpulist(c.offline) or "none"),
        ("sockets", str(c.sockets)),
        ("SMT", _yes_no(c.smt)),
        ("NUMA nodes",
         "; ".join(f"{n}: {format_cpulist(cpus)}" for n, cpus in sorted(facts.numa_nodes.items()))),
        ("memory", f"{facts.memory_bytes / 1024**3:.1f} GiB" if facts.memory_bytes else "unknown"),
        ("kernel", facts.kernel_release or "unknown"),
        ("PREEMPT_RT", _yes_no(facts.preempt_rt)),
        ("RT group scheduling", _yes_no(facts.rt_group_sched)),
        ("isolcpus", (format_cpulist(cmd.isolcpus) + f" ({','.join(sorted(cmd.isolcpus_flags))})")
         if cmd.isolcpus else "not set"),
        ("nohz_full", format_cpulist(cmd.nohz_full) if cmd.nohz_full else "not set"),
        ("rcu_nocbs", format_cpulist(cmd.rcu_nocbs) if cmd.rcu_nocbs else "not set"),
        ("irqaffinity", format_cpulist(cmd.irqaffinity) if cmd.irqaffinity else "not set"),
        ("systemd", str(facts.systemd_version or "unknown")),
        ("cgroup v2", _yes_no(facts.cgroup_v2) + (f" ({' '.join(sorted(facts.cgroup_controllers))})"
                                                 if facts.cgroup_controllers else "")),
        ("RLIMIT_RTPRIO (this shell)", facts.rlimit_rtprio or "unknown"),
        ("/dev/cpu_dma_latency", _yes_no(facts.cpu_dma_latency)),
        ("CPU timing flags", " ".join(facts.cpu_rt_flags) if facts.cpu_rt_flags is not None else "unknown"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n"


def finding_lines(findings) -> list[str]:
    """One entry per finding: severity, id and reason, then the fix; shared by plan and apply."""
    return [f"{f.severity.upper():7} [{f.id}] {f.reason}\n        fix: {f.fix}" for f in findings]


def plan_json(plan: Plan, current: dict) -> str:
    return json.dumps({
        "placement": _jsonable(plan.placement),
        "dropins": {path: {"content": text, "changed": current.get(path) != text}
                    for path, text in plan.owned_files().items()},
        "findings": [{"id": f.id, "severity": str(f.severity), "reason": f.reason, "fix": f.fix}
                     for f in plan.findings],
    }, indent=2, sort_keys=True)


def plan_text(plan: Plan, current: dict) -> str:
    p = plan.placement
    out = [f"RT CPUs {format_cpulist(p.rt_cpus)}, non-RT CPUs {format_cpulist(p.nonrt_cpus)}, "
           f"NUMA node(s) {format_cpulist(p.numa_nodes)}, CPUQuota {p.cpu_quota_percent}%, "
           f"MemoryMax {p.memory_max}", ""]
    for path, text in plan.owned_files().items():
        old = current.get(path)
        if old == text:
            out.append(f"unchanged {path}")
            continue
        out.append(f"{'create' if old is None else 'update'} {path}")
        out.extend(difflib.unified_diff((old or "").splitlines(), text.splitlines(),
                                        f"a{path}", f"b{path}", lineterm="", n=1))
    out.append("")
    out.extend(finding_lines(plan.findings))
    if not plan.findings:
        out.append("no findings: the machine meets every requirement the plan checks")
    return "\n".join(out) + "\n"
