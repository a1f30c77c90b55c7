"""The `mxrc-systemd` command, used by operators and by the package's postinst."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from mxrc_install import __version__, errors
from mxrc_install.exits import EXIT_ERROR, EXIT_OK, EXIT_WARNINGS, UserError
from mxrc_install.sysroot import SysRoot

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_WARNINGS", "build_parser", "main"]


# Each command imports only what it uses: boot-check runs on the boot's
# critical path, before the MXRC services, and Python's imports are most of
# its cost (the operator tools pull in urllib, http.client, email, ...).
def _module(name: str):
    return importlib.import_module(f"mxrc_install.{name}")


def call(module: str, function: str, *arg_names: str):
    """A handler calling mxrc_install.MODULE.FUNCTION(sysroot, *args.ARG_NAMES)."""
    def handler(args) -> int:
        return getattr(_module(module), function)(args.sysroot, *(getattr(args, n) for n in arg_names))
    return handler


def cmd_probe(args) -> int:
    probe, report = _module("pipeline.probe"), _module("pipeline.report")
    facts = probe.with_live_details(probe.read_facts(args.sysroot), args.sysroot)
    print(report.facts_json(facts) if args.json else report.facts_text(facts), end="")
    return EXIT_OK


def cmd_plan(args) -> int:
    commands, report = _module("pipeline.commands"), _module("pipeline.report")
    root = args.sysroot
    _, result = commands.current_plan(root)
    current = {path: root.read_text(path) for path in result.owned_files()}
    print(report.plan_json(result, current) if args.json else report.plan_text(result, current), end="")
    return commands.exit_code_for(result)


def cmd_configure(args) -> int:
    env = {"MXRC_DPKG_ACTION": args.action or "", "MXRC_DPKG_OLD_VERSION": args.old_version or ""}
    return _module("pipeline.steps").run_steps(args.sysroot, env)


def cmd_steps(args) -> int:
    for step in _module("pipeline.steps").collect_steps(args.sysroot):
        print(f"{step.name:30} {'enabled' if step.enabled else 'masked':8} {step.path}")
    return EXIT_OK


def cmd_failover(args) -> int:
    return _module("ops.failover").handle(args.unit)


def cmd_boot_time(args) -> int:
    operations = _module("ops.operations")
    if args.action == "record":
        return operations.boot_time_record(args.sysroot, args.label, args.if_absent)
    if args.action == "compare":
        return operations.boot_time_compare(args.sysroot, args.before, args.after, args.json)
    return operations.boot_time_show(args.sysroot, args.json)


COMMANDS = {
    "probe": ("show what this machine offers for real-time operation", cmd_probe),
    "plan": ("show the drop-ins and findings apply would produce; writes nothing", cmd_plan),
    "apply": ("adapt the MXRC units to this machine (idempotent)", call("pipeline.commands", "run_apply")),
    "verify": ("check that the files and the live units match the plan", call("pipeline.commands", "verify")),
    "uninstall": ("remove the drop-ins mxrc-systemd wrote (admin files are kept)",
                  call("pipeline.commands", "uninstall", "purge")),
    "boot-check": ("at boot: apply on first boot or changed hardware (mxrc-systemd-hardware.service)",
                   call("pipeline.bootcheck", "boot_check")),
    "capture": ("copy the files the probes read into DEST, to make a test fixture of this machine",
                call("pipeline.commands", "capture", "dest")),
    "config": ("show the settings, or change them with KEY=VALUE",
               call("pipeline.commands", "config_show_or_set", "assignments", "check", "apply")),
    "configure": ("run the configure steps (called by the postinst)", cmd_configure),
    "steps": ("list the configure steps and whether each is enabled", cmd_steps),
    "isolate": ("keep interrupts, workqueues, kernel threads and deep idle states off the RT CPUs, "
                "or put them back (run by mxrc-isolation.service)",
                call("pipeline.commands", "isolate_command", "action")),
    "failover": ("record a unit's failure (run by mxrc-failover@.service)", cmd_failover),
    "doctor": ("check every promise of the spec on this running system: PASS / WARN / FAIL with fixes",
               call("ops.operations", "doctor_command", "json")),
    "jitter": ("measure RT latency inside mxrc-rt's placement and limits (SC-001): cyclictest, or rtla "
               "timerlat to also name a spike's cause",
               call("ops.operations", "jitter_command", "cycles", "load", "json", "tool")),
    "boot-time": ("record, show and compare the MXRC services' boot-time initialisation (SC-006)",
                  cmd_boot_time),
    "health-gate": ("succeed only when the controller is healthy "
                    "(before boot-complete.target, for A/B updates)",
                    call("ops.operations", "health_gate_command", "timeout")),
    "report": ("collect a support bundle (versions, plan, doctor, units, journal, capture) into a .tar.gz",
               call("ops.operations", "report_command", "output")),
    "deps": ("analyse the MXRC units' dependencies: parallel start, critical chain, loops (FR-022)",
             call("ops.operations", "deps_command", "json")),
}


def _cycles(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 100 <= n <= 10_000_000:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number of cycles from 100 to 10000000 "
                                         "(10000 cycles = 10 s at 1 kHz)")
    return n


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (error): 2 means "done with warnings" for this command."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mxrc-systemd",
        description="Adapt the MXRC systemd units to this machine and manage them.",
        epilog="Exit status: 0 ok, 1 error or blocker, 2 done with warnings. See mxrc-systemd(8).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                        help="operate on the system installed under DIR (default: /)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {name: sub.add_parser(name, help=text, description=text) for name, (text, _) in COMMANDS.items()}
    for name in ("probe", "plan", "doctor", "jitter", "deps"):
        subs[name].add_argument("--json", action="store_true", help="machine-readable output")
    subs["jitter"].add_argument("--cycles", type=_cycles, default=10_000,
                                help="measurement cycles at 1 kHz (default: 10000, i.e. 10 s)")
    subs["jitter"].add_argument("--tool", choices=("cyclictest", "timerlat"), default="cyclictest",
                                help="cyclictest (default); timerlat: rtla's tracer, which stops at the "
                                     "first latency above 50 us and names its cause (IRQ, thread, idle exit)")
    subs["jitter"].add_argument("--load", action="store_true",
                                help="run SCHED_OTHER busy loops on every CPU while measuring")
    bt = subs["boot-time"].add_subparsers(dest="action", metavar="ACTION")
    bt_show = bt.add_parser("show", help="list the recorded boots (default)")
    bt_record = bt.add_parser("record",
                              help="record this boot (mxrc-boot-time.service does it at every boot)")
    bt_compare = bt.add_parser("compare", help="before vs after the boot optimisation, change in %%")
    for p in (bt_show, bt_compare):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    bt_record.add_argument("--label", choices=("before", "boot"), default="boot",
                           help="before: the baseline (the postinst records it); boot: a later boot")
    bt_record.add_argument("--if-absent", action="store_true", help="only if no boot has this label yet")
    bt_compare.add_argument("--before", metavar="BOOT_ID", help="boot id (prefix) to compare from")
    bt_compare.add_argument("--after", metavar="BOOT_ID", help="boot id (prefix) to compare to")
    subs["boot-time"].set_defaults(action="show", json=False)
    subs["health-gate"].add_argument("--timeout", type=int, default=120, metavar="SECONDS",
                                     help="how long to wait for the MXRC units to come up (default: 120)")
    subs["report"].add_argument("-o", "--output", metavar="FILE",
                                help="where to write it (default: mxrc-report-HOST-TIME.tar.gz here)")
    subs["uninstall"].add_argument("--purge", action="store_true",
                                   help="also remove the settings and the recorded state")
    subs["capture"].add_argument("dest", type=Path, help="directory to create the fixture in")
    subs["config"].add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                                help="e.g. rt.cpus=2-3 rt.watchdog_sec=30 monitor.port=9558")
    config_mode = subs["config"].add_mutually_exclusive_group()
    config_mode.add_argument("--check", action="store_true",
                             help="only validate the KEY=VALUE assignments; write nothing")
    config_mode.add_argument("--apply", action="store_true",
                             help="then run apply if a setting's value changed")
    subs["configure"].add_argument("action", nargs="?", help="the postinst's action, e.g. configure")
    subs["configure"].add_argument("old_version", nargs="?", help="the version being upgraded from")
    subs["isolate"].add_argument("action", choices=("start", "stop"),
                                 help="start: isolate as the plan says; stop: restore the saved values")
    subs["failover"].add_argument("unit", help="the failed unit, e.g. mxrc-rt.service")
    for name, (_, func) in COMMANDS.items():
        subs[name].set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="mxrc-systemd: %(message)s", stream=sys.stderr)
    try:
        if not args.root.is_dir():
            raise UserError(f"--root {args.root}: not a directory; give the root of an installed "
                            "system, e.g. --root /mnt/image")
        args.sysroot = SysRoot(args.root.resolve())
        return args.func(args)
    except (UserError, OSError, UnicodeError, ValueError) as exc:
        message, path = errors.describe(exc)
        if getattr(args, "json", False):
            print(json.dumps({"error": message, "path": path}))
        print(f"mxrc-systemd: {message}", file=sys.stderr)
        return EXIT_ERROR
