"""PropertiesChanged bodies decoded only as far as the exporter reads them.

systemd's PropertiesChanged carries every "emits-change" property of the
interface (about twenty on Unit, as many on Service), and it sends one for
each interface whenever anything of the unit changes: a service's STATUS=
line each second made two such signals a second. jeepney decodes all of it
in pure Python; profiled in the VM, that was most of mxrc-monitor's CPU when
nobody scraped. Here the dictionary is walked with its length fields: a key
that is not wanted is compared as bytes and its value skipped (an array in
one step), and only the wanted values are decoded, by jeepney itself.

Everything else (method replies, other signals) goes through jeepney's own
parser unchanged.
"""

from __future__ import annotations

import functools
import struct

from jeepney.low_level import Header, HeaderFields, Message, Parser, calc_msg_size, parse_signature

PROPERTIES_CHANGED_SIGNATURE = "sa{sv}as"
# Alignment of each type code (the D-Bus specification's marshalling table).
ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4,
         "s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1}
FIXED = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4}


@functools.lru_cache(maxsize=64)
def _value_type(sig: str):
    """jeepney's decoder for one signature; parsing the signature costs more than the value."""
    return parse_signature(list(sig))


def _pad(pos: int, align: int) -> int:
    return pos + (-pos % align)


def signature_end(sig: str, i: int) -> int:
    """The index just after the one complete type that starts at sig[i]."""
    code = sig[i]
    if code == "a":
        return signature_end(sig, i + 1)
    if code in "({":
        close = ")" if code == "(" else "}"
        i += 1
        while sig[i] != close:
            i = signature_end(sig, i)
        return i + 1
    return i + 1


def skip(buf: bytes, pos: int, sig: str, i: int, uint32: struct.Struct) -> tuple[int, int]:
    """Skip one value of the type at sig[i]: (position after it, index after its type)."""
    code = sig[i]
    pos = _pad(pos, ALIGN[code])
    if code in FIXED:
        return pos + FIXED[code], i + 1
    if code in "so":
        return pos + 4 + uint32.unpack_from(buf, pos)[0] + 1, i + 1
    if code == "g":
        return pos + 1 + buf[pos] + 1, i + 1
    if code == "v":
        length = buf[pos]
        inner = buf[pos + 1:pos + 1 + length].decode("ascii")
        pos, _ = skip(buf, pos + 2 + length, inner, 0, uint32)
        return pos, i + 1
    if code == "a":
        length = uint32.unpack_from(buf, pos)[0]
        start = _pad(pos + 4, ALIGN[sig[i + 1]])
        return start + length, signature_end(sig, i + 1)
    # struct or dict entry: its members in turn
    i += 1
    while sig[i] not in ")}":
        pos, i = skip(buf, pos, sig, i, uint32)
    return pos, i + 1


def skim_properties_changed(buf: bytes, pos: int, endianness, wanted: frozenset[bytes]):
    """(interface, {name: (signature, value)} of the wanted names, ()) as jeepney's body would be."""
    uint32 = struct.Struct(endianness.struct_code() + "I")
    pos = _pad(pos, 8)   # the body starts on an 8-byte boundary after the header
    length = uint32.unpack_from(buf, pos)[0]
    interface = buf[pos + 4:pos + 4 + length].decode()
    pos = _pad(pos + 4 + length + 1, 4)
    end = _pad(pos + 4, 8) + uint32.unpack_from(buf, pos)[0]
    pos = _pad(pos + 4, 8)
    changed = {}
    while pos < end:
        pos = _pad(pos, 8)
        length = uint32.unpack_from(buf, pos)[0]
        key = buf[pos + 4:pos + 4 + length]
        pos += 4 + length + 1
        sig_length = buf[pos]
        sig = buf[pos + 1:pos + 1 + sig_length].decode("ascii")
        value_at = pos + 2 + sig_length
        if key in wanted:
            value, pos = _value_type(sig).parse_data(buf, value_at, endianness)
            changed[key.decode()] = (sig, value)
        else:
            pos, _ = skip(buf, value_at, sig, 0, uint32)
    return interface, changed, ()


class SkimmingParser(Parser):
    """jeepney's Parser, with PropertiesChanged bodies skimmed for the wanted property names."""

    def __init__(self, wanted, like: Parser | None = None):
        super().__init__()
        self.wanted = frozenset(name.encode() for name in wanted)
        if like is not None:  # take over a connection's parser with what it has buffered
            self.buf, self.fds, self.next_msg_size = like.buf, like.fds, like.next_msg_size

    def get_next_message(self) -> Message | None:
        if self.next_msg_size is None and self.buf.bytes_buffered >= 16:
            self.next_msg_size = calc_msg_size(self.buf.peek(16))
        size = self.next_msg_size
        if size is None or self.buf.bytes_buffered < size:
            return None
        raw = self.buf.read(size)
        self.next_msg_size = None
        header, pos = Header.from_buffer(raw)
        fields = header.fields
        signature = fields.get(HeaderFields.signature)
        if (fields.get(HeaderFields.member) == "PropertiesChanged"
                and signature == PROPERTIES_CHANGED_SIGNATURE):
            body = skim_properties_changed(raw, pos, header.endianness, self.wanted)
        elif signature:  # as jeepney's Message.from_buffer, without parsing the header twice
            body = parse_signature(list(f"({signature})")).parse_data(raw, pos, header.endianness,
                                                                       fds=self.fds)[0]
        else:
            body = ()
        self.fds = self.fds[fields.get(HeaderFields.unix_fds, 0):]
        return Message(header, body)
