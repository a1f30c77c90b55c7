"""mxrc_runtime: the health-gated watchdog and the native journald handler."""

import logging
import re
import socket
import struct
import threading
from pathlib import Path

import pytest

from mxrc_runtime import journal
from mxrc_runtime.watchdog import Action, Watchdog


class Sent(list):
    """A fake sd_notify: records each datagram's fields; time is passed to tick() explicitly."""

    def __call__(self, *fields):
        self.append(fields)
        return True

    def count(self, field):
        return sum(field in fields for fields in self)


def test_watchdog_pings_only_after_progress():
    sent = Sent()
    wd = Watchdog(timeout=30.0, send=sent)
    assert wd.period == 7.5 and wd.check_interval == 7.5   # no budget: wake up to ping only
    assert wd.tick(0.0) is Action.NONE       # no beat yet: a hung main loop gets no ping
    wd.beat()
    assert wd.tick(7.5) is Action.PING and sent == [("WATCHDOG=1",)]
    assert wd.tick(15.0) is Action.NONE      # progress stopped: pings stop, systemd restarts us
    assert wd.tick(60.0) is Action.NONE      # ... and without a budget nothing is triggered
    wd.beat()
    wd.beat()
    assert wd.tick(67.5) is Action.PING and len(sent) == 2


def test_check_interval_follows_the_budget():
    assert Watchdog(timeout=30.0, stall_budget=5.0).check_interval == 1.25
    assert Watchdog(timeout=30.0, stall_budget=0.002).check_interval == 0.001   # never a busy loop
    assert Watchdog(timeout=30.0, stall_budget=60.0).check_interval == 7.5
    assert Watchdog(timeout=30.0, stall_budget=0).stall_budget is None


@pytest.mark.parametrize("budget", [-1, float("nan"), "5"])
def test_a_bad_budget_is_refused_naming_it(budget):
    with pytest.raises((ValueError, TypeError), match="stall_budget|not supported"):
        Watchdog(timeout=30.0, stall_budget=budget)


def test_progress_within_the_budget_never_triggers():
    sent = Sent()
    wd = Watchdog(timeout=30.0, send=sent, stall_budget=0.1)
    actions = []
    for step in range(2401):                  # a 1 kHz loop checked every 25 ms for 60 s
        for _ in range(25):
            wd.beat()
        actions.append(wd.tick(step * 0.025))
    assert Action.TRIGGER not in actions and not wd.triggered
    assert actions.count(Action.PING) == 9    # at 0, 7.5, ... 60 s: not at the check rate


def test_stall_beyond_the_budget_triggers_once():
    sent = Sent()
    wd = Watchdog(timeout=30.0, send=sent, stall_budget=0.125)
    assert wd.tick(10.0) is Action.NONE       # start-up before the first beat is not a stall
    wd.beat()
    assert wd.tick(20.0) is Action.PING
    assert wd.tick(20.125) is Action.NONE     # at the budget: still fine
    assert wd.tick(20.25) is Action.TRIGGER and wd.triggered
    assert sent[-1] == ("STATUS=main loop stalled: no heartbeat for 250 ms (budget 125 ms)",
                        "WATCHDOG=trigger")
    wd.beat()                                 # too late: systemd is killing us, nothing more is sent
    assert wd.tick(28.0) is Action.NONE
    assert sent.count("WATCHDOG=trigger") == 1 and sent.count("WATCHDOG=1") == 1


def test_a_late_checker_is_not_a_stall():
    wd = Watchdog(timeout=30.0, send=Sent(), stall_budget=0.1)
    wd.beat()
    wd.tick(0.0)
    wd.beat()
    assert wd.tick(2.0) is Action.NONE and not wd.triggered   # the pinger was late, the loop was not


def test_watchdog_thread_pings_at_start_and_stops():
    pinged = threading.Event()
    wd = Watchdog(timeout=30.0, send=lambda *fields: pinged.set(), clock=lambda: 0.0)
    wd.beat()
    wd.start()
    try:
        assert pinged.wait(10)                # the first tick runs at once, not after 7.5 s
    finally:
        wd.stop()
    assert wd._thread is None


def test_watchdog_disabled_outside_systemd():
    wd = Watchdog(timeout=None)
    assert not wd.enabled and wd.start()._thread is None


def test_journal_names_map_ecs_and_refuse_invalid():
    assert journal.journal_name("trace.id") == "TRACE_ID"
    assert journal.journal_name("span.id") == "SPAN_ID"
    assert journal.journal_name("robot_arm") == "ROBOT_ARM"
    assert journal.journal_name("_private") == "PRIVATE"
    assert journal.journal_name("ünïcode") is None


def test_encode_uses_binary_form_for_newlines():
    data = journal.encode({"MESSAGE": "a\nb", "PRIORITY": "3"})
    assert data == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\nPRIORITY=3\n"


@pytest.fixture
def journald(tmp_path):
    path = str(tmp_path / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        yield path, server


def parse(datagram: bytes) -> dict:
    fields, rest = {}, datagram
    while rest:
        line, _, rest = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
        else:
            size = struct.unpack("<Q", rest[:8])[0]
            fields[line.decode()] = rest[8:8 + size].decode()
            rest = rest[8 + size + 1:]
    return fields


def test_handler_sends_structured_entry(journald):
    path, server = journald
    logger = logging.getLogger("mxrc.test")
    handler = journal.JournalHandler("mxrc-nonrt", socket_path=path)
    logger.addHandler(handler)
    try:
        logger.error("joint %d over limit", 3, extra={"trace.id": "4bf92f35", "span.id": "00f067aa",
                                                     "joint": 3})
    finally:
        logger.removeHandler(handler)
        handler.close()
    fields = parse(server.recv(65536))
    assert fields["MESSAGE"] == "joint 3 over limit"
    assert fields["PRIORITY"] == "3" and fields["LOG_LEVEL"] == "err"
    assert fields["TRACE_ID"] == "4bf92f35" and fields["SPAN_ID"] == "00f067aa" and fields["JOINT"] == "3"
    assert (fields["SYSLOG_IDENTIFIER"] == "mxrc-nonrt"
            and fields["CODE_FUNC"] == "test_handler_sends_structured_entry")


def test_handler_keeps_the_message_without_journald(tmp_path, capsys):
    handler = journal.JournalHandler("x", socket_path=str(tmp_path / "missing"))
    handler.emit(logging.LogRecord("n", logging.WARNING, "f", 1, "kept", None, None))
    handler.close()
    assert "kept" in capsys.readouterr().err


@pytest.mark.parametrize("level,priority,name", [(logging.CRITICAL, "2", "crit"), (logging.ERROR, "3", "err"),
                                                 (logging.WARNING, "4", "warning"),
                                                 (logging.INFO, "6", "info"), (logging.DEBUG, "7", "debug")])
def test_log_level_is_the_name_journalctl_p_takes(level, priority, name):
    record = logging.LogRecord("n", level, "f", 1, "m", None, None)
    record.__dict__["log.level"] = "error"     # an ECS extra cannot contradict PRIORITY
    fields = journal.record_fields(record, "m", "x")
    assert (fields["PRIORITY"], fields["LOG_LEVEL"]) == (priority, name)


def test_log_level_names_are_the_same_in_the_cpp_helper():
    header = (Path(__file__).resolve().parents[2] / "include/mxrc/systemd.hpp").read_text()
    table = re.search(r"kLevelNames\[\] = \{([^}]*)\}", header).group(1)
    assert tuple(re.findall(r'"([a-z]+)"', table)) == journal.LEVEL_NAMES
