"""mxrc_runtime: the health-gated watchdog and the native journald handler."""

import logging
import socket
import struct

import pytest

from mxrc_runtime import journal
from mxrc_runtime.watchdog import Watchdog


def test_watchdog_pings_only_after_progress():
    sent = []
    wd = Watchdog(timeout=30.0, send=sent.append)
    assert wd.period == 7.5
    assert wd.tick() is False          # no beat yet: a hung main loop gets no ping
    wd.beat()
    assert wd.tick() is True and sent == ["WATCHDOG=1"]
    assert wd.tick() is False          # progress stopped: pings stop, systemd restarts us
    wd.beat()
    wd.beat()
    assert wd.tick() is True and len(sent) == 2


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
    assert fields["PRIORITY"] == "3" and fields["LOG_LEVEL"] == "error"
    assert fields["TRACE_ID"] == "4bf92f35" and fields["SPAN_ID"] == "00f067aa" and fields["JOINT"] == "3"
    assert fields["SYSLOG_IDENTIFIER"] == "mxrc-nonrt" and fields["CODE_FUNC"] == "test_handler_sends_structured_entry"


def test_handler_keeps_the_message_without_journald(tmp_path, capsys):
    handler = journal.JournalHandler("x", socket_path=str(tmp_path / "missing"))
    handler.emit(logging.LogRecord("n", logging.WARNING, "f", 1, "kept", None, None))
    handler.close()
    assert "kept" in capsys.readouterr().err
