import os
import socket

from mxrc_runtime import notify


def test_noop_outside_systemd():
    assert notify.notify("READY=1", env={}) is False
    assert notify.watchdog_interval(env={}) is None


def test_sends_one_datagram(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert notify.notify("READY=1", "STATUS=up", env={"NOTIFY_SOCKET": path})
        assert server.recv(4096) == b"READY=1\nSTATUS=up"


def test_abstract_socket_address(tmp_path):
    name = f"mxrc-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert notify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert server.recv(64) == b"WATCHDOG=1"


def test_watchdog_interval_honours_pid():
    mine = str(os.getpid())
    assert notify.watchdog_interval(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": mine}) == 30.0
    assert notify.watchdog_interval(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval(env={"WATCHDOG_USEC": "junk"}) is None
    assert notify.watchdog_interval(env={"WATCHDOG_USEC": "0"}) is None
