"""doctor's judgement on hand-made live states: the healthy robot, and each way it can go wrong."""

import dataclasses
import json

import pytest
from sysroots import Hardware, build

from mxrc_install.ops import doctor

from mxrc_install import names

from mxrc_install.pipeline import plan, probe
from mxrc_install.sysroot import SysRoot

SPEC_ROBOT = Hardware(cpus=4, cmdline="isolcpus=managed_irq,domain,2-3", preempt_rt=True, memory_gib=8)
GENERIC_KERNEL = dataclasses.replace(SPEC_ROBOT, preempt_rt=False)
NO_ISOLCPUS = dataclasses.replace(SPEC_ROBOT, cmdline="quiet")


ISOLATION_DONE = {"LoadState": "loaded", "ActiveState": "active", "SubState": "exited", "Result": "success"}


def make_plan(tmp_path, hw=SPEC_ROBOT):
    return plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, hw))))


def healthy(result: plan.Plan) -> doctor.LiveState:
    """What a correctly installed robot reports."""
    props = {}
    for unit, wanted in doctor.expected_properties(result.placement).items():
        props[unit] = {**wanted, "LoadState": "loaded", "ActiveState": "active", "SubState": "running",
                       "Result": "success", "NRestarts": "0",
                       "WatchdogUSec": wanted.get("WatchdogUSec", "30s")}
    props[names.ISOLATION] = ISOLATION_DONE
    metrics = "\n".join(f'systemd_unit_state{{name="{u}",state="active",type="notify"}} 1.0'
                        for u in names.SERVICES)
    return doctor.LiveState(
        properties=props,
        scheduling={names.RT: doctor.Scheduling("fifo", 80, frozenset({2, 3}))},
        exposure={names.RT: 1.3, names.NONRT: 1.1, names.MONITOR: 1.1},
        journald={"SystemMaxUse": "1G"},
        exporter_metrics=metrics,
        kills={names.RT: {"watchdog": 0, "oom-kill": 0}, names.NONRT: {"watchdog": 0, "oom-kill": 0}},
    )


def by_id(checks):
    return {c.id: c for c in checks}


def failing(checks):
    return {c.id: c.status for c in checks if c.status != doctor.PASS}


def spec_robot_as_systemd_shows_it() -> doctor.LiveState:
    """A correctly installed spec robot, written from the spec and the units, not from doctor's table:
    what `systemctl show` prints for them (CPU sets as ranges, times as spans, sizes in bytes)."""
    running = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "Result": "success",
               "NRestarts": "0", "Type": "notify", "WatchdogUSec": "30s"}
    controller = {**running, "User": "mxrc", "Restart": "on-failure", "RestartUSec": "5s",
                  "StartLimitBurst": "5", "StartLimitIntervalUSec": "1min", "MemoryMax": "2147483648"}
    return doctor.LiveState(
        properties={
            names.RT: {**controller, "CPUAffinity": "2-3", "AllowedCPUs": "2-3",
                       "CPUSchedulingPriority": "80", "NUMAPolicy": "bind", "NUMAMask": "0",
                       "IOWeight": "500", "CPUQuotaPerSecUSec": "2s"},
            names.NONRT: {**controller, "CPUAffinity": "0-1", "IOWeight": "100"},
            names.MONITOR: {**running, "User": "mxrc-monitor", "CPUAffinity": "0-1"},
            names.ISOLATION: {**running, "Type": "oneshot", "SubState": "exited"},
        },
        scheduling={names.RT: doctor.Scheduling("fifo", 80, frozenset({2, 3}))},
        exposure={names.RT: 1.3, names.NONRT: 1.1, names.MONITOR: 1.1},
        journald={"SystemMaxUse": "1G", "RuntimeMaxUse": "512M"},
        exporter_metrics="\n".join(f'systemd_unit_state{{name="{u}",state="active",type="notify"}} 1.0'
                                   for u in (names.RT, names.NONRT, names.MONITOR)),
        kills={names.RT: {"watchdog": 0, "oom-kill": 0}, names.NONRT: {"watchdog": 0, "oom-kill": 0}},
    )


