"""One persistent system-bus connection to systemd, in jeepney (pure Python).

After Manager.Subscribe() systemd emits PropertiesChanged for every unit
state change; a match rule per watched unit path lets dbus-daemon forward
only ours. Nothing is listed and nothing is fetched per tick except each
armed unit's WatchdogTimestampMonotonic, which systemd deliberately does not
signal (it changes with every ping).
"""

from __future__ import annotations

import collections
import logging
import struct
import time

from jeepney import DBusAddress, MatchRule, Properties, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields, MessageType

from mxrc_monitor.dbus_skim import SkimmingParser

log = logging.getLogger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
MANAGER = DBusAddress("/org/freedesktop/systemd1", SYSTEMD, MANAGER_IFACE)
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"

# What is read at (re)connect; everything else arrives as signals.
SEED_PROPERTIES = {
    UNIT_IFACE: ("LoadState", "ActiveState", "SubState"),
    SERVICE_IFACE: ("Type", "Result", "NRestarts", "WatchdogUSec", "WatchdogTimestampMonotonic",
                    "ControlGroup", "CPUAffinity", "AllowedCPUs"),
}
# All that UnitState takes from a PropertiesChanged: the rest of its body is skipped, not decoded.
SIGNALLED_PROPERTIES = frozenset(name for names in SEED_PROPERTIES.values() for name in names)
# Not signalled by systemd, so re-read when a unit (re)starts.
START_PROPERTIES = ("WatchdogUSec", "ControlGroup", "CPUAffinity", "AllowedCPUs")
# What wait() returns instead of a property set when a unit must be read again
# (it was loaded, or systemd reloaded), and for a unit systemd unloaded.
RESEED = "reseed"
UNLOADED = "unloaded"
ALL_UNITS = "*"

# ConnectionError and TimeoutError are OSErrors; EOFError comes from a torn message.
BusError = (OSError, EOFError)
MAX_DRAIN = 1000
# A message's serial: the uint32 after the fixed header's first 8 bytes (jeepney writes little-endian).
SERIAL = struct.Struct("<I")
SERIAL_OFFSET = 8


def unit_path(unit: str) -> str:
    """The unit's object path, escaped as sd_bus_path_encode() does."""
    out = []
    for i, ch in enumerate(unit):
        if ch.isascii() and (ch.isalpha() or (ch.isdigit() and i > 0)):
            out.append(ch)
        else:
            out.append("".join(f"_{b:02x}" for b in ch.encode()))
    return "/org/freedesktop/systemd1/unit/" + ("".join(out) or "_")


def reply_body(reply):
    """A method reply's body; a D-Bus error reply raises ConnectionError (one of BusError)."""
    if reply.header.message_type == MessageType.error:
        raise ConnectionError(f"D-Bus error {reply.header.fields} {reply.body}")
    return reply.body


def unwrap(value):
    """A jeepney variant is (signature, value); we only need the value."""
    return value[1] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) else value


def parse_properties_changed(body) -> tuple[str, dict]:
    """(interface, {name: value}) from a PropertiesChanged body (sa{sv}as)."""
    interface, changed, _invalidated = body
    return interface, {k: unwrap(v) for k, v in changed.items()}


