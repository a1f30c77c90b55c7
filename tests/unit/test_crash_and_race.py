"""Interruptions and races: after any kill the next apply converges and uninstall removes
everything that is ours; concurrent runs lose no manifest entry."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from sysroots import Hardware, build

from mxrc_install import cli
from mxrc_install.pipeline import apply, paths
from mxrc_install.sysroot import SysRoot

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs mxrc-systemd, dying with os._exit (no cleanup, like SIGKILL) at the Nth
# replace/unlink/write: every point where a file changes.
CRASHER = """
import os, sys
from mxrc_install import cli
count, limit = [0], int(sys.argv[1])
def crashing(real):
    def call(*args, **kwargs):
        count[0] += 1
        if count[0] == limit:
            os._exit(9)
        return real(*args, **kwargs)
    return call
for name in ("replace", "unlink", "fsync"):
    setattr(os, name, crashing(getattr(os, name)))
sys.exit(cli.main(sys.argv[2:]))
"""


def mxrc(*args, crash_at=None, check=False):
    cmd = [sys.executable, "-c", CRASHER, str(crash_at or 0), *args]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
                          check=check)


def ours_on_disk(root):
    """Every file under the root at a path mxrc-systemd may own."""
    return {"/" + str(p.relative_to(root)) for p in root.joinpath("etc").rglob("*")
            if p.is_file() and paths.ownable("/" + str(p.relative_to(root)))}


def assert_consistent(root):
    """Every file of ours on disk is vouched for by the manifest, no temp file is left behind
    by a completed run, and each manifest digest set holds the file's content."""
    owned = apply.read_manifest(SysRoot(root))
    for rel in ours_on_disk(root):
        assert rel in owned, f"orphan {rel}"
        assert apply.sha256(root.joinpath(rel.lstrip("/")).read_bytes()) in owned[rel]


def converge_and_uninstall(root):
    assert cli.main(["--root", str(root), "apply"]) == 0
    assert not [p for p in root.rglob(".*") if p.is_file() and p.name.startswith((".50-", ".owned"))]
    assert_consistent(root)
    assert cli.main(["--root", str(root), "uninstall"]) == 0
    assert not ours_on_disk(root), "orphaned file"


@pytest.fixture
def machine(tmp_path):
    return build(tmp_path / "root", Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))


@pytest.mark.spawns
@pytest.mark.parametrize("scenario", ["first-apply", "changed-plan", "uninstall"])
def test_crash_at_every_write_point(machine, scenario):
    points = 0
    for crash_at in range(1, 40):
        root = machine.parent / f"r{crash_at}"
        build(root, Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))
        if scenario != "first-apply":
            assert cli.main(["--root", str(root), "apply"]) == 0
        if scenario == "changed-plan":
            (root / "proc/cmdline").write_text("isolcpus=1-3\n")
        command = "uninstall" if scenario == "uninstall" else "apply"
        result = mxrc("--root", str(root), command, crash_at=crash_at)
        if result.returncode != 9:
            assert result.returncode == 0, result.stderr
            break       # ran to the end: every write point was crashed at
        points += 1
        assert_consistent(root)
        converge_and_uninstall(root)
    assert points >= 3


@pytest.mark.spawns
def test_sigkill_at_random_moments(machine):
    rng = random.Random(11)
    env = {**os.environ, "PYTHONPATH": REPO}
    for round_ in range(12):
        cmdline = rng.choice(["isolcpus=2-3", "isolcpus=1-3", "isolcpus=3"])
        (machine / "proc/cmdline").write_text(cmdline + "\n")
        proc = subprocess.Popen([sys.executable, "-m", "mxrc_install", "--root", str(machine),
                                 rng.choice(["apply", "apply", "uninstall"])],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert b"Traceback" not in err
        assert_consistent(machine)
    converge_and_uninstall(machine)


@pytest.mark.spawns
def test_concurrent_runs_lose_no_manifest_entry(machine):
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = []
    for i in range(6):
        args = ["apply"] if i % 2 == 0 else ["config", f"rt.priority={70 + i}"]
        procs.append(subprocess.Popen([sys.executable, "-m", "mxrc_install", "--root", str(machine), *args],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    owned = apply.read_manifest(SysRoot(machine))
    on_disk = ours_on_disk(machine)
    assert on_disk and on_disk == set(owned)
    assert_consistent(machine)
    converge_and_uninstall(machine)
