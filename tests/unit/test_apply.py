"""apply on fake machines: idempotent, atomic, owned; admin files are never touched."""

import json

import pytest
from sysroots import Hardware, build

from mxrc_install.pipeline import apply

from mxrc_install import cli

RT_DROPIN = "etc/systemd/system/mxrc-rt.service.d/50-mxrc-hardware.conf"


@pytest.fixture
def machine(tmp_path):
    return build(tmp_path, Hardware(cpus=8, numa_nodes=2, cmdline="isolcpus=6-7", preempt_rt=True))


def run(root, *args):
    return cli.main(["--root", str(root), *args])


def test_apply_writes_owned_dropins_then_changes_nothing(machine, capsys):
    assert run(machine, "apply") == 0
    text = (machine / RT_DROPIN).read_text()
    assert "CPUAffinity=6 7" in text and "NUMAMask=1" in text
    manifest = apply.parse_manifest((machine / "var/lib/mxrc-systemd/owned-files").read_text())
    units = ("mxrc-rt.service", "mxrc-nonrt.service", "mxrc-monitor.service", "mxrc.slice", "system.slice",
             "user.slice", "machine.slice", "irqbalance.service")
    assert set(manifest) == {f"/etc/systemd/system/{u}.d/50-mxrc-hardware.conf" for u in units} | {
        "/etc/systemd/system.conf.d/50-mxrc-isolation.conf"}
    assert manifest["/" + RT_DROPIN] == {apply.sha256(text)}
    assert "9 file(s) changed" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in (machine / "etc").rglob("*.conf")}
    assert run(machine, "apply") == 0
    assert "0 file(s) changed" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (machine / "etc").rglob("*.conf")}


def test_manifest_is_sha256sum_format(machine):
    run(machine, "apply")
    line = (machine / "var/lib/mxrc-systemd/owned-files").read_text().splitlines()[0]
    digest, path = line.split("  ", 1)
    assert len(digest) == 64 and path.startswith("/etc/systemd/")


def test_admin_edit_is_kept_and_reported(machine, capsys):
    run(machine, "apply")
    (machine / RT_DROPIN).write_text("[Service]\nCPUAffinity=5\n")
    (machine / "proc/cmdline").write_text("isolcpus=4-5\n")  # the plan now wants 4-5
    assert run(machine, "apply") == 2
    out = capsys.readouterr().out
    assert "[dropin-admin-owned]" in out and "changed by an admin" in out
    assert (machine / RT_DROPIN).read_text() == "[Service]\nCPUAffinity=5\n"
    # The files still ours follow the new plan.
    nonrt = (machine / "etc/systemd/system/mxrc-nonrt.service.d/50-mxrc-hardware.conf").read_text()
    assert "CPUAffinity=0 1 2 3 6 7" in nonrt
    assert run(machine, "uninstall") == 0
    assert (machine / RT_DROPIN).exists()  # still the admin's
    assert not (machine / "etc/systemd/system/mxrc-nonrt.service.d").exists()


def test_file_we_never_wrote_is_not_ours(machine, capsys):
    (machine / RT_DROPIN).parent.mkdir(parents=True)
    (machine / RT_DROPIN).write_text("# mine\n")
    assert run(machine, "apply") == 2
    assert "not written by mxrc-systemd" in capsys.readouterr().out
    assert (machine / RT_DROPIN).read_text() == "# mine\n"


def test_changed_hardware_rewrites_our_files(machine):
    run(machine, "apply")
    (machine / "proc/cmdline").write_text("isolcpus=4-5\n")
    assert run(machine, "apply") == 0
    assert "CPUAffinity=4 5" in (machine / RT_DROPIN).read_text()
    assert "NUMAMask=1" in (machine / RT_DROPIN).read_text()


def test_uninstall_purge_removes_everything_we_own(machine):
    run(machine, "config", "rt.priority=70")
    run(machine, "apply")
    assert run(machine, "uninstall", "--purge") == 0
    assert not (machine / "etc/systemd").exists() or not list((machine / "etc/systemd").rglob("*.conf"))
    assert not (machine / "var/lib/mxrc-systemd").exists()
    assert not (machine / "etc/mxrc/mxrc-systemd.conf").exists()


def test_image_root_defers_to_first_boot(tmp_path, capsys):
    # An image being built: files, but no /proc of its own to probe.
    (tmp_path / "etc").mkdir()
    assert run(tmp_path, "apply") == 0
    assert (tmp_path / "var/lib/mxrc-systemd/pending-first-boot").exists()
    assert not (tmp_path / "etc/systemd").exists()
    assert "first boot" in capsys.readouterr().out


