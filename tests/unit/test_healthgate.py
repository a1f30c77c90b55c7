"""The boot health gate's verdict (#12 item 3)."""

from mxrc_install import names
from mxrc_install.ops import doctor, healthgate

ALL_UP = {u: "active" for u in (names.TARGET, *names.SERVICES)}


def test_a_healthy_controller_passes():
    assert healthgate.unit_problems(ALL_UP) == []
    checks = [doctor.Check("x", doctor.PASS, "fine"),
              doctor.Check("y", doctor.WARN, "kernel not RT", "install it")]
    assert healthgate.failed_checks(checks) == []


def test_a_unit_not_up_is_named_with_its_state():
    states = {**ALL_UP, names.RT: "activating", names.MONITOR: "failed"}
    assert healthgate.unit_problems(states) == [f"{names.RT} is activating", f"{names.MONITOR} is failed"]
    assert healthgate.unit_problems({}) == [f"{u} is unknown" for u in (names.TARGET, *names.SERVICES)]


def test_a_doctor_fail_is_named_with_its_fix():
    checks = [doctor.Check("properties:mxrc-rt.service", doctor.FAIL, "CPUAffinity=0-3",
                           "restart mxrc.target")]
    assert (healthgate.failed_checks(checks)
            == ["properties:mxrc-rt.service: CPUAffinity=0-3 (fix: restart mxrc.target)"])


def test_waits_for_units_until_up_or_the_timeout():
    now = [0.0]
    answers = iter([{**ALL_UP, names.RT: "activating"}, ALL_UP])
    assert healthgate.wait_for_units(lambda: next(answers), 10, clock=lambda: now[0],
                                     sleep=lambda s: now.__setitem__(0, now[0] + s)) == []
    assert now[0] == 1
    stuck = {**ALL_UP, names.RT: "activating"}
    assert (healthgate.wait_for_units(lambda: stuck, 3, clock=lambda: now[0],
                                      sleep=lambda s: now.__setitem__(0, now[0] + s))
            == [f"{names.RT} is activating"])
    assert now[0] == 4


def test_a_unit_that_gave_up_fails_the_gate_at_once():
    """A boot with a broken update should not hold the A/B updater for the whole timeout."""
    now = [0.0]
    failed = {**ALL_UP, names.RT: "failed"}
    assert (healthgate.wait_for_units(lambda: failed, 120, clock=lambda: now[0],
                                      sleep=lambda s: now.__setitem__(0, now[0] + s))
            == [f"{names.RT} is failed"])
    assert now[0] == 0
