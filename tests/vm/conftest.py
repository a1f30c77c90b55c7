"""VM fixtures: images are built once per session (and cached across runs in /var/tmp)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testbed  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.vm)


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
    """What every VM gets on its share: the packages and the test stand-in for MXRC's programs."""
    files = {path.name: path for path in debs.values()}
    files["fake-mxrc-process"] = FIXTURES / "fake-mxrc-process"
    return files