def test_boot_check_first_boot_then_hardware_change(tmp_path, capsys):
    (tmp_path / "etc").mkdir()
    run(tmp_path, "apply")  # image build
    build(tmp_path, Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))  # first boot on a robot
    assert run(tmp_path, "boot-check") == 0
    assert "first boot" in capsys.readouterr().out
    assert not (tmp_path / "var/lib/mxrc-systemd/pending-first-boot").exists()
    assert run(tmp_path, "boot-check") == 0
    assert "hardware unchanged" in capsys.readouterr().out
    (tmp_path / "proc/cmdline").write_text("quiet\n")
    run(tmp_path, "config", "boot.reapply_on_hardware_change=no")
    assert run(tmp_path, "boot-check") == 2
    out = capsys.readouterr().out
    assert "isolcpus: '2-3' -> None" in out and "[hardware-changed]" in out
    recorded = json.loads((tmp_path / "var/lib/mxrc-systemd/hardware.json").read_text())
    assert recorded["isolcpus"] == "2-3"


def test_verify_reports_drift(machine, capsys):
    run(machine, "apply")
    assert run(machine, "verify") == 0
    (machine / "proc/cmdline").write_text("isolcpus=4-5\n")
    assert run(machine, "verify") == 1
    assert "FAIL /etc/systemd/system/mxrc-rt.service.d/50-mxrc-hardware.conf" in capsys.readouterr().out


def test_capture_makes_a_fixture_that_plans_the_same(machine, tmp_path, capsys, repo):
    # An installed robot: the shipped units plus an admin drop-in that makes an ordering loop, so the
    # plan depends on unit files as well as on /proc and /sys.
    unitdir = machine / "usr/lib/systemd/system"
    unitdir.mkdir(parents=True)
    for unit in (repo / "units").glob("mxrc*"):
        (unitdir / unit.name).write_text(unit.read_text())
    loop = machine / "etc/systemd/system/mxrc-nonrt.service.d/60-local.conf"
    loop.parent.mkdir(parents=True)
    loop.write_text("[Unit]\nAfter=mxrc-rt.service\n")
    dest = tmp_path / "captured"
    assert run(machine, "capture", str(dest)) == 0
    assert "captured" in capsys.readouterr().out
    run(machine, "plan", "--json")
    original = capsys.readouterr().out
    assert "ordering-cycle" in original
    run(dest, "plan", "--json")
    assert capsys.readouterr().out == original


def test_atomic_write_leaves_no_temp_files(tmp_path):
    apply.write_atomic(tmp_path / "d" / "f.conf", "x\n")
    apply.write_atomic(tmp_path / "d" / "f.conf", "y\n")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.conf"]
    assert (tmp_path / "d/f.conf").read_text() == "y\n"


def test_apply_with_bad_config_writes_nothing(machine, capsys):
    (machine / "etc/mxrc").mkdir(parents=True)
    (machine / "etc/mxrc/mxrc-systemd.conf").write_text("[rt]\npriority = 120\n")
    assert run(machine, "apply") == 1
    err = capsys.readouterr().err
    assert "rt.priority = '120'" in err and "1 to 99" in err
    assert not (machine / "etc/systemd").exists()


def test_file_equal_to_the_plan_is_adopted_and_uninstalled(machine, capsys):
    """An apply killed after writing a drop-in but before the manifest: the file is ours."""
    run(machine, "apply")
    text = (machine / RT_DROPIN).read_text()
    (machine / "var/lib/mxrc-systemd/owned-files").write_text("")
    assert run(machine, "apply") == 0
    assert "0 file(s) changed" in capsys.readouterr().out
    manifest = apply.parse_manifest((machine / "var/lib/mxrc-systemd/owned-files").read_text())
    assert manifest["/" + RT_DROPIN] == {apply.sha256(text)}
    assert run(machine, "uninstall") == 0
    assert not (machine / RT_DROPIN).exists()


def test_intent_lines_are_compacted_by_the_next_apply(machine):
    run(machine, "apply")
    manifest = machine / "var/lib/mxrc-systemd/owned-files"
    before = manifest.read_text()
    manifest.write_text(before + f"{'0' * 64}  /{RT_DROPIN}\n")
    assert run(machine, "apply") == 0
    assert manifest.read_text() == before


MONITOR_DROPIN = "etc/systemd/system/mxrc-monitor.service.d/50-mxrc-hardware.conf"


def test_config_apply_applies_only_a_changed_value(machine, capsys):
    """mxrc-monitor's postinst: one run that writes the answers and applies when they changed."""
    run(machine, "config", "rt.priority=70")   # mxrc-systemd's postinst wrote the file, no [monitor] lines
    conf = machine / "etc/mxrc/mxrc-systemd.conf"
    assert run(machine, "config", "--apply", "monitor.listen=0.0.0.0", "monitor.port=9558") == 0
    assert "port = 9558" in conf.read_text()          # the defaults spelled out ...
    assert not (machine / MONITOR_DROPIN).exists()    # ... change no value: nothing applied
    assert "file(s) changed" not in capsys.readouterr().out
    assert run(machine, "config", "--apply", "monitor.port=9559") == 0
    assert "--port 9559" in (machine / MONITOR_DROPIN).read_text()
    assert "file(s) changed" in capsys.readouterr().out


def test_config_apply_applies_a_mended_file(machine):
    conf = machine / "etc/mxrc/mxrc-systemd.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[monitor]\nport = 0\n")
    assert run(machine, "config", "--apply", "monitor.port=9558") == 0
    assert (machine / RT_DROPIN).exists()