def test_healthy_spec_robot_passes_everything(tmp_path):
    result = make_plan(tmp_path)
    checks = doctor.run_checks(result, spec_robot_as_systemd_shows_it())
    assert failing(checks) == {}
    assert doctor.exit_code(checks) == 0
    ids = set(by_id(checks))
    for expected in ("machine:isolcpus", "machine:preempt-rt", "rt:scheduling", f"exposure:{names.RT}",
                     "journald:size-cap", "exporter:reachable", f"watchdog:{names.RT}",
                     "dependencies:cycles", f"restarts:{names.RT}", f"properties:{names.RT}",
                     "isolation:service"):
        assert expected in ids


@pytest.mark.parametrize("state, result, rt_state, expected", [
    # run E of session 8: it timed out at boot under emulation, mxrc-rt (Wants=) started anyway
    ("failed", "timeout", "active", doctor.FAIL),
    ("inactive", "success", "active", doctor.FAIL),      # stopped by hand under a running controller
    ("activating", "success", "activating", doctor.WARN),
    ("inactive", "success", "inactive", doctor.PASS),    # mxrc.target stopped: both are down
    ("active", "success", "active", doctor.PASS),
])
def test_isolation_service_that_did_not_run_is_named(tmp_path, state, result, rt_state, expected):
    result_plan = make_plan(tmp_path, NO_ISOLCPUS)
    live = healthy(result_plan)
    live.properties[names.ISOLATION] = {**ISOLATION_DONE, "ActiveState": state, "Result": result}
    live.properties[names.RT] = {**live.properties[names.RT], "ActiveState": rt_state}
    [check] = doctor.check_isolation_service(live, result_plan.placement)
    assert check.status == expected
    if expected != doctor.PASS:
        assert f"Result={result}" in check.evidence
        assert "systemctl restart mxrc-isolation.service" in check.fix


def test_isolation_service_is_not_judged_when_runtime_isolation_is_off(tmp_path):
    result_plan = make_plan(tmp_path, NO_ISOLCPUS)
    off = dataclasses.replace(result_plan.placement, isolation="off")
    live = healthy(result_plan)
    live.properties[names.ISOLATION] = {**ISOLATION_DONE, "ActiveState": "failed"}
    assert doctor.check_isolation_service(live, off) == []


def test_generic_kernel_is_an_honest_warning(tmp_path):
    result = make_plan(tmp_path, GENERIC_KERNEL)
    checks = doctor.run_checks(result, healthy(result))
    assert failing(checks) == {"machine:kernel-not-rt": doctor.WARN}
    assert doctor.exit_code(checks) == 2


def test_missing_isolcpus_fails_with_the_grub_line(tmp_path):
    result = make_plan(tmp_path, NO_ISOLCPUS)
    check = by_id(doctor.run_checks(result, healthy(result)))["machine:isolcpus-missing"]
    assert check.status == doctor.FAIL and "GRUB_CMDLINE_LINUX" in check.fix and "isolcpus=" in check.fix


def test_weakened_sandbox_fails_and_names_the_dropin(tmp_path):
    result = make_plan(tmp_path)
    live = healthy(result)
    live.exposure[names.RT] = 6.2
    live.properties[names.RT]["DropInPaths"] = "/etc/systemd/system/mxrc-rt.service.d/override.conf"
    check = by_id(doctor.run_checks(result, live))[f"exposure:{names.RT}"]
    assert check.status == doctor.FAIL and "override.conf" in check.evidence and "6.2" in check.evidence


def test_monitor_is_held_to_its_tighter_exposure(tmp_path):
    result = make_plan(tmp_path)
    live = healthy(result)
    live.exposure[names.MONITOR] = 1.8
    assert by_id(doctor.run_checks(result, live))[f"exposure:{names.MONITOR}"].status == doctor.FAIL


def test_rt_process_with_wrong_policy_or_cpus(tmp_path):
    result = make_plan(tmp_path)
    live = dataclasses.replace(healthy(result),
                               scheduling={names.RT: doctor.Scheduling("other", 0, frozenset({0, 1, 2, 3}))})
    check = by_id(doctor.run_checks(result, live))["rt:scheduling"]
    assert check.status == doctor.FAIL
    assert "other 0 (want fifo 80)" in check.evidence and "CPUs 0-3" in check.evidence


