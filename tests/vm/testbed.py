"""A real-systemd test bed: Debian images built with mmdebstrap, booted with qemu.

The sandbox that runs our tests does not have systemd as PID 1, so every
acceptance scenario runs inside a VM.  This module builds the images (cached
under /var/tmp, keyed by everything that goes into them), boots them with a
chosen CPU count, NUMA layout, kernel flavour and kernel command line, runs a
list of steps inside as root and hands back each step's output and exit code,
plus the guest's journal.

It is used by pytest (tests/vm/conftest.py) and by the demo (dev/demo), and can
be driven by hand:

    python3 tests/vm/testbed.py build --suite trixie
    python3 tests/vm/testbed.py run --suite trixie --cpus 4 --append isolcpus=2-3 -- 'systemctl status'
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("testbed")

CACHE_ROOT = Path(os.environ.get("MXRC_TESTBED_CACHE", "/var/tmp/mxrc-testbed"))
GUEST_DIR = Path(__file__).resolve().parent / "guest"

# Bump when the way an image is put together changes in a way the inputs
# below do not capture.
IMAGE_FORMAT = 5

BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "kmod", "initramfs-tools",
    "linux-image-amd64", "linux-image-rt-amd64", "zstd",
    "procps", "iproute2", "python3", "rt-tests", "numactl",
    "rtla",   # `mxrc-systemd jitter --tool timerlat` measures for real (#10)
)

# Runtime dependencies of the packages under test: the guest has no network,
# so apt must find them already installed.
PACKAGE_DEPENDENCIES = (
    "python3-prometheus-client", "python3-jeepney", "python3-systemd",
    "python3-distro", "python3-cpuinfo", "python3-pyudev",
    "python3-bcrypt", "python3-yaml",   # mxrc-monitor's --web.config.file
)

# debian/tests' `controller` runs inside a VM with autopkgtest's null runner
# (the other autopkgtests need no booted systemd and run natively in a chroot:
# tests/package). The guest has no network, so the runner is in the image;
# dpkg-dev: autopkgtest runs on an unbuilt source tree.
AUTOPKGTEST_PACKAGES = ("autopkgtest", "dpkg-dev")

# The peers the exporter is judged against (tests/vm/test_exporter.py, bench/):
# a real Prometheus server and node_exporter's systemd collector.
OBSERVABILITY_PACKAGES = ("prometheus", "prometheus-node-exporter")

# A fleet's robot: Debian's needrestart, whose apt hook runs after every upgrade
# (#12: it must never restart an MXRC unit).
FLEET_PACKAGES = ("needrestart",)

# Things a robot image would not carry: documentation, man pages, locales.
PATH_EXCLUDES = (
    "/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*",
    "/usr/share/info/*", "/usr/share/lintian/*",
)
PATH_INCLUDES = ("/usr/share/doc/*/copyright",)

# The guest side of the harness: a unit that starts only when the kernel
# command line asks for it, mounts the host's share and runs what is there.
RUNNER_UNIT = """\
[Unit]
Description=mxrc test bed runner
ConditionKernelCommandLine=mxrc.testbed=1
After=local-fs.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=simple
ExecStartPre=/bin/mkdir -p /mnt/host
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /mnt/host
ExecStart=/bin/sh /mnt/host/boot.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

# Multi-threaded TCG races with the kernel patching its own code across CPUs
# (text_poke_bp's int3): a vCPU runs the int3 after its handler is gone and the
# guest dies with "Oops: int3" (seen in update_curr and sched_clock_cpu). The
# scheduler's static keys flip whenever the first CPU quota appears or the last
# goes (CPUQuota= of mxrc-rt, started and stopped all the time here): a quota
# held from early boot to power-off keeps __cfs_bandwidth_used on, so it never
# flips. 10000 % never throttles anything on these machines.
KEYS_UNIT = """\
[Unit]
Description=mxrc test bed: keeps the CFS bandwidth static key on (see testbed.py)
DefaultDependencies=no
Before=sysinit.target

[Service]
ExecStart=/bin/sleep infinity
CPUQuota=10000%

[Install]
WantedBy=sysinit.target
"""

