"""Golden plans for every committed machine in tests/unit/fixtures.

`python3 tests/unit/make_fixtures.py --golden` rewrites expected.json and dropins/ from the current
code; review the diff before committing it. The test itself only compares.
"""

import json
from pathlib import Path

import pytest
from sysroots import golden_plan

from mxrc_install import findings
from mxrc_install.pipeline import fingerprint, plan, probe
from mxrc_install.sysroot import SysRoot

FIXTURES = sorted(p for p in (Path(__file__).parent / "fixtures").iterdir() if (p / "root").is_dir())


# Findings that need more than the hardware: a setting or a unit file (test_plan covers them), or that
# apply and boot-check print rather than plan (test_apply).
NOT_FROM_HARDWARE = {"rt-cpus-invalid", "memory-max-above-ram", "watchdog-range", "ordering-cycle",
                     "requirement-cycle", "dropin-admin-owned", "hardware-changed"}


def test_the_machines_cover_every_hardware_finding():
    covered = {f for m in FIXTURES for f in json.loads((m / "expected.json").read_text())["findings"]}
    assert sorted(set(findings.REGISTRY) - NOT_FROM_HARDWARE - covered) == []


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
    summary, dropins = golden_plan(machine)
    assert summary == json.loads((machine / "expected.json").read_text())
    for unit, text in dropins.items():
        assert text == (machine / "dropins" / f"{unit}.conf").read_text(), unit
    assert sorted(p.name for p in (machine / "dropins").iterdir()) == sorted(f"{u}.conf" for u in dropins)


@pytest.mark.parametrize("machine", FIXTURES, ids=[p.name for p in FIXTURES])
def test_every_finding_says_why_and_how_to_fix(machine):
    result = plan.make_plan(probe.read_facts(SysRoot(machine / "root")))
    for finding in result.findings:
        assert finding.reason and finding.fix and finding.severity in (plan.ERROR, plan.WARNING, plan.INFO)


@pytest.mark.parametrize("machine", FIXTURES, ids=lambda p: p.name)
def test_the_boot_check_reads_the_fingerprint_apply_records(machine):
    """boot-check reads only the files a fingerprint is made of; it must come to what apply records
    from the full probe, or every boot would look like new hardware."""
    root = SysRoot(machine / "root")
    assert fingerprint.read(root) == fingerprint.from_facts(probe.read_facts(root))
