"""`systemctl show` output, read one way everywhere: doctor, boot-time, failover and the VM tests."""

from __future__ import annotations


def parse_show(text: str) -> list[dict[str, str]]:
    """Several units' properties, blank-line separated: one dict per unit, in order.

    A value keeps every '=' after the first; a line without '=' is no property.
    """
    units, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
            current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        units.append(current)
    return units


def parse_one(text: str) -> dict[str, str]:
    """One unit's (or the manager's) properties."""
    units = parse_show(text)
    return units[0] if units else {}
