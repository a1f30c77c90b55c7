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
import logging
import os
import re
import tempfile
from pathlib import Path

from mxrc_install import process
from mxrc_install.pipeline import paths
from mxrc_install.pipeline.paths import STATE_DIR, UnsafePath
from mxrc_install.sysroot import SysRoot

log = logging.getLogger(__name__)

MANIFEST = f"{STATE_DIR}/owned-files"          # "sha256  /path" lines


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


@dataclasses.dataclass(frozen=True)
class Adopt:
    """A file identical to the plan that the manifest does not vouch for alone (an interrupted apply)."""
    path: str
    content: str


@dataclasses.dataclass(frozen=True)
class Forget:
    """A manifest entry whose file is gone."""
    path: str


def sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


_LINE = re.compile(r"(?P<digest>[0-9a-f]{64})  (?P<path>/.*)")


def parse_manifest(text: str) -> dict[str, frozenset[str]]:
    """path -> the digests we vouch for. Two digests for a path: an apply was
    interrupted between recording its intent and finishing; either content is ours.
    A line naming a path outside OWNABLE is ignored with a warning: a tampered
    manifest must not make us delete /etc/fstab."""
    owned: dict[str, set[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.fullmatch(line)
        if not match:
            if line.strip():
                log.warning("%s line %d: not '<sha256>  /path'; ignored", MANIFEST, number)
            continue
        path = match.group("path")
        if paths.ownable(path) is None:
            log.warning("%s line %d: %r is outside the files mxrc-systemd may own; ignored",
                        MANIFEST, number, path)
            continue
        owned.setdefault(path, set()).add(match.group("digest"))
    return {path: frozenset(d) for path, d in owned.items()}


def format_manifest(owned: dict[str, frozenset[str]]) -> str:
    return "".join(f"{digest}  {path}\n" for path, digests in sorted(owned.items())
                   for digest in sorted(digests))


def read_manifest(root: SysRoot) -> dict[str, frozenset[str]]:
    data = paths.read_bytes(root, MANIFEST)
    return parse_manifest(data.decode("utf-8", "replace")) if data else {}


def _ownership(root: SysRoot, path: str, owned: dict) -> tuple[str, bytes | None]:
    """('absent' | 'ours' | 'admin' | 'unsafe', current bytes)."""
    try:
        current = paths.read_bytes(root, path)
    except UnsafePath:
        return "unsafe", None
    if current is None:
        return "absent", None
    return ("ours" if sha256(current) in owned.get(path, ()) else "admin"), current


def actions_for(root: SysRoot, files: dict[str, str]) -> list:
    """What to do to make the files under the root those of the plan (path -> text)."""
    owned = read_manifest(root)
    actions = []
    for path, text in sorted(files.items()):
        if paths.ownable(path) is None:
            raise UnsafePath(f"{path}: the plan names a file outside the ones mxrc-systemd may own "
                             f"({', '.join(r.shape for r in paths.OWNABLE)}); "
                             "this is a bug, please report it")
        state, current = _ownership(root, path, owned)
        if state == "unsafe":
            actions.append(Keep(path, "a symlink or not a regular file on the way; not followed"))
        elif current == text.encode():
            if owned.get(path) != {sha256(current)}:
                actions.append(Adopt(path, text))   # exactly the plan: ours, wherever it came from
        elif state == "admin":
            actions.append(Keep(path, "changed by an admin since mxrc-systemd wrote it"
                                if path in owned else "not written by mxrc-systemd"))
        else:
            actions.append(Write(path, text))
    for path in sorted(set(owned) - set(files)):
        state, _ = _ownership(root, path, owned)
        if state == "ours":
            actions.append(Remove(path))
        elif state == "absent":
            actions.append(Forget(path))
    return actions


def removal_actions(root: SysRoot) -> list:
    owned = read_manifest(root)
    out = []
    for path in sorted(owned):
        state, _ = _ownership(root, path, owned)
        if state == "ours":
            out.append(Remove(path))
        elif state == "absent":
            out.append(Forget(path))
        else:
            out.append(Keep(path, "changed by an admin since mxrc-systemd wrote it" if state == "admin"
                            else "a symlink or not a regular file on the way; not followed"))
    return out


def write_atomic(target: Path, content: str | bytes, mode: int = 0o644) -> None:
    """A temp file next to `target`, fsync, rename: a reader sees the old or the new file, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_under(root: SysRoot, rel: str, content: str | bytes, mode: int = 0o644) -> None:
    """write_atomic of `rel` under the root, never through a symlink (UnsafePath)."""
    paths.make_dirs(root, os.path.dirname(rel))
    paths.check_no_symlink(root, rel)
    write_atomic(root.path(rel), content, mode)


def _write_manifest(root: SysRoot, owned: dict) -> None:
    write_under(root, MANIFEST, format_manifest(owned))


def remove_stale_temp_files(root: SysRoot, rels) -> None:
    """Temp files of writes a kill interrupted (call with the lock held: no writer is running)."""
    by_dir: dict[str, set[str]] = {}
    for rel in rels:
        by_dir.setdefault(os.path.dirname(rel), set()).add(os.path.basename(rel))
    for directory, names in sorted(by_dir.items()):
        for stale in paths.stale_temp_files(root, directory, names):
            root.path(stale).unlink(missing_ok=True)
            log.info("removed %s (left by an interrupted write)", stale)


def execute(root: SysRoot, actions: list) -> bool:
    """Carry out the actions and update the manifest; True when a unit file changed.

    Crash safety: the new digests are added to the manifest *before* any file
    is written, so that whatever the moment of a kill, every file of ours is
    vouched for; the final manifest then keeps one digest per path.
    """
    owned = {path: set(d) for path, d in read_manifest(root).items()}
    remove_stale_temp_files(root, [a.path for a in actions] + list(owned) + [MANIFEST, paths.HARDWARE_RECORD])
    writes = [a for a in actions if isinstance(a, (Write, Adopt))]
    for action in writes:
        owned.setdefault(action.path, set()).add(sha256(action.content))
    if writes:
        _write_manifest(root, owned)        # the intent
    changed = False
    for action in actions:
        if isinstance(action, Write):
            write_under(root, action.path, action.content)
            changed = True
            log.info("wrote %s", action.path)
        elif isinstance(action, Remove):
            paths.check_no_symlink(root, action.path)
            root.path(action.path).unlink(missing_ok=True)
            if paths.ownable(action.path).prune_parent:
                _remove_empty_dir(root.path(action.path).parent)
            changed = True
            log.info("removed %s", action.path)
        if isinstance(action, (Write, Adopt)):
            owned[action.path] = {sha256(action.content)}
        elif isinstance(action, (Remove, Forget)):
            owned.pop(action.path, None)
    final = {path: frozenset(d) for path, d in owned.items()}
    if writes or changed or any(isinstance(a, Forget) for a in actions) or not root.exists(MANIFEST):
        _write_manifest(root, final)
    return changed


def _remove_empty_dir(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def daemon_reload(root: SysRoot) -> None:
    """Only on the live system with systemd running: never for an image or chroot."""
    if root.systemd_running():
        process.run(["systemctl", "daemon-reload"], check=True)
        log.info("systemctl daemon-reload")
