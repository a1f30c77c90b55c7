"""The ordered configure steps the postinst runs (postinst.d).

Steps are executables in the package's step directory; an admin or image
builder adds steps to /etc/mxrc/postinst.d, or disables a shipped one by
placing a file of the same name there (an empty, non-executable file masks
it), the way systemd's drop-in directories work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
from pathlib import Path

from mxrc_install.sysroot import SysRoot

log = logging.getLogger(__name__)

SHIPPED_DIR = "/usr/share/mxrc-systemd/postinst.d"
ADMIN_DIR = "/etc/mxrc/postinst.d"


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    path: Path
    enabled: bool


def collect_steps(root: SysRoot) -> list[Step]:
    """Shipped and admin steps by name, admin's winning, in name order."""
    by_name: dict[str, Path] = {}
    for directory in (SHIPPED_DIR, ADMIN_DIR):
        for rel in root.glob(directory + "/*"):
            path = root.path(rel)
            if path.name.startswith(".") or path.name.endswith((".dpkg-old", ".dpkg-dist", "~")):
                continue
            by_name[path.name] = path
    return [Step(name, path, path.is_file() and os.access(path, os.X_OK) and path.stat().st_size > 0)
            for name, path in sorted(by_name.items())]


def run_steps(root: SysRoot, env: dict[str, str]) -> int:
    """Run every enabled step; stop at the first that fails, returning its code."""
    step_env = {**os.environ, **env, "MXRC_ROOT": str(root.root)}
    for step in collect_steps(root):
        if not step.enabled:
            log.info("step %s: masked", step.name)
            continue
        log.info("step %s: running %s", step.name, step.path)
        proc = subprocess.run([str(step.path)], env=step_env)
        if proc.returncode != 0:
            log.error("step %s failed with exit code %d", step.name, proc.returncode)
            return proc.returncode
    return 0
