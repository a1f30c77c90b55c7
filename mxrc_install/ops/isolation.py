"""doctor's RT isolation checks (issue #10): who else may run on the RT CPUs, layer by layer.

Pure: each check takes the IsolationFacts (read by isolation_facts), the plan's
Placement (rt_cpus, nonrt_cpus = the housekeeping set) and isolation.mode, and
returns doctor.Checks naming the offender and the fix.

isolation.mode decides how a breach counts: in auto mxrc-systemd promises to
keep everything else off the RT CPUs at run time, so a breach is a FAIL; in
kernel-only / off it is only the kernel command line's job, so a breach is a
WARN, and the runtime layers mxrc-systemd does not manage there are reported,
not judged.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from mxrc_install import names
from mxrc_install.cpulist import format_cpulist, format_mask
from mxrc_install.ops.doctor import FAIL, PASS, WARN, Check
from mxrc_install.ops.isolation_facts import IsolationFacts, Task
from mxrc_install.pipeline import plan
from mxrc_install.pipeline.render import IRQBALANCE, dropin_path

AUTO = "auto"
SPEC = "#10"
LISTED = 10             # offenders named in one check; the rest are counted
DEEP_IDLE_US = 10       # an idle state with a longer exit latency is "deep": it costs a visible part of 50 us
# Units whose tasks belong on the RT CPUs: mxrc-rt and `mxrc-systemd jitter`'s transient units.
RT_OWNERS = (names.RT, "mxrc-jitter-")
APPLY = "mxrc-systemd apply (restores the runtime isolation of isolation.mode=auto)"


def breach(mode: str) -> str:
    return FAIL if mode == AUTO else WARN


def cpus(s) -> str:
    return format_cpulist(s) if s else "none"


def _listed(items: list[str]) -> str:
    more = len(items) - LISTED
    return "; ".join(items[:LISTED]) + (f"; and {more} more" if more > 0 else "")


def is_rt_owned(task: Task) -> bool:
    return task.unit.startswith(RT_OWNERS)


def recommended_cmdline(p: plan.Placement) -> str:
    rt, hk = cpus(p.rt_cpus), cpus(p.nonrt_cpus)
    return f"isolcpus=managed_irq,domain,{rt} nohz_full={rt} rcu_nocbs={rt} irqaffinity={hk}"


# -- kernel command line and what the kernel made of it ------------------------

def check_cmdline(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    c, rt, hk = f.cmdline, p.rt_cpus, p.nonrt_cpus
    problems = []
    if c.isolcpus is not None and not {"domain", "managed_irq"} <= c.isolcpus_flags:
        flags = ",".join(sorted({"domain", "managed_irq"} - c.isolcpus_flags))
        problems.append(f"isolcpus= lacks {flags} (managed_irq keeps managed IRQs off the RT CPUs)")
    wanted = (("nohz_full", rt, c.nohz_full, "the scheduler tick still interrupts the RT loop"),
              ("rcu_nocbs", rt, c.rcu_nocbs, "RCU callbacks run on the RT CPUs"),
              ("irqaffinity", hk, c.irqaffinity, "IRQs start on every CPU until moved"))
    for key, want, have, effect in wanted:
        if have is None:
            problems.append(f"no {key}={cpus(want)}: {effect}")
        elif (have >= want) if key == "rcu_nocbs" else have == want:
            continue
        else:
            problems.append(f"{key}={cpus(have)} (want {cpus(want)}): {effect}")
    if not problems:
        return [Check("isolation:cmdline", PASS, f"the kernel command line isolates the RT CPUs {cpus(rt)} "
                      "(isolcpus, nohz_full, rcu_nocbs, irqaffinity)", spec=SPEC)]
    return [Check("isolation:cmdline", WARN, "; ".join(problems),
                  f"the kernel command line for this plan is: {recommended_cmdline(p)}; "
                  "mxrc-systemd config isolation.boot_cmdline=yes && mxrc-systemd apply writes it to "
                  "/etc/default/grub.d/60-mxrc.cfg (GRUB); then reboot", SPEC)]


def check_kernel_isolation(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    """/sys/devices/system/cpu/{isolated,nohz_full}: did the kernel take the command line?"""
    c, problems = f.cmdline, []
    if c.isolcpus is not None and "domain" in c.isolcpus_flags and f.sys_isolated != c.isolcpus & f.online:
        problems.append(f"isolcpus={cpus(c.isolcpus)} but the kernel isolated {cpus(f.sys_isolated)}")
    if c.nohz_full is not None and f.sys_nohz_full is None:
        problems.append("nohz_full= is ignored: this kernel was built without CONFIG_NO_HZ_FULL")
    elif c.nohz_full is not None and f.sys_nohz_full != c.nohz_full & f.online:
        problems.append(f"nohz_full={cpus(c.nohz_full)} but the kernel runs tickless on "
                        f"{cpus(f.sys_nohz_full)}")
    evidence = (f"isolated: {cpus(f.sys_isolated)}; nohz_full: "
                + ("not supported by this kernel" if f.sys_nohz_full is None else cpus(f.sys_nohz_full)))
    if problems:
        return [Check("isolation:kernel", WARN, "; ".join(problems) + f" ({evidence})",
                      "check dmesg | grep -iE 'isolcpus|nohz' for the reason; a kernel with "
                      "CONFIG_NO_HZ_FULL=y is needed for nohz_full= (Debian's linux-image-rt-amd64)", SPEC)]
    return [Check("isolation:kernel", PASS, evidence, spec=SPEC)]


# -- cgroups ---------------------------------------------------------------------

def check_rt_cpuset(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    rt = p.rt_cpus
    cg = f.rt_cgroup
    if cg is None:
        return [Check("isolation:rt-cpuset", WARN, "mxrc-rt's cgroup was not found (not running?)",
                      "systemctl start mxrc.target", SPEC)]
    if cg.effective is None or not cg.effective <= rt:
        where = "no cpuset (every CPU)" if cg.effective is None else f"CPUs {cpus(cg.effective)}"
        return [Check("isolation:rt-cpuset", FAIL,
                      f"{cg.path} may use {where}, not only the RT CPUs {cpus(rt)}: "
                      "a thread of mxrc-rt can leave its cores", f"{APPLY}; systemctl restart {names.RT}; "
                      f"an admin drop-in may override AllowedCPUs=: systemd-delta --type=extended", SPEC)]
    out = [Check("isolation:rt-cpuset", PASS, f"{cg.path}: cpuset.cpus.effective {cpus(cg.effective)}",
                 spec=SPEC)]
    if mode == AUTO:
        out += check_partition(cg.path, cg.partition, booted_isolated=rt <= f.sys_isolated)
    return out


def check_partition(path: str, partition: str | None, booted_isolated: bool) -> list[Check]:
    if partition == "isolated":
        return [Check("isolation:rt-partition", PASS,
                      f"{path}: cpuset partition isolated (no load balancing, "
                      "no other cgroup on these CPUs)", spec=SPEC)]
    if booted_isolated and path == names.RT_SLICE:
        # isolcpus=domain took the RT CPUs out of load balancing at boot; the kernel then refuses
        # an isolated partition of them ("conflicts with housekeeping setup"), and needs none.
        return [Check("isolation:rt-partition", PASS,
                      "the RT CPUs have no scheduler domain since boot (isolcpus=domain): no load "
                      f"balancing; {path} partition {partition or 'not set'!r} adds nothing", spec=SPEC)]
    if path != names.RT_SLICE:
        return [Check("isolation:rt-partition", FAIL,
                      f"mxrc-rt runs in {path}, not in its own {names.RT_SLICE}",
                      f"{APPLY}; systemctl restart {names.RT}", SPEC)]
    reason = partition or "no cpuset.cpus.partition"
    return [Check("isolation:rt-partition", WARN, f"{path} partition is {reason!r}, not 'isolated': the "
                  "RT CPUs are confined but still load-balanced",
                  "the kernel must support cgroup v2 isolated "
                  "partitions (6.x) and no other cgroup may claim the RT CPUs; the reason in parentheses "
                  f"names what is missing; after fixing: systemctl restart {names.RT}", SPEC)]


def check_slices(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    out = []
    for s in f.slices:
        allowed = f.online if s.effective is None else s.effective
        on_rt = allowed & p.rt_cpus
        cid = f"isolation:cpuset:{s.path}"
        if not on_rt:
            out.append(Check(cid, PASS, f"{s.path} confined to CPUs {cpus(allowed)}", spec=SPEC))
        elif mode != AUTO:
            out.append(Check(cid, PASS,
                             f"{s.path} may use CPUs {cpus(allowed)}; isolation.mode={mode} leaves "
                             "it to the kernel command line", spec=SPEC))
        else:
            out.append(Check(cid, FAIL, f"{s.path} may use the RT CPUs {cpus(on_rt)} (cpuset.cpus.effective "
                             f"{cpus(allowed)})",
                             f"{APPLY}; by hand: systemctl set-property --runtime {s.path} "
                             f"AllowedCPUs={cpus(p.nonrt_cpus)}", SPEC))
    return out


# -- tasks -----------------------------------------------------------------------

def _by_process(tasks) -> list[str]:
    procs = defaultdict(list)
    for t in tasks:
        procs[t.pid].append(t)
    out = []
    for pid, threads in sorted(procs.items()):
        allowed = frozenset().union(*(t.allowed for t in threads))
        n = f", {len(threads)} threads" if len(threads) > 1 else ""
        out.append(f"PID {pid} ({threads[0].comm}, {threads[0].unit}, CPUs {cpus(allowed)}{n})")
    return out


def check_tasks(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    foreign = [t for t in f.tasks if not t.kernel and not is_rt_owned(t) and t.allowed & p.rt_cpus]
    if not foreign:
        return [Check("isolation:tasks", PASS,
                      f"no process outside mxrc-rt may run on the RT CPUs {cpus(p.rt_cpus)}", spec=SPEC)]
    procs = _by_process(foreign)
    fix = (f"{APPLY}, then systemctl daemon-reexec for PID 1; a process that set its own affinity "
           f"(taskset, sched_setaffinity) must be stopped or moved: taskset -apc {cpus(p.nonrt_cpus)} PID"
           if mode == AUTO else
           f"isolcpus=managed_irq,domain,{cpus(p.rt_cpus)} on the kernel command line, or "
           "mxrc-systemd config isolation.mode=auto && mxrc-systemd apply")
    return [Check("isolation:tasks", breach(mode), f"{len(procs)} process(es) may run on the RT CPUs "
                  f"{cpus(p.rt_cpus)}: {_listed(procs)}", fix, SPEC)]


def check_kernel_threads(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    kernel = [t for t in f.tasks if t.kernel and t.allowed & p.rt_cpus]
    movable = [t for t in kernel if not t.per_cpu]
    per_cpu = len(kernel) - len(movable)
    if not movable:
        return [Check("isolation:kthreads", PASS,
                      f"{per_cpu} per-CPU kernel threads on the RT CPUs (expected); "
                      "no movable one", spec=SPEC)]
    named = [f"PID {t.pid} ({t.comm}, CPUs {cpus(t.allowed)})" for t in movable]
    return [Check("isolation:kthreads", WARN,
                  f"{len(movable)} movable kernel thread(s) may run on the RT CPUs: "
                  f"{_listed(named)}", f"{APPLY}; by hand: taskset -pc {cpus(p.nonrt_cpus)} PID; nohz_full= "
                  "on the kernel command line keeps new ones off", SPEC)]


# -- interrupts --------------------------------------------------------------------

def _irq_kind(managed: bool | None) -> str:
    return {True: "managed", False: "movable", None: "movable or managed"}[managed]


def check_irqs(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    moving = [i for i in f.irqs if i.effective & p.rt_cpus and i.moving]
    on_rt = [i for i in f.irqs if i.effective & p.rt_cpus and not i.moving]
    pending = (f"; {len(moving)} asked off them move at their next interrupt (IRQ "
               f"{', '.join(str(i.number) for i in moving)})") if moving else ""
    if not on_rt:
        return [Check("isolation:irqs", PASS, f"no IRQ is delivered to the RT CPUs {cpus(p.rt_cpus)} "
                      f"({len(f.irqs)} IRQs){pending}", spec=SPEC)]
    named = [f"IRQ {i.number} ({i.name or '?'}, {_irq_kind(i.managed)}) on CPU "
             f"{cpus(i.effective & p.rt_cpus)}"
             for i in on_rt]
    status = breach(mode) if any(i.managed is False for i in on_rt) else WARN
    return [Check("isolation:irqs", status,
                  f"{len(on_rt)} IRQ(s) delivered to the RT CPUs: {_listed(named)}{pending}",
                  f"{APPLY} moves the movable ones; by hand: echo {cpus(p.nonrt_cpus)} > "
                  "/proc/irq/N/smp_affinity_list (Input/output error means managed: only "
                  "isolcpus=managed_irq,... on the kernel command line keeps those off)", SPEC)]


def check_irq_default(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    d = f.irq_default
    if d is None:
        return [Check("isolation:irq-default", WARN, "/proc/irq/default_smp_affinity is unreadable",
                      "run as root", SPEC)]
    if not d & p.rt_cpus or mode != AUTO:
        return [Check("isolation:irq-default", PASS, f"new IRQs start on CPUs {cpus(d)}", spec=SPEC)]
    return [Check("isolation:irq-default", FAIL,
                  f"new IRQs start on CPUs {cpus(d)}, RT CPUs {cpus(d & p.rt_cpus)} included",
                  f"{APPLY}; by hand: echo {format_mask(p.nonrt_cpus)} > /proc/irq/default_smp_affinity",
                  SPEC)]


def check_irqbalance(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    ib, rt = f.irqbalance, p.rt_cpus
    if not ib.installed:
        return [Check("isolation:irqbalance", PASS, "irqbalance is not installed", spec=SPEC)]
    if ib.banned is not None and rt <= ib.banned:
        return [Check("isolation:irqbalance", PASS, f"irqbalance bans CPUs {cpus(ib.banned)} ({ib.source})",
                      spec=SPEC)]
    if rt <= f.sys_isolated:
        return [Check("isolation:irqbalance", PASS, "irqbalance leaves the isolated CPUs (isolcpus=) alone",
                      spec=SPEC)]
    return [Check("isolation:irqbalance", breach(mode),
                  f"irqbalance may move IRQs onto the RT CPUs {cpus(rt)} "
                  f"(banned: {cpus(ib.banned)})", f"{APPLY} (writes IRQBALANCE_BANNED_CPULIST={cpus(rt)} to "
                  f"{dropin_path(IRQBALANCE)}; /etc/default/irqbalance overrides it); "
                  "then systemctl restart irqbalance", SPEC)]


# -- workqueues, idle, throttling -----------------------------------------------------

def check_workqueue(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    m = f.workqueue_cpumask
    if m is None:
        return [Check("isolation:workqueue", WARN, "/sys/devices/virtual/workqueue/cpumask is unreadable",
                      "run as root", SPEC)]
    if not m & p.rt_cpus or mode != AUTO:
        return [Check("isolation:workqueue", PASS, f"unbound workqueues run on CPUs {cpus(m)}", spec=SPEC)]
    return [Check("isolation:workqueue", FAIL,
                  f"unbound workqueues may run on the RT CPUs {cpus(m & p.rt_cpus)} "
                  f"(cpumask {cpus(m)})", f"{APPLY}; by hand: echo {format_mask(p.nonrt_cpus)} > "
                  "/sys/devices/virtual/workqueue/cpumask", SPEC)]


def _resume_limit(value: str) -> float:
    """pm_qos_resume_latency_us: "0" is no limit, "n/a" forbids any latency."""
    if value == "n/a":
        return 0
    return float("inf") if value in ("", "0") or not value.isdigit() else int(value)


def check_cstates(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    rt_running = any(t.unit == names.RT for t in f.tasks)
    if mode != AUTO:
        return [Check("isolation:cstates", PASS, f"isolation.mode={mode}: idle states are left to the "
                      "kernel command line (e.g. intel_idle.max_cstate=)", spec=SPEC)]
    if not rt_running:
        return [Check("isolation:cstates", PASS, "mxrc-rt is not running: deep idle states are allowed",
                      spec=SPEC)]
    open_cpus = []
    for cpu in sorted(p.rt_cpus):
        limit = _resume_limit(f.pm_qos.get(cpu, "0"))
        deep = [name for name, latency in f.idle_states.get(cpu, ()) if DEEP_IDLE_US < latency <= limit]
        if deep:
            open_cpus.append(f"CPU {cpu} (pm_qos_resume_latency_us={f.pm_qos.get(cpu, '?')}, may enter "
                             f"{', '.join(deep)})")
    if open_cpus:
        return [Check("isolation:cstates", FAIL, f"RT CPUs may enter deep idle states: {_listed(open_cpus)}",
                      f"{APPLY}; systemctl restart {names.RT} (it limits the RT CPUs' resume latency while "
                      "it runs)", SPEC)]
    limits = ", ".join(f"CPU {c}: {f.pm_qos.get(c, 'no cpuidle')}" for c in sorted(p.rt_cpus))
    return [Check("isolation:cstates", PASS, f"no idle state deeper than {DEEP_IDLE_US} us on the RT CPUs "
                  f"({limits})", spec=SPEC)]


def check_throttling(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    parts = []
    if f.rt_runtime_us is None:
        parts.append("sched_rt_runtime_us unreadable")
    elif f.rt_runtime_us < 0:
        parts.append("RT throttling off (sched_rt_runtime_us=-1)")
    else:
        parts.append(f"RT throttling: SCHED_FIFO may use {f.rt_runtime_us} of every {f.rt_period_us or '?'} "
                     "us per CPU; only a loop that never sleeps meets the limit")
    servers = {c: ns for c, ns in (f.fair_server_ns or {}).items() if c in p.rt_cpus}
    if f.fair_server_ns is None:
        parts.append("fair server: unknown (debugfs not readable)")
    elif servers:
        parts.append(f"fair server (kernel >= 6.12): {max(servers.values()) // 1000} us per period for "
                     f"SCHED_OTHER tasks on RT CPUs {cpus(servers)}, used only when one is queued there")
    parts.append("CONFIG_RT_GROUP_SCHED=y (see machine:rt-group-sched)" if f.rt_group_sched
                 else "no RT group scheduling")
    evidence = "; ".join(parts)
    if f.rt_runtime_us is not None and f.rt_runtime_us < 0 and not any(servers.values()):
        return [Check("isolation:throttling", WARN,
                      evidence + ": a runaway mxrc-rt loop starves the RT CPUs' "
                      "kernel threads (RCU stalls, hung workqueues)", "echo 950000 > "
                      "/proc/sys/kernel/sched_rt_runtime_us (persist in /etc/sysctl.d/); the loop itself is "
                      "unaffected while it sleeps each cycle", SPEC)]
    return [Check("isolation:throttling", PASS, evidence, spec=SPEC)]


# -- mxrc-rt itself ----------------------------------------------------------------------

def check_rt_threads(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    threads = [t for t in f.tasks if t.unit == names.RT]
    if not threads:
        return [Check("isolation:rt-threads", WARN, "mxrc-rt has no running thread to check",
                      "systemctl start mxrc.target", SPEC)]
    outside = [t for t in threads if not t.allowed <= p.rt_cpus]
    policies = defaultdict(int)
    for t in threads:
        policies[f"{t.policy} {t.priority}"] += 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(policies.items()))
    if outside:
        named = [f"TID {t.tid} ({t.comm}, {t.policy} {t.priority}, CPUs {cpus(t.allowed)})" for t in outside]
        return [Check("isolation:rt-threads", FAIL,
                      f"{len(outside)} of {len(threads)} mxrc-rt threads may leave "
                      f"the RT CPUs {cpus(p.rt_cpus)}: {_listed(named)}", f"{APPLY}; systemctl restart "
                      f"{names.RT} (AllowedCPUs= on mxrc-rt confines every thread, whatever it calls)", SPEC)]
    return [Check("isolation:rt-threads", PASS, f"{len(threads)} threads ({summary}), all within CPUs "
                  f"{cpus(p.rt_cpus)}", spec=SPEC)]


def check_rt_memlock(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    if not f.locked_kb:
        return []
    unlocked = [pid for pid, kb in f.locked_kb.items() if not kb]
    locked = ", ".join(f"PID {pid}: {kb} kB" for pid, kb in f.locked_kb.items())
    if unlocked:
        return [Check("isolation:rt-memlock", WARN,
                      f"mxrc-rt holds no locked memory ({locked}): a page fault "
                      "can stall a cycle", "call mlockall(MCL_CURRENT | MCL_FUTURE) at start (the unit sets "
                      "LimitMEMLOCK=infinity); its journal line says mlockall=ok or the error", SPEC)]
    return [Check("isolation:rt-memlock", PASS, f"locked memory (VmLck) {locked}", spec=SPEC)]


# Order of the report: boot-time layers, then cgroups, tasks, IRQs, the rest, mxrc-rt itself.
CHECKS = (check_cmdline, check_kernel_isolation, check_rt_cpuset, check_slices, check_tasks,
          check_kernel_threads, check_irqs, check_irq_default, check_irqbalance, check_workqueue,
          check_cstates, check_throttling, check_rt_threads, check_rt_memlock)


def run_checks(f: IsolationFacts, p: plan.Placement, mode: str) -> list[Check]:
    if not p.rt_cpus or p.rt_cpus >= f.online:
        return [Check("isolation:plan", PASS,
                      f"the RT CPUs {cpus(p.rt_cpus)} are all CPUs: nothing to isolate "
                      "them from", spec=SPEC)]
    return [c for check in CHECKS for c in check(f, p, mode)]


# -- the kernel command line's check, judged with the runtime layers --------------

def settle_isolcpus(checks: list[Check], f: IsolationFacts) -> list[Check]:
    """A missing isolcpus= is a FAIL unless the runtime layer already does its main job.

    isolcpus=domain keeps other tasks and load balancing off the RT CPUs; an
    isolated cpuset partition of mxrc.slice does the same on a running system.
    With one in place, what only the command line gives (tick, RCU callbacks,
    managed IRQs) is a warning that isolation:cmdline details, not a broken contract.
    """
    cg = f.rt_cgroup
    if cg is None or cg.partition != "isolated":
        return checks
    return [dataclasses.replace(
                c, status=WARN,
                evidence=f"the kernel command line has no isolcpus=: {cg.path}'s isolated cpuset partition "
                         "keeps other tasks and load balancing off the RT CPUs at run time; the scheduler "
                         "tick, RCU callbacks and managed IRQs need the command line (isolation:cmdline)")
            if c.id == "machine:isolcpus-missing" and c.status == FAIL else c
            for c in checks]
