"""What needs Debian 13 and is not a VM: trixie's lintian on a trixie build, the arm64 cross build, and
the autopkgtests that need no booted systemd (the one that does, `controller`, runs in a VM:
tests/vm/test_foundation.py).

They run in cached mmdebstrap chroots (buildchroot.py); the host's dpkg is never touched. The source
tree is copied into the build chroot, built there and the copy removed, so the cached chroot stays as
built; the autopkgtests install the packages into a throwaway overlay of the test chroot.
"""

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from buildchroot import CROSS_ARCH, REPO, ensure, run, autopkgtest_spec

EM_AARCH64 = 183


# The autopkgtests that need only the installed packages; `controller` needs a booted systemd.
CHROOT_AUTOPKGTESTS = ("superficial", "cxx-header", "unit")


def require_chroots() -> None:
    # As for the VM tests: a developer without root opts out explicitly; CI never does.
    if os.environ.get("MXRC_SKIP_CHROOT") == "1":
        pytest.skip("MXRC_SKIP_CHROOT=1: trixie chroot checks skipped on request")
    if os.geteuid() != 0:
        pytest.fail("the trixie chroot checks need root (mmdebstrap --mode=root, chroot); "
                    "run as root or set MXRC_SKIP_CHROOT=1")
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is missing: ./dev/deps installs it")


@pytest.fixture(scope="module")
def chroot() -> Path:
    require_chroots()
    return ensure()


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    """A throwaway copy-on-write view of the test chroot, with /proc (apt, autopkgtest and the
    postinst read it); unmounted and dropped afterwards, the cached chroot never changes."""
    require_chroots()
    lower = ensure(autopkgtest_spec())
    base = tmp_path_factory.mktemp("overlay")
    upper, work, merged = base / "upper", base / "work", base / "root"
    for d in (upper, work, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
        try:
            yield merged
        finally:
            subprocess.run(["umount", str(merged / "proc")], check=False)
    finally:
        subprocess.run(["umount", str(merged)], check=False)


def copy_source(root: Path, name: str) -> str:
    """The working tree, as dev/build-deb takes it, at /build/NAME/mxrc-systemd in the chroot."""
    work = root / "build" / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "mxrc-systemd").mkdir(parents=True)
    excludes = [f"--exclude={p}" for p in ("./build", "./.git", "__pycache__", ".pytest_cache", ".pybuild")]
    pack = subprocess.Popen(["tar", "-C", str(REPO), *excludes, "-cf", "-", "."], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(work / "mxrc-systemd"), "-xf", "-"], stdin=pack.stdout, check=True)
    assert pack.wait() == 0
    return f"/build/{name}"


@pytest.fixture(scope="module")
def trixie_build(chroot):
    """Source and binary packages built natively in trixie (nocheck: the tests run outside)."""
    work = copy_source(chroot, "native")
    proc = run(chroot, f"cd {work}/mxrc-systemd && "
                       "DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -Pnocheck")
    yield proc, chroot / work.lstrip("/")
    shutil.rmtree(chroot / work.lstrip("/"), ignore_errors=True)


@pytest.fixture(scope="module")
def cross_build(chroot):
    work = copy_source(chroot, "cross")
    # No nocheck: debian/rules itself must keep the build machine's tests out of a cross build.
    proc = run(chroot, f"cd {work}/mxrc-systemd && dpkg-buildpackage -us -uc -a{CROSS_ARCH} -B")
    yield proc, chroot / work.lstrip("/")
    shutil.rmtree(chroot / work.lstrip("/"), ignore_errors=True)


def test_trixie_builds_source_and_binaries(trixie_build):
    proc, out = trixie_build
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list(out.glob("*.deb"))) >= 4 and list(out.glob("*.dsc"))


def test_lintian_of_trixie_is_clean(trixie_build, chroot):
    proc, out = trixie_build
    assert proc.returncode == 0, "the build failed (see test_trixie_builds_source_and_binaries)"
    changes = next(out.glob("*.changes")).name
    # Every tag of every level: an override with its reason is the only way to silence one.
    lint = run(chroot, f"cd /{out.relative_to(chroot)} && "
                       f"lintian --pedantic -I -E --tag-display-limit 0 {changes}")
    tags = [line for line in lint.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:", "X:", "O:")]
    assert not tags, "\n".join(tags)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_arm64_cross_build_gives_an_aarch64_reference_loop(cross_build, tmp_path):
    proc, out = cross_build
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Only the architecture-dependent package: no pybuild in an arch-only build.
    assert {d.name.split("_")[0] for d in out.glob("*.deb")} <= {"mxrc-reference", "mxrc-reference-dbgsym"}
    assert "I: pybuild" not in proc.stdout + proc.stderr  # what pybuild logs whenever it runs
    assert not re.search(r"^debian/test_systemd$", proc.stdout, re.M)  # the C++ tests never run
    deb = next(out.glob(f"mxrc-reference_*_{CROSS_ARCH}.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    header = (tmp_path / "usr/libexec/mxrc-reference/mxrc-rt").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and struct.unpack_from("<H", header, 18)[0] == EM_AARCH64


@pytest.fixture(scope="module")
def autopkgtests(trixie_build, overlay):
    """debian/tests against the trixie-built packages, as autopkgtest's null runner runs them."""
    proc, out = trixie_build
    assert proc.returncode == 0, "the build failed (see test_trixie_builds_source_and_binaries)"
    (overlay / "tmp" / "debs").mkdir()
    for deb in out.glob("*.deb"):
        shutil.copy(deb, overlay / "tmp" / "debs")
    src = copy_source(overlay, "autopkgtest")
    names = " ".join(f"--test-name={t}" for t in CHROOT_AUTOPKGTESTS)
    return run(overlay, "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                        "-o Debug::NoLocking=1 /tmp/debs/*.deb >/tmp/install.log 2>&1 "
                        "|| { cat /tmp/install.log; exit 90; }; "
                        f"autopkgtest --no-built-binaries {names} --summary-file=/tmp/summary "
                        f"{src}/mxrc-systemd -- null; "
                        "rc=$?; echo '### summary'; cat /tmp/summary; exit $rc", timeout=1200)


@pytest.mark.parametrize("name", CHROOT_AUTOPKGTESTS)
def test_autopkgtest_passes_in_trixie(autopkgtests, name):
    summary = autopkgtests.stdout.rpartition("### summary")[2]
    verdict = re.search(rf"^{re.escape(name)}\s+(\S+)", summary, re.M)
    assert verdict and verdict.group(1) == "PASS", autopkgtests.stdout[-6000:] + autopkgtests.stderr[-3000:]
