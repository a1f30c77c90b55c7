"""Checks on the built packages that need no VM: lintian and systemd-analyze on the shipped units."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["mxrc-rt.service", "mxrc-nonrt.service", "mxrc-monitor.service", "mxrc-failover@check.service",
            "mxrc-systemd-hardware.service", "mxrc-boot-time.service"]
UNITS = SERVICES + ["mxrc.target"]
MAX_EXPOSURE = 2.0  # the spec's "security score >= 8.0 of 10"
# Tighter where an issue asks for it: the exporter only reads (issue 5).
EXPOSURE_LIMITS = {"mxrc-monitor.service": 1.5}


@pytest.fixture(scope="module")
def installed_root(debs, tmp_path_factory) -> Path:
    """The packages unpacked into an empty root, the alternatives made as the postinst would."""
    root = tmp_path_factory.mktemp("root")
    for deb in debs.values():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for name in ("mxrc-rt", "mxrc-nonrt"):
        (root / "usr/libexec/mxrc" / name).symlink_to(f"/usr/libexec/mxrc-reference/{name}")
    return root


def test_lintian_has_no_errors(debs):
    proc = subprocess.run(["lintian", "--pedantic", "--display-info", *map(str, debs.values())],
                          capture_output=True, text=True)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert not errors, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


def override_blocks(path: Path) -> list[tuple[list[str], list[str]]]:
    """(comment lines, override lines) of each block of a lintian-overrides file."""
    blocks, comment, overrides = [], [], []
    for line in path.read_text().splitlines() + [""]:
        if line.startswith("#"):
            if overrides:
                blocks.append((comment, overrides))
                comment, overrides = [], []
            comment.append(line)
        elif line.strip():
            overrides.append(line)
        elif overrides or comment:
            blocks.append((comment, overrides))
            comment, overrides = [], []
    return blocks


OVERRIDE_FILES = sorted((REPO / "debian").glob("*lintian-overrides"))
# A wildcard may only stand for what differs between releases (/lib vs /usr/lib) or for a line number.
ALLOWED_WILDCARDS = re.compile(r"\*lib/systemd/system/[^*]+|templates:\*")


def over_wide(line: str) -> bool:
    """True when an override's tag or hint has a wildcard, or its [context] one beyond ALLOWED_WILDCARDS."""
    tag_and_hint, _, context = line.partition(" [")
    return "*" in tag_and_hint or ("*" in context and not ALLOWED_WILDCARDS.fullmatch(context.rstrip("]")))


@pytest.mark.parametrize("path", OVERRIDE_FILES, ids=lambda p: p.name)
def test_every_lintian_override_is_justified(path):
    for comment, overrides in override_blocks(path):
        assert comment, f"{path.name}: {overrides} have no comment saying why"
        reason = " ".join(comment)
        # A Debian reviewer does not have the spec: its requirement ids explain nothing.
        assert not re.search(r"\b(FR|NFR|SC)-\d+", reason), f"{path.name}: spec id as a reason: {reason}"
        for line in overrides:
            assert not over_wide(line), f"{path.name}: over-wide wildcard in {line!r}"


def test_override_blocks_parse_a_missing_reason(tmp_path):
    path = tmp_path / "x.lintian-overrides"
    path.write_text("# why\npkg: tag-a\n\npkg: tag-b\n")
    assert override_blocks(path) == [(["# why"], ["pkg: tag-a"]), ([], ["pkg: tag-b"])]


@pytest.mark.parametrize("line, wide", [
    ("p: unused-debconf-template p/* [templates:*]", True),
    ("p: unused-debconf-template p/rt_cpus [templates:*]", False),
    ("p: some-tag [*lib/systemd/system/mxrc-*.service]", True),
    ("p: some-tag [*lib/systemd/system/mxrc-rt.service]", False),
    ("p: some-tag [usr/*]", True),
])
def test_over_wide_wildcards_are_told_apart(line, wide):
    assert over_wide(line) is wide


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_silent(installed_root, unit):
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={installed_root}", unit],
                          capture_output=True, text=True)
    # verify exits 0 on warnings such as unknown keys: any output is a failure.
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_exposure_gate(installed_root, unit):
    limit = EXPOSURE_LIMITS.get(unit, MAX_EXPOSURE)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={installed_root}",
                           f"--threshold={int(limit * 10)}", "--no-pager", unit],
                          capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= limit
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_units_land_where_this_release_looks(debs):
    unitdir = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                             capture_output=True, text=True, check=True).stdout.strip()
    listing = subprocess.run(["dpkg-deb", "-c", str(debs["mxrc-systemd"])], capture_output=True,
                             text=True, check=True).stdout
    assert f".{unitdir}/mxrc-rt.service" in listing
    assert "./usr/lib/systemd/journald.conf.d/60-mxrc.conf" in listing
    assert "./usr/lib/sysusers.d/mxrc-systemd.conf" in listing


