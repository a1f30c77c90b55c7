"""VM fixtures: images are built once per session (and cached across runs in /var/tmp)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios  # noqa: E402
import testbed  # noqa: E402

# The VM modules, longest first (minutes under TCG, from the boot report): with
# pytest-xdist each worker takes the next module as it gets free, so the long
# ones must not be left for the end, and the fast tiers fill the gaps after.
VM_MODULES_LONGEST_FIRST = ("test_operator_tools", "test_installer", "test_foundation", "test_exporter",
                            "test_drills")


def _run_order(item) -> tuple[int, int]:
    path = Path(str(item.fspath))
    if not path.is_relative_to(Path(__file__).parent):
        return (1, 0)
    rank = VM_MODULES_LONGEST_FIRST.index(path.stem) if path.stem in VM_MODULES_LONGEST_FIRST else 99
    return (0, rank)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.vm)
    items.sort(key=_run_order)   # stable: the order within a module is kept

def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the controller, not a pytest-xdist worker
        path = Path(tempfile.gettempdir()) / f"mxrc-vm-boots-{os.getpid()}.jsonl"
        path.unlink(missing_ok=True)
        os.environ["MXRC_BOOT_LOG"] = str(path)


def pytest_terminal_summary(terminalreporter, config):
    path = Path(os.environ.get("MXRC_BOOT_LOG", "/nonexistent"))
    if hasattr(config, "workerinput") or not path.exists():
        return
    boots = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    terminalreporter.section("VM boots (seconds, slowest steps)")
    for boot in boots:
        steps = ", ".join(f"{name} {seconds:.0f}" for seconds, name in boot["slowest"])
        if boot.get("ready") is not None:   # kernel, systemd and its start-up jobs, before any step
            steps = f"to first step {boot['ready']:.0f}; {steps}"
        again = (f" ({boot['attempts'] - 1} early death(s), {boot['crashes']} kernel crash(es))"
                 if boot["attempts"] > 1 or boot["crashes"] else "")
        terminalreporter.write_line(f"{boot['seconds']:7.0f}  {boot['suite']:<22} {boot['cpus']} CPUs "
                                    f"{boot['kernel']:<3}  {boot['test']}  [{steps}]{again}")
    total = sum(b["seconds"] for b in boots)
    terminalreporter.write_line(f"{total:7.0f}  in {len(boots)} boots")


@pytest.fixture(scope="session", autouse=True)
def _vm_prerequisites():
    # A developer without root can opt out explicitly; CI never does.
    if os.environ.get("MXRC_SKIP_VM") == "1":
        pytest.skip("MXRC_SKIP_VM=1: VM tests skipped on request")
    if os.geteuid() != 0:
        pytest.fail("the VM tests need root (mmdebstrap --mode=root); run dev/test as root "
                    "or set MXRC_SKIP_VM=1 to skip them")

@pytest.fixture(scope="session")
def trixie_image():
    return testbed.build_image(testbed.ImageSpec(suite="trixie"))

@pytest.fixture(scope="session")
def bookworm_image():
    return testbed.build_image(testbed.ImageSpec(suite="bookworm"))

@pytest.fixture(scope="session")
def guest_files(debs):
    """What every VM gets on its share: the packages under test."""
    return {path.name: path for path in debs.values()}

@pytest.fixture(scope="session")
def source_tar(tmp_path_factory):
    """The source tree (as dev/build-deb takes it) for autopkgtest inside a VM."""
    target = tmp_path_factory.mktemp("source") / "mxrc-systemd-source.tar"
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(["tar", "-C", str(repo), "--exclude=./build", "--exclude=./.git", "--exclude=__pycache__",
                    "--exclude=.pytest_cache", "-cf", str(target), "."], check=True)
    return target

@pytest.fixture(scope="session")
def upgrade_debs(debs, tmp_path_factory):
    """The same packages with a higher version, to test what an upgrade does (name -> path)."""
    out = tmp_path_factory.mktemp("upgrade")
    found = {}
    for name, deb in debs.items():
        tree = out / name
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        control = tree / "DEBIAN" / "control"
        text = control.read_text()
        fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line and line[0] != " ")
        version, arch = fields["Version"], fields["Architecture"]
        text = text.replace(f"Version: {version}", f"Version: {version}+upgrade1")
        text = text.replace(f"(= {version})", f"(= {version}+upgrade1)")
        control.write_text(text)
        target = out / f"{name}_{version}+upgrade1_{arch}.deb"
        subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(tree), str(target)], check=True,
                       stdout=subprocess.DEVNULL)
        found[f"upgrade/{target.name}"] = target
    return found

@pytest.fixture(scope="session")
def fleet_image():
    """A robot as fleets run them: Debian's needrestart installed (its apt hook runs on every upgrade)."""
    # Its kernel and microcode hints are off: after every apt run they unpack each /boot kernel
    # (slow under emulation) to say that the VM did not boot the newest one; what the tests ask
    # of needrestart is which services it would restart.
    hints_off = ("mkdir -p /etc/needrestart/conf.d && printf '%s\\n' '$nrconf{kernelhints} = 0;' "
                 "'$nrconf{ucodehints} = 0;' > /etc/needrestart/conf.d/zz-mxrc-testbed.conf")
    spec = testbed.ImageSpec(suite="trixie", packages=testbed.ImageSpec().packages + testbed.FLEET_PACKAGES,
                             build_script=hints_off, flavour="fleet")
    return testbed.build_image(spec)


