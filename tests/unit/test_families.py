"""families.Family writes byte for byte what prometheus_client writes for the same family."""

import math
import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from mxrc_monitor.cgroup import CgroupSample
from mxrc_monitor.collector import Snapshot, SnapshotCollector
from mxrc_monitor.families import Family, metrics, render
from mxrc_monitor.rtcpu import RtSample
from mxrc_monitor.selfmetrics import SelfCollector
from mxrc_monitor.serve import Exposition, Stats
from mxrc_monitor.unitstate import UnitState

VALUES = [0, 1, 7, 0.5, 1e-9, 123456789.0, 1234567.5, 2 ** 53, 1e22, -3.25, math.inf, -math.inf, math.nan]


def registry_of(*collectors):
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class Declared:
    """A collector of explicit (Family, samples), offered both ways."""

    def __init__(self, declared):
        self.declared = declared

    def collect(self):
        return metrics(self.declared)

    def parts(self):
        return [(None, lambda: self.declared)]


@pytest.mark.parametrize("seed", range(4))
def test_random_families_match_prometheus_client_in_both_formats(seed):
    rng = random.Random(seed)
    declared = []
    for n, kind in enumerate(["counter", "gauge", "gauge", "counter", "gauge"]):
        labels = tuple(rng.sample(["name", "zeta", "alpha", "mode", "cpu"], rng.randint(0, 3)))
        family = Family(f"m{n}_{kind}", kind, 'help with \\ and "quotes"\nand a newline', labels)
        samples = [(tuple(rng.choice(["a", 'q"uote', "back\\slash", "new\nline", "ü"]) for _ in labels),
                    rng.choice(VALUES)) for _ in range(rng.randint(0, 4) if labels else 1)]
        declared.append((family, samples))
    declared.append((Family("build", "info", "an info", ("version",)), [(("1.2",), 1.0)]))
    collector = Declared(declared)
    assert render(declared).encode() == generate_latest(registry_of(collector))
    assert (render(declared, openmetrics=True) + "# EOF\n").encode() == \
        openmetrics.generate_latest(registry_of(collector))


def full_snapshot():
    rt = UnitState("mxrc-rt.service", load_state="loaded", active_state="active", watchdog_usec=2_000_000,
                   restarts_total=3, failures_total={"watchdog": 2, "oom-kill": 1})
    target = UnitState("mxrc.target", load_state="loaded", active_state="active")
    return Snapshot(units=(rt, target),
                    cgroups={"mxrc-rt.service": CgroupSample({"user": 1.5, "system": 0.25}, 2 ** 30, 5,
                                                             2 ** 31)},
                    watchdog_ages={"mxrc-rt.service": 0.5}, errors_total=2, collection_seconds=0.001,
                    bus_connected=True, bus_reconnects_total=1, timestamp=1796673672.198089,
                    rt=RtSample((2, 3), {2: 10, 3: 0}, {(2, "NET_RX"): 4, (3, "TIMER"): 9}, {2: 0, 3: 1}, 0))


def test_the_exporters_body_is_what_prometheus_client_writes(tmp_path):
    collector = SnapshotCollector()
    collector.publish(full_snapshot())
    stats = Stats()
    stats.count("/metrics", 200)
    proc_self = tmp_path / "self"
    (proc_self / "fd").mkdir(parents=True)
    (proc_self / "statm").write_text("1000 250 10 1 0 100 0\n")
    own = SelfCollector(lambda: stats, proc_self)
    own.started = 1.0
    exposition = Exposition([collector, own], lambda: collector.snapshot)
    text = exposition.body()
    declared = SnapshotCollector.families_of(collector.snapshot) + own.families()
    assert text.count(b"# TYPE") == len(declared)

    def still(body):   # times(2) moves between two renders
        return [line for line in body.split(b"\n") if not line.startswith(b"process_cpu_seconds_total ")]
    assert still(text) == still(generate_latest(exposition.registry))
    assert still(exposition.body(openmetrics_format=True)) == \
        still(openmetrics.generate_latest(exposition.registry))


def test_a_label_set_is_formatted_once_and_kept():
    family = Family("x", "gauge", "x", ("b", "a"))
    assert family.prefix(("1", "2")) == 'x{a="2",b="1"} '
    assert family.prefix(("1", "2")) is family.prefix(("1", "2"))
