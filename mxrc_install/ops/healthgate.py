"""The boot health gate (#12): is this boot good enough to keep?

mxrc-boot-health.service runs it before boot-complete.target, the hook
systemd-bless-boot and A/B updaters (RAUC, Mender, SWUpdate) wait for: the
boot counts as good only when mxrc.target is up, every MXRC service is up and
ready, and doctor has no FAIL. What failed is printed, so `systemctl status
mxrc-boot-health` and the journal say why a slot was not marked good.
"""

from __future__ import annotations

import time

from mxrc_install import names
from mxrc_install.ops import doctor

READY_STATES = {"active"}   # a Type=notify service is active only after READY=1


def unit_problems(states: dict) -> list[str]:
    """states: unit -> ActiveState. What keeps the controller from being up."""
    wanted = (names.TARGET, *names.SERVICES)
    return [f"{u} is {states.get(u) or 'unknown'}" for u in wanted if states.get(u) not in READY_STATES]


def failed_checks(checks: list) -> list[str]:
    return [f"{c.id}: {c.evidence}" + (f" (fix: {c.fix})" if c.fix else "") for c in checks
            if c.status == doctor.FAIL]


# A failed unit stays failed: systemd shows "activating (auto-restart)" while a
# restart is still to come, "failed" only once it gave up (start limit, Restart=no).
FINAL_STATES = {"failed"}


def wait_for_units(read_states, timeout: float, clock=time.monotonic, sleep=time.sleep) -> list[str]:
    """Poll until every MXRC unit is active, one has failed for good, or the time is up; the problems."""
    deadline = clock() + timeout
    while True:
        states = read_states()
        problems = unit_problems(states)
        if not problems or clock() >= deadline or FINAL_STATES & set(states.values()):
            return problems
        sleep(1)
