"""The `mxrc-systemd` command, used by operators and by the package's postinst."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mxrc_install import __version__, failover, plan, probe, report, steps
from mxrc_install.sysroot import SysRoot

EXIT_OK, EXIT_ERROR, EXIT_WARNINGS = 0, 1, 2


def cmd_configure(args: argparse.Namespace) -> int:
    env = {"MXRC_DPKG_ACTION": args.action or "", "MXRC_DPKG_OLD_VERSION": args.old_version or ""}
    return steps.run_steps(SysRoot(args.root), env)


def cmd_failover(args: argparse.Namespace) -> int:
    return failover.handle(args.unit)


def exit_code_for(result: plan.Plan) -> int:
    return {plan.ERROR: EXIT_ERROR, plan.WARNING: EXIT_WARNINGS}.get(result.worst, EXIT_OK)


def cmd_probe(args: argparse.Namespace) -> int:
    facts = probe.read_facts(SysRoot(args.root))
    print(report.facts_json(facts) if args.json else report.facts_text(facts), end="")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    root = SysRoot(args.root)
    result = plan.make_plan(probe.read_facts(root))
    current = {u: root.read_text(report.dropin_path(u)) for u in result.dropins}
    print(report.plan_json(result, current) if args.json else report.plan_text(result, current), end="")
    return exit_code_for(result)


def cmd_steps(args: argparse.Namespace) -> int:
    for step in steps.collect_steps(SysRoot(args.root)):
        print(f"{step.name:30} {'enabled' if step.enabled else 'masked':8} {step.path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mxrc-systemd",
        description="Adapt the MXRC systemd units to this machine and manage them.",
        epilog="Exit status: 0 ok, 1 error or blocker, 2 done with warnings. See mxrc-systemd(8).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                        help="operate on the system installed under DIR (default: /)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("probe", help="show what this machine offers for real-time operation")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("plan", help="show the drop-ins and findings apply would produce; writes nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("configure", help="run the configure steps (called by the postinst)")
    p.add_argument("action", nargs="?", help="the postinst's action, e.g. configure")
    p.add_argument("old_version", nargs="?", help="the version being upgraded from")
    p.set_defaults(func=cmd_configure)

    p = sub.add_parser("steps", help="list the configure steps and whether each is enabled")
    p.set_defaults(func=cmd_steps)

    p = sub.add_parser("failover", help="record a unit's failure (run by mxrc-failover@.service)")
    p.add_argument("unit", help="the failed unit, e.g. mxrc-rt.service")
    p.set_defaults(func=cmd_failover)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="mxrc-systemd: %(message)s", stream=sys.stderr)
    if not args.root.is_dir():
        print(f"mxrc-systemd: --root {args.root}: not a directory; give the root of an installed "
              "system, e.g. --root /mnt/image", file=sys.stderr)
        return EXIT_ERROR
    return args.func(args)