def test_property_drift_names_property_and_plan_value(tmp_path):
    result = make_plan(tmp_path)
    live = healthy(result)
    live.properties[names.RT]["CPUAffinity"] = "0-3"
    check = by_id(doctor.run_checks(result, live))[f"properties:{names.RT}"]
    assert check.status == doctor.FAIL and "CPUAffinity=0-3 (want 2-3)" in check.evidence


def test_watchdog_off_fails(tmp_path):
    result = make_plan(tmp_path)
    live = healthy(result)
    live.properties[names.NONRT]["WatchdogUSec"] = "0"
    assert by_id(doctor.run_checks(result, live))[f"watchdog:{names.NONRT}"].status == doctor.FAIL


def test_start_limit_and_kills(tmp_path):
    result = make_plan(tmp_path)
    live = healthy(result)
    live.properties[names.RT].update(Result="start-limit-hit", ActiveState="failed", NRestarts="5")
    live.kills[names.RT] = {"watchdog": 2, "oom-kill": 1}
    checks = by_id(doctor.run_checks(result, live))
    assert checks[f"start-limit:{names.RT}"].status == doctor.FAIL
    assert "reset-failed" in checks[f"start-limit:{names.RT}"].fix
    assert checks[f"restarts:{names.RT}"].status == doctor.WARN
    assert "2 watchdog" in checks[f"restarts:{names.RT}"].evidence
    assert checks[f"active:{names.RT}"].status == doctor.FAIL


def test_exporter_unreachable_or_missing(tmp_path):
    result = make_plan(tmp_path)
    down = dataclasses.replace(healthy(result), exporter_metrics=None, exporter_error="Connection refused")
    check = by_id(doctor.run_checks(result, down))["exporter:reachable"]
    assert check.status == doctor.FAIL and "Connection refused" in check.evidence
    absent = healthy(result)
    absent.properties[names.MONITOR] = {"LoadState": "not-found"}
    assert by_id(doctor.run_checks(result, absent))["exporter:reachable"].status == doctor.WARN


def test_journal_without_a_cap_warns():
    assert doctor.check_journald(doctor.LiveState({}, {}, {}, {}, None))[0].status == doctor.WARN


def test_json_output_is_complete(tmp_path):
    result = make_plan(tmp_path, GENERIC_KERNEL)
    data = json.loads(doctor.render_json(doctor.run_checks(result, healthy(result))))
    assert data["summary"]["WARN"] == 1 and data["summary"]["FAIL"] == 0
    assert all({"id", "status", "evidence", "fix", "spec"} <= set(c) for c in data["checks"])


def test_text_output_ends_with_the_counts(tmp_path):
    result = make_plan(tmp_path, GENERIC_KERNEL)
    text = doctor.render_text(doctor.run_checks(result, healthy(result)))
    assert text.splitlines()[-1].endswith(" passed, 1 warning, 0 failed"), text
    assert "fix: " in text   # the warning says what to do


@pytest.mark.parametrize("text, settings", [
    ("# /usr/lib/systemd/journald.conf\n[Journal]\n#SystemMaxUse=\n\n"
     "# /usr/lib/systemd/journald.conf.d/60-mxrc.conf\n[Journal]\nSystemMaxUse=1G\n", {"SystemMaxUse": "1G"}),
    ("[Journal]\nSystemMaxUse=1G\n[Journal]\nSystemMaxUse=\n", {}),   # reset by a later file
])
def test_parse_journald_config(text, settings):
    assert doctor.parse_journald_config(text) == settings


def test_parse_exposure():
    assert doctor.parse_exposure("→ Overall exposure level for mxrc-rt.service: 1.3 OK 🙂") == 1.3
    assert doctor.parse_exposure("Unit mxrc-rt.service not found.") is None


def test_every_expected_property_is_asked_of_systemctl(tmp_path):
    placement = make_plan(tmp_path).placement
    named = {k for props in doctor.expected_properties(placement).values() for k in props}
    assert named <= doctor.PROPERTY_NAMES
    assert doctor.planned_properties(placement)[names.RT] == {
        "CPUAffinity": "2-3", "AllowedCPUs": "2-3", "CPUSchedulingPriority": "80", "NUMAMask": "0",
        "WatchdogUSec": "30s"}
