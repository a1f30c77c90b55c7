"""The skimming parser against jeepney's own: same wanted values, the rest skipped, any framing."""

import random

import pytest
from jeepney import DBusAddress, new_method_call, new_method_return, new_signal
from jeepney.low_level import Endianness, Header, Message, Parser

from mxrc_monitor import dbus_skim
from mxrc_monitor.systemd_bus import SIGNALLED_PROPERTIES

PATH = "/org/freedesktop/systemd1/unit/mxrc_2drt_2eservice"
# What systemd 257 sends for a service on a STATUS= line: every emits-change
# property of the interface, of many types (the shapes, not every name).
SERVICE = {
    "Type": ("s", "notify"), "Result": ("s", "success"), "NRestarts": ("u", 3),
    "StatusText": ("s", "RT loop on CPUs 2-3, 250 Hz, wake-up latency us min 4 avg 9 max 31"),
    "StatusErrno": ("i", -2), "ExecMainPID": ("u", 812), "ExecMainStartTimestamp": ("t", 2 ** 40 + 5),
    "ExecMainStatus": ("i", 0), "WatchdogUSec": ("t", 30_000_000),
    "WatchdogTimestampMonotonic": ("t", 123_456_789), "ControlGroup": ("s", "/mxrc.slice/mxrc-rt.service"),
    "CPUAffinity": ("ay", bytes([0b1100])), "AllowedCPUs": ("ay", b""),
    "ExecStart": ("a(sasbttttuii)", [("/usr/libexec/mxrc/mxrc-rt", ["mxrc-rt", "--x"], False,
                                      1, 2, 3, 4, 812, 0, 0)]),
    "Environment": ("as", ["A=1", "B=2"]), "Nice": ("i", -5), "CPUWeight": ("t", 2 ** 64 - 1),
    "Flag": ("b", True), "Ratio": ("d", 0.25), "Small": ("n", -3), "Port": ("q", 9558), "Byte": ("y", 7),
    "Signed": ("x", -(2 ** 40)), "Object": ("o", "/org/freedesktop/systemd1/job/42"),
    "Sig": ("g", "a{sv}"), "Job": ("(uo)", (0, "/")),
    "Conditions": ("a(sbbsi)", [("ConditionPathExists", False, False, "/etc/x", 1)]),
    "Nested": ("v", ("a{sv}", {"k": ("s", "v"), "n": ("v", ("t", 1))})),
    "Empty": ("a(sbbsi)", []), "EmptyMap": ("a{sv}", {}),
}
UNIT = {"ActiveState": ("s", "active"), "SubState": ("s", "running"), "LoadState": ("s", "loaded"),
        "ActiveEnterTimestamp": ("t", 99), "Conditions": SERVICE["Conditions"], "Job": SERVICE["Job"]}


def properties_changed(interface, props, serial=7, endianness=Endianness.little) -> bytes:
    msg = new_signal(DBusAddress(PATH, interface="org.freedesktop.DBus.Properties"), "PropertiesChanged",
                     "sa{sv}as", (interface, props, ["Invalidated"]))
    if endianness is not Endianness.little:
        h = msg.header
        msg = Message(Header(endianness, h.message_type, h.flags, h.protocol_version, h.body_length,
                             h.serial, h.fields), msg.body)
    return msg.serialise(serial=serial)


def parse_all(parser, data: bytes, chunk: int):
    out = []
    for i in range(0, len(data), chunk):
        parser.add_data(data[i:i + chunk])
        while (msg := parser.get_next_message()) is not None:
            out.append(msg)
    return out


@pytest.mark.parametrize("endianness", [Endianness.little, Endianness.big])
@pytest.mark.parametrize("chunk", [4096, 7, 1])
def test_wanted_values_are_what_jeepney_decodes_and_the_rest_is_skipped(endianness, chunk):
    stream = b"".join(properties_changed(iface, props, serial, endianness) for serial, (iface, props) in
                      enumerate([("org.freedesktop.systemd1.Service", SERVICE),
                                 ("org.freedesktop.systemd1.Unit", UNIT)], start=1))
    skimmed = parse_all(dbus_skim.SkimmingParser(SIGNALLED_PROPERTIES), stream, chunk)
    full = parse_all(Parser(), stream, 4096)
    assert len(skimmed) == len(full) == 2
    for ours, theirs in zip(skimmed, full):
        interface, changed, _ = ours.body
        assert interface == theirs.body[0]
        assert changed == {k: v for k, v in theirs.body[1].items() if k in SIGNALLED_PROPERTIES}
        assert changed, "nothing wanted was found"
        assert ours.header.fields == theirs.header.fields


