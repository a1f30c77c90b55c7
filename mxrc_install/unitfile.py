"""systemd's INI dialect, read one way everywhere: unit files, drop-ins, journald.conf.

An assignment is KEY=VALUE inside a [Section]; '#' and ';' start a comment
line; keys repeat (list settings) and an empty value resets a list, which is
for the reader of the values to interpret. Line continuations are not used by
any file this package reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class Assignment:
    section: str
    key: str
    value: str
    line: int   # 1-based, for messages that name file:line


def assignments(text: str) -> Iterator[Assignment]:
    """Every KEY=VALUE of the text, in order (keys and values stripped)."""
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            yield Assignment(section, key.strip(), value.strip(), number)


def sections(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [every value, in order]}}: systemd keys repeat, so all are kept."""
    out: dict[str, dict[str, list[str]]] = {}
    for a in assignments(text):
        out.setdefault(a.section, {}).setdefault(a.key, []).append(a.value)
    return out
