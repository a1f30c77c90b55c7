"""`mxrc-systemd report`: one file with what a field engineer needs from a robot.

Versions, probe and plan, doctor, boot-time records, the MXRC units as
systemd sees them (with every drop-in), the recent journal of the MXRC units,
and the `capture` tree (so the robot becomes a test fixture). No secrets: the
values of Environment= lines whose name says password/token/secret/key are
replaced. Bounded: each command's output is cut at MAX_ITEM bytes.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile
import time
from collections.abc import Callable

from mxrc_install import names

MAX_ITEM = 4 * 1024 * 1024
JOURNAL_LINES = 5000
ENVIRONMENT_LINE = re.compile(r"(?m)^(\s*Environment=)(.*)$")
SECRET_ASSIGNMENT = re.compile(r"(?i)\b([\w.]*(?:PASSW(?:OR)?D|TOKEN|SECRET|KEY)[\w.]*=)(\"[^\"]*\"|\S+)")
UNITS = (names.TARGET, *names.SERVICES, names.ISOLATION, names.HARDWARE_CHECK, names.RT_SLICE)


@dataclasses.dataclass(frozen=True)
class Item:
    name: str          # path inside the bundle
    argv: tuple[str, ...]


ITEMS = (
    Item("versions.txt", ("dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n", "mxrc-*", "systemd",
                          "linux-image-*")),
    Item("uname.txt", ("uname", "-a")),
    Item("probe.json", ("mxrc-systemd", "probe", "--json")),
    Item("plan.json", ("mxrc-systemd", "plan", "--json")),
    Item("doctor.json", ("mxrc-systemd", "doctor", "--json")),
    Item("boot-time.json", ("mxrc-systemd", "boot-time", "show", "--json")),
    Item("units.txt", ("systemctl", "cat", "--no-pager", *UNITS)),
    Item("status.txt", ("systemctl", "status", "--no-pager", "-l", "--lines=20", *UNITS)),
    Item("journal.txt", ("journalctl", "--no-pager", "-o", "short-precise", "-n", str(JOURNAL_LINES),
                         *[arg for u in (*names.SERVICES, names.ISOLATION, names.HARDWARE_CHECK)
                           for arg in ("-u", u)])),
)


def redact(text: str) -> str:
    return ENVIRONMENT_LINE.sub(lambda m: m.group(1) + SECRET_ASSIGNMENT.sub(r"\1<redacted>", m.group(2)),
                                text)


def bounded(data: bytes) -> bytes:
    if len(data) <= MAX_ITEM:
        return data
    return data[:MAX_ITEM] + f"\n[cut at {MAX_ITEM} bytes of {len(data)}]\n".encode()


def collect(run: Callable[[tuple[str, ...]], tuple[int, str, str]],
            progress=lambda msg: None) -> dict[str, bytes]:
    """name -> content for every item; a command that fails leaves its error in the bundle."""
    out = {}
    for n, item in enumerate(ITEMS, 1):
        progress(f"[{n}/{len(ITEMS)}] {item.name}")
        rc, stdout, stderr = run(item.argv)
        text = stdout + (f"\n[{' '.join(item.argv)}: exit {rc}]\n{stderr}" if rc else "")
        out[item.name] = bounded(redact(text).encode())
    return out


def write_tar(path, items: dict[str, bytes], capture_dir=None) -> None:
    """A gzip tarball: every item under mxrc-report/, the capture tree under mxrc-report/capture/."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(items.items()):
            info = tarfile.TarInfo(f"mxrc-report/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
        if capture_dir is not None:
            tar.add(capture_dir, arcname="mxrc-report/capture")