def test_each_type_is_skipped_to_the_next_key():
    """One unwanted property of each shape before a wanted one: a wrong skip loses or garbles it."""
    for name, value in SERVICE.items():
        props = {name: value, "Result": ("s", "watchdog")}
        body = properties_changed("org.freedesktop.systemd1.Service", props)
        (msg,) = parse_all(dbus_skim.SkimmingParser({"Result"}), body, 4096)
        assert msg.body[1] == {"Result": ("s", "watchdog")}, name


def test_other_messages_parse_as_jeepney_parses_them():
    signal = new_signal(DBusAddress(PATH, interface="x.y"), "Ping", "sa{sv}", ("a", {"b": ("u", 1)}))
    get = new_method_call(DBusAddress(PATH, "org.freedesktop.systemd1", "org.freedesktop.DBus.Properties"),
                          "Get", "ss", ("org.freedesktop.systemd1.Service", "WatchdogTimestampMonotonic"))
    get.header.serial = 9
    reply = new_method_return(get, "v", (("t", 5),))
    stream = signal.serialise(serial=3) + reply.serialise(serial=4)
    ours = parse_all(dbus_skim.SkimmingParser(SIGNALLED_PROPERTIES), stream, 4096)
    theirs = parse_all(Parser(), stream, 4096)
    assert [(m.header.fields, m.body) for m in ours] == [(m.header.fields, m.body) for m in theirs]
    assert ours[1].body == (("t", 5),)


def test_a_parser_taken_over_keeps_what_was_buffered():
    data = properties_changed("org.freedesktop.systemd1.Unit", UNIT)
    old = Parser()
    old.add_data(data[:20])
    new = dbus_skim.SkimmingParser(SIGNALLED_PROPERTIES, like=old)
    new.add_data(data[20:])
    assert new.get_next_message().body[1]["ActiveState"] == ("s", "active")


# Random nesting finds what hand-picked shapes miss: an alignment inside a struct in an array in a
# variant, a dict with fixed-size keys, an empty array of 8-byte-aligned elements.
BASIC = "ybnqiuxtdsog"


def random_type(rng, depth=0) -> str:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(BASIC)
    if roll < 0.7:
        return "a" + random_type(rng, depth + 1)
    if roll < 0.8:
        return "a{" + rng.choice(BASIC) + random_type(rng, depth + 1) + "}"
    if roll < 0.9:
        return "(" + "".join(random_type(rng, depth + 1) for _ in range(rng.randint(1, 3))) + ")"
    return "v"


def members(sig: str) -> list[str]:
    out, i = [], 0
    while i < len(sig):
        end = dbus_skim.signature_end(sig, i)
        out.append(sig[i:end])
        i = end
    return out


def random_value(rng, sig: str):
    code = sig[0]
    ints = {"y": (0, 255), "n": (-2 ** 15, 2 ** 15 - 1), "q": (0, 2 ** 16 - 1), "i": (-2 ** 31, 2 ** 31 - 1),
            "u": (0, 2 ** 32 - 1), "x": (-2 ** 63, 2 ** 63 - 1), "t": (0, 2 ** 64 - 1)}
    if code in ints:
        return rng.randint(*ints[code])
    simple = {"b": lambda: rng.random() < 0.5, "d": rng.random, "s": lambda: "x" * rng.randint(0, 9),
              "o": lambda: "/a" * rng.randint(1, 3), "g": lambda: rng.choice(["", "s", "a{sv}", "(ii)"])}
    if code in simple:
        return simple[code]()
    if code == "v":
        inner = random_type(rng, 2)
        return (inner, random_value(rng, inner))
    if sig.startswith("a{"):
        key, value = members(sig[2:-1])
        return {random_value(rng, key): random_value(rng, value) for _ in range(rng.randint(0, 3))}
    if code == "a":
        return [random_value(rng, sig[1:]) for _ in range(rng.randint(0, 3))]
    return tuple(random_value(rng, m) for m in members(sig[1:-1]))


@pytest.mark.parametrize("seed", range(4))
def test_random_shapes_skim_to_what_jeepney_decodes(seed):
    rng = random.Random(seed)
    wanted = {"Result", "NRestarts", "ActiveState"}
    for serial in range(1, 150):
        props = {}
        for k in range(rng.randint(0, 8)):
            name = rng.choice(sorted(wanted)) if rng.random() < 0.3 else f"Other{k}"
            sig = random_type(rng)
            props[name] = (sig, random_value(rng, sig))
        endianness = rng.choice([Endianness.little, Endianness.big])
        data = properties_changed("org.freedesktop.systemd1.Service", props, serial, endianness)
        (ours,) = parse_all(dbus_skim.SkimmingParser(wanted), data, 4096)
        (theirs,) = parse_all(Parser(), data, 4096)
        assert ours.body[1] == {k: v for k, v in theirs.body[1].items() if k in wanted}, props
