"""needrestart must never restart an MXRC unit by itself (#12): the shipped
rule matches every unit the package runs, and nothing else."""

import re
from pathlib import Path

from mxrc_install import names

CONF = Path(__file__).resolve().parents[2] / "debian/needrestart/mxrc-systemd.conf"


def override_rc_rules() -> dict[str, int]:
    """qr(...) regex -> value of each $nrconf{override_rc}{...} = N line (Perl's qr() = Python's re here)."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^\$nrconf\{override_rc\}\{qr\((.+)\)\}\s*=\s*(\d+);$", CONF.read_text(), re.M)}


def restarted_by_needrestart(unit: str) -> bool:
    return not any(re.search(rx, unit) and value == 0 for rx, value in override_rc_rules().items())


def test_every_mxrc_unit_is_excluded():
    units = [*names.SERVICES, names.ISOLATION, names.HARDWARE_CHECK, "mxrc-failover@mxrc-rt.service"]
    assert [u for u in units if restarted_by_needrestart(u)] == []


def test_other_services_are_left_to_needrestart():
    assert override_rc_rules(), "no override_rc rule found: the file's syntax changed"
    for unit in ("ssh.service", "cron.service", "systemd-journald.service", "prometheus.service"):
        assert restarted_by_needrestart(unit), unit
