"""The one object every read of the system goes through.

In production the root is "/"; tests point it at a fixture tree, so nothing
under test ever reads the host's /proc or /sys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class SysRoot:
    root: Path = Path("/")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read."""
        try:
            return self.path(rel).read_text()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to the root, sorted, for a glob under it."""
        return sorted("/" + p.relative_to(self.root).as_posix() for p in self.root.glob(pattern.lstrip("/")))

    @property
    def is_live(self) -> bool:
        return self.root == Path("/")

    def systemd_running(self) -> bool:
        """True only on the live root of a machine booted with systemd (sd_booted())."""
        return self.is_live and self.path("/run/systemd/system").is_dir()
