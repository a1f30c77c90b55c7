"""What each mxrc-systemd command does, on top of probe -> plan -> apply."""

from __future__ import annotations

import logging
import shutil
import sys

from mxrc_install.pipeline import (activate, apply, config, expected, fingerprint, isolate, lock, paths, plan,
                                   probe, report, unitgraph)

from mxrc_install import names, process
from mxrc_install.cpulist import format_cpulist
from mxrc_install.exits import EXIT_ERROR, EXIT_OK, EXIT_WARNINGS, UserError
from mxrc_install.sysroot import SysRoot

log = logging.getLogger(__name__)


def load_config(root: SysRoot) -> config.Config:
    text = root.read_setting(config.CONFIG_PATH)
    return (config.parse_config(text, str(root.path(config.CONFIG_PATH))) if text is not None
            else config.Config())


def can_probe(root: SysRoot) -> bool:
    """A booted system, or a captured machine. Not a chroot: its /proc is the build host's."""
    if root.is_live:
        return root.systemd_running()
    return root.exists("/proc/cmdline")


def current_plan(root: SysRoot) -> tuple[probe.Facts, plan.Plan]:
    facts = probe.read_facts(root)
    return facts, plan.make_plan(facts, load_config(root))


def exit_code_for(result: plan.Plan, kept: bool = False) -> int:
    code = {plan.ERROR: EXIT_ERROR, plan.WARNING: EXIT_WARNINGS}.get(result.worst, EXIT_OK)
    return EXIT_WARNINGS if kept and code == EXIT_OK else code


def print_findings(result: plan.Plan, out=None) -> None:
    for line in report.finding_lines(result.findings):
        print(line, file=out or sys.stdout)   # not bound at import: stdout may be replaced


def changed_paths(actions: list) -> set[str]:
    return {a.path for a in actions if isinstance(a, (apply.Write, apply.Remove))}


def grub_installed(root: SysRoot) -> bool:
    return root.exists(activate.UPDATE_GRUB) and root.exists(activate.GRUB_CFG)


def take_effect(root: SysRoot, changed: set[str], booting: bool = False) -> None:
    """Reload, re-exec, restart irqbalance, update-grub: only what the changed files need, only live."""
    grub = grub_installed(root)
    removed = {path for path in changed if not root.exists(path)}
    if root.systemd_running():
        cpus = probe.read_cpus(root)
        online = cpus.online   # also for the cpuset resets below
        for cmd in activate.commands_for(changed, removed, booting, grub, online, cpus.isolated):
            done = process.run(cmd.argv)
            log.info("%s: exit %d", " ".join(cmd.argv), done.rc)
            if done.rc not in cmd.ok:
                print(f"mxrc-systemd: {done.failure()}", file=sys.stderr)
        for path, text in activate.init_cpus_note(removed, online, cpus.isolated, booting).items():
            apply.write_under(root, path, text)
        for path, value in activate.cgroup_resets(removed, online).items():
            if not root.exists(path):   # a slice nobody ever started (machine.slice)
                continue
            try:
                root.path(path).write_text(value + "\n")
            except OSError as exc:   # the files are gone already; the slice keeps a narrower cpuset
                print(f"mxrc-systemd: could not widen {path} to {value}: {exc.strerror}; "
                      "it is reset at the next reboot", file=sys.stderr)
    note = activate.reboot_note(changed, grub)
    if note:
        print(note)


def run_apply(root: SysRoot, booting: bool = False) -> int:
    with lock.exclusive(root):
        return _apply_locked(root, booting)


def _apply_locked(root: SysRoot, booting: bool) -> int:
    cfg = load_config(root)  # a bad config stops here, before anything is written
    if not can_probe(root):
        apply.write_under(root, paths.FIRST_BOOT, "")
        print("mxrc-systemd: no running system to probe (image build or chroot): the hardware is "
              "probed and the units adapted at first boot by mxrc-systemd-hardware.service")
        return EXIT_OK
    facts = probe.read_facts(root)
    result = plan.make_plan(facts, cfg)
    actions = apply.actions_for(root, result.owned_files())
    changed = apply.execute(root, actions)
    apply.write_under(root, paths.HARDWARE_RECORD, fingerprint.render(fingerprint.from_facts(facts)))
    root.path(paths.FIRST_BOOT).unlink(missing_ok=True)
    p = result.placement
    print(f"mxrc-systemd: RT CPUs {format_cpulist(p.rt_cpus)}, non-RT CPUs "
          f"{format_cpulist(p.nonrt_cpus)}, NUMA {format_cpulist(p.numa_nodes)}: "
          f"{sum(isinstance(a, (apply.Write, apply.Remove)) for a in actions)} file(s) changed")
    kept = [a for a in actions if isinstance(a, apply.Keep)]
    for a in kept:
        print(f"WARNING [dropin-admin-owned] {a.path}: {a.reason}; left as it is\n"
              f"        fix: remove it to let mxrc-systemd manage it, or keep your settings in a "
              f"later drop-in (e.g. 60-local.conf)")
    print_findings(result)
    if changed:
        take_effect(root, changed_paths(actions), booting)
    if changed and root.systemd_running():
        if services_running():
            print("mxrc-systemd: running MXRC services keep their current placement until restarted: "
                  "systemctl restart mxrc.target (not done automatically: it interrupts the robot)")
    return exit_code_for(result, bool(kept))