# Only what is needed to find and mount the root disk and the share.
INITRAMFS_HOOK = """\
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk virtio_console ext4 crc32c_generic; do manual_add_modules "$m"; done
"""

# Services a test VM does not want competing for its emulated CPUs.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "fstrim.timer", "systemd-timesyncd.service", "man-db.timer",
    "dpkg-db-backup.timer", "getty@tty1.service",
    "modprobe@drm.service", "modprobe@efi_pstore.service",   # no display, no EFI (-kernel boot)
)

# Drivers for parts of the emulated q35 machine that no test uses. udev loaded them at every boot,
# seconds of emulated CPU each (a module's relocation and signature check) beside the first steps:
# the ICH9's AHCI (no disk on it; its IRQ came late and once surprised the purge check), SMBus,
# LPC and watchdog, the PC speaker, nested KVM (-cpu max offers SVM), a cpufreq driver that finds
# nothing to drive, and the kernel's AES (TLS in the tests is OpenSSL's own).
UNUSED_DRIVERS = ("ahci", "i2c_i801", "lpc_ich", "iTCO_wdt", "pcspkr", "kvm_amd", "kvm_intel",
                  "powernow_k8", "aesni_intel")

# Done at image build what a booted copy of the image would otherwise redo at every first boot
# (trixie's ConditionNeedsUpdate= units: /usr is newer than /etc/.updated): the linker cache, the
# journal's catalog, then the stamp that says both are current (bookworm's systemd has no such units).
UPDATES_DONE = ("chroot \"$1\" ldconfig && chroot \"$1\" journalctl --update-catalog && "
                "if [ -x \"$1/usr/lib/systemd/systemd-update-done\" ]; then "
                "chroot \"$1\" /usr/lib/systemd/systemd-update-done; fi")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    suite: str = "trixie"
    packages: tuple[str, ...] = BASE_PACKAGES + PACKAGE_DEPENDENCIES + AUTOPKGTEST_PACKAGES
    mirror: str = ""
    # An image build as an integrator does it: these files are copied into the
    # chroot's /tmp/image-files and `build_script` runs there (no running
    # systemd, the build host's /proc), e.g. a preseeded apt install.
    files: tuple[Path, ...] = ()
    build_script: str = ""
    # The same, as a host-side mmdebstrap customize hook ("$1" is the chroot),
    # e.g. the image-builder hook the package ships.
    host_script: str = ""
    # Names the image in the cache, so images with different package sets
    # live side by side instead of pruning each other as stale.
    flavour: str = ""

    def resolved_mirror(self) -> str:
        return self.mirror or host_mirror()

    def key(self) -> str:
        material = json.dumps(
            [IMAGE_FORMAT, self.suite, sorted(self.packages), self.resolved_mirror(),
             RUNNER_UNIT, KEYS_UNIT, INITRAMFS_HOOK, MASKED_UNITS, UNUSED_DRIVERS, UPDATES_DONE,
             PATH_EXCLUDES, self.build_script,
             self.host_script,
             [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in self.files]],
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    @property
    def kind(self) -> str:
        custom = self.build_script or self.host_script
        return (f"-{self.flavour}" if self.flavour else "") + ("-custom" if custom else "")

    @property
    def directory(self) -> Path:
        return CACHE_ROOT / f"{self.suite}{self.kind}-{self.key()}"


@dataclasses.dataclass(frozen=True)
class Image:
    spec: ImageSpec
    disk: Path
    kernels: dict  # flavour ("std" or "rt") -> (vmlinuz, initrd)


def host_mirror() -> str:
    """The Debian mirror the host's apt uses, so the VM needs no other network."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def run_logged(cmd: list[str], logfile: Path, **kw) -> None:
    log.info("$ %s", shlex.join(cmd))
    with open(logfile, "ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{cmd[0]} failed with {proc.returncode}; see {logfile}:\n" + "\n".join(tail))


def build_image(spec: ImageSpec) -> Image:
    """Build (or reuse) the image for `spec`; concurrent callers (pytest-xdist workers) wait for one build."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f".lock-{spec.suite}{spec.kind}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        image = load_image(spec)
        if image:
            log.info("image %s: cached", spec.directory)
            return image
        return _build_image(spec)


def _build_image(spec: ImageSpec) -> Image:
    target = spec.directory
    # Built beside the cache entry and renamed into place, so an interrupted
    # build never looks like a cached image.
    work = Path(tempfile.mkdtemp(prefix=f".{spec.suite}-build-", dir=CACHE_ROOT))
    logfile = work / "build.log"
    rootfs = work / "rootfs"
    started = time.monotonic()
    hooks = _customize_commands()
    if spec.files:
        hooks.append("mkdir -p \"$1/tmp/image-files\"")
        hooks.append("copy-in " + " ".join(str(Path(f).resolve()) for f in spec.files) + " /tmp/image-files")
    if spec.build_script:
        hooks.append(f"chroot \"$1\" /bin/sh -ec {shlex.quote(spec.build_script)}")
    if spec.host_script:
        hooks.append(spec.host_script)
    if spec.files:
        hooks.append("rm -rf \"$1/tmp/image-files\"")
    hooks.append(UPDATES_DONE)   # last: after whatever the spec installed into /usr
    cmd = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
        "--include=" + ",".join(spec.packages),
        "--aptopt=Acquire::Retries \"3\"",
        "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/hooks\" \"$1/etc/initramfs-tools/conf.d\"",
        "--essential-hook=printf 'MODULES=list\\nCOMPRESS=zstd\\n' > "
        "\"$1/etc/initramfs-tools/conf.d/mxrc-testbed.conf\"",
        f"--essential-hook=cat > \"$1/etc/initramfs-tools/hooks/mxrc-testbed\" <<'EOF'\n{INITRAMFS_HOOK}EOF",
        "--essential-hook=chmod 755 \"$1/etc/initramfs-tools/hooks/mxrc-testbed\"",
    ]
    cmd += [f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES]
    cmd += [f"--dpkgopt=path-include={p}" for p in PATH_INCLUDES]
    cmd += [f"--customize-hook={h}" for h in hooks]
    cmd += [spec.suite, str(rootfs), spec.resolved_mirror()]
    run_logged(cmd, logfile)

    kernels = {}
    for vmlinuz in sorted((rootfs / "boot").glob("vmlinuz-*")):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        flavour = "rt" if "-rt-" in version else "std"
        shutil.copy(vmlinuz, work / vmlinuz.name)
        shutil.copy(rootfs / "boot" / f"initrd.img-{version}", work / f"initrd.img-{version}")
        kernels[flavour] = (vmlinuz.name, f"initrd.img-{version}")
    if set(kernels) != {"std", "rt"}:
        raise RuntimeError(f"expected a standard and an RT kernel in the image, found {kernels}")

    size_mib = _du_mib(rootfs) + 1536
    run_logged(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(work / "rootfs.img"),
                f"{size_mib}M"], logfile)
    shutil.rmtree(rootfs)
    (work / "image.json").write_text(json.dumps({
        "suite": spec.suite, "key": spec.key(), "kernels": kernels,
        "packages": sorted(spec.packages), "built_seconds": round(time.monotonic() - started, 1),
    }, indent=2))
    if target.exists():
        shutil.rmtree(target)
    work.rename(target)
    _prune_older(spec, target)
    log.info("image %s: built in %.0f s", target, time.monotonic() - started)
    return load_image(spec)


