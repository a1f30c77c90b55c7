"""A logging.Handler that writes native journald entries with structured fields.

It speaks journald's native protocol on /run/systemd/journal/socket (no
libsystemd, no python3-systemd: whose JournalHandler drops `extra=` fields),
so every record carries MESSAGE, PRIORITY, LOG_LEVEL, the source location
and the application's own fields, searchable with journalctl:

    journalctl -u mxrc-nonrt TRACE_ID=4bf92f3577b34da6a3ce929d0e0e4736
    journalctl -u mxrc-nonrt -p err

MXRC's logs use ECS names (log.level, trace.id, span.id, ...); ECS_FIELDS
maps them to journald field names (upper case, "_" for ".").
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import sys
import traceback

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# logging level -> syslog priority (journalctl -p)
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
# LOG_LEVEL for each priority: the names journalctl -p takes, the same in the
# C++ helper (mxrc/systemd.hpp), so one query finds both languages' entries.
LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
# Set from the record itself: an extra= field of the same name is ignored.
_OWN_FIELDS = {"MESSAGE", "PRIORITY", "LOG_LEVEL"}

# ECS field name -> journald field name.
ECS_FIELDS = {
    "log.level": "LOG_LEVEL",
    "log.logger": "LOGGER",
    "trace.id": "TRACE_ID",
    "span.id": "SPAN_ID",
    "transaction.id": "TRANSACTION_ID",
    "event.action": "EVENT_ACTION",
    "event.outcome": "EVENT_OUTCOME",
    "event.duration": "EVENT_DURATION",
    "error.type": "ERROR_TYPE",
    "error.message": "ERROR_MESSAGE",
    "error.stack_trace": "ERROR_STACK_TRACE",
    "service.name": "SERVICE_NAME",
    "labels.robot": "ROBOT",
}

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_VALID = re.compile(r"[A-Z0-9][A-Z0-9_]*")


def journal_name(key: str) -> str | None:
    """A field name journald accepts, or None: ECS names mapped, others upper-cased."""
    if not key.isascii():
        return None
    name = ECS_FIELDS.get(key) or re.sub(r"[^A-Z0-9_]", "_", key.upper())
    name = name.lstrip("_")  # a leading "_" is for fields journald itself sets
    return name if name and _VALID.fullmatch(name) and len(name) <= 64 else None


def encode(fields: dict[str, str]) -> bytes:
    """Native protocol: KEY=value lines; a value with a newline gets the binary form."""
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def record_fields(record: logging.LogRecord, message: str, identifier: str) -> dict[str, str]:
    priority = PRIORITIES.get(record.levelno, 6)
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(priority),
        "LOG_LEVEL": LEVEL_NAMES[priority],
        "LOGGER": record.name,
        "SYSLOG_IDENTIFIER": identifier,
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
        "THREAD_NAME": record.threadName or "",
    }
    if record.exc_info:
        fields["ERROR_STACK_TRACE"] = "".join(traceback.format_exception(*record.exc_info))
    for key, value in vars(record).items():
        if key in _RESERVED or value is None:
            continue
        name = journal_name(key)
        if name and name not in _OWN_FIELDS:
            fields[name] = value
    return fields


class JournalHandler(logging.Handler):
    """Log to journald natively; a no-op outside systemd's reach (falls back to stderr)."""

    def __init__(self, identifier: str | None = None, socket_path: str = JOURNAL_SOCKET,
                 level: int = logging.NOTSET):
        super().__init__(level)
        self.identifier = identifier or os.path.basename(sys.argv[0]) or "python"
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = encode(record_fields(record, record.getMessage(), self.identifier))
            self._sock.sendto(payload, self.socket_path)
        except OSError:
            # No journald (a test, a container): keep the message rather than lose it.
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise into the application
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
