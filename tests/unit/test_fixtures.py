"""Golden plans for every committed machine in tests/unit/fixtures.

MXRC_UPDATE_GOLDEN=1 rewrites expected.json and dropins/ from the current
code; review the diff before committing it.
"""

import json
import os
from pathlib import Path

import pytest

from mxrc_install.pipeline import plan, probe
from mxrc_install.sysroot import SysRoot

FIXTURES = sorted(p for p in (Path(__file__).parent / "fixtures").iterdir() if (p / "root").is_dir())


def observed(machine: Path):
    result = plan.make_plan(probe.read_facts(SysRoot(machine / "root")))
    p = result.placement
    summary = {"rt_cpus": sorted(p.rt_cpus), "nonrt_cpus": sorted(p.nonrt_cpus),
               "numa_nodes": sorted(p.numa_nodes), "cpu_quota_percent": p.cpu_quota_percent,
               "memory_max": p.memory_max, "findings": sorted(f.id for f in result.findings)}
    return summary, result.dropins


# Findings that need more than the hardware: a setting or a unit file. test_plan covers them.
NOT_FROM_HARDWARE = {"rt-cpus-invalid", "memory-max-above-ram", "watchdog-range", "ordering-cycle",
                     "requirement-cycle"}


def test_the_machines_cover_every_hardware_finding(finding_ids):
    covered = {f for m in FIXTURES for f in json.loads((m / "expected.json").read_text())["findings"]}
    assert sorted(finding_ids("pipeline/plan.py") - NOT_FROM_HARDWARE - covered) == []


def test_the_machines_cover_every_rt_cpu_rule():
    """isolcpus= wins, else the spec's 2-3, else the last CPU, else a single shared CPU."""
    plans = {m.name: json.loads((m / "expected.json").read_text()) for m in FIXTURES}
    rules = {
        "isolated": [n for n, p in plans.items() if p["rt_cpus"] not in ([2, 3],) and "rt-cpus-fallback"
                     not in p["findings"] and "rt-cpus-shared" not in p["findings"]],
        "spec 2-3": [n for n, p in plans.items() if p["rt_cpus"] == [2, 3]],
        "fallback": [n for n, p in plans.items() if "rt-cpus-fallback" in p["findings"]],
        "shared": [n for n, p in plans.items() if p["rt_cpus"] == p["nonrt_cpus"]],
    }
    assert {rule: bool(names) for rule, names in rules.items()} == {rule: True for rule in rules}


@pytest.mark.parametrize("machine", FIXTURES, ids=[p.name for p in FIXTURES])
def test_golden_plan(machine):
    summary, dropins = observed(machine)
    if os.environ.get("MXRC_UPDATE_GOLDEN") == "1":
        (machine / "expected.json").write_text(json.dumps(summary, indent=2) + "\n")
        (machine / "dropins").mkdir(exist_ok=True)
        for unit, text in dropins.items():
            (machine / "dropins" / f"{unit}.conf").write_text(text)
    assert summary == json.loads((machine / "expected.json").read_text())
    for unit, text in dropins.items():
        assert text == (machine / "dropins" / f"{unit}.conf").read_text(), unit


@pytest.mark.parametrize("machine", FIXTURES, ids=[p.name for p in FIXTURES])
def test_every_finding_says_why_and_how_to_fix(machine):
    result = plan.make_plan(probe.read_facts(SysRoot(machine / "root")))
    for finding in result.findings:
        assert finding.reason and finding.fix and finding.severity in (plan.ERROR, plan.WARNING, plan.INFO)
