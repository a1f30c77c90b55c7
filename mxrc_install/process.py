"""The one seam between mxrc-systemd and the programs it runs.

Every external command goes through run(): a missing program or a timeout
is a result, not a traceback, and a failure carries the command and its
stderr into the message the operator sees. Tests replace this seam, not
subprocess.
"""

from __future__ import annotations

import dataclasses
import subprocess

from mxrc_install.exits import UserError

NOT_FOUND, TIMED_OUT = 127, 124   # the shell's codes for the same two cases


@dataclasses.dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def failure(self) -> str:
        return f"{' '.join(self.argv)} failed (exit {self.rc}): {self.stderr.strip() or 'no message'}"


class CommandFailed(UserError):
    pass


def run(argv, *, timeout: float | None = None, check: bool = False, cwd=None) -> Completed:
    argv = tuple(str(a) for a in argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                              cwd=cwd)
        result = Completed(argv, proc.returncode, proc.stdout, proc.stderr)
    except FileNotFoundError:
        result = Completed(argv, NOT_FOUND, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        result = Completed(argv, TIMED_OUT, "", f"no answer within {timeout:g} s")
    if check and not result.ok:
        raise CommandFailed(result.failure())
    return result
