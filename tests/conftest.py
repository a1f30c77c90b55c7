"""Fixtures shared by the package and VM tests: the built .deb files."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    """package name -> .deb path, building them when no build is at hand."""
    deb_dir = Path(os.environ.get("MXRC_DEB_DIR", REPO / "build" / "debs"))
    if not list(deb_dir.glob("*.deb")):
        subprocess.run([str(REPO / "dev" / "build-deb")], check=True)
    found = {p.name.split("_")[0]: p for p in sorted(deb_dir.glob("*.deb"))}
    expected = {"mxrc-systemd", "mxrc-monitor", "mxrc-systemd-dev", "mxrc-reference"}
    assert expected <= set(found), f"missing packages in {deb_dir}: {found}"
    return found
