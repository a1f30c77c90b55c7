"""The shipped configure steps (postinst.d) as shell scripts: what they say and that they never fail
the installation."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = REPO / "postinst.d"
NO_PROGRAM = "no MXRC program at /usr/libexec/mxrc/mxrc-rt"


def dpkg_root(tmp_path: Path, status: str) -> Path:
    (tmp_path / "var/lib/dpkg/updates").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(status)
    return tmp_path


def controller_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(STEPS / "70-controller-check")],
                          env={**os.environ, "MXRC_ROOT": str(root)},
                          capture_output=True, text=True)


def package(name: str, status: str, provides: str = "") -> str:
    extra = f"Provides: {provides}\n" if provides else ""
    return f"Package: {name}\nStatus: {status}\nVersion: 1\nArchitecture: all\n{extra}\n"


def test_controller_check_says_the_services_will_be_skipped(tmp_path):
    proc = controller_check(dpkg_root(tmp_path, package("mxrc-systemd", "install ok installed")))
    assert proc.returncode == 0
    assert NO_PROGRAM in proc.stderr and "mxrc-reference" in proc.stderr


def test_controller_check_is_quiet_with_the_programs(tmp_path):
    root = dpkg_root(tmp_path, "")
    for name in ("mxrc-rt", "mxrc-nonrt"):
        program = root / "usr/libexec/mxrc" / name
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    proc = controller_check(root)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("status, quiet", [("install ok unpacked", True), ("install ok installed", True),
                                           ("deinstall ok config-files", False)])
def test_controller_check_counts_a_provider_apt_is_installing(tmp_path, status, quiet):
    # The provider's postinst (which makes the alternatives) may run after ours in the same apt run.
    root = dpkg_root(tmp_path, package("mxrc-reference", status, provides="mxrc-controller"))
    proc = controller_check(root)
    assert proc.returncode == 0 and (NO_PROGRAM not in proc.stderr) is quiet, proc.stderr


@pytest.mark.parametrize("step, verb", [("10-journald-limits", "try-restart"),
                                        ("05-daemon-reload", "daemon-reload")])
def test_steps_tolerate_a_systemd_directory_without_a_reachable_systemd(tmp_path, step, verb):
    """A container or a chroot with the host's /run bound: /run/systemd/system exists, systemctl fails."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /run")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/called\n'
        'echo "Failed to connect to bus: No such file or directory" >&2; exit 1\n')
    (fake / "systemctl").chmod(0o755)
    script = (f"mount -t tmpfs none /run && mkdir -p /run/systemd/system && "
              f"PATH={fake}:$PATH sh {STEPS / step}")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert verb in (tmp_path / "called").read_text()
    assert "no reachable systemd" in proc.stderr