@pytest.fixture(scope="session")
def repositories(debs, upgrade_debs, tmp_path_factory):
    """Three states of one signed apt repository (dev/publish-repo, one throw-away key): version N,
    N+1 published over it, then N published again (a rollback with a newer Release file: pointing
    the robot back at the first state downgraded nothing). name -> directory, for the guest's share."""
    out = tmp_path_factory.mktemp("repos")
    repo = Path(__file__).resolve().parents[2]
    n, n1 = next(iter(debs.values())).parent, next(iter(upgrade_debs.values())).parent
    published = {}
    for name, deb_dir in (("repo-1", n), ("repo-2", n1), ("repo-3", n)):
        target = out / name
        if published:   # each state is the previous one changed: same key, same database
            shutil.copytree(list(published.values())[-1], target, ignore=shutil.ignore_patterns("S.*"))
            time.sleep(1.1)   # a later Date in the Release file
        subprocess.run([str(repo / "dev" / "publish-repo"), "--repo", str(target)], check=True,
                       env={**os.environ, "MXRC_DEB_DIR": str(deb_dir)}, capture_output=True)
        published[name] = target
    return published


# Every package of the source, as `apt-get install /mnt/host/files/*.deb` gives them.
ALL_PACKAGES = "mxrc-systemd mxrc-monitor mxrc-reference mxrc-systemd-dev"
# Prometheus and node_exporter are installed for the exporter scenario, which starts Prometheus itself;
# they run nowhere else (they would take the other scenarios' emulated CPU).
PEERS_DISABLED = ('systemctl --root "$1" disable prometheus.service prometheus-node-exporter.service && '
                  'for t in "$1"/usr/lib/systemd/system/prometheus-node-exporter-*.timer; do '
                  'if [ -e "$t" ]; then systemctl --root "$1" disable "${t##*/}"; fi; done')


@pytest.fixture(scope="session")
def installed_image(debs):
    """The packages under test installed at image build, with the hook the package ships (#13 item 4).

    For the scenarios that test what runs, not how it was installed (operator tools, drills,
    exporter): the robot's first boot adapts the units, as on a robot from an integrator's image,
    and an apt install under TCG (~3-4 min each) becomes one native chroot install. Installing on
    a running system is tested by test_foundation and test_installer.
    """
    spec = testbed.ImageSpec(suite="trixie",
                             packages=testbed.ImageSpec().packages + testbed.OBSERVABILITY_PACKAGES,
                             files=(*debs.values(), scenarios.IMAGE_HOOK),
                             host_script=f"{scenarios.hook_install(ALL_PACKAGES)} && {PEERS_DISABLED}",
                             flavour="installed")
    return testbed.build_image(spec)
