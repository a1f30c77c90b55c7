"""One mxrc-systemd at a time may change files: the postinst, boot-check and an admin can overlap.

flock(2) on a file in the state directory: released by the kernel when the
process dies, so a killed apply never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from mxrc_install.exits import UserError
from mxrc_install.pipeline.paths import STATE_DIR, check_no_symlink, make_dirs
from mxrc_install.sysroot import SysRoot

LOCK = f"{STATE_DIR}/lock"
WAIT_SECONDS = 60.0   # boot-check and the postinst finish well within this
POLL_SECONDS = 0.1


class Busy(UserError):
    pass


@contextlib.contextmanager
def exclusive(root: SysRoot, wait: float | None = None):
    wait = WAIT_SECONDS if wait is None else wait
    make_dirs(root, STATE_DIR)
    check_no_symlink(root, LOCK)
    fd = os.open(root.path(LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"another mxrc-systemd is running (it holds {root.path(LOCK)}); waited "
                               f"{wait:g} s; try again when it has finished") from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)
