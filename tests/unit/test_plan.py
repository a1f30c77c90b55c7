"""Plan rules beyond the golden fixtures: config overrides, memory, the probe's facts."""

import pytest
from sysroots import Hardware, build

from mxrc_install import names
from mxrc_install.pipeline import plan, probe
from mxrc_install.sysroot import SysRoot

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


def memory_plan(tmp_path, gib):
    return plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, Hardware(memory_gib=gib)))))


def test_memory_max_fits_a_machine_below_the_spec(tmp_path):
    small = memory_plan(tmp_path, 2)
    assert small.placement.memory_max == 1024**3
    assert "low-memory" in {f.id for f in small.findings}


@pytest.mark.parametrize("memtotal_gib", [3.6, 3.8, 4, 16])
def test_a_machine_meeting_the_spec_minimum_gets_the_spec_memory_max(tmp_path, memtotal_gib):
    # A 4 GB robot's MemTotal is below 4 GiB (firmware, kernel, reserved areas):
    # it still meets the spec's minimum, so MemoryMax=2G as FR-008 says.
    result = memory_plan(tmp_path, memtotal_gib)
    assert result.placement.memory_max == 2 * 1024**3
    assert "low-memory" not in {f.id for f in result.findings}


def test_a_three_gib_machine_is_below_the_spec_minimum(tmp_path):
    result = memory_plan(tmp_path, 3)
    assert result.placement.memory_max == 3 * 1024**3 // 2
    assert "low-memory" in {f.id for f in result.findings}


def test_golden_dropin_for_the_spec_machine(tmp_path):
    hw = Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True)
    result = plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, hw))))
    assert result.dropins["mxrc-rt.service"].split("\n", 2)[2] == (
        "[Service]\nCPUAffinity=\nCPUAffinity=2 3\nAllowedCPUs=\nAllowedCPUs=2 3\nNUMAMask=\nNUMAMask=0\n"
        "CPUSchedulingPriority=80\nLimitRTPRIO=80\nCPUQuota=200%\nMemoryMax=2147483648\nWatchdogSec=30s\n"
        "# Where the kernel supports it, the RT CPUs become an isolated cpuset partition\n"
        "# (no load balancing onto them); '-': an older kernel keeps a plain cpuset.\n"
        "ExecStartPre=+-/bin/sh -c 'echo isolated > /sys/fs/cgroup/mxrc.slice/cpuset.cpus.partition'\n")
    assert "CPUAffinity=0 1\n" in result.dropins["mxrc-nonrt.service"]


def test_configured_rt_cpus_win_when_valid(tmp_path):
    from mxrc_install.pipeline.config import Config
    facts = probe.read_facts(SysRoot(build(tmp_path, Hardware(cpus=8, cmdline="isolcpus=2-3",
                                                               preempt_rt=True))))
    result = plan.make_plan(facts, Config(rt_cpus=frozenset({4, 5})))
    assert result.placement.rt_cpus == {4, 5}
    assert {f.id for f in result.findings} == {"isolcpus-mismatch"}


@pytest.mark.parametrize("cpus,problem", [({9}, "not online"), (set(range(8)), "no CPU would be left")])
def test_configured_rt_cpus_that_cannot_work_fall_back_with_an_error(tmp_path, cpus, problem):
    from mxrc_install.pipeline.config import Config
    facts = probe.read_facts(SysRoot(build(tmp_path, Hardware(cpus=8, cmdline="isolcpus=2-3",
                                                               preempt_rt=True))))
    result = plan.make_plan(facts, Config(rt_cpus=frozenset(cpus)))
    assert result.placement.rt_cpus == {2, 3}
    (finding,) = [f for f in result.findings if f.id == "rt-cpus-invalid"]
    assert problem in finding.reason and finding.severity == plan.ERROR


@pytest.mark.parametrize("seconds,warned", [(5, True), (10, False), (30, False), (120, False), (300, True)])
def test_watchdog_range(tmp_path, seconds, warned):
    from mxrc_install.pipeline.config import Config
    facts = probe.read_facts(SysRoot(build(tmp_path, Hardware())))
    ids = {f.id for f in plan.make_plan(facts, Config(watchdog_sec=seconds)).findings}
    assert ("watchdog-range" in ids) is warned


def test_boot_optimisation_off_restores_default_dependencies(tmp_path):
    from mxrc_install.pipeline.config import Config
    facts = probe.read_facts(SysRoot(build(tmp_path, Hardware())))
    dropins = plan.make_plan(facts, Config(boot_optimize=False)).dropins
    assert all("[Unit]\nDefaultDependencies=yes\n" in dropins[unit] for unit in names.SERVICES)
    assert not any("DefaultDependencies" in t for t in plan.make_plan(facts).dropins.values())


def test_live_only_adapters_are_not_asked_about_a_fixture(tmp_path, monkeypatch):
    import sys
    import types

    calls = []
    fake = types.SimpleNamespace(get_cpu_info=lambda: calls.append("cpuinfo") or {})
    monkeypatch.setitem(sys.modules, "cpuinfo", fake)
    monkeypatch.setitem(sys.modules, "pyudev", types.SimpleNamespace(Context=lambda: calls.append("udev")))
    root = SysRoot(build(tmp_path, Hardware()))
    facts = probe.with_live_details(probe.read_facts(root), root)
    assert calls == [] and facts.cpu_rt_flags is None and facts.cpu_model == "Fake CPU @ 2.0GHz"


def test_live_adapters_shape(monkeypatch):
    import sys
    import types

    from mxrc_install.pipeline import adapters
    info = {"brand_raw": "Robot CPU", "flags": ["fpu", "constant_tsc", "nonstop_tsc"]}
    monkeypatch.setitem(sys.modules, "cpuinfo", types.SimpleNamespace(get_cpu_info=lambda: info))
    device = types.SimpleNamespace(sys_name="cpu_dma_latency")
    context = types.SimpleNamespace(list_devices=lambda subsystem: [device] if subsystem == "misc" else [])
    monkeypatch.setitem(sys.modules, "pyudev", types.SimpleNamespace(Context=lambda: context))
    live = SysRoot()
    assert adapters.cpu_details(live) == {"model": "Robot CPU", "rt_flags": ["constant_tsc", "nonstop_tsc"]}
    assert adapters.udev_has_device(live, "misc", "cpu_dma_latency") is True
    assert adapters.udev_has_device(live, "misc", "nothing") is False


def test_plan_json_findings_carry_their_registered_severity(tmp_path):
    import json

    from mxrc_install.pipeline import report
    result = plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, Hardware(cpus=2)))))
    found = {f["id"]: f for f in json.loads(report.plan_json(result, {}))["findings"]}
    assert found["few-cpus"]["severity"] == "warning" and found["few-cpus"]["fix"]