def test_upgrade_never_restarts_the_controller(debs, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(debs["mxrc-systemd"]), str(tmp_path / "ctl")], check=True)
    scripts = "".join((tmp_path / "ctl" / s).read_text() for s in ("postinst", "prerm", "postrm")
                      if (tmp_path / "ctl" / s).exists())
    for unit in ("mxrc-rt.service", "mxrc-nonrt.service"):
        for verb in ("restart", "start", "try-restart"):
            assert not re.search(rf"deb-systemd-invoke .*{verb}.*{unit}", scripts), (verb, unit)


def test_dev_package_compiles_a_program_with_pkg_config(installed_root, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PKG_CONFIG_SYSROOT_DIR": str(installed_root),
           "PKG_CONFIG_LIBDIR": str(installed_root / "usr/share/pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "mxrc-systemd"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert f"-I{installed_root}/usr/include" in flags
    source = tmp_path / "use.cpp"
    source.write_text("#include <mxrc/systemd.hpp>\n"
                      "int main() { mxrc::systemd::Heartbeat h; h.beat(); return h.count() == 1 ? 0 : 1; }\n")
    subprocess.run(["g++", "-std=c++17", *flags, str(source), "-o", str(tmp_path / "use")], check=True)
    assert subprocess.run([str(tmp_path / "use")]).returncode == 0


def test_reference_package_provides_both_programs(debs):
    listing = subprocess.run(["dpkg-deb", "-c", str(debs["mxrc-reference"])], capture_output=True,
                             text=True, check=True).stdout
    assert "./usr/libexec/mxrc-reference/mxrc-rt" in listing
    assert "./usr/libexec/mxrc-reference/mxrc-nonrt" in listing


@pytest.mark.parametrize("command", [["check", "rules", "mxrc.rules.yml"],
                                     ["test", "rules", "mxrc.rules.test.yml"],
                                     ["check", "config", "prometheus-fleet.yml"]])
def test_prometheus_rules_pass_promtool(command):
    # promtool comes with Debian's prometheus package (dev/deps installs it).
    proc = subprocess.run(["promtool", *command], cwd=REPO / "monitoring", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# The translator address is the Maintainer's, whose placeholder domain (.example)
# i18nspector rightly calls invalid; the tag goes when debian/control gets a real one.
I18NSPECTOR_ACCEPTED = {"invalid-last-translator"}


def test_i18nspector_is_clean_on_the_debconf_translations():
    po = REPO / "debian/po"
    proc = subprocess.run(["i18nspector", str(po / "ko.po"), str(po / "templates.pot")],
                          capture_output=True, text=True, check=True)
    tags = [line for line in proc.stdout.splitlines() if line.split()[2] not in I18NSPECTOR_ACCEPTED]
    assert not tags, proc.stdout


def run_with_systemd_dir(tmp_path, script: str, *args: str) -> str:
    """Run a maintainer script with /run/systemd/system present (a private /run) and a recording
    deb-systemd-invoke; what it was asked to do."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /run")
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for tool in ("deb-systemd-invoke", "deb-systemd-helper", "systemctl", "py3clean"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls\n')
        (fake / tool).chmod(0o755)
    (tmp_path / "calls").write_text("")
    shell = (f"mount -t tmpfs none /run && mkdir -p /run/systemd/system && "
             f"PATH={fake}:$PATH sh -e {script} \"$@\"")
    subprocess.run(["unshare", "--mount", "sh", "-c", shell, "sh", *args], check=True)
    return (tmp_path / "calls").read_text()


@pytest.mark.parametrize("action, stops", [("remove", True), ("upgrade", False), ("deconfigure", False)])
def test_prerm_stops_the_controller_only_on_remove(debs, tmp_path, action, stops):
    subprocess.run(["dpkg-deb", "-e", str(debs["mxrc-systemd"]), str(tmp_path / "ctl")], check=True)
    calls = run_with_systemd_dir(tmp_path, str(tmp_path / "ctl/prerm"), action, "0.1.0")
    stopped = re.search(r"deb-systemd-invoke stop .*mxrc-rt\.service", calls) is not None
    assert stopped is stops and "start" not in calls, calls
    if stops:
        assert "mxrc-nonrt.service" in calls and "mxrc.target" in calls


def test_rules_clean_removes_what_a_build_leaves(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns("build", ".git", "__pycache__"))
    for leftover in ("mxrc_systemd.egg-info", ".pybuild/cpython3_3.11", "build/lib/mxrc_install"):
        (src / leftover).mkdir(parents=True)
    (src / "debian/test_systemd").write_text("")
    subprocess.run(["fakeroot", "debian/rules", "clean"], cwd=src, check=True, capture_output=True)
    assert not [p for p in ("mxrc_systemd.egg-info", ".pybuild", "build", "debian/test_systemd")
                if (src / p).exists()]
