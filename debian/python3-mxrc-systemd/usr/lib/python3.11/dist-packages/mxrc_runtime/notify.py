"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op that returns False,
so the same program runs from a shell, a test, or a unit.
"""

from __future__ import annotations

import os
import socket


def _address(env: dict[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return None
    # An abstract-namespace socket is written with a leading "@".
    return "\0" + addr[1:] if addr.startswith("@") else addr


def notify(*fields: str, env: dict[str, str] | None = None) -> bool:
    """Send fields such as "READY=1" or "STATUS=..." to systemd; False when not under systemd."""
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    payload = "\n".join(fields).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(addr)
        sock.sendall(payload)
    return True


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds systemd expects pings within, or None.

    Honours WATCHDOG_PID as sd_watchdog_enabled(3) does: a child that
    inherited the variables must not ping on the parent's behalf.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
