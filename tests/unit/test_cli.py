import subprocess
import sys
from pathlib import Path

import pytest
from sysroots import Hardware, build

from mxrc_install import cli


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("configure", "steps", "failover"):
        assert command in out


def test_bad_root_is_named_with_the_fix(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert cli.main(["--root", str(missing), "steps"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert str(missing) in err and "--root" in err


def test_steps_lists_from_root(tmp_path, capsys):
    step = tmp_path / "usr/share/mxrc-systemd/postinst.d/10-x"
    step.parent.mkdir(parents=True)
    step.write_text("#!/bin/sh\n")
    step.chmod(0o755)
    assert cli.main(["--root", str(tmp_path), "steps"]) == 0
    assert "10-x" in capsys.readouterr().out


def test_probe_and_plan_on_a_fake_machine(tmp_path, capsys):
    import json

    from sysroots import Hardware, build
    build(tmp_path, Hardware(cpus=8, numa_nodes=2, cmdline="isolcpus=6-7"))
    assert cli.main(["--root", str(tmp_path), "probe"]) == 0
    assert "isolcpus" in capsys.readouterr().out
    assert cli.main(["--root", str(tmp_path), "probe", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["numa_nodes"] == {"0": [0, 1, 2, 3], "1": [4, 5, 6, 7]}
    # Not PREEMPT_RT: a warning, so exit 2; the plan writes nothing.
    assert cli.main(["--root", str(tmp_path), "plan"]) == cli.EXIT_WARNINGS
    out = capsys.readouterr().out
    assert "create /etc/systemd/system/mxrc-rt.service.d/50-mxrc-hardware.conf" in out
    assert "+CPUAffinity=6 7" in out and "[kernel-not-rt]" in out
    assert not (tmp_path / "etc/systemd/system").exists()
    assert cli.main(["--root", str(tmp_path), "plan", "--json"]) == cli.EXIT_WARNINGS
    data = json.loads(capsys.readouterr().out)
    assert data["placement"]["rt_cpus"] == [6, 7] and data["placement"]["numa_nodes"] == [1]


@pytest.mark.parametrize("argv,message", [
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["probe", "--jsn"], "unrecognized arguments: --jsn"),
    (["failover"], "the following arguments are required: unit"),
])
def test_usage_errors_exit_1_not_the_warning_code(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == cli.EXIT_ERROR
    assert message in capsys.readouterr().err


# Imports are most of what boot-check costs on the boot's critical path
# (seconds on a slow CPU): with the hardware unchanged it loads neither the
# operator tools nor the planning and writing half of the pipeline.
BOOT_CHECK_IMPORTS = """
import sys
from mxrc_install import cli
rc = cli.main(["--root", sys.argv[1], "boot-check"])
heavy = ("urllib.request", "http.client", "distro", "configparser", "hashlib", "tempfile", "subprocess")
pipeline = ("commands", "plan", "render", "apply", "expected", "activate", "config")
print(rc, sorted(m for m in sys.modules if m.startswith("mxrc_install.ops") or m in heavy
                 or m in [f"mxrc_install.pipeline.{p}" for p in pipeline]))
"""


@pytest.mark.spawns
def test_boot_check_imports_only_what_comparing_the_hardware_takes(tmp_path):
    build(tmp_path, Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))
    assert cli.main(["--root", str(tmp_path), "apply"]) == 0
    out = subprocess.run([sys.executable, "-c", BOOT_CHECK_IMPORTS, str(tmp_path)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.splitlines()[-1] == "0 []", out
