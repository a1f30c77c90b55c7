"""Debian trixie chroots for the checks the host's release cannot do: trixie's lintian and the arm64
cross build (the build chroot), and the autopkgtests that need no booted systemd (the test chroot:
the packages' and the tests' dependencies, nothing to build with).

The chroot is made with mmdebstrap and cached under /var/tmp, keyed by everything that goes into it
(suite, architectures, package list, mirror), so a rerun costs nothing and a change of debian/control's
Build-Depends makes a new one. It is built beside its cache entry and renamed into place, so an
interrupted build never looks cached. The host's dpkg is never touched: everything runs under chroot(8).

    python3 tests/package/buildchroot.py build [--tests]  # build (or reuse) one, print its directory
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_ROOT = Path(os.environ.get("MXRC_CHROOT_CACHE", "/var/tmp/mxrc-chroots"))
# Bump when the way the chroot is put together changes in a way the key does not capture.
CHROOT_FORMAT = 1
SUITE = "trixie"
CROSS_ARCH = "arm64"
# The arm64 C libraries besides the cross compiler: dpkg-shlibdeps reads them for the Depends.
TOOLS = ("lintian", "fakeroot", "crossbuild-essential-arm64", "libc6:arm64", "libstdc++6:arm64")


def build_depends(control: Path) -> list[str]:
    """Package names of the source's Build-Depends(-Indep) for a nocheck build (first alternative)."""
    text = control.read_text()
    fields = re.findall(r"^Build-Depends(?:-Indep)?:(.*?)(?=^\S)", text, re.S | re.M)
    names = []
    for relation in " ".join(fields).replace("\n", " ").split(","):
        relation = relation.strip()
        if not relation or "<!nocheck>" in relation:
            continue
        first = relation.split("|")[0].strip()
        names.append(re.split(r"[\s(\[<]", first, maxsplit=1)[0].removesuffix(":native"))
    return names


def runtime_depends(control: Path, tests_control: Path) -> list[str]:
    """What the binary packages and debian/tests need from the archive (first alternatives; our own
    packages, substvars and Recommends left out): the test chroot has no network for apt to use."""
    ours = set(re.findall(r"^Package:\s*(\S+)", control.read_text(), re.M))
    fields = [f for text in (control.read_text(), tests_control.read_text())
              for f in re.findall(r"^Depends:(.*?)(?=^\S|\Z)", text, re.S | re.M)]
    names = set()
    for relation in " ".join(fields).replace("\n", " ").split(","):
        first = relation.split("|")[0].strip()
        name = re.split(r"[\s(\[<:]", first, maxsplit=1)[0]
        if name and not name.startswith("$") and name not in ours:
            names.add(name)
    return sorted(names)


def host_mirror() -> str:
    sys.path.insert(0, str(REPO / "tests" / "vm"))
    import testbed  # the VM test bed's library: the same mirror as the VM images

    return testbed.host_mirror()


@dataclasses.dataclass(frozen=True)
class ChrootSpec:
    suite: str = SUITE
    architectures: tuple[str, ...] = ("amd64", CROSS_ARCH)
    packages: tuple[str, ...] = ()
    mirror: str = ""
    variant: str = "buildd"
    # Names the chroot in the cache, so chroots of different purposes live side by side.
    flavour: str = ""

    def key(self) -> str:
        material = [CHROOT_FORMAT, self.suite, self.architectures, sorted(set(self.packages)), self.mirror]
        if self.variant != "buildd":   # the first variant: its chroots keep the keys they had
            material.append(self.variant)
        material = json.dumps(material)
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.suite + (f"-{self.flavour}" if self.flavour else "")

    @property
    def directory(self) -> Path:
        return CACHE_ROOT / f"{self.name}-{self.key()}"


def default_spec() -> ChrootSpec:
    packages = tuple(build_depends(REPO / "debian" / "control")) + TOOLS
    return ChrootSpec(packages=packages, mirror=host_mirror())


def autopkgtest_spec() -> ChrootSpec:
    """The chroot the autopkgtests run in: autopkgtest's null runner and every dependency."""
    # dpkg-dev: autopkgtest reads an unbuilt source tree with it.
    packages = ("autopkgtest", "dpkg-dev", *runtime_depends(REPO / "debian" / "control",
                                                REPO / "debian" / "tests" / "control"))
    return ChrootSpec(architectures=("amd64",), packages=packages, mirror=host_mirror(), variant="minbase",
                      flavour="autopkgtest")


def ensure(spec: ChrootSpec | None = None) -> Path:
    """The chroot's directory, built first when it is not cached (one builder at a time)."""
    spec = spec or default_spec()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (spec.directory / ".complete").exists():
            return spec.directory
        _build(spec)
    return spec.directory


def _build(spec: ChrootSpec) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}-build-", dir=CACHE_ROOT))
    rootfs = work / "root"
    started = time.monotonic()
    cmd = ["mmdebstrap", f"--variant={spec.variant}", "--mode=root", "--format=directory",
           "--architectures=" + ",".join(spec.architectures),
           "--include=" + ",".join(sorted(set(spec.packages))),
           '--aptopt=Acquire::Retries "3"',
           "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
           spec.suite, str(rootfs), spec.mirror]
    with open(work / "build.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (work / "build.log").read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}); see {work}/build.log:\n"
                           + "\n".join(tail))
    (rootfs / ".complete").write_text(json.dumps({"key": spec.key(), "packages": sorted(spec.packages),
                                                  "built_seconds": round(time.monotonic() - started)}))
    if spec.directory.exists():
        shutil.rmtree(spec.directory)
    rootfs.rename(spec.directory)
    shutil.rmtree(work, ignore_errors=True)
    for other in CACHE_ROOT.glob(f"{spec.name}-*"):
        # same suite and purpose, other inputs: stale (each is several hundred MB)
        if other != spec.directory and len(other.name) == len(spec.directory.name):
            shutil.rmtree(other, ignore_errors=True)


def run(root: Path, script: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run a shell script as root inside the chroot, in a clean environment."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    return subprocess.run(["chroot", str(root), "/bin/sh", "-ec", script], env=env, capture_output=True,
                          text=True, timeout=timeout)


if __name__ == "__main__":
    if sys.argv[1:] not in (["build"], ["build", "--tests"]):
        sys.exit("usage: buildchroot.py build [--tests]")
    print(ensure(autopkgtest_spec() if "--tests" in sys.argv else None))
