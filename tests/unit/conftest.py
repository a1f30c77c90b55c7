"""Unit tests never touch the host: no /proc, /sys or /run/systemd reads, no processes.

An audit hook watches every open() and process spawn while a test runs; a
test that needs a process says so with @pytest.mark.spawns.
"""

import sys
from pathlib import Path

import pytest

FORBIDDEN_PREFIXES = ("/proc", "/sys", "/run/systemd", "/dev/cpu_dma_latency")
_guard = {"active": False, "spawns": False}


def _audit(event, args):
    if not _guard["active"]:
        return
    if event == "open" and isinstance(args[0], (str, bytes, Path)):
        path = str(args[0] if not isinstance(args[0], bytes) else args[0].decode(errors="replace"))
        if path.startswith(FORBIDDEN_PREFIXES):
            raise RuntimeError(f"unit test read the host's {path}: use a SysRoot fixture")
    elif event in ("subprocess.Popen", "os.posix_spawn", "os.exec") and not _guard["spawns"]:
        raise RuntimeError(f"unit test spawned a process ({args[0]!r}); mark it @pytest.mark.spawns")


sys.addaudithook(_audit)


def pytest_configure(config):
    config.addinivalue_line("markers", "spawns: the test starts processes on purpose")


@pytest.fixture(autouse=True)
def host_guard(request):
    _guard["spawns"] = request.node.get_closest_marker("spawns") is not None
    _guard["active"] = True
    yield
    _guard["active"] = False


REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def repo():
    return REPO


@pytest.fixture
def machine(tmp_path, repo):
    """A spec robot (4 CPUs, isolcpus=2-3, PREEMPT_RT) with the shipped units installed."""
    from sysroots import Hardware, build
    root = build(tmp_path, Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))
    unitdir = root / "usr/lib/systemd/system"
    unitdir.mkdir(parents=True)
    for unit in (repo / "units").glob("mxrc*"):
        (unitdir / unit.name).write_text(unit.read_text())
    return root