def services_running() -> bool:
    """Whether any MXRC service runs now (systemctl is-active: 0 when at least one is active)."""
    return process.run(["systemctl", "is-active", "--quiet", *names.SERVICES]).ok


def verify(root: SysRoot) -> int:
    _, result = current_plan(root)
    problems = 0
    for path, text in result.owned_files().items():
        ok = root.read_text(path) == text
        problems += not ok
        print(f"{'PASS' if ok else 'FAIL'} {path}"
              + ("" if ok else ": differs from the plan; run mxrc-systemd apply"))
    if root.systemd_running():
        for unit, prop, want in ((u, k, v)
                                 for u, props in expected.planned_properties(result.placement).items()
                                 for k, v in props.items()):
            value = process.run(["systemctl", "show", "-p", prop, "--value", unit]).stdout.strip()
            ok = value == want
            problems += not ok
            print(f"{'PASS' if ok else 'FAIL'} {unit} {prop}={value}" + (
                "" if ok else f" (plan: {want}; if the drop-ins pass, systemctl restart mxrc.target)"))
    return EXIT_ERROR if problems else EXIT_OK


def uninstall(root: SysRoot, purge: bool) -> int:
    with lock.exclusive(root):
        return _uninstall_locked(root, purge)


def _uninstall_locked(root: SysRoot, purge: bool) -> int:
    actions = apply.removal_actions(root)
    changed = apply.execute(root, actions)
    for a in actions:
        if isinstance(a, apply.Keep):
            print(f"kept {a.path}: {a.reason}")
    if purge:
        paths.check_no_symlink(root, apply.STATE_DIR)
        shutil.rmtree(root.path(apply.STATE_DIR), ignore_errors=True)
        paths.check_no_symlink(root, config.CONFIG_PATH)
        root.path(config.CONFIG_PATH).unlink(missing_ok=True)
    for line in isolate.stop(root):   # interrupts, workqueues, idle states as they were
        print(f"restored {line}")
    if changed:
        take_effect(root, changed_paths(actions))
    return EXIT_OK


def isolate_command(root: SysRoot, action: str) -> int:
    """`isolate start|stop`, run by mxrc-isolation.service around mxrc-rt."""
    if action == "stop":
        for line in isolate.stop(root):
            print(f"mxrc-systemd: restored {line}")
        return EXIT_OK
    _, result = current_plan(root)
    p = result.placement
    if not p.isolates_at_runtime:
        print(f"mxrc-systemd: isolation.mode = {p.isolation}, RT CPUs {format_cpulist(p.rt_cpus)}: "
              "no runtime isolation")
        for line in isolate.stop(root):   # a mode switched off puts back what an earlier start moved
            print(f"mxrc-systemd: restored {line}")
        return EXIT_OK
    for line in isolate.start(root, p.rt_cpus, p.nonrt_cpus):
        print(f"mxrc-systemd: {line}")
    return EXIT_OK


def capture(root: SysRoot, dest) -> int:
    """Copy exactly what the probes read into DEST: a new robot becomes a test fixture.

    DEST must be new or empty: files left from another capture (an RT kernel's
    /sys/kernel/realtime over a standard kernel's) would describe another machine."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"capture: {dest} exists and is not an empty directory; give a new directory")
    count = 0
    # The MXRC unit files and drop-ins too: the plan's dependency findings read them.
    unit_files = [f for unit in unitgraph.MXRC_UNITS for f in unitgraph.unit_files(root, unit)]
    for pattern in (*probe.PROBED_PATHS, *unit_files):
        for rel in root.glob(pattern):
            text = root.read_text(rel)
            if text is None:
                continue
            target = dest / rel.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            count += 1
    if root.exists("/dev/cpu_dma_latency"):
        (dest / "dev").mkdir(exist_ok=True)
        (dest / "dev/cpu_dma_latency").write_text("")
        count += 1
    print(f"captured {count} files into {dest}; try: mxrc-systemd --root {dest} plan")
    return EXIT_OK


def shown(value) -> str:
    """A setting as the settings file spells it, so a line can be given back as KEY=VALUE."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, frozenset):
        return format_cpulist(value)
    return str(value)


def config_show_or_set(root: SysRoot, assignments: list[str], check: bool = False,
                       then_apply: bool = False) -> int:
    if check:   # validate only: the postinst asks this for each debconf answer
        for a in assignments:
            config.parse_assignment(a)
        return EXIT_OK
    if not assignments:
        cfg = load_config(root)
        for key, (field, _) in config.KEYS.items():
            print(f"{key} = {shown(getattr(cfg, field))}")
        return EXIT_OK
    values = dict(config.parse_assignment(a) for a in assignments)
    with lock.exclusive(root):
        text = root.read_setting(config.CONFIG_PATH)
        before = text if text is not None else config.DEFAULT_FILE
        new = config.set_values(before, values)
        after = config.parse_config(new, str(root.path(config.CONFIG_PATH)))  # the whole file must stay valid
        if new != text:
            apply.write_under(root, config.CONFIG_PATH, new)
    # Values, not lines: a file that only gains a line spelling out a default changes nothing to apply
    # (mxrc-monitor's postinst, which used to read the settings before and after in two more runs).
    if then_apply and after != _settings_or_none(before):
        return run_apply(root)
    return EXIT_OK


def _settings_or_none(text: str):
    try:
        return config.parse_config(text)
    except config.ConfigError:   # a broken file that the assignments mended: changed
        return None
