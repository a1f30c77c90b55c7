import pytest

from mxrc_install.pipeline import steps
from mxrc_install.sysroot import SysRoot


def make_step(path, body="#!/bin/sh\nexit 0\n", mode=0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(mode)


def test_admin_step_replaces_shipped_and_empty_file_masks(tmp_path):
    make_step(tmp_path / "usr/share/mxrc-systemd/postinst.d/10-a")
    make_step(tmp_path / "usr/share/mxrc-systemd/postinst.d/20-b")
    make_step(tmp_path / "usr/share/mxrc-systemd/postinst.d/30-c")
    make_step(tmp_path / "etc/mxrc/postinst.d/20-b", body="", mode=0o644)   # masked
    make_step(tmp_path / "etc/mxrc/postinst.d/30-c", body="#!/bin/sh\necho admin\n")
    make_step(tmp_path / "etc/mxrc/postinst.d/15-extra")
    make_step(tmp_path / "etc/mxrc/postinst.d/10-a.dpkg-old")
    found = steps.collect_steps(SysRoot(tmp_path))
    assert [(s.name, s.enabled) for s in found] == [
        ("10-a", True), ("15-extra", True), ("20-b", False), ("30-c", True)]
    assert found[3].path == tmp_path / "etc/mxrc/postinst.d/30-c"


@pytest.mark.spawns
def test_run_stops_at_first_failure_and_passes_root(tmp_path):
    log = tmp_path / "log"
    make_step(tmp_path / "usr/share/mxrc-systemd/postinst.d/10-ok",
              f"#!/bin/sh\necho \"ok $MXRC_ROOT $MXRC_DPKG_ACTION\" >> {log}\n")
    make_step(tmp_path / "usr/share/mxrc-systemd/postinst.d/20-fail", "#!/bin/sh\nexit 7\n")
    make_step(tmp_path / "usr/share/mxrc-systemd/postinst.d/30-never", f"#!/bin/sh\necho never >> {log}\n")
    assert steps.run_steps(SysRoot(tmp_path), {"MXRC_DPKG_ACTION": "configure"}) == 7
    assert log.read_text() == f"ok {tmp_path} configure\n"


@pytest.mark.spawns
def test_shipped_journald_step_does_nothing_in_an_image(repo, tmp_path):
    # In a chroot/image build (root != /) there is no journald to restart.
    shipped = tmp_path / "usr/share/mxrc-systemd/postinst.d"
    shipped.mkdir(parents=True)
    (shipped / "10-journald-limits").write_bytes((repo / "postinst.d/10-journald-limits").read_bytes())
    (shipped / "10-journald-limits").chmod(0o755)
    assert steps.run_steps(SysRoot(tmp_path), {}) == 0


def test_sysroot_missing_file_is_none(tmp_path):
    root = SysRoot(tmp_path)
    assert root.read_text("/proc/cmdline") is None
    assert not root.is_live and not root.systemd_running()