class SystemdBus:
    """Connect, subscribe and read; every method raises one of BusError when the bus is gone."""

    def __init__(self, units, connect=lambda: open_dbus_connection(bus="SYSTEM")):
        self.units = tuple(units)
        self.paths = {unit_path(u): u for u in self.units}
        self._connect = connect
        self.conn = None
        self.signals: collections.deque = collections.deque()
        self._gets: dict[tuple[str, str, str], bytearray] = {}   # (unit, interface, name) -> the call's bytes
        self._filter = None

    def open(self) -> None:
        self.close()
        conn = self._connect()
        if getattr(conn, "parser", None) is not None:   # a jeepney connection (tests pass fakes)
            conn.parser = SkimmingParser(SIGNALLED_PROPERTIES, like=conn.parser)
        try:
            for rule in self.match_rules():
                self._call(conn, message_bus.AddMatch(rule))
            self.signals.clear()
            # Everything dbus-daemon forwards is one of ours (the rules above); one queue keeps their order.
            self._filter = conn.filter(MatchRule(type="signal"), queue=self.signals)
            self._call(conn, new_method_call(MANAGER, "Subscribe"))
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def match_rules(self) -> list[MatchRule]:
        """PropertiesChanged of each unit; its loading and unloading (a const LoadState is never
        in PropertiesChanged); and the end of a daemon-reload, after which any unit may differ."""
        rules = []
        for path, unit in self.paths.items():
            rules.append(MatchRule(type="signal", sender=SYSTEMD, interface=PROPERTIES_IFACE,
                                   member="PropertiesChanged", path=path))
            for member in ("UnitNew", "UnitRemoved"):
                rule = MatchRule(type="signal", sender=SYSTEMD, interface=MANAGER_IFACE, member=member)
                rule.add_arg_condition(0, unit)
                rules.append(rule)
        rules.append(MatchRule(type="signal", sender=SYSTEMD, interface=MANAGER_IFACE, member="Reloading"))
        return rules

    def close(self) -> None:
        if self._filter is not None:
            self._filter.close()
            self._filter = None
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None

    @staticmethod
    def _call(conn, message, timeout=2.0):
        return reply_body(conn.send_and_get_reply(message, timeout=timeout))

    def get(self, unit: str, interface: str, name: str):
        return self.get_many([(unit, interface, name)])[0]

    def get_many(self, wanted, timeout: float = 2.0) -> list:
        """Properties.Get of each (unit, interface, name), sent together: one round trip, not one each.

        The same few calls every tick, so each is serialised once and only its
        serial is written again. Signals that arrive before the last reply are
        queued as wait() would queue them.
        """
        conn = self.conn
        order, data = [], bytearray()
        for key in wanted:
            call = self._gets.get(key)
            if call is None:
                unit, interface, name = key
                message = Properties(DBusAddress(unit_path(unit), SYSTEMD, interface)).get(name)
                call = self._gets[key] = bytearray(message.serialise(serial=1))
            serial = next(conn.outgoing_serial)
            SERIAL.pack_into(call, SERIAL_OFFSET, serial)
            data += call
            order.append(serial)
        conn.sock.sendall(data)
        deadline = time.monotonic() + timeout
        replies = {}
        while len(replies) < len(order):
            msg = conn.receive(timeout=max(0.0, deadline - time.monotonic()))
            reply_to = msg.header.fields.get(HeaderFields.reply_serial)
            if reply_to in order:
                replies[reply_to] = unwrap(reply_body(msg)[0])
            elif msg.header.message_type == MessageType.signal:
                self.signals.append(msg)
        return [replies[serial] for serial in order]

    def seed(self, unit: str) -> dict:
        """The unit's state now; a unit systemd does not know reports LoadState not-found."""
        props = {}
        for interface, names in SEED_PROPERTIES.items():
            if interface == SERVICE_IFACE and not unit.endswith(".service"):
                continue
            for name in names:
                try:
                    props[name] = self.get(unit, interface, name)
                except ConnectionError:
                    # A not-found unit has no Service interface: absent, not an error.
                    if props.get("LoadState") != "not-found":
                        raise
        return props

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """Signals for our units received within timeout: [(unit, changed properties)]."""
        try:
            if not self.signals:
                self.conn.recv_messages(timeout=max(0.0, timeout))
            # Drain what is already readable, bounded so a flood cannot starve the tick.
            for _ in range(MAX_DRAIN):
                self.conn.recv_messages(timeout=0)
        except TimeoutError:
            pass
        out = []
        while self.signals:
            event = self.event(self.signals.popleft())
            if event is not None:
                out.append(event)
        return out

    def event(self, msg) -> tuple[str, dict | str] | None:
        """(unit, changed properties | RESEED | UNLOADED) for one signal, None for others."""
        fields = msg.header.fields
        interface, member = fields.get(HeaderFields.interface), fields.get(HeaderFields.member)
        if interface == PROPERTIES_IFACE and member == "PropertiesChanged":
            unit = self.paths.get(fields.get(HeaderFields.path))
            changed_iface, changed = parse_properties_changed(msg.body)
            if unit is not None and changed_iface in SEED_PROPERTIES:
                return unit, changed
        elif interface == MANAGER_IFACE and member in ("UnitNew", "UnitRemoved"):
            unit = msg.body[0]
            if unit in self.units:
                return unit, RESEED if member == "UnitNew" else UNLOADED
        elif interface == MANAGER_IFACE and member == "Reloading" and msg.body[0] is False:
            return ALL_UNITS, RESEED
        return None
