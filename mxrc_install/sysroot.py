"""The one object every read of the system goes through.

In production the root is "/"; tests point it at a fixture tree, so nothing
under test ever reads the host's /proc or /sys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mxrc_install.exits import UserError


class ReadError(UserError):
    """A file that exists but cannot be used: unreadable, a directory, not UTF-8."""


@dataclasses.dataclass(frozen=True)
class SysRoot:
    root: Path = Path("/")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read.

        For the probes: a kernel file that is missing or unreadable is a fact
        unknown; bytes that are not UTF-8 become U+FFFD, which the parsers reject.
        """
        try:
            return self.path(rel).read_bytes().decode("utf-8", "replace")
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return None

    def read_setting(self, rel: str) -> str | None:
        """An admin's file: None only when absent; unusable -> ReadError naming the fix.

        Reading an unreadable settings file as "no settings" would let
        `config KEY=VALUE` replace the admin's file with the defaults.
        """
        path = self.path(rel)
        try:
            return path.read_bytes().decode("utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise ReadError(f"{path}: is a directory, not a settings file; move it away", path) from None
        except PermissionError:
            raise ReadError(f"{path}: cannot be read (permission denied); run as root or fix its "
                            "permissions (chmod 644)", path) from None
        except UnicodeDecodeError as exc:
            raise ReadError(f"{path}: byte {exc.start} is not UTF-8 text; correct the file "
                            "(iconv -t UTF-8) or remove it to use the defaults", path) from None

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
