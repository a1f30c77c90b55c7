"""Every finding the installer can report, in one registry.

A finding's id, how serious it is, what doctor makes of it and where the
docs explain it live here and nowhere else: plan builds findings by id (the
reason and the fix are the machine's own), doctor reads their status from
here, and a test checks docs/installer.md lists exactly these ids.
"""

from __future__ import annotations

import dataclasses
import enum


class Severity(enum.StrEnum):
    ERROR = "error"       # a blocker: exit 1
    WARNING = "warning"   # done, but something the spec promises is not met: exit 2
    INFO = "info"


class Status(enum.StrEnum):
    """doctor's verdict on a check."""
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclasses.dataclass(frozen=True)
class Kind:
    id: str
    severity: Severity
    # doctor's verdict when the finding holds on a running robot; by default
    # error -> FAIL, warning -> WARN, info -> PASS.
    doctor: Status | None = None

    @property
    def status(self) -> Status:
        return self.doctor or {Severity.ERROR: Status.FAIL, Severity.WARNING: Status.WARN,
                               Severity.INFO: Status.PASS}[self.severity]


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO  # noqa: E741 (table shorthand)
KINDS = (
    # placement
    Kind("rt-cpus-invalid", E), Kind("rt-cpus-fallback", W), Kind("rt-cpus-shared", W),
    Kind("rt-spans-numa", W), Kind("smt-sibling", W),
    Kind("memory-max-above-ram", W), Kind("watchdog-range", W),
    # kernel and its command line; without isolated cores the jitter bar is luck: doctor FAILs
    Kind("isolcpus-missing", W, Status.FAIL), Kind("isolcpus-mismatch", W, Status.FAIL),
    Kind("cmdline-unparsable", W), Kind("kernel-not-rt", W), Kind("rt-group-sched", E),
    # isolcpus= as the kernel reads it (first wins, unknown flags skipped, no domain: not isolated)
    Kind("isolcpus-duplicate", W), Kind("isolcpus-unknown-flag", W),
    Kind("isolcpus-no-domain", W, Status.FAIL),
    # the machine
    Kind("few-cpus", W), Kind("cpus-offline", I), Kind("low-memory", W), Kind("systemd-old", E),
    Kind("cgroup-v1", E),
    # dependencies between the MXRC units
    Kind("ordering-cycle", E), Kind("requirement-cycle", W),
    # apply and boot-check (printed, not planned)
    Kind("dropin-admin-owned", W), Kind("hardware-changed", W),
)
REGISTRY = {k.id: k for k in KINDS}


def kind(finding_id: str) -> Kind:
    try:
        return REGISTRY[finding_id]
    except KeyError:
        raise KeyError(f"finding {finding_id!r} is not in mxrc_install.findings.KINDS: add it there "
                       "(and to docs/installer.md)") from None