def _prune_older(spec: ImageSpec, keep: Path) -> None:
    """An image of the same suite and kind with other inputs is stale: drop it (each is ~2 GB)."""
    for other in CACHE_ROOT.glob(f"{spec.suite}{spec.kind}-*"):
        if other != keep and len(other.name) == len(keep.name) and (other / "image.json").exists():
            shutil.rmtree(other, ignore_errors=True)


def load_image(spec: ImageSpec) -> Image | None:
    meta = spec.directory / "image.json"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    kernels = {k: tuple(spec.directory / name for name in v) for k, v in data["kernels"].items()}
    return Image(spec, spec.directory / "rootfs.img", kernels)


def _customize_commands() -> list[str]:
    unit = "/etc/systemd/system/mxrc-testbed-runner.service"
    keys = "/etc/systemd/system/mxrc-testbed-keys.service"
    cmds = [
        f"cat > \"$1{unit}\" <<'EOF'\n{RUNNER_UNIT}EOF",
        f"cat > \"$1{keys}\" <<'EOF'\n{KEYS_UNIT}EOF",
        "chroot \"$1\" systemctl enable mxrc-testbed-runner.service mxrc-testbed-keys.service",
        "chroot \"$1\" systemctl mask " + " ".join(MASKED_UNITS),
        "printf 'blacklist %s\\n' " + " ".join(UNUSED_DRIVERS) + " > \"$1/etc/modprobe.d/mxrc-testbed.conf\"",
        "echo mxrc-vm > \"$1/etc/hostname\"",
        "echo 'LABEL=root / ext4 rw,errors=remount-ro 0 1' > \"$1/etc/fstab\"",
        "chroot \"$1\" passwd -d root",
        # Journal to disk so that a test can read the previous boot.
        "mkdir -p \"$1/var/log/journal\"",
    ]
    return cmds


