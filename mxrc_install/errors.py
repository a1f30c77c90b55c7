"""The one place an exception from a read or a write becomes a message for the admin.

Every command runs inside it (cli.main): what failed, on which path, and what
to do, on one line; exit 1. Writes are atomic, so nothing is left half-written.
"""

from __future__ import annotations

import errno
import os

from mxrc_install.exits import UserError

# errno -> what to do about it.
FIXES = {
    errno.EROFS: "the file system is read-only; remount it read-write (mount -o remount,rw)",
    errno.ENOSPC: "the file system is full; free some space and run again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run again",
    errno.EISDIR: "a directory is where a file is expected; move it away",
    errno.ENOTDIR: "a file is where a directory is expected; move it away",
    errno.ENAMETOOLONG: "the path is too long; use a shorter one",
    errno.ELOOP: "a symlink is in the way; mxrc-systemd does not follow symlinks in its paths; remove it",
    errno.EEXIST: "something is already there; move it away",
    errno.EIO: "the disk reported an I/O error; check it (dmesg) before running again",
}


def _permission_fix() -> str:
    if os.geteuid() != 0:
        return "run as root (sudo mxrc-systemd ...)"
    return "root was refused: check the file's attributes (lsattr; chattr -i) and any LSM policy"


def describe(exc: BaseException) -> tuple[str, str | None]:
    """(one-line message naming the path and the fix, the path or None)."""
    if isinstance(exc, UserError):
        return str(exc), getattr(exc, "path", None)
    if isinstance(exc, OSError):
        path = exc.filename if exc.filename is None else os.fsdecode(exc.filename)
        what = exc.strerror or str(exc)
        fix = _permission_fix() if exc.errno in (errno.EACCES, errno.EPERM) else \
            FIXES.get(exc.errno, "fix the path named and run again")
        return (f"{path}: {what}; {fix}" if path else f"{what}; {fix}"), path
    if isinstance(exc, UnicodeError):
        return (f"a file is not UTF-8 text ({exc}); correct it (iconv -t UTF-8) or remove it"), None
    return f"{exc}; correct the value or file named and run again", None
