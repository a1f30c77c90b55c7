"""Carry out a plan: idempotent, atomic, owned.

Every file we write is listed with its SHA-256 in a manifest in sha256sum(1)
format, so that the postrm (essential packages only) can remove exactly
what is still ours.  A file at one of our paths that the manifest does not
vouch for was written or edited by an admin: it is reported, never
overwritten or removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from mxrc_install.pipeline.plan import Plan
from mxrc_install.sysroot import SysRoot

log = logging.getLogger(__name__)

STATE_DIR = "/var/lib/mxrc-systemd"
MANIFEST = f"{STATE_DIR}/owned-files"          # "sha256  /path" lines
HARDWARE = f"{STATE_DIR}/hardware.json"        # the facts the last apply was planned from
FIRST_BOOT = f"{STATE_DIR}/pending-first-boot"  # set by an install without a running system


@dataclasses.dataclass(frozen=True)
class Write:
    path: str
    content: str


@dataclasses.dataclass(frozen=True)
class Remove:
    path: str


@dataclasses.dataclass(frozen=True)
class Keep:
    """A path of ours that an admin owns now; left alone and reported."""
    path: str
    reason: str


def sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def parse_manifest(text: str) -> dict[str, str]:
    owned = {}
    for line in text.splitlines():
        digest, sep, path = line.partition("  ")
        if sep and len(digest) == 64:
            owned[path] = digest
    return owned


def format_manifest(owned: dict[str, str]) -> str:
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(owned.items()))


def read_manifest(root: SysRoot) -> dict[str, str]:
    return parse_manifest(root.read_text(MANIFEST) or "")


def _ownership(root: SysRoot, path: str, owned: dict[str, str]) -> str:
    """'absent', 'ours' (unchanged since we wrote it) or 'admin'."""
    current = root.read_text(path)
    if current is None:
        return "absent"
    return "ours" if owned.get(path) == sha256(current) else "admin"


def actions_for(root: SysRoot, plan: Plan) -> list:
    owned = read_manifest(root)
    actions = []
    wanted = plan.owned_files()
    for path, text in sorted(wanted.items()):
        state = _ownership(root, path, owned)
        if state == "admin":
            if root.read_text(path) != text:
                actions.append(Keep(path, "changed by an admin since mxrc-systemd wrote it"
                                    if path in owned else "not written by mxrc-systemd"))
        elif root.read_text(path) != text:
            actions.append(Write(path, text))
    for path in sorted(set(owned) - set(wanted)):
        if _ownership(root, path, owned) == "ours":
            actions.append(Remove(path))
    return actions


def removal_actions(root: SysRoot) -> list:
    owned = read_manifest(root)
    out = []
    for path in sorted(owned):
        state = _ownership(root, path, owned)
        if state == "ours":
            out.append(Remove(path))
        elif state == "admin":
            out.append(Keep(path, "changed by an admin since mxrc-systemd wrote it"))
    return out


def write_atomic(target: Path, content: str, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def execute(root: SysRoot, actions: list) -> bool:
    """Carry out the actions and update the manifest; True when a unit file changed."""
    owned = read_manifest(root)
    changed = False
    for action in actions:
        if isinstance(action, Write):
            write_atomic(root.path(action.path), action.content)
            owned[action.path] = sha256(action.content)
            changed = True
            log.info("wrote %s", action.path)
        elif isinstance(action, Remove):
            root.path(action.path).unlink(missing_ok=True)
            owned.pop(action.path, None)
            _remove_empty_dir(root.path(action.path).parent)
            changed = True
            log.info("removed %s", action.path)
    if changed or not root.exists(MANIFEST):
        write_atomic(root.path(MANIFEST), format_manifest(owned))
    return changed


def _remove_empty_dir(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def record_hardware(root: SysRoot, fingerprint: dict) -> None:
    write_atomic(root.path(HARDWARE), json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")


def recorded_hardware(root: SysRoot) -> dict | None:
    text = root.read_text(HARDWARE)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def daemon_reload(root: SysRoot) -> None:
    """Only on the live system with systemd running: never for an image or chroot."""
    if root.systemd_running():
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        log.info("systemctl daemon-reload")
