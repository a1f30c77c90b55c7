"""The operator commands on a running robot: doctor, jitter, boot-time, deps."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from mxrc_install import names, process
from mxrc_install.pipeline import apply

from mxrc_install.ops import (boottime, bundle, deps, doctor, healthgate, isolation, isolation_facts, jitter,
                              live, timerlat)
from mxrc_install.pipeline.commands import capture, current_plan, load_config
from mxrc_install.exits import EXIT_ERROR, EXIT_OK, EXIT_WARNINGS, UserError
from mxrc_install.sysroot import SysRoot


class NotLive(UserError):
    pass


def _require_running_system(root: SysRoot, what: str) -> None:
    if not root.systemd_running():
        raise NotLive(f"{what} checks a running system: run it on the robot itself (not with --root, "
                      "not in a chroot or image build)")


def all_checks(root: SysRoot) -> list:
    """Every doctor check: the spec's promises and the RT isolation layers."""
    facts, result = current_plan(root)
    checks = doctor.run_checks(result, live.gather(result.placement))
    found = isolation_facts_of(root, facts, result)
    return (isolation.settle_isolcpus(checks, found)
            + isolation.run_checks(found, result.placement, result.placement.isolation))


def doctor_command(root: SysRoot, as_json: bool) -> int:
    _require_running_system(root, "doctor")
    checks = all_checks(root)
    print(doctor.render_json(checks) if as_json else doctor.render_text(checks), end="")
    return doctor.exit_code(checks)


def isolation_facts_of(root: SysRoot, facts, result) -> isolation_facts.IsolationFacts:
    """What the RT isolation layers (#10) read, after live.gather so its short-lived children are gone."""
    found = isolation_facts.read(root, facts.cpus.online, result.placement.rt_cpus, facts.rt_group_sched,
                                 names.RT)
    # doctor itself runs wherever its shell does: naming it would hide the real offenders.
    return isolation_facts.without_pids(found, {os.getpid()})


def jitter_command(root: SysRoot, cycles: int, load: bool, as_json: bool, tool: str = "cyclictest") -> int:
    _require_running_system(root, "jitter")
    if os.geteuid() != 0:
        raise NotLive("jitter starts SCHED_FIFO measurement threads: run it as root")
    facts, result = current_plan(root)
    if tool == "timerlat":
        measured = timerlat.run(root, result.placement, cycles, load,
                                jitter.load_running(result.placement, len(facts.cpus.online)))
        print(timerlat.result_json(measured) if as_json else timerlat.result_text(measured), end="")
    else:
        measured = jitter.run(result.placement, cycles, load, facts.preempt_rt, len(facts.cpus.online))
        print(jitter.result_json(measured) if as_json else jitter.result_text(measured), end="")
    return EXIT_OK if measured.passed else EXIT_ERROR


def boot_time_record(root: SysRoot, label: str, if_absent: bool) -> int:
    _require_running_system(root, "boot-time record")
    records = boottime.read_records(root)
    if if_absent and any(r.label == label for r in records):
        print(f"mxrc-systemd: a {label!r} boot is already recorded; kept")
        return EXIT_OK
    record = live.boot_record(root, label, load_config(root).boot_optimize)
    if label == "boot" and record.ready_seconds is None:
        # Started by hand after the boot (or partly): it says nothing about booting.
        print("mxrc-systemd: the MXRC services were not started by this boot; nothing recorded")
        return EXIT_OK
    apply.write_atomic(root.path(boottime.RECORDS),
                       boottime.render_records(boottime.with_record(records, record)))
    ready = ("not started at boot" if record.ready_seconds is None
             else f"MXRC ready {record.ready_seconds:.3f} s")
    print(f"mxrc-systemd: recorded boot {record.boot_id[:12]} as {label!r} "
          f"(optimize={'yes' if record.optimized else 'no'}, {ready} after userspace start)")
    return EXIT_OK


def boot_time_show(root: SysRoot, as_json: bool) -> int:
    records = boottime.read_records(root)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in records], indent=2))
    else:
        print(boottime.records_text(records), end="")
    return EXIT_OK


def boot_time_compare(root: SysRoot, before_id: str | None, after_id: str | None, as_json: bool) -> int:
    before, after = boottime.choose_pair(boottime.read_records(root), before_id, after_id)
    if before is None or after is None:
        missing = "an unoptimised boot (before)" if before is None else "an optimised boot (after)"
        print(f"mxrc-systemd: no {missing} with the MXRC services started at boot is recorded.\n"
              "  To measure: mxrc-systemd config boot.optimize=no && mxrc-systemd apply && reboot;\n"
              "  then: mxrc-systemd config boot.optimize=yes && mxrc-systemd apply && reboot;\n"
              "  then: mxrc-systemd boot-time compare")
        return EXIT_WARNINGS
    c = boottime.comparison(before, after)
    print(json.dumps(c, indent=2) if as_json else boottime.comparison_text(c), end="\n" if as_json else "")
    return EXIT_OK if c["sc006_met"] else EXIT_WARNINGS


def deps_command(root: SysRoot, as_json: bool) -> int:
    records = [r for r in boottime.read_records(root) if r.units]
    durations = records[-1].units if records else None
    a = deps.analyse(root, durations)
    print(json.dumps(dataclasses.asdict(a), indent=2) if as_json else deps.analysis_text(a),
          end="\n" if as_json else "")
    return EXIT_ERROR if a.cycles else EXIT_OK


def health_gate_command(root: SysRoot, timeout: int) -> int:
    """Exit 0 only for a healthy controller (mxrc-boot-health.service, before boot-complete.target)."""
    _require_running_system(root, "health-gate")
    units = (names.TARGET, *names.SERVICES)
    problems = healthgate.wait_for_units(
        lambda: {u: p.get("ActiveState", "") for u, p in live.show(units, ("ActiveState",)).items()}, timeout)
    if not problems:
        problems = healthgate.failed_checks(all_checks(root))
    for line in problems:
        print(f"mxrc-systemd: health gate: {line}")
    print("mxrc-systemd: health gate: " + ("FAILED: this boot is not marked good" if problems
                                            else "the controller is healthy: boot good"))
    return EXIT_ERROR if problems else EXIT_OK


def _run_for_bundle(argv: tuple[str, ...]) -> tuple[int, str, str]:
    done = process.run(argv, timeout=120)
    return done.rc, done.stdout, done.stderr


def report_command(root: SysRoot, output) -> int:
    """Collect the support bundle into OUTPUT (a .tar.gz), showing progress on stderr."""
    _require_running_system(root, "report")
    out = Path(output or f"mxrc-report-{os.uname().nodename}-{int(time.time())}.tar.gz")
    items = bundle.collect(_run_for_bundle, lambda msg: print(f"mxrc-systemd: report {msg}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="mxrc-report-") as tmp:
        print("mxrc-systemd: report capture (the files the probes read)", file=sys.stderr)
        capture(root, Path(tmp) / "capture")
        bundle.write_tar(out, items, Path(tmp) / "capture")
    print(f"mxrc-systemd: wrote {out} ({out.stat().st_size} bytes)")
    return EXIT_OK
