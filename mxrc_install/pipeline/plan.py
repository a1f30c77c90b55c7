"""Pure planning: facts (+ operator config) -> placement, drop-ins and findings.

Nothing here reads or writes the system; `mxrc-systemd plan` prints the
result and `apply` carries it out.  The rules read top to bottom like a
tuned profile.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

from mxrc_install import findings
from mxrc_install.findings import Severity
from mxrc_install.pipeline import render
from mxrc_install.pipeline.config import Config
from mxrc_install.cpulist import format_cpulist
from mxrc_install.pipeline.probe import Facts
from mxrc_install.pipeline.unitgraph import describe, ordering_cycle, requirement_cycle

SPEC_RT_CPUS = frozenset({2, 3})
MIN_SYSTEMD = 249
MIN_CPUS = 4
# The spec's "4 GB or more" judged on MemTotal, which is what is left after the
# firmware, the kernel image and reserved areas (crash kernel, an integrated
# GPU's carve-out): 3.6-3.9 GiB on a 4 GiB robot, ~3.7 GiB on "4 GB" (10^9).
# 3.5 GiB accepts those and no smaller module size (3 GiB, 2 GiB).
MIN_MEMORY = 7 * 1024**3 // 2
SPEC_MEMORY_MAX = 2 * 1024**3
# Below this a busy but healthy process risks a restart; above it a hang goes
# unnoticed too long for a robot (the spec's edge case: 5 s and 5 min).
SANE_WATCHDOG = range(10, 121)

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO


@dataclasses.dataclass(frozen=True)
class Finding:
    id: str
    reason: str
    fix: str

    @property
    def severity(self) -> Severity:
        return findings.kind(self.id).severity


@dataclasses.dataclass(frozen=True)
class Placement:
    rt_cpus: frozenset[int]
    nonrt_cpus: frozenset[int]
    numa_nodes: frozenset[int]
    cpu_quota_percent: int
    memory_max: int
    rt_priority: int
    watchdog_sec: int
    monitor_listen: str
    monitor_port: int
    boot_optimize: bool
    isolation: str = "auto"
    boot_cmdline: bool = False

    @property
    def isolates_at_runtime(self) -> bool:
        """isolation.mode=auto with RT CPUs that are not every CPU: there is a rest to keep off them."""
        return self.isolation == "auto" and self.rt_cpus != self.nonrt_cpus


@dataclasses.dataclass(frozen=True)
class Plan:
    placement: Placement
    dropins: Mapping[str, str]  # unit -> drop-in text
    findings: tuple[Finding, ...]
    # path -> text of the other owned files
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # Read-only views: a plan is data that apply and verify compare, never edit.
        object.__setattr__(self, "dropins", types.MappingProxyType(dict(self.dropins)))
        object.__setattr__(self, "files", types.MappingProxyType(dict(self.files)))

    def owned_files(self) -> dict:
        """path -> text of every file apply owns for this plan: the drop-ins and the others."""
        return {**{render.dropin_path(unit): text for unit, text in self.dropins.items()}, **self.files}

    @property
    def worst(self) -> str | None:
        for level in (ERROR, WARNING, INFO):
            if any(f.severity == level for f in self.findings):
                return level
        return None


def grub_fix(param: str) -> str:
    return (f'add {param} to GRUB_CMDLINE_LINUX in /etc/default/grub, e.g. '
            f'GRUB_CMDLINE_LINUX="{param}", then run update-grub and reboot')


def choose_rt_cpus(facts: Facts, config: Config) -> tuple[frozenset[int], list[Finding]]:
    online = facts.cpus.online
    if config.rt_cpus is not None:
        wanted = config.rt_cpus
        if wanted <= online and (wanted != online or len(online) == 1):
            return wanted, []
        problem = (f"CPUs {format_cpulist(wanted - online)} are not online" if not wanted <= online
                   else "no CPU would be left for the non-RT services")
        fallback, findings = choose_rt_cpus(facts, dataclasses.replace(config, rt_cpus=None))
        return fallback, [Finding("rt-cpus-invalid",
                                  f"configured rt.cpus = {format_cpulist(wanted)}: {problem} "
                                  f"(online: {format_cpulist(online)}); using {format_cpulist(fallback)}",
                                  "set rt.cpus in /etc/mxrc/mxrc-systemd.conf to online CPUs, or to auto "
                                  "(dpkg-reconfigure mxrc-systemd)")] + findings
    isolated = (facts.cmdline.isolcpus or facts.cpus.isolated) & online
    if isolated and isolated != online:
        return isolated, []
    if SPEC_RT_CPUS <= online and len(online) > len(SPEC_RT_CPUS):
        return SPEC_RT_CPUS, []
    if len(online) >= 2:
        last = frozenset({max(online)})
        return last, [Finding("rt-cpus-fallback",
                              f"the machine has no CPUs 2-3 besides others to run non-RT work "
                              f"(online: {format_cpulist(online)}); RT runs on CPU {max(online)}",
                              "use a machine with 4 or more CPUs, or set rt.cpus in "
                              "/etc/mxrc/mxrc-systemd.conf")]
    return online, [Finding("rt-cpus-shared",
                            "a single CPU: RT and non-RT work share it, so RT latency cannot be bounded",
                            "use a machine with 4 or more CPUs")]


def sibling_findings(facts: Facts, rt: frozenset[int], nonrt: frozenset[int]) -> list[Finding]:
    shared = sorted(c for c in nonrt - rt if facts.cpus.siblings.get(c, frozenset({c})) & rt)
    if not shared:
        return []
    return [Finding("smt-sibling", f"non-RT CPUs {format_cpulist(shared)} are SMT siblings of RT CPUs "
                    f"{format_cpulist(rt)}: they share a core's execution units with the RT loop",
                    "disable SMT (add nosmt to the kernel command line) or isolate whole cores")]


def kernel_findings(facts: Facts, rt: frozenset[int]) -> list[Finding]:
    out = []
    cmdline_isolated = facts.cmdline.isolcpus
    rt_list = format_cpulist(rt)
    if len(facts.cpus.online) == 1:
        pass  # nothing to isolate from: rt-cpus-shared says so
    elif not cmdline_isolated:
        out.append(Finding("isolcpus-missing",
                           f"the kernel command line has no isolcpus=: other tasks may run on the "
                           f"RT CPUs {rt_list}",
                           grub_fix(f"isolcpus=managed_irq,domain,{rt_list} nohz_full={rt_list} "
                                    f"rcu_nocbs={rt_list}")))
    elif cmdline_isolated != rt:
        out.append(Finding("isolcpus-mismatch", f"isolcpus={format_cpulist(cmdline_isolated)} does not match "
                                                f"the RT CPUs {rt_list}",
                           grub_fix(f"isolcpus=managed_irq,domain,{rt_list}")))
    for error in facts.cmdline.errors:
        out.append(Finding("cmdline-unparsable", error, "correct the kernel command line"))
    out += isolcpus_syntax_findings(facts.cmdline, rt_list)
    if facts.preempt_rt is False:
        out.append(Finding("kernel-not-rt",
                           f"kernel {facts.kernel_release or ''} is not PREEMPT_RT: jitter < 50 us is "
                           "not achievable", "apt install linux-image-rt-amd64 and reboot into it"))
    if facts.rt_group_sched:
        out.append(Finding("rt-group-sched",
                           "the kernel has CONFIG_RT_GROUP_SCHED=y: SCHED_FIFO fails inside services "
                           "whose cgroup has no RT budget", "boot a kernel without RT group scheduling "
                           "(Debian's linux-image-rt-amd64 has none)"))
    return out


def isolcpus_syntax_findings(cmd, rt_list: str) -> list[Finding]:
    """What the kernel does with isolcpus= unlike what it seems to say (kernel/sched/isolation.c)."""
    out = []
    first = f"isolcpus={rt_list}" if not cmd.isolcpus else f"isolcpus={format_cpulist(cmd.isolcpus)}"
    for value in cmd.isolcpus_ignored:
        out.append(Finding("isolcpus-duplicate",
                           f"isolcpus={value} is ignored: "
                           f"the kernel keeps only the first isolcpus= ({first})",
                           grub_fix(f"one isolcpus=managed_irq,domain,{rt_list}")))
    for flag in cmd.isolcpus_unknown_flags:
        out.append(Finding("isolcpus-unknown-flag",
                           f"isolcpus= flag {flag!r} is unknown to the kernel and skipped",
                           grub_fix(f"isolcpus=managed_irq,domain,{rt_list} "
                                    "(flags: nohz, domain, managed_irq)")))
    if cmd.isolcpus and "domain" not in cmd.isolcpus_flags:
        out.append(Finding("isolcpus-no-domain",
                           f"isolcpus={','.join(sorted(cmd.isolcpus_flags))},... has no 'domain' flag: the "
                           f"scheduler still balances other tasks onto CPUs {format_cpulist(cmd.isolcpus)}",
                           grub_fix(f"isolcpus=managed_irq,domain,{rt_list}")))
    return out


def machine_findings(facts: Facts) -> list[Finding]:
    out = []
    if len(facts.cpus.online) < MIN_CPUS:
        out.append(Finding("few-cpus",
                           f"{len(facts.cpus.online)} online CPUs; the spec assumes at least {MIN_CPUS}",
                           "run on a machine with 4 or more CPUs"))
    if facts.cpus.offline:
        out.append(Finding("cpus-offline", f"CPUs {format_cpulist(facts.cpus.offline)} are offline",
                           "bring them online (echo 1 > /sys/devices/system/cpu/cpuN/online) "
                           "if meant to be used"))
    if facts.memory_bytes is not None and facts.memory_bytes < MIN_MEMORY:
        out.append(Finding("low-memory",
                           f"{facts.memory_bytes / 1024**3:.1f} GiB RAM; the spec assumes at least 4 GiB",
                           "add memory; MemoryMax was lowered to fit"))
    if facts.systemd_version is not None and facts.systemd_version < MIN_SYSTEMD:
        out.append(Finding("systemd-old", f"systemd {facts.systemd_version} is older than {MIN_SYSTEMD}",
                           "upgrade to Debian 12 / Ubuntu 22.04 or newer"))
    if not facts.cgroup_v2:
        out.append(Finding("cgroup-v1",
                           "cgroup v2 (unified hierarchy) is not mounted: CPUQuota, MemoryMax and "
                           "IOWeight are not enforced as specified",
                           grub_fix("systemd.unified_cgroup_hierarchy=1")))
    return out


def dependency_findings(facts: Facts) -> list[Finding]:
    out = []
    for finder, fid, effect in (
            (ordering_cycle, "ordering-cycle",
             "systemd breaks the loop by dropping a start job at boot, so a service may not start"),
            (requirement_cycle, "requirement-cycle",
             "starting or stopping one unit drags the others in a loop (the spec's Requires + Wants case)")):
        cycle = finder(facts.unit_edges)
        if cycle:
            # Blame an admin's line first: the shipped units have no loop.
            culprit = next((e for e in cycle if e.where.startswith("/etc/")), cycle[-1])
            out.append(Finding(fid, f"dependency loop between MXRC units: {describe(cycle)}; {effect}",
                               f"remove {culprit.key}={culprit.target} at {culprit.where}, then "
                               "systemctl daemon-reload; "
                               "check with systemctl list-dependencies --all mxrc.target"))
    return out


def place(facts: Facts, config: Config) -> tuple[Placement, list[Finding]]:
    rt, findings = choose_rt_cpus(facts, config)
    nonrt = (facts.cpus.online - rt) or rt
    nodes = frozenset(n for n in (facts.cpu_node(c) for c in rt) if n is not None) or frozenset({0})
    if len(nodes) > 1:
        findings.append(Finding("rt-spans-numa",
                                f"RT CPUs {format_cpulist(rt)} span NUMA nodes {format_cpulist(nodes)}: "
                                "memory is bound to all of them", "isolate RT CPUs within one node"))
    memory_max = config.memory_max or SPEC_MEMORY_MAX
    if facts.memory_bytes and config.memory_max is None and facts.memory_bytes < MIN_MEMORY:
        memory_max = min(SPEC_MEMORY_MAX, facts.memory_bytes // 2)
    elif facts.memory_bytes and memory_max > facts.memory_bytes:
        findings.append(Finding("memory-max-above-ram",
                                f"rt.memory_max {memory_max} is more than the machine's RAM "
                                f"({facts.memory_bytes}): the limit cannot protect the system",
                                "set rt.memory_max below the RAM size, or to auto"))
    if config.watchdog_sec not in SANE_WATCHDOG:
        findings.append(Finding("watchdog-range",
                                f"rt.watchdog_sec = {config.watchdog_sec}: outside {SANE_WATCHDOG.start}-"
                                f"{SANE_WATCHDOG.stop - 1} s; too short restarts healthy but busy "
                                "processes, too long leaves a hang unnoticed",
                                "set rt.watchdog_sec = 30 (the spec's value) unless measured otherwise"))
    findings += sibling_findings(facts, rt, nonrt)
    quota = config.cpu_quota or 100 * len(rt)
    return Placement(rt, nonrt, nodes, quota, memory_max, config.rt_priority, config.watchdog_sec,
                     config.monitor_listen, config.monitor_port, config.boot_optimize,
                     config.isolation, config.boot_cmdline), findings


def make_plan(facts: Facts, config: Config = Config()) -> Plan:
    placement, findings = place(facts, config)
    findings += kernel_findings(facts, placement.rt_cpus) + machine_findings(facts)
    findings += dependency_findings(facts)
    return Plan(placement, render.render_dropins(placement), tuple(findings), render.render_files(placement))
