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
    files = {path.lstrip("/").replace("/", "_"): text for path, text in result.files.items()}
    return summary, result.dropins | files


def test_there_are_enough_machines():
    assert len(FIXTURES) >= 10


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
    assert sorted(p.name for p in (machine / "dropins").iterdir()) == sorted(f"{u}.conf" for u in dropins)


@pytest.mark.parametrize("machine", FIXTURES, ids=[p.name for p in FIXTURES])
def test_every_finding_says_why_and_how_to_fix(machine):
    result = plan.make_plan(probe.read_facts(SysRoot(machine / "root")))
    for finding in result.findings:
        assert finding.reason and finding.fix and finding.severity in (plan.ERROR, plan.WARNING, plan.INFO)
