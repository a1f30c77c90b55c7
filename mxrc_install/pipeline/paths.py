"""Where mxrc-systemd may write or remove files, and how it touches them.

Confinement: a path comes from the plan or from the ownership manifest, and a
tampered manifest must never make apply or uninstall delete /etc/fstab or
anything outside the root. So every path we own matches one row of OWNABLE,
and no directory on the way to it may be a symlink (a symlinked drop-in or
state directory would carry our writes out of the root). debian/mxrc-systemd.postrm
applies the same table; tests/unit/test_confinement.py runs both on one corpus.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from mxrc_install.exits import UserError
from mxrc_install.sysroot import SysRoot

STATE_DIR = "/var/lib/mxrc-systemd"
HARDWARE_RECORD = f"{STATE_DIR}/hardware.json"  # the fingerprint the last apply was planned from
FIRST_BOOT = f"{STATE_DIR}/pending-first-boot"  # set by an install without a running system

_UNIT = r"[A-Za-z0-9:_.@\\-]+"


@dataclasses.dataclass(frozen=True)
class Ownable:
    shape: str              # for people (docs, messages)
    pattern: str            # the full path, as a regex
    prune_parent: bool      # remove the directory when it becomes empty


# The one table of the files mxrc-systemd may own, besides its state directory.
OWNABLE = (
    Ownable("/etc/systemd/system/<unit>.d/50-mxrc-hardware.conf",
            rf"/etc/systemd/system/{_UNIT}\.d/50-mxrc-hardware\.conf", True),
    Ownable("/etc/systemd/system.conf.d/50-mxrc-<name>.conf",
            r"/etc/systemd/system\.conf\.d/50-mxrc-[A-Za-z0-9_-]+\.conf", False),
    Ownable("/etc/default/grub.d/60-mxrc.cfg", r"/etc/default/grub\.d/60-mxrc\.cfg", False),
)
_COMPILED = tuple((row, re.compile(row.pattern)) for row in OWNABLE)


class UnsafePath(UserError):
    """A path we would write through a symlink, or outside the places we own."""


def ownable(path: str) -> Ownable | None:
    """The OWNABLE row `path` fits, or None (then we never write or remove it)."""
    for row, regex in _COMPILED:
        if regex.fullmatch(path):
            return row
    return None


def is_state_file(path: str) -> bool:
    return re.fullmatch(rf"{STATE_DIR}/[A-Za-z0-9_.-]+", path) is not None and "/.." not in path


def check_no_symlink(root: SysRoot, rel: str) -> None:
    """Raise UnsafePath when a component of `rel` below the root is a symlink."""
    current = root.root
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\0" in rel:
        raise UnsafePath(f"{rel!r}: not a plain absolute path; mxrc-systemd refuses it")
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise UnsafePath(f"{current}: is a symlink; mxrc-systemd does not follow symlinks in the "
                             f"paths it writes; replace it with a real directory or file", current)


def read_bytes(root: SysRoot, rel: str) -> bytes | None:
    """The file's bytes, None when absent; never through a symlink (UnsafePath)."""
    check_no_symlink(root, rel)
    try:
        fd = os.open(root.path(rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{root.path(rel)}: not a regular file; move it away", root.path(rel))
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def make_dirs(root: SysRoot, rel_dir: str) -> None:
    """mkdir -p below the root, refusing to go through a symlink."""
    check_no_symlink(root, rel_dir)
    root.path(rel_dir).mkdir(parents=True, exist_ok=True)
    check_no_symlink(root, rel_dir)


TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}")  # tempfile.mkstemp(prefix=".NAME.")


def stale_temp_files(root: SysRoot, rel_dir: str, names: set[str]) -> list[str]:
    """Temp files an interrupted write_atomic left next to one of `names` in `rel_dir`."""
    try:
        check_no_symlink(root, rel_dir)
        entries = os.listdir(root.path(rel_dir))
    except (FileNotFoundError, NotADirectoryError, UnsafePath):
        return []
    out = []
    for entry in sorted(entries):
        match = TEMP_NAME.fullmatch(entry)
        if match and match.group("name") in names:
            out.append(f"{rel_dir.rstrip('/')}/{entry}")
    return out
