import json

import pytest

from mxrc_install.ops import failover
from mxrc_install.showparse import parse_one, parse_show

SHOW = "ActiveState=failed\nSubState=failed\nResult=watchdog\nNRestarts=5\n"


def test_parse_show_keeps_values_with_equals():
    assert parse_one("A=b=c\nNoEquals\nN=1") == {"A": "b=c", "N": "1"}
    assert parse_show("Id=a\nX=1\n\nId=b\n") == [{"Id": "a", "X": "1"}, {"Id": "b"}]
    assert parse_one("") == {} and parse_show("\n\n") == []


@pytest.mark.parametrize("active,sub,result,outcome", [
    ("failed", "failed", "start-limit-hit", "final"),   # systemd gave up
    ("failed", "failed", "signal", "final"),            # systemd 257 keeps the last failure's Result
    ("inactive", "dead", "exit-code", "final"),          # failed, no restart, unit collected as inactive
    ("inactive", "dead", "success", "stopped"),          # stopped by someone while the handler watched
    ("activating", "auto-restart", "signal", "transient"),  # systemd will restart it
    ("active", "running", "success", "transient"),
])
def test_final_only_when_systemd_gave_up(active, sub, result, outcome):
    props = {"ActiveState": active, "SubState": sub, "Result": result, "NRestarts": "2"}
    event = failover.event_from("mxrc-rt.service", {"MONITOR_SERVICE_RESULT": "watchdog"}, props, 0.0)
    assert (event.outcome, event.final) == (outcome, outcome == "final")
    assert failover.OUTCOMES[outcome] in event.summary()


def test_a_stop_while_watched_reports_the_failure_that_started_the_watch_and_runs_no_hook(
        tmp_path, monkeypatch):
    # The CI drill run: the harness stopped mxrc-rt between drills while the OOM drill's handler
    # still watched; that said "final" with result=success and would have run the failover hooks.
    hooks = tmp_path / "failover.d"
    hooks.mkdir()
    (hooks / "10-alert").write_text("#!/bin/sh\ntouch " + str(tmp_path / "ran") + "\n")
    (hooks / "10-alert").chmod(0o755)
    monkeypatch.setattr(failover, "HOOK_DIR", hooks)
    monkeypatch.setattr(failover, "settle", lambda read: {"ActiveState": "inactive", "SubState": "dead",
                                                          "Result": "success", "NRestarts": "0"})
    monkeypatch.setenv("MONITOR_SERVICE_RESULT", "oom-kill")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert failover.handle("mxrc-rt.service") == 0
    line = json.loads((tmp_path / "state" / "events.jsonl").read_text())
    assert (line["result"], line["outcome"], line["final"]) == ("oom-kill", "stopped", False)
    assert not (tmp_path / "ran").exists()


def test_a_transient_event_takes_the_monitor_environment():
    env = {"MONITOR_SERVICE_RESULT": "oom-kill", "MONITOR_EXIT_CODE": "killed",
           "MONITOR_EXIT_STATUS": "KILL", "MONITOR_INVOCATION_ID": "abc"}
    props = {"ActiveState": "activating", "SubState": "auto-restart", "Result": "success", "NRestarts": "1"}
    event = failover.event_from("mxrc-rt.service", env, props, 1.5)
    assert (event.result, event.exit_code, event.exit_status, event.restarts) == \
        ("oom-kill", "killed", "KILL", 1)
    assert "oom-kill" in event.summary() and "transient" in event.summary()


def test_a_final_event_says_why_systemd_gave_up_not_what_started_the_watch():
    # The CI drill run: a handler started by an OOM kill watched on while a
    # restart storm merged into its run; the final failure was the storm's.
    env = {"MONITOR_SERVICE_RESULT": "oom-kill"}
    storm = {"ActiveState": "failed", "SubState": "failed", "Result": "start-limit-hit", "NRestarts": "5"}
    event = failover.event_from("mxrc-rt.service", env, storm, 1.5)
    assert (event.result, event.trigger_result, event.final) == ("start-limit-hit", "oom-kill", True)
    assert "start-limit-hit" in event.summary() and "final" in event.summary()


def test_event_falls_back_to_unit_result_and_tolerates_garbage():
    event = failover.event_from("x.service", {}, {"Result": "watchdog", "NRestarts": "n/a"}, 0)
    assert event.result == "watchdog" and event.restarts == 0


def test_record_appends_json_lines(tmp_path):
    event = failover.event_from("mxrc-rt.service", {}, parse_one(SHOW), 2.0)
    failover.record(event, tmp_path / "state")
    path = failover.record(event, tmp_path / "state")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["unit"] == "mxrc-rt.service" and lines[0]["final"] is True


@pytest.mark.spawns
def test_hooks_run_with_event_and_failures_counted(tmp_path):
    hooks = tmp_path / "failover.d"
    hooks.mkdir()
    out = tmp_path / "seen"
    (hooks / "10-record").write_text(f"#!/bin/sh\necho \"$1 $MXRC_FAILURE_RESULT\" > {out}\n")
    (hooks / "20-fail").write_text("#!/bin/sh\nexit 3\n")
    (hooks / "30-not-executable").write_text("#!/bin/sh\nexit 4\n")
    for name in ("10-record", "20-fail"):
        (hooks / name).chmod(0o755)
    event = failover.event_from("mxrc-rt.service", {"MONITOR_SERVICE_RESULT": "watchdog"}, {}, 0)
    assert failover.run_hooks(event, hooks) == 1
    assert out.read_text() == "mxrc-rt.service watchdog\n"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def reader(states):
    """Each read returns the next (ActiveState, SubState); the last one repeats."""
    states = list(states)

    def read():
        active, sub = states.pop(0) if len(states) > 1 else states[0]
        return {"ActiveState": active, "SubState": sub}
    return read


def test_settle_follows_a_storm_to_the_final_failure():
    clock = FakeClock()
    storm = [("activating", "auto-restart"), ("active", "running"), ("activating", "auto-restart"),
             ("active", "running"), ("failed", "failed")]
    props = failover.settle(reader(storm), clock, clock.sleep)
    assert props["ActiveState"] == "failed"


def test_settle_calls_a_stable_restart_transient():
    clock = FakeClock()
    props = failover.settle(reader([("activating", "auto-restart"), ("active", "running")]), clock,
                            clock.sleep)
    assert props["ActiveState"] == "active"
    assert failover.STABLE_SECONDS <= clock.now < failover.WATCH_LIMIT_SECONDS


def test_settle_gives_up_at_the_watch_limit():
    clock = FakeClock()
    props = failover.settle(reader([("activating", "auto-restart")]), clock, clock.sleep)
    assert props["SubState"] == "auto-restart" and clock.now >= failover.WATCH_LIMIT_SECONDS
