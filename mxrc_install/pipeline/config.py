"""The operator's settings: /etc/mxrc/mxrc-systemd.conf, also fed by debconf.

Every value is validated with a message that names the value and the fix.
Writing changes only the lines of the keys being set, so an admin's comments
and layout survive a dpkg-reconfigure.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import re

from mxrc_install.cpulist import CpuListError, is_ascii_number, parse_cpulist
from mxrc_install.exits import UserError

CONFIG_PATH = "/etc/mxrc/mxrc-systemd.conf"


class ConfigError(UserError, ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Config:
    rt_cpus: frozenset[int] | None = None      # None: chosen from the hardware
    rt_priority: int = 80
    watchdog_sec: int = 30
    memory_max: int | None = None              # bytes; None: 2G bounded by RAM
    cpu_quota: int | None = None               # percent; None: 100 per RT CPU
    monitor_listen: str = "0.0.0.0"
    monitor_port: int = 9558
    boot_optimize: bool = True
    reapply_on_hardware_change: bool = True
    isolation: str = "auto"                    # one of ISOLATION_MODES
    boot_cmdline: bool = False                 # write the kernel command line drop-in (GRUB)


def _auto(value: str) -> bool:
    return value.strip().lower() in ("", "auto")


def parse_rt_cpus(value: str):
    if _auto(value):
        return None
    try:
        cpus = parse_cpulist(value)
    except CpuListError as exc:
        raise ConfigError(f"rt.cpus = {value!r}: {exc}; use a CPU list such as 2-3 or 'auto'") from None
    if not cpus:
        raise ConfigError(f"rt.cpus = {value!r}: empty; use a CPU list such as 2-3 or 'auto'")
    return cpus


def _int_in(name: str, value: str, lo: int, hi: int, hint: str) -> int:
    if not is_ascii_number(value.strip()) or len(value.strip()) > 12 or not lo <= int(value) <= hi:
        raise ConfigError(f"{name} = {value!r}: must be a whole number from {lo} to {hi}{hint}")
    return int(value)


SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str):
    if _auto(value):
        return None
    match = re.fullmatch(r"\s*([0-9]{1,15})\s*([KMGT]?)i?B?\s*", value, re.I | re.ASCII)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"rt.memory_max = {value!r}: use a size such as 2G or 512M, or 'auto'")
    size = int(match.group(1)) * SIZE_UNITS[match.group(2).upper()]
    if size < 64 * 1024**2:
        raise ConfigError(f"rt.memory_max = {value!r}: below 64M the controller cannot start; "
                          "use 2G or 'auto'")
    return size


def parse_quota(value: str):
    if _auto(value):
        return None
    return _int_in("rt.cpu_quota", value.strip().rstrip("%"), 10, 100000,
                   " (percent of one CPU, e.g. 200), or 'auto'")


def parse_listen(value: str) -> str:
    address, _, scope = value.strip().partition("%")
    try:
        if scope and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", scope):
            raise ValueError(scope)   # an interface name; a space would reach ExecStart= as an argument
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConfigError(f"monitor.listen = {value!r}: not an IP address; use 0.0.0.0 (all), "
                          "127.0.0.1 (this host only) or one of this host's addresses") from None


def parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise ConfigError(f"{name} = {value!r}: use yes or no")


# auto: keep every other task off the RT CPUs at run time (no reboot needed)
# and use what the kernel offers; kernel-only: leave it to isolcpus= on the
# kernel command line; off: touch nothing outside the MXRC units.
ISOLATION_MODES = ("auto", "kernel-only", "off")


def parse_isolation(value: str) -> str:
    v = value.strip().lower()
    if v not in ISOLATION_MODES:
        raise ConfigError(f"isolation.mode = {value!r}: use one of {', '.join(ISOLATION_MODES)}")
    return v


# key -> (Config field, parser): the one table the file, debconf and --set share.
KEYS = {
    "rt.cpus": ("rt_cpus", parse_rt_cpus),
    "rt.priority": ("rt_priority", lambda v: _int_in("rt.priority", v, 1, 99, " (SCHED_FIFO priority)")),
    "rt.watchdog_sec": ("watchdog_sec", lambda v: _int_in("rt.watchdog_sec", v, 1, 3600,
                                                         " seconds (30 recommended)")),
    "rt.memory_max": ("memory_max", parse_size),
    "rt.cpu_quota": ("cpu_quota", parse_quota),
    "monitor.listen": ("monitor_listen", parse_listen),
    "monitor.port": ("monitor_port", lambda v: _int_in("monitor.port", v, 1, 65535, "")),
    "boot.optimize": ("boot_optimize", lambda v: parse_bool("boot.optimize", v)),
    "boot.reapply_on_hardware_change": ("reapply_on_hardware_change",
                                        lambda v: parse_bool("boot.reapply_on_hardware_change", v)),
    "isolation.mode": ("isolation", parse_isolation),
    "isolation.boot_cmdline": ("boot_cmdline", lambda v: parse_bool("isolation.boot_cmdline", v)),
}


# debconf question (mxrc-systemd/NAME) -> setting, in the order they are asked.
# The config script and the postinst spell the same pairs; tests/unit/test_debconf.py
# checks they agree with this table and with the templates. Their answers are
# checked by `mxrc-systemd config --check KEY=VALUE`, i.e. by KEYS above: one validator.
DEBCONF_QUESTIONS = {
    "rt_cpus": "rt.cpus",
    "rt_priority": "rt.priority",
    "watchdog_sec": "rt.watchdog_sec",
    "memory_max": "rt.memory_max",
    "cpu_quota": "rt.cpu_quota",
    "isolation_mode": "isolation.mode",
    "boot_cmdline": "isolation.boot_cmdline",
    "boot_optimize": "boot.optimize",
    "reapply_on_hardware_change": "boot.reapply_on_hardware_change",
}
MONITOR_DEBCONF_QUESTIONS = {   # asked by mxrc-monitor (mxrc-monitor/NAME)
    "listen": "monitor.listen",
    "port": "monitor.port",
}


def parse_config(text: str, source: str = CONFIG_PATH) -> Config:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    if "\0" in text:
        raise ConfigError(f"{source}: contains a NUL byte; correct the file or remove it to use the defaults")
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {exc}".replace("\n", " ")) from None
    values = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            name = f"{section}.{key}"
            if name not in KEYS:
                raise ConfigError(f"{source}: unknown setting {name}; known: {', '.join(KEYS)}")
            field, parse = KEYS[name]
            try:
                values[field] = parse(value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    return Config(**values)


def parse_assignment(text: str) -> tuple[str, str]:
    """'rt.cpus=2-3' -> ('rt.cpus', '2-3'), validated."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in KEYS:
        raise ConfigError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
    if any(c in value for c in "\n\r\0#"):   # would end the value or start a comment in the file
        raise ConfigError(f"{name} = {value!r}: a value is one line without '#' or NUL")
    KEYS[name][1](value)
    return name, value.strip()


