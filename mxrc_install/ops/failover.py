"""The OnFailure= handler behind mxrc-failover@.service.

systemd versions differ in when OnFailure= fires: on every failure, or only
once the restarts are exhausted.  So the handler looks at the failed unit's
state and decides: while systemd is still restarting the unit the failure is
recorded as transient; when the unit has given up (failed, start limit hit)
it is final and the FailoverManager hooks in /etc/mxrc/failover.d run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from pathlib import Path

from mxrc_install import process
from mxrc_install.showparse import parse_one

log = logging.getLogger(__name__)

HOOK_DIR = Path("/etc/mxrc/failover.d")
SHOW_PROPERTIES = ("ActiveState", "SubState", "Result", "NRestarts")
# A restarted unit that stays up this long recovered; one that fails again
# meanwhile is watched on (a later OnFailure= start merges into this run,
# so a restart storm's final failure must be seen by the running handler).
STABLE_SECONDS = 10.0
WATCH_LIMIT_SECONDS = 50.0  # under the unit's TimeoutStartSec=


# What a watched failure came to, as the summary line says it.
OUTCOMES = {"final": "final", "transient": "transient (systemd restarts it)",
            "stopped": "stopped meanwhile, not by systemd giving up: no failover"}


def outcome_of(active_state: str, sub_state: str, unit_result: str) -> str:
    """final: systemd gave up (failover takes over); stopped: the unit ended cleanly while watched
    (an operator's or a drill's stop: inactive, Result=success); transient: restarting or recovered."""
    if sub_state == "auto-restart":
        return "transient"
    if active_state == "failed" or (active_state == "inactive" and unit_result not in ("", "success")):
        return "final"
    return "stopped" if active_state == "inactive" else "transient"


@dataclasses.dataclass(frozen=True)
class FailureEvent:
    unit: str
    result: str  # why it failed: watchdog, oom-kill, exit-code, start-limit-hit...
    trigger_result: str  # $MONITOR_SERVICE_RESULT: the failure that started this handler
    exit_code: str
    exit_status: str
    invocation_id: str
    active_state: str
    sub_state: str
    restarts: int
    timestamp: float
    outcome: str  # a key of OUTCOMES

    @property
    def final(self) -> bool:
        """systemd has stopped trying: failover must take over."""
        return self.outcome == "final"

    def summary(self) -> str:
        return (f"{self.unit} failed: result={self.result or 'unknown'} exit={self.exit_code}/"
                f"{self.exit_status} restarts={self.restarts} state={self.active_state}/"
                f"{self.sub_state}: {OUTCOMES[self.outcome]}")


def event_from(unit: str, env: dict[str, str], props: dict[str, str], now: float) -> FailureEvent:
    try:
        restarts = int(props.get("NRestarts", "0"))
    except ValueError:
        restarts = 0
    trigger = env.get("MONITOR_SERVICE_RESULT", "")
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    unit_result = props.get("Result", "")
    outcome = outcome_of(active, sub, unit_result)
    # A handler started by one failure watches on (settle), and a later failure
    # merges into its run: when systemd gave up, its Result says why, not the
    # failure that happened to start the watch.
    result = (unit_result if outcome == "final" else None) or trigger or unit_result
    return FailureEvent(
        unit=unit,
        result=result,
        trigger_result=trigger,
        exit_code=env.get("MONITOR_EXIT_CODE", ""),
        exit_status=env.get("MONITOR_EXIT_STATUS", ""),
        invocation_id=env.get("MONITOR_INVOCATION_ID", ""),
        active_state=active,
        sub_state=sub,
        restarts=restarts,
        timestamp=now,
        outcome=outcome,
    )


def read_unit_state(unit: str) -> dict[str, str]:
    args = ["systemctl", "show", unit] + [f"--property={p}" for p in SHOW_PROPERTIES]
    done = process.run(args)
    if not done.ok:
        log.warning("cannot read the state of %s: %s", unit, done.failure())
        return {}
    return parse_one(done.stdout)


def settle(read, clock=time.monotonic, sleep=time.sleep) -> dict[str, str]:
    """Watch the unit until systemd gave up on it, or it ran stably, or the watch limit passed."""
    started = clock()
    stable_since = None
    props = read()
    while clock() - started < WATCH_LIMIT_SECONDS:
        state = props.get("ActiveState")
        if state in ("failed", "inactive"):
            return props
        if state == "active":
            stable_since = clock() if stable_since is None else stable_since
            if clock() - stable_since >= STABLE_SECONDS:
                return props
        else:
            stable_since = None
        sleep(0.5)
        props = read()
    return props


def record(event: FailureEvent, state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "events.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(dataclasses.asdict(event) | {"final": event.final}, sort_keys=True) + "\n")
    return path


def run_hooks(event: FailureEvent, hook_dir: Path = HOOK_DIR) -> int:
    """Run each executable hook with the event in its environment; count the failures."""
    if not hook_dir.is_dir():
        return 0
    env = {**os.environ, "MXRC_FAILED_UNIT": event.unit, "MXRC_FAILURE_RESULT": event.result,
           "MXRC_FAILURE_RESTARTS": str(event.restarts)}
    failed = 0
    for hook in sorted(hook_dir.iterdir()):
        if not (hook.is_file() and os.access(hook, os.X_OK)):
            continue
        rc = subprocess.run([str(hook), event.unit], env=env).returncode
        if rc != 0:
            log.error("failover hook %s exited with %d", hook, rc)
            failed += 1
    return failed


def handle(unit: str) -> int:
    event = event_from(unit, dict(os.environ), settle(lambda: read_unit_state(unit)), time.time())
    print(event.summary(), flush=True)
    state_dir = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/mxrc/failover").split(":")[0])
    record(event, state_dir)
    if event.final:
        return 1 if run_hooks(event) else 0
    return 0
