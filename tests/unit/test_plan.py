"""Hardware scenarios: what the probe sees and what the plan makes of it."""

import pytest
from sysroots import Hardware, build

from mxrc_install import plan, probe
from mxrc_install.sysroot import SysRoot

# name, hardware, RT CPUs, non-RT CPUs, NUMA nodes, finding ids expected (subset)
SCENARIOS = [
    ("1cpu", Hardware(cpus=1), {0}, {0}, {0}, {"rt-cpus-shared", "few-cpus", "isolcpus-missing"}),
    ("2cpu", Hardware(cpus=2), {1}, {0}, {0}, {"rt-cpus-fallback", "few-cpus"}),
    ("3cpu", Hardware(cpus=3), {2}, {0, 1}, {0}, {"rt-cpus-fallback", "few-cpus"}),
    ("4cpu-spec", Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True), {2, 3}, {0, 1}, {0}, set()),
    ("4cpu-no-isolcpus", Hardware(cpus=4), {2, 3}, {0, 1}, {0}, {"isolcpus-missing", "kernel-not-rt"}),
    ("8cpu-2numa", Hardware(cpus=8, numa_nodes=2, cmdline="isolcpus=managed_irq,domain,6-7",
                            preempt_rt=True), {6, 7}, {0, 1, 2, 3, 4, 5}, {1}, set()),
    ("8cpu-span", Hardware(cpus=8, numa_nodes=2, cmdline="isolcpus=3-4", preempt_rt=True),
     {3, 4}, {0, 1, 2, 5, 6, 7}, {0, 1}, {"rt-spans-numa"}),
    ("8cpu-smt", Hardware(cpus=8, smt=True, cmdline="isolcpus=nohz,domain,2-3", preempt_rt=True),
     {2, 3}, {0, 1, 4, 5, 6, 7}, {0}, {"smt-sibling"}),
    ("64cpu-4numa", Hardware(cpus=64, numa_nodes=4, sockets=2, cmdline="isolcpus=60-63", preempt_rt=True,
                             memory_gib=256), set(range(60, 64)), set(range(60)), {3}, set()),
    ("offline", Hardware(cpus=8, offline=(5,), cmdline="isolcpus=2-3", preempt_rt=True),
     {2, 3}, {0, 1, 4, 6, 7}, {0}, {"cpus-offline"}),
    ("repeated-isolcpus", Hardware(cpus=8, cmdline="isolcpus=4-5 isolcpus=6-7", preempt_rt=True),
     {6, 7}, {0, 1, 2, 3, 4, 5}, {0}, set()),
    ("all-isolated", Hardware(cpus=4, cmdline="isolcpus=0-3", preempt_rt=True),
     {2, 3}, {0, 1}, {0}, {"isolcpus-mismatch"}),
    ("cgroup-v1", Hardware(cpus=4, cgroup_v2=False, cmdline="isolcpus=2-3", preempt_rt=True),
     {2, 3}, {0, 1}, {0}, {"cgroup-v1"}),
    ("rt-group-sched", Hardware(cpus=4, rt_group_sched=True, cmdline="isolcpus=2-3", preempt_rt=True),
     {2, 3}, {0, 1}, {0}, {"rt-group-sched"}),
    ("old-systemd-small", Hardware(cpus=4, systemd=247, memory_gib=2, cmdline="isolcpus=2-3",
                                   preempt_rt=True), {2, 3}, {0, 1}, {0}, {"systemd-old", "low-memory"}),
]


@pytest.fixture(params=SCENARIOS, ids=[s[0] for s in SCENARIOS])
def scenario(request, tmp_path):
    name, hw, rt, nonrt, nodes, finding_ids = request.param
    facts = probe.read_facts(SysRoot(build(tmp_path, hw)))
    return hw, facts, plan.make_plan(facts), rt, nonrt, nodes, finding_ids


def test_placement(scenario):
    hw, facts, result, rt, nonrt, nodes, _ = scenario
    assert result.placement.rt_cpus == rt
    assert result.placement.nonrt_cpus == nonrt
    assert result.placement.numa_nodes == nodes
    assert result.placement.cpu_quota_percent == 100 * len(rt)


def test_findings(scenario):
    hw, facts, result, *_, expected = scenario
    ids = {f.id for f in result.findings}
    assert expected <= ids, ids
    for finding in result.findings:
        assert finding.reason and finding.fix


def test_clean_spec_machine_has_no_findings(tmp_path):
    hw = Hardware(cpus=4, cmdline="isolcpus=managed_irq,domain,2-3", preempt_rt=True)
    result = plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, hw))))
    assert result.findings == () and result.worst is None


def test_probe_facts(tmp_path):
    hw = Hardware(cpus=8, numa_nodes=2, smt=True, offline=(7,), preempt_rt=True, systemd=252,
                  cmdline="isolcpus=2-3 nohz_full=2-3")
    facts = probe.read_facts(SysRoot(build(tmp_path, hw)))
    assert facts.cpus.present == set(range(8)) and facts.cpus.offline == {7}
    assert facts.cpus.smt and facts.cpus.siblings[1] == {1, 5}
    assert facts.numa_nodes == {0: {0, 1, 2, 3}, 1: {4, 5, 6}}
    assert facts.preempt_rt and facts.systemd_version == 252 and facts.cgroup_v2
    assert facts.rt_group_sched is False and facts.rlimit_rtprio == "0"
    assert facts.memory_bytes == 8 * 1024**3 and facts.cpu_model == "Fake CPU @ 2.0GHz"
    assert facts.distro == "Debian GNU/Linux 13 (trixie)"
    assert facts.cmdline.nohz_full == {2, 3}


def test_empty_root_is_unknown_not_a_crash(tmp_path):
    facts = probe.read_facts(SysRoot(tmp_path))
    assert facts.cpus.online == {0} and facts.preempt_rt is None and facts.systemd_version is None
    assert facts.memory_bytes is None


def test_memory_max_fits_the_machine(tmp_path):
    small = plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, Hardware(memory_gib=2)))))
    assert small.placement.memory_max == 1024**3


def test_golden_dropin_for_the_spec_machine(tmp_path):
    hw = Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True)
    result = plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, hw))))
    assert result.dropins["mxrc-rt.service"].split("\n", 2)[2] == (
        "[Service]\nCPUAffinity=\nCPUAffinity=2 3\nNUMAMask=0\nCPUSchedulingPriority=80\nLimitRTPRIO=80\n"
        "CPUQuota=200%\nMemoryMax=2147483648\nWatchdogSec=30s\n")
    assert "CPUAffinity=0 1\n" in result.dropins["mxrc-nonrt.service"]