def set_values(text: str, assignments: dict[str, str]) -> str:
    """The file's text with each key set; other lines, comments included, untouched."""
    lines = text.splitlines()
    for name, value in assignments.items():
        section, key = name.split(".", 1)
        lines = _set_line(lines, section, key, value)
    return "\n".join(lines) + "\n"


def _set_line(lines: list[str], section: str, key: str, value: str) -> list[str]:
    current, insert_at = None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
            if current == section:
                insert_at = i + 1
            continue
        if current == section:
            if re.match(rf"{re.escape(key)}\s*[=:]", stripped):
                return lines[:i] + [f"{key} = {value}"] + lines[i + 1:]
            if stripped and not stripped.startswith(("#", ";")):
                insert_at = i + 1
    if insert_at is None:
        return lines + ([""] if lines and lines[-1].strip() else []) + [f"[{section}]", f"{key} = {value}"]
    return lines[:insert_at] + [f"{key} = {value}"] + lines[insert_at:]


DEFAULT_FILE = """\
# mxrc-systemd settings. "mxrc-systemd apply" (and dpkg-reconfigure mxrc-systemd)
# turns them into drop-ins for the MXRC units; see mxrc-systemd(8).

[rt]
# CPUs for mxrc-rt: a CPU list (2-3) or auto (the isolated CPUs, else 2-3).
cpus = auto
# SCHED_FIFO priority, 1-99.
priority = 80
# Watchdog timeout in seconds for mxrc-rt and mxrc-nonrt (30 recommended).
watchdog_sec = 30
# Memory limit of mxrc-rt and mxrc-nonrt (2G, 512M, ...) or auto (2G bounded by RAM).
memory_max = auto
# CPU quota of mxrc-rt in percent of one CPU, or auto (100 per RT CPU).
cpu_quota = auto

[monitor]
# Asked by mxrc-monitor (dpkg-reconfigure mxrc-monitor), which writes them here;
# left unset until then so that its preseeded answers are not overridden.
# listen = 0.0.0.0
# port = 9558

[boot]
optimize = yes
# Re-apply when the hardware (CPUs, NUMA, kernel command line) changed since the last apply.
reapply_on_hardware_change = yes

[isolation]
# Keep every other process, service, user session and movable interrupt off the
# RT CPUs: auto (at run time, no reboot needed), kernel-only (isolcpus= only) or off.
mode = auto
# Write the kernel command line for the RT CPUs (isolcpus=, nohz_full=, ...) to
# /etc/default/grub.d/60-mxrc.cfg; takes effect after update-grub and a reboot.
boot_cmdline = no
"""
