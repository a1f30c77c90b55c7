"""dev/record-suite-time: the suite's times as README quotes them, from a dev/test log."""

import importlib.machinery
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "dev" / "record-suite-time"

LOG = """\
==> pytest: unit, package and VM tests (2 worker(s))
====================== VM boots (seconds, slowest steps) =======================
     80  trixie-installed-custom 4 CPUs std  tests/vm/test_a.py::test_x  [to first step 60; doctor 8]
    257  trixie-installed-custom 4 CPUs rt   tests/vm/test_a.py::test_x  [to first step 59; jitter 19] \
(0 early death(s), 1 kernel crash(es))
    252  trixie                 4 CPUs std  tests/vm/test_b.py::test_y  [to first step 56; purge 30] \
(2 early death(s), 0 kernel crash(es))
   589  in 3 boots
============================= slowest 12 durations =============================
520.65s setup    tests/vm/test_b.py::test_y
====================== 7 passed in 600.50s (0:10:00) =======================
CI_WALL_SECONDS=650
"""


def load():
    loader = importlib.machinery.SourceFileLoader("record_suite_time", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_boots_keep_what_emulation_cost_again(tmp_path):
    log, out = tmp_path / "test.log", tmp_path / "out.json"
    log.write_text(LOG)
    assert load().main(str(log), str(tmp_path / "no-junit.xml"), out) == 0
    result = json.loads(out.read_text())
    assert (result["outcome"], result["pytest_seconds"], result["ci_run_seconds"]) == ("7 passed", 600.5, 650)
    assert (result["vm_boots"], result["vm_boot_seconds_total"], result["workers"]) == (3, 589, 2)
    assert [(b["seconds"], b.get("early_deaths"), b.get("kernel_crashes")) for b in result["boots"]] == [
        (80.0, None, None), (257.0, 0, 1), (252.0, 2, 0)]
    assert result["vm_scenarios"] == [{"seconds": 520.65, "test": "tests/vm/test_b.py::test_y"}]
