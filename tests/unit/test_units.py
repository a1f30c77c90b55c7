"""The shipped units carry every setting the spec's FRs name, as defaults."""

import configparser

import pytest

from mxrc_install import unitfile

UNITS = ["mxrc-rt.service", "mxrc-nonrt.service", "mxrc-monitor.service", "mxrc.target",
         "mxrc-systemd-hardware.service", "mxrc-boot-time.service", "mxrc-failover@.service"]
SERVICES = [u for u in UNITS if u.endswith(".service")]


def load(repo, name):
    """A unit as {section: {key: [values...]}}, read as the package reads unit files."""
    return unitfile.sections((repo / "units" / name).read_text())


LIST_KEYS = {"After", "Before", "Requires", "Wants", "Conflicts"}

# (FR, unit, section, key, value): value must be among the key's values.
SPEC_SETTINGS = [
    ("FR-001", "mxrc-rt.service", "Service", "CPUSchedulingPolicy", "fifo"),
    ("FR-001", "mxrc-rt.service", "Service", "CPUSchedulingPriority", "80"),
    ("FR-002", "mxrc-rt.service", "Service", "CPUAffinity", "2 3"),
    ("FR-003", "mxrc-nonrt.service", "Service", "CPUAffinity", "0 1"),
    ("FR-004", "mxrc-rt.service", "Service", "WatchdogSec", "30s"),
    ("FR-004", "mxrc-nonrt.service", "Service", "WatchdogSec", "30s"),
    ("FR-005", "mxrc-rt.service", "Service", "Type", "notify"),
    ("FR-006", "mxrc-rt.service", "Service", "Restart", "on-failure"),
    ("FR-007", "mxrc-rt.service", "Service", "CPUQuota", "200%"),
    ("FR-008", "mxrc-rt.service", "Service", "MemoryMax", "2G"),
    ("FR-009", "mxrc-rt.service", "Service", "IOWeight", "500"),
    ("FR-009", "mxrc-nonrt.service", "Service", "IOWeight", "100"),
    ("FR-010", "mxrc-rt.service", "Unit", "After", "mxrc-nonrt.service"),
    ("FR-010", "mxrc-nonrt.service", "Unit", "After", "network.target"),
    ("FR-011", "mxrc-rt.service", "Unit", "Requires", "mxrc-nonrt.service"),
    ("FR-016", "mxrc-rt.service", "Service", "PrivateTmp", "yes"),
    ("FR-017", "mxrc-rt.service", "Service", "ProtectSystem", "strict"),
    ("FR-018", "mxrc-rt.service", "Service", "SystemCallFilter", "@system-service"),
    ("FR-019", "mxrc-rt.service", "Service", "NoNewPrivileges", "yes"),
    ("FR-020", "mxrc-rt.service", "Service", "User", "mxrc"),
    ("FR-020", "mxrc-rt.service", "Service", "Group", "mxrc"),
    ("FR-020", "mxrc-nonrt.service", "Service", "User", "mxrc"),
    ("FR-021", "mxrc-rt.service", "Unit", "DefaultDependencies", "no"),
    ("FR-021", "mxrc-nonrt.service", "Unit", "DefaultDependencies", "no"),
    ("FR-023", "mxrc-rt.service", "Service", "NUMAPolicy", "bind"),
    ("FR-023", "mxrc-rt.service", "Service", "NUMAMask", "0"),
    ("FR-024", "mxrc-rt.service", "Service", "RestartSec", "5s"),
    ("FR-025", "mxrc-rt.service", "Unit", "StartLimitBurst", "5"),
    ("FR-025", "mxrc-rt.service", "Unit", "StartLimitIntervalSec", "60s"),
    ("OnFailure", "mxrc-rt.service", "Unit", "OnFailure", "mxrc-failover@%n.service"),
    ("OnFailure", "mxrc-nonrt.service", "Unit", "OnFailure", "mxrc-failover@%n.service"),
    ("mlockall", "mxrc-rt.service", "Service", "LimitMEMLOCK", "infinity"),
]


@pytest.mark.parametrize("fr,unit,section,key,value", SPEC_SETTINGS,
                         ids=[f"{s[0]}-{s[1]}-{s[3]}" for s in SPEC_SETTINGS])
def test_spec_setting_present(repo, fr, unit, section, key, value):
    values = load(repo, unit).get(section, {}).get(key, [])
    if key in LIST_KEYS:
        values = " ".join(values).split()
    assert value in values, f"{fr}: {unit} [{section}] {key}={value} expected, found {values}"


def test_target_groups_every_service(repo):
    wants = " ".join(load(repo, "mxrc.target")["Unit"]["Wants"]).split()
    assert sorted(wants) == ["mxrc-monitor.service", "mxrc-nonrt.service", "mxrc-rt.service"]


@pytest.mark.parametrize("unit", [u for u in UNITS if u != "mxrc-failover@.service"])
def test_without_default_dependencies_shutdown_is_explicit(repo, unit):
    # DefaultDependencies=no drops the implicit Conflicts/Before=shutdown.target.
    section = load(repo, unit)["Unit"]
    assert section["DefaultDependencies"] == ["no"]
    assert "shutdown.target" in " ".join(section["Conflicts"])
    assert "shutdown.target" in " ".join(section["Before"])


@pytest.mark.parametrize("unit", SERVICES)
def test_capabilities_are_explicitly_empty(repo, unit):
    service = load(repo, unit)["Service"]
    assert service["CapabilityBoundingSet"] == [""]


def test_rt_unit_keeps_what_realtime_needs(repo):
    service = load(repo, "mxrc-rt.service")["Service"]
    # RestrictRealtime= would make the controller's own sched_setscheduler fail,
    # and denying @resources would block sched_setaffinity and mlockall.
    assert "RestrictRealtime" not in service
    denied = " ".join(v for v in service["SystemCallFilter"] if v.startswith("~"))
    assert "@resources" not in denied and "@memlock" not in denied


def test_units_parse_as_ini(repo):
    for unit in UNITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read_string((repo / "units" / unit).read_text())
        assert parser.sections()
