"""Dependency loops among the MXRC units, including ones an admin's drop-in creates."""


from mxrc_install.pipeline import plan, probe, unitgraph
from mxrc_install.sysroot import SysRoot


def dropin(root, unit, text, name="override.conf"):
    path = root / "etc/systemd/system" / f"{unit}.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def findings(root):
    return {f.id: f for f in plan.make_plan(probe.read_facts(SysRoot(root))).findings}


def test_shipped_units_have_no_loop(machine):
    edges = unitgraph.read_edges(SysRoot(machine))
    assert any(e.source == "mxrc-rt.service" and e.target == "mxrc-nonrt.service" and e.key == "Requires"
               and e.where.startswith("/usr/lib/systemd/system/mxrc-rt.service:") for e in edges)
    assert findings(machine) == {}


def test_spec_requires_wants_loop_is_reported_with_the_line(machine):
    dropin(machine, "mxrc-nonrt.service", "[Unit]\nWants=mxrc-rt.service\n")
    found = findings(machine)
    assert set(found) == {"requirement-cycle"}
    assert "remove Wants=mxrc-rt.service at /etc/systemd/system/mxrc-nonrt.service.d/override.conf:2" \
        in found["requirement-cycle"].fix


def test_ordering_loop_is_an_error(machine):
    dropin(machine, "mxrc-nonrt.service", "# local\n[Unit]\nAfter=mxrc-rt.service\n")
    found = findings(machine)
    assert found["ordering-cycle"].severity == plan.ERROR
    assert "override.conf:3" in found["ordering-cycle"].fix


def test_empty_assignment_in_a_dropin_clears_the_list(machine):
    dropin(machine, "mxrc-rt.service", "[Unit]\nRequires=\nAfter=\n")
    edges = unitgraph.read_edges(SysRoot(machine))
    assert not [e for e in edges if e.source == "mxrc-rt.service" and e.key in ("Requires", "After")]


def test_etc_dropin_masks_same_named_vendor_dropin(machine):
    vendor = machine / "usr/lib/systemd/system/mxrc-rt.service.d/10-x.conf"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("[Unit]\nWants=mxrc-monitor.service\n")
    dropin(machine, "mxrc-rt.service", "[Unit]\n", name="10-x.conf")
    files = unitgraph.unit_files(SysRoot(machine), "mxrc-rt.service")
    assert files == ["/usr/lib/systemd/system/mxrc-rt.service",
                     "/etc/systemd/system/mxrc-rt.service.d/10-x.conf"]
