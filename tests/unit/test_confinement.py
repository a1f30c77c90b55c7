"""Confinement: whatever the manifest says, apply, uninstall and the postrm touch only our files."""

import os
import subprocess

import pytest
from sysroots import Hardware, build

from mxrc_install import cli
from mxrc_install.pipeline import apply, paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POSTRM = os.path.join(REPO, "debian/mxrc-systemd.postrm")
MANIFEST = "var/lib/mxrc-systemd/owned-files"

# Paths a manifest line may name; the Python table and the postrm must agree on each.
CORPUS = {
    "/etc/systemd/system/mxrc-rt.service.d/50-mxrc-hardware.conf": True,
    "/etc/systemd/system/system.slice.d/50-mxrc-hardware.conf": True,
    "/etc/systemd/system/irqbalance.service.d/50-mxrc-hardware.conf": True,
    "/etc/systemd/system/mxrc-failover@x.service.d/50-mxrc-hardware.conf": True,
    "/etc/systemd/system.conf.d/50-mxrc-isolation.conf": True,
    "/etc/default/grub.d/60-mxrc.cfg": True,
    "/etc/fstab": False,
    "/../somewhere/file": False,
    "/etc/systemd/system/../../fstab": False,
    "/etc/systemd/system/mxrc-rt.service.d/../../../fstab": False,
    "/etc/systemd/system/a/b.d/50-mxrc-hardware.conf": False,
    "/etc/systemd/system/.d/50-mxrc-hardware.conf": False,
    "/etc/systemd/system/mxrc-rt.service/50-mxrc-hardware.conf": False,
    "/etc/systemd/system/mxrc-rt.service.d/60-local.conf": False,
    "/etc/systemd/system.conf.d/50-mxrc-a.b.conf": False,
    "/etc/systemd/system.conf.d/50-mxrc-.conf": False,
    "/etc/systemd/system.conf.d/99-admin.conf": False,
    "/etc/default/grub": False,
    "/etc/default/grub.d/60-mxrc.cfg/../../grub": False,
    "/etc/systemd/system/x y.d/50-mxrc-hardware.conf": False,
    "//etc/default/grub.d/60-mxrc.cfg": False,
    "/etc/systemd/system/./mxrc-rt.service.d/50-mxrc-hardware.conf": False,
    "etc/default/grub.d/60-mxrc.cfg": False,
    "/var/lib/mxrc-systemd/owned-files": False,
}


@pytest.mark.parametrize("path, expected", sorted(CORPUS.items()))
def test_python_table(path, expected):
    assert (paths.ownable(path) is not None) == expected


@pytest.mark.spawns
def test_postrm_applies_the_same_table():
    script = (". ./debian/mxrc-systemd.postrm; "
              "for p in \"$@\"; do if ownable \"$p\"; then echo \"$p\"; fi; done")
    out = subprocess.run(["sh", "-c", script, "test", *CORPUS], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert set(out) == {p for p, ok in CORPUS.items() if ok}


@pytest.fixture
def machine(tmp_path):
    return build(tmp_path / "root", Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))


def tamper(root, victim, target_line):
    """Add a manifest line naming `target_line` with the real hash of `victim`."""
    line = f"{apply.sha256(victim.read_bytes())}  {target_line}\n"
    with open(root / MANIFEST, "a") as f:
        f.write(line)


@pytest.mark.parametrize("line", ["/../outside", "/etc/fstab", "/etc/systemd/system/../../etc/fstab"])
@pytest.mark.parametrize("command", [["apply"], ["uninstall"], ["uninstall", "--purge"]])
def test_tampered_manifest_deletes_nothing_outside(machine, tmp_path, caplog, line, command):
    assert cli.main(["--root", str(machine), "apply"]) == 0
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    fstab = machine / "etc/fstab"
    fstab.write_text("/dev/sda1 / ext4\n")
    tamper(machine, outside if "outside" in line else fstab, line)
    assert cli.main(["--root", str(machine), *command]) == 0
    assert outside.read_text() == "precious\n" and fstab.read_text() == "/dev/sda1 / ext4\n"
    assert "outside the files mxrc-systemd may own" in caplog.text


@pytest.mark.spawns
def test_postrm_purge_deletes_nothing_outside(machine, tmp_path):
    assert cli.main(["--root", str(machine), "apply"]) == 0
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    fstab = machine / "etc/fstab"
    fstab.write_text("/dev/sda1 / ext4\n")
    tamper(machine, outside, "/../outside")
    tamper(machine, fstab, "/etc/fstab")
    result = subprocess.run(["sh", POSTRM, "purge"], env={**os.environ, "DPKG_ROOT": str(machine)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert outside.exists() and fstab.exists()
    assert not list((machine / "etc/systemd/system").rglob("50-mxrc-hardware.conf"))
    assert "ignoring /etc/fstab" in result.stderr


def test_symlinked_dropin_dir_is_not_followed(machine, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    unitdir = machine / "etc/systemd/system"
    unitdir.mkdir(parents=True)
    (unitdir / "mxrc-rt.service.d").symlink_to(elsewhere)
    assert cli.main(["--root", str(machine), "apply"]) == 2
    assert list(elsewhere.iterdir()) == []
    assert "symlink" in capsys.readouterr().out


def test_symlinked_state_dir_is_refused(machine, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (machine / "var/lib").mkdir(parents=True, exist_ok=True)
    (machine / "var/lib/mxrc-systemd").symlink_to(elsewhere)
    assert cli.main(["--root", str(machine), "apply"]) == 1
    assert list(elsewhere.iterdir()) == []
    assert "is a symlink" in capsys.readouterr().err