def _du_mib(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


# --------------------------------------------------------------------------- boot


def kvm_usable() -> bool:
    """KVM only helps with a real hardware-virtualisation module behind it.

    /dev/kvm also exists under kvm_pvm (paravirtualised nesting), where a
    stock Debian kernel never gets past its decompressor.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    if Path("/sys/module/kvm_pvm").exists():
        return False
    return Path("/sys/module/kvm_intel").exists() or Path("/sys/module/kvm_amd").exists()


# Debian 13's 6.12 kernels die now and then with an Oops in the scheduler
# under multi-threaded TCG (measured: about 1 boot in 13, early or mid-test).
# Single-threaded TCG has not failed but made the suite ~2.5x slower on two
# host cores, so the suite runs multi-threaded and a scenario whose guest
# kernel crashed is run again from scratch (run_scenario), never a step.
TCG_SINGLE_THREAD_SUITES: set[str] = set()
KERNEL_CRASH_MARKERS = ("Kernel panic - not syncing", "Oops:", "BUG: unable to handle",
                        "general protection fault")


# Under emulation only: the reference RT loop (mxrc-reference) wakes at 1 kHz; each wake-up of an
# emulated CPU costs the host about 0.5 ms (an idle trixie VM: 0.58 host cores with mxrc-rt
# running, 0.08 without), so at 1 kHz every VM with mxrc.target up kept half a host core busy. At
# 250 Hz the drills and the exporter see the same loop (stall budget and fault timings are in
# seconds, not cycles).
REFERENCE_RATE = "systemd.setenv=MXRC_PERIOD_US=4000"


class GuestKernelCrash(RuntimeError):
    """The emulated machine's kernel crashed: the run says nothing about our code."""


@dataclasses.dataclass(frozen=True)
class Machine:
    cpus: int = 4
    memory_mib: int = 2048
    numa_nodes: int = 1
    kernel: str = "std"  # "std" or "rt"
    append: str = ""

    def qemu_args(self, image: Image, disk: Path, share: Path, console: Path) -> list[str]:
        vmlinuz, initrd = image.kernels[self.kernel]
        emulated = not kvm_usable()
        if not emulated:
            accel = ["-accel", "kvm", "-cpu", "host"]
        elif image.spec.suite in TCG_SINGLE_THREAD_SUITES:
            accel = ["-accel", "tcg,thread=single", "-cpu", "max"]
        else:
            accel = ["-accel", "tcg", "-cpu", "max"]
        cmdline = " ".join([
            "root=LABEL=root rw console=ttyS0 panic=-1 loglevel=4",
            "systemd.show_status=auto mxrc.testbed=1", *([REFERENCE_RATE] if emulated else []), self.append,
        ]).strip()
        args = [
            "qemu-system-x86_64", "-machine", "q35", *accel,
            "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console}",
            "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
            "-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe",
            "-virtfs", f"local,path={share},mount_tag=host,security_model=none",
            "-nic", "none",
        ]
        args += self._numa_args()
        return args

    def _numa_args(self) -> list[str]:
        if self.numa_nodes <= 1:
            return []
        if self.cpus % self.numa_nodes or self.memory_mib % self.numa_nodes:
            raise ValueError(f"{self.cpus} CPUs / {self.memory_mib} MiB do not split into "
                             f"{self.numa_nodes} equal NUMA nodes")
        per_cpu, per_mem = self.cpus // self.numa_nodes, self.memory_mib // self.numa_nodes
        args = []
        for n in range(self.numa_nodes):
            first = n * per_cpu
            args += ["-object", f"memory-backend-ram,id=m{n},size={per_mem}M",
                     "-numa", f"node,nodeid={n},cpus={first}-{first + per_cpu - 1},memdev=m{n}"]
        return args


@dataclasses.dataclass
class StepResult:
    name: str
    command: str
    rc: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclasses.dataclass
class RunResult:
    rc: int  # 0 when every step ran; 124 timeout; 125 the guest never reported
    steps: dict  # name -> StepResult
    journal: str
    console: str
    boot_attempts: int
    seconds: float
    ready_seconds: float | None = None  # the guest's uptime when its first step began

    def __getitem__(self, name: str) -> StepResult:
        if name not in self.steps:
            raise KeyError(f"step {name!r} did not run (rc={self.rc}); console tail:\n"
                           + "\n".join(self.console.splitlines()[-40:]))
        return self.steps[name]


# Every boot, for the suite's time report (tests/vm/conftest.py): where the
# minutes go is the first thing to know when the suite is slow. Appended to the
# file MXRC_BOOT_LOG names (one JSON line per boot) so pytest-xdist's workers
# report to one place.
def record_boot(entry: dict) -> None:
    path = os.environ.get("MXRC_BOOT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


class VM:
    """One virtual machine: a copy-on-write disk over the cached image, booted as often as needed.

    Changes made in one boot (an installed package, an enabled unit) are
    there in the next, as on a real machine; the cached image never changes.
    Use as a context manager; `boot()` runs a list of steps and powers off.
    """

    def __init__(self, image: Image, machine: Machine, files: dict[str, Path] | None = None):
        self.image = image
        self.machine = machine
        self._tmp = tempfile.TemporaryDirectory(prefix="mxrc-vm-")
        self.share = Path(self._tmp.name) / "share"
        (self.share / "files").mkdir(parents=True)
        for name, path in (files or {}).items():
            (self.share / "files" / name).parent.mkdir(parents=True, exist_ok=True)
            if Path(path).is_dir():
                shutil.copytree(path, self.share / "files" / name, ignore=shutil.ignore_patterns("S.*"))
            else:
                shutil.copy(path, self.share / "files" / name)
        for helper in ("boot.sh", "steps.py"):
            shutil.copy(GUEST_DIR / helper, self.share / helper)
        self.disk = Path(self._tmp.name) / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", str(image.disk), str(self.disk)], check=True)
        self.boots: list[RunResult] = []

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc) -> None:
        keep = os.environ.get("MXRC_TESTBED_KEEP")
        if keep:
            dest = Path(keep) / f"vm-{int(time.time())}"
            shutil.copytree(self.share, dest)
            # the share holds the last boot only; every boot's steps, for reading a passing run too
            (dest / "boots.json").write_text(json.dumps(
                [{name: dataclasses.asdict(step) for name, step in b.steps.items()} for b in self.boots],
                indent=1))
            log.info("share kept in %s", dest)
        self._tmp.cleanup()

    def boot(self, steps: list[tuple[str, str]], machine: Machine | None = None,
             timeout: int = 900, boot_retries: int = 2, crash_retries: int = 2) -> RunResult:
        """Boot, run each (name, shell command) in order, power off.

        Every step runs even when an earlier one failed; the caller decides
        what a failure means.  A boot that died before the runner started (a
        known TCG flake) is retried; a run that started is not, unless the
        emulated kernel crashed: then the disk goes back to how this boot found
        it (an internal qcow2 snapshot) and the boot runs again from there, so
        a crash costs one boot, not the whole scenario.  `machine` changes the
        hardware for this boot only (a disk moved to another robot).
        """
        machine = machine or self.machine
        started = time.monotonic()
        self._snapshot("-c")
        try:
            for crashes in range(crash_retries + 1):
                result, attempts = self._run(steps, machine, timeout, boot_retries)
                crash = next((m for m in KERNEL_CRASH_MARKERS if m in result.console), None)
                if not (crash and result.rc in (124, 125)):
                    break
                message = (f"guest kernel crashed ({crash!r}) during boot {len(self.boots) + 1}; console "
                           "tail:\n" + "\n".join(result.console.splitlines()[-25:]))
                if crashes == crash_retries:
                    raise GuestKernelCrash(message)
                log.warning("%s\nbooting again from the disk as it was before this boot", message)
                self._snapshot("-a")
        finally:
            self._snapshot("-d")
        result.seconds = round(time.monotonic() - started, 1)
        self.boots.append(result)
        record_boot({
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
            "suite": self.image.spec.suite + self.image.spec.kind, "cpus": machine.cpus,
            "kernel": machine.kernel, "seconds": result.seconds, "attempts": attempts, "crashes": crashes,
            "ready": result.ready_seconds,
            "slowest": sorted(((s.seconds, n) for n, s in result.steps.items()), reverse=True)[:3],
        })
        log.info("boot %d of this VM: rc=%d, %.0f s, %d attempt(s), %d crash(es)", len(self.boots),
                 result.rc, result.seconds, attempts, crashes)
        return result

    def _snapshot(self, action: str) -> None:
        subprocess.run(["qemu-img", "snapshot", action, "before-boot", str(self.disk)], check=True)

    def _run(self, steps, machine: Machine, timeout: int, boot_retries: int) -> tuple[RunResult, int]:
        """One run of the steps: qemu until the guest powers off (again if it died before the runner)."""
        started = time.monotonic()
        share = self.share
        # (name, command) or (name, command, seconds): a step's own limit, when not steps.py's default
        (share / "steps.json").write_text(json.dumps(
            [{"name": s[0], "command": s[1], **({"timeout": s[2]} if len(s) > 2 else {})} for s in steps]))
        out, console = share / "out", share / "console.log"
        attempts = 0
        while True:
            attempts += 1
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            console.unlink(missing_ok=True)
            cmd = ["timeout", "--kill-after=10", str(timeout * sharing_factor()),
                   *machine.qemu_args(self.image, self.disk, share, console)]
            log.info("boot %d: %s", attempts, shlex.join(cmd))
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if (out / "started").exists() or attempts > boot_retries:
                break
            log.warning("guest died before the runner started (qemu rc %d); booting again:\n%s",
                        proc.returncode, "\n".join(_read(console).splitlines()[-15:]))
        if (out / "rc").exists():
            rc = int(_read(out / "rc").strip() or 125)
        elif proc.returncode == 124:
            rc = 124
        else:
            rc = 125
        results = {}
        if (out / "results.json").exists():
            for item in json.loads(_read(out / "results.json")):
                results[item["name"]] = StepResult(**item)
        return RunResult(rc, results, _read(out / "journal.txt"), _read(console), attempts,
                         round(time.monotonic() - started, 1), _uptime(out / "ready")), attempts


def _uptime(path: Path) -> float | None:
    try:
        return float(_read(path).strip())
    except ValueError:
        return None


def sharing_factor() -> int:
    """How many VMs may share this host's cores at once (pytest-xdist workers): a boot's time limit
    is for a machine of its own, and each VM runs about that many times slower beside the others."""
    try:
        return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        return 1


def run_scenario(scenario, attempts: int = 2):
    """Run `scenario()` (which makes its own fresh VM); again from scratch if a guest kernel crashed.

    Only a kernel crash of the emulated machine leads to a second run: a test
    that failed, timed out or misbehaved is reported as it is.
    """
    for attempt in range(1, attempts + 1):
        try:
            return scenario()
        except GuestKernelCrash as crash:
            if attempt == attempts:
                raise
            log.warning("scenario run %d: %s; running the whole scenario again", attempt, crash)


def run_steps(image: Image, machine: Machine, steps: list[tuple[str, str]],
              files: dict[str, Path] | None = None, timeout: int = 900) -> RunResult:
    """One boot of a fresh VM: the common case."""
    with VM(image, machine, files) as vm:
        return vm.boot(steps, timeout=timeout)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) an image and print its directory")
    r = sub.add_parser("run", help="boot an image and run shell commands in it")
    r.add_argument("--cpus", type=int, default=4)
    r.add_argument("--memory", type=int, default=2048, help="MiB")
    r.add_argument("--numa", type=int, default=1, help="NUMA nodes")
    r.add_argument("--kernel", choices=("std", "rt"), default="std")
    r.add_argument("--append", default="", help="extra kernel command line")
    r.add_argument("--file", action="append", default=[], metavar="PATH",
                   help="copy PATH into the guest's /mnt/host/files/")
    r.add_argument("--timeout", type=int, default=900)
    r.add_argument("commands", nargs="+")
    for p in (b, r):
        p.add_argument("--suite", default="trixie")
        p.add_argument("--package", action="append", default=[], metavar="NAME",
                       help="also install this Debian package in the image (a separate cached image)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="testbed: %(message)s", stream=sys.stderr)

    extra = tuple(args.package)
    flavour = "observability" if set(extra) == set(OBSERVABILITY_PACKAGES) else ("extra" if extra else "")
    image = build_image(ImageSpec(suite=args.suite, packages=ImageSpec().packages + extra, flavour=flavour))
    if args.command == "build":
        print(image.spec.directory)
        return 0
    machine = Machine(args.cpus, args.memory, args.numa, args.kernel, args.append)
    files = {Path(p).name: Path(p) for p in args.file}
    # A run by hand (a benchmark) may give one command the whole --timeout.
    steps = [(f"step{i}", c, args.timeout) for i, c in enumerate(args.commands)]
    # A fresh VM each attempt, as in the tests: an emulated kernel's rare crash is not the package's.
    result = run_scenario(lambda: run_steps(image, machine, steps, files, args.timeout))
    for step in result.steps.values():
        print(f"### {step.command}  (rc={step.rc}, {step.seconds:.1f}s)")
        print(step.output, end="" if step.output.endswith("\n") else "\n")
    print(f"### run finished: rc={result.rc}, {result.seconds:.0f}s, {result.boot_attempts} boot(s)",
          file=sys.stderr)
    if result.rc:
        return result.rc
    return max((s.rc for s in result.steps.values()), default=0) and 1


if __name__ == "__main__":
    sys.exit(main())
