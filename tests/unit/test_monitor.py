"""The exporter without a system bus: a scripted bus, a fake cgroup tree, a fake clock."""

import collections
import threading
import types

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mxrc_monitor import cgroup, main, systemd_bus
from mxrc_monitor.collector import SnapshotCollector
from mxrc_monitor.monitor import RECONNECT_SECONDS, Monitor
from mxrc_monitor.unitstate import UnitState

RT, NONRT = "mxrc-rt.service", "mxrc-nonrt.service"
CPU_STAT = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
RUNNING = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "Type": "notify",
           "Result": "success", "NRestarts": 0, "WatchdogUSec": 30_000_000,
           "WatchdogTimestampMonotonic": 100_000_000, "ControlGroup": "/system.slice/mxrc-rt.service",
           "CPUAffinity": b"", "AllowedCPUs": b""}


class FakeBus:
    """Plays systemd: properties per unit, signals queued by the test, failures on demand."""

    def __init__(self, props):
        self.props = {u: dict(p) for u, p in props.items()}
        self.pending = collections.deque()
        self.down = False
        self.opened = 0
        self.gets = []

    def _check(self):
        if self.down:
            raise ConnectionResetError("bus went away")

    def open(self):
        self._check()
        self.opened += 1

    def close(self):
        pass

    def seed(self, unit):
        self._check()
        return dict(self.props.get(unit, {"LoadState": "not-found", "ActiveState": "inactive"}))

    def get(self, unit, interface, name):
        self._check()
        self.gets.append(name)
        return self.props[unit][name]

    def get_many(self, wanted):
        return [self.get(*key) for key in wanted]

    def wait(self, timeout):
        self._check()
        out = list(self.pending)
        self.pending.clear()
        return out

    def emit(self, unit, **changed):
        self.props[unit].update(changed)
        self.pending.append((unit, changed))


class Clock:
    def __init__(self, now=200.0):
        self.now = now

    def __call__(self):
        return self.now


def fake_cgroup(root, unit, cpu=CPU_STAT, memory="1048576\n", tasks="5\n"):
    group = root / "system.slice" / unit
    group.mkdir(parents=True)
    (group / "cpu.stat").write_text(cpu)
    (group / "memory.current").write_text(memory)
    (group / "pids.current").write_text(tasks)
    (group / "memory.max").write_text("2147483648\n")


def scrape(snapshot):
    collector = SnapshotCollector()
    collector.publish(snapshot)
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))))


@pytest.fixture
def rig(tmp_path):
    bus = FakeBus({RT: RUNNING})
    clock = Clock()
    monitor = Monitor([RT, NONRT], bus, cgroup_root=tmp_path, clock=clock, wallclock=lambda: 1e9)
    fake_cgroup(tmp_path, RT)
    assert monitor.connect()
    return monitor, bus, clock


# -- counting ---------------------------------------------------------------

def watchdog_kill(bus, restarts_after):
    bus.emit(RT, ActiveState="deactivating", SubState="stop-watchdog", Result="watchdog")
    bus.emit(RT, ActiveState="activating", SubState="auto-restart")
    bus.emit(RT, Result="success", NRestarts=restarts_after, ActiveState="active", SubState="running")


def test_watchdog_kill_counts_a_restart_and_a_watchdog_failure(rig):
    monitor, bus, _ = rig
    watchdog_kill(bus, restarts_after=1)
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_restart_total", name=RT) == 1
    assert value(s, "systemd_service_restart_total", name=RT) == 1
    assert value(s, "systemd_unit_failures_total", name=RT, result="watchdog") == 1
    assert value(s, "systemd_unit_failures_total", name=RT, result="oom-kill") == 0


def test_counters_survive_manual_restart_and_reset_failed(rig):
    monitor, bus, _ = rig
    watchdog_kill(bus, restarts_after=1)
    watchdog_kill(bus, restarts_after=2)
    bus.emit(RT, NRestarts=0)                       # systemctl restart / reset-failed
    bus.emit(RT, Result="oom-kill", SubState="auto-restart")
    bus.emit(RT, Result="success", NRestarts=1)
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_restart_total", name=RT) == 3
    assert value(s, "systemd_unit_failures_total", name=RT, result="watchdog") == 2
    assert value(s, "systemd_unit_failures_total", name=RT, result="oom-kill") == 1


def test_a_result_first_seen_on_a_signal_gets_its_own_series(rig):
    monitor, bus, _ = rig
    bus.emit(RT, Result="exec-condition")
    monitor.listen(0)
    assert value(scrape(monitor.refresh()), "systemd_unit_failures_total", name=RT,
                 result="exec-condition") == 1


def test_seed_does_not_count_what_happened_before_the_exporter_looked():
    state = UnitState(RT)
    state.seed({**RUNNING, "NRestarts": 7, "Result": "watchdog"})
    assert state.restarts_total == 0 and state.failures_total["watchdog"] == 0


def test_state_in_systemd_exporter_shape(rig):
    monitor, bus, _ = rig
    bus.emit(RT, ActiveState="failed", SubState="failed", Result="exit-code")
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_state", name=RT, type="service", state="failed") == 1
    assert value(s, "systemd_unit_state", name=RT, type="service", state="active") == 0
    assert value(s, "systemd_unit_failures_total", name=RT, result="exit-code") == 1


# -- watchdog ---------------------------------------------------------------

def test_watchdog_timeout_and_ping_age(rig):
    monitor, _, clock = rig
    clock.now = 112.5  # last ping at 100 s monotonic
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_watchdog_timeout_seconds", name=RT) == 30
    assert value(s, "systemd_unit_watchdog_last_ping_age_seconds", name=RT) == 12.5


def test_watchdog_timestamp_is_the_only_property_read_per_tick(rig):
    monitor, bus, _ = rig
    bus.gets.clear()
    for _ in range(3):
        monitor.refresh()
    assert bus.gets == ["WatchdogTimestampMonotonic"] * 3


def test_watchdog_settings_are_reread_when_the_unit_starts_again(rig):
    monitor, bus, _ = rig
    bus.emit(RT, ActiveState="inactive", SubState="dead")
    bus.props[RT]["WatchdogUSec"] = 2_000_000  # a drop-in changed WatchdogSec=, then a start
    bus.emit(RT, ActiveState="active", SubState="running")
    monitor.listen(0)
    assert value(scrape(monitor.refresh()), "systemd_unit_watchdog_timeout_seconds", name=RT) == 2


def test_no_ping_age_for_a_stopped_unit(rig):
    monitor, bus, _ = rig
    bus.emit(RT, ActiveState="inactive", SubState="dead")
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_watchdog_last_ping_age_seconds", name=RT) is None


# -- cgroups ----------------------------------------------------------------

def test_cpu_memory_tasks_from_the_units_cgroup(rig):
    monitor, _, _ = rig
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_cpu_seconds_total", name=RT, type="service", mode="user") == 2.0
    assert value(s, "systemd_unit_cpu_seconds_total", name=RT, type="service", mode="system") == 0.5
    assert value(s, "systemd_unit_memory_bytes", name=RT) == 1048576
    assert value(s, "systemd_unit_tasks_current", name=RT) == 5   # threads, as TasksCurrent
    assert value(s, "systemd_unit_memory_max_bytes", name=RT) == 2 ** 31


def test_unlimited_memory_max_is_absent():
    assert cgroup.parse_memory_max("max\n") is None


def test_unit_that_does_not_exist_is_absent_not_zero(rig):
    monitor, _, _ = rig
    s = scrape(monitor.refresh())
    assert not [k for k in s if ("name", NONRT) in k[1]]


def test_control_group_from_systemd_is_followed(tmp_path):
    bus = FakeBus({RT: {**RUNNING, "ControlGroup": "/mxrc.slice/mxrc-rt.service"}})
    group = tmp_path / "mxrc.slice/mxrc-rt.service"
    group.mkdir(parents=True)
    (group / "memory.current").write_text("42\n")
    monitor = Monitor([RT], bus, cgroup_root=tmp_path, clock=Clock())
    monitor.connect()
    assert value(scrape(monitor.refresh()), "systemd_unit_memory_bytes", name=RT) == 42


def test_unreadable_cgroup_file_is_a_counted_error(rig, tmp_path):
    monitor, _, _ = rig
    (tmp_path / "system.slice" / RT / "memory.current").write_text("garbage\n")
    s = scrape(monitor.refresh())
    assert value(s, "mxrc_monitor_collection_errors_total") == 1


def test_scrape_serves_the_snapshot_without_reading_the_system(rig, tmp_path):
    monitor, _, _ = rig
    collector = SnapshotCollector()
    collector.publish(monitor.refresh())
    (tmp_path / "system.slice" / RT / "memory.current").write_text("5\n")
    registry = CollectorRegistry()
    registry.register(collector)
    assert ('systemd_unit_memory_bytes{name="mxrc-rt.service"} 1.048576e+06'
            in generate_latest(registry).decode())


# -- the bus going away -----------------------------------------------------

def test_bus_loss_keeps_serving_counts_the_error_and_reconnects(rig):
    monitor, bus, clock = rig
    watchdog_kill(bus, restarts_after=1)
    monitor.listen(0)
    bus.down = True
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "mxrc_monitor_dbus_connected") == 0
    assert value(s, "mxrc_monitor_collection_errors_total") == 1
    assert value(s, "systemd_unit_restart_total", name=RT) == 1      # still served
    assert value(s, "systemd_unit_watchdog_last_ping_age_seconds", name=RT) is None  # unknown now
    bus.down = False
    bus.props[RT]["NRestarts"] = 3  # two restarts while we were away
    clock.now += RECONNECT_SECONDS
    s = scrape(monitor.refresh())
    assert value(s, "mxrc_monitor_dbus_connected") == 1
    assert value(s, "mxrc_monitor_dbus_reconnects_total") == 1
    assert value(s, "systemd_unit_restart_total", name=RT) == 3


def test_no_reconnect_storm_while_the_bus_is_down(rig):
    monitor, bus, clock = rig
    bus.down = True
    monitor.listen(0)
    opened = bus.opened
    for _ in range(4):
        clock.now += 1
        monitor.refresh()
    assert bus.opened == opened  # 4 s < RECONNECT_SECONDS


# -- the bus module's pure parts ---------------------------------------------

@pytest.mark.parametrize("unit, path", [
    ("mxrc-rt.service", "/org/freedesktop/systemd1/unit/mxrc_2drt_2eservice"),
    ("mxrc-failover@mxrc-rt.service", "/org/freedesktop/systemd1/unit/mxrc_2dfailover_40mxrc_2drt_2eservice"),
    ("1x.service", "/org/freedesktop/systemd1/unit/_31x_2eservice"),
    ("a_b.target", "/org/freedesktop/systemd1/unit/a_5fb_2etarget"),
])
def test_unit_path_matches_sd_bus_path_encode(unit, path):
    assert systemd_bus.unit_path(unit) == path


def test_properties_changed_body_is_unwrapped():
    body = ("org.freedesktop.systemd1.Service", {"NRestarts": ("u", 2), "Result": ("s", "watchdog")}, [])
    assert systemd_bus.parse_properties_changed(body) == (
        "org.freedesktop.systemd1.Service", {"NRestarts": 2, "Result": "watchdog"})


def test_sample_absent_cgroup_is_none(tmp_path):
    assert cgroup.sample(tmp_path / "nope") is None
    assert cgroup.parse_cpu_stat("usage_usec 1\n") is None


# -- serving ------------------------------------------------------------------

def test_metrics_rendered_once_per_snapshot(rig):
    from mxrc_monitor.serve import Exposition
    monitor, _, _ = rig
    collector = SnapshotCollector()
    exposition = Exposition([collector], lambda: collector.snapshot)
    collector.publish(monitor.refresh())
    first = exposition.body()
    assert exposition.body() is first and exposition.renders == 1
    collector.publish(monitor.refresh())
    exposition.body()
    assert exposition.renders == 2 and b'systemd_unit_restart_total{name="mxrc-rt.service"}' in first


def samples_of(text: bytes) -> set:
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_the_units_text_is_rendered_again_only_when_a_unit_changed(rig, monkeypatch):
    from mxrc_monitor import collector as collector_mod
    from mxrc_monitor.serve import Exposition
    monitor, bus, clock = rig
    calls = []
    real = collector_mod.unit_families
    monkeypatch.setattr(collector_mod, "unit_families", lambda snap: calls.append(1) or real(snap))
    collector = SnapshotCollector()
    exposition = Exposition([collector], lambda: collector.snapshot)
    for tick in range(3):   # the watchdog ping moves, CPU and memory are read again: units unchanged
        clock.now += 1
        bus.props[RT]["WatchdogTimestampMonotonic"] += 1_000_000
        collector.publish(monitor.refresh())
        body = exposition.body()
    assert (exposition.renders, len(calls)) == (3, 1)
    watchdog_kill(bus, restarts_after=1)
    monitor.listen(0)
    collector.publish(monitor.refresh())
    body = exposition.body()
    assert len(calls) == 2 and b'systemd_unit_restart_total{name="mxrc-rt.service"} 1.0' in body
    # The parts together say exactly what the whole registry says.
    assert samples_of(body) == samples_of(generate_latest(exposition.registry))


def test_the_units_key_changes_whenever_their_text_does(rig):
    """Every field of UnitState changed in turn: a field the text reads must be in the key."""
    import dataclasses
    from mxrc_monitor.collector import unit_families, unit_families_key
    from mxrc_monitor.families import render
    monitor, _, _ = rig
    base = monitor.refresh()
    other = {str: "x", int: 7, bytes: b"\x04"}
    for field in dataclasses.fields(UnitState):
        units = []
        for u in base.units:
            if field.name == "failures_total":
                changed = dataclasses.replace(u, failures_total={**u.failures_total, "watchdog": 9})
            elif field.name == "name":
                continue
            else:
                value = getattr(u, field.name)
                new = {"load_state": "not-found", "active_state": "failed"}.get(field.name)
                changed = dataclasses.replace(u, **{field.name: new or other.get(type(value), "x")})
            units.append(changed)
        if not units:
            continue
        snap = dataclasses.replace(base, units=tuple(units))
        if render(unit_families(snap)) != render(unit_families(base)):
            assert unit_families_key(snap) != unit_families_key(base), field.name


def test_a_published_snapshot_does_not_change_afterwards(rig):
    monitor, bus, _ = rig
    first = monitor.refresh()
    watchdog_kill(bus, restarts_after=1)
    monitor.listen(0)
    monitor.refresh()
    rt = next(u for u in first.units if u.name == RT)
    assert rt.restarts_total == 0 and rt.failures_total["watchdog"] == 0 and rt.active_state == "active"


# -- publishing ---------------------------------------------------------------

def test_a_change_nothing_served_depends_on_makes_no_new_snapshot(rig):
    """The RT loop's STATUS= each second is a PropertiesChanged of StatusText (and of the Unit
    interface's unchanged states): no snapshot for it, and no cgroup reads with it."""
    monitor, bus, _ = rig
    bus.emit(RT, StatusText="cpus=2,3, 1000 Hz, wake-up latency us min 3 avg 5 max 19")
    bus.emit(RT, ActiveState="active", SubState="running")
    assert monitor.listen(0) is False
    bus.emit(RT, StatusText="stalled", NRestarts=1)
    assert monitor.listen(0) is True


def test_listen_says_whether_a_unit_changed_and_snapshot_asks_the_bus_nothing(rig):
    monitor, bus, _ = rig
    assert monitor.listen(0) is False
    bus.emit(RT, ActiveState="failed", SubState="failed", Result="signal")
    assert monitor.listen(0) is True
    gets = len(bus.gets)
    s = scrape(monitor.snapshot())
    assert len(bus.gets) == gets
    assert value(s, "systemd_unit_failures_total", name=RT, result="signal") == 1


class OneSignalMonitor:
    """A monitor that sees one state change; stop is asked at the second tick."""
    connected = True

    def __init__(self, stop):
        self.stop, self.calls = stop, []

    def listen(self, timeout):
        self.calls.append(("listen", timeout))
        if len(self.calls) > 2:
            self.stop.set()
        return len(self.calls) == 1

    def snapshot(self):
        self.calls.append("snapshot")
        return "snapshot"

    def refresh(self):
        self.calls.append("refresh")
        return "refreshed"


def test_signals_are_folded_at_the_tick_and_a_change_is_published_without_a_refresh():
    """Idle (no scraper): the tick folds what came without waiting on the bus, and publishes
    the changed units without the cgroup reads of a refresh."""
    stop, published, waits = threading.Event(), [], []
    monitor = OneSignalMonitor(stop)
    collector = types.SimpleNamespace(publish=published.append)
    main.serve(monitor, collector, stop, wait=waits.append)
    assert monitor.calls[0] == ("listen", 0) and published == ["snapshot"]
    assert len(waits) == 2 and 0 < waits[0] <= main.REFRESH_SECONDS   # the loop sleeps, not the bus


# -- units that come and go; gaps ------------------------------------------------

def test_a_unit_missing_at_connect_is_served_once_systemd_loads_it(rig):
    monitor, bus, _ = rig
    assert not [k for k in scrape(monitor.refresh()) if ("name", NONRT) in k[1]]
    bus.props[NONRT] = {**RUNNING, "NRestarts": 1, "ControlGroup": "/system.slice/mxrc-nonrt.service"}
    bus.pending.append((NONRT, systemd_bus.RESEED))          # UnitNew
    assert monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_state", name=NONRT, type="service", state="active") == 1
    # before we first saw it: not ours to count
    assert value(s, "systemd_unit_restart_total", name=NONRT) == 0


def test_a_signal_for_a_unit_we_thought_missing_reads_it_again(rig):
    monitor, bus, _ = rig
    bus.props[NONRT] = dict(RUNNING)
    bus.emit(NONRT, ActiveState="active")     # UnitNew was missed; LoadState is never signalled
    monitor.listen(0)
    assert value(scrape(monitor.refresh()), "systemd_unit_state", name=NONRT, type="service",
                 state="active") == 1


def test_an_unloaded_unit_loses_its_state_series_but_not_its_counters(rig):
    monitor, bus, _ = rig
    watchdog_kill(bus, restarts_after=1)
    bus.pending.append((RT, systemd_bus.UNLOADED))           # UnitRemoved
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_state", name=RT, type="service", state="active") is None
    bus.props[RT].update(NRestarts=0, Result="success")
    bus.pending.append((RT, systemd_bus.RESEED))
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_restart_total", name=RT) == 1
    assert value(s, "systemd_unit_failures_total", name=RT, result="watchdog") == 1


def test_a_daemon_reload_that_removed_a_unit_file_drops_its_state(rig):
    monitor, bus, _ = rig
    bus.props[RT] = {"LoadState": "not-found", "ActiveState": "inactive"}
    bus.pending.append((systemd_bus.ALL_UNITS, systemd_bus.RESEED))   # Reloading(false)
    monitor.listen(0)
    assert value(scrape(monitor.refresh()), "systemd_unit_state", name=RT, type="service",
                 state="inactive") is None


def test_a_failure_during_a_bus_gap_is_counted_on_reconnect(rig):
    monitor, bus, clock = rig
    bus.down = True
    monitor.listen(0)
    bus.props[RT].update(ActiveState="failed", SubState="failed", Result="oom-kill", NRestarts=2)
    bus.down = False
    clock.now += RECONNECT_SECONDS
    s = scrape(monitor.refresh())
    assert value(s, "systemd_unit_failures_total", name=RT, result="oom-kill") == 1
    assert value(s, "systemd_unit_restart_total", name=RT) == 2
    assert value(s, "systemd_unit_state", name=RT, type="service", state="failed") == 1


def test_a_cgroup_removed_mid_read_is_not_an_error(rig, monkeypatch):
    import errno
    import os
    monitor, _, _ = rig
    real_open, real_read = os.open, os.read
    gone = set()

    def opening(path, *a, **kw):
        fd = real_open(path, *a, **kw)
        if str(path).endswith("memory.current"):
            gone.add(fd)
        return fd

    def reading(fd, n):
        if fd in gone:   # opened, then the cgroup was removed: the kernel answers ENODEV
            raise OSError(errno.ENODEV, "No such device")
        return real_read(fd, n)

    monkeypatch.setattr(cgroup.os, "open", opening)
    monkeypatch.setattr(cgroup.os, "read", reading)
    s = scrape(monitor.refresh())
    assert gone
    assert value(s, "mxrc_monitor_collection_errors_total") == 0
    assert value(s, "systemd_unit_cpu_seconds_total", name=RT, type="service", mode="user") == 2.0


def signal_message(path, interface, member, signature, body):
    from jeepney import DBusAddress, new_signal
    return new_signal(DBusAddress(path, interface=interface), member, signature, body)


def test_bus_turns_manager_signals_into_reseed_and_unloaded():
    bus = systemd_bus.SystemdBus([RT])
    manager = "/org/freedesktop/systemd1"
    iface = systemd_bus.MANAGER_IFACE
    assert bus.event(signal_message(manager, iface, "UnitNew", "so", (RT, "/x"))) == (RT, systemd_bus.RESEED)
    assert (bus.event(signal_message(manager, iface, "UnitRemoved", "so", (RT, "/x")))
            == (RT, systemd_bus.UNLOADED))
    assert bus.event(signal_message(manager, iface, "UnitNew", "so", ("other.service", "/x"))) is None
    assert bus.event(signal_message(manager, iface, "Reloading", "b", (False,))) == ("*", systemd_bus.RESEED)
    assert bus.event(signal_message(manager, iface, "Reloading", "b", (True,))) is None
    changed = signal_message(systemd_bus.unit_path(RT), systemd_bus.PROPERTIES_IFACE, "PropertiesChanged",
                             "sa{sv}as", (systemd_bus.UNIT_IFACE, {"ActiveState": ("s", "failed")}, []))
    assert bus.event(changed) == (RT, {"ActiveState": "failed"})


def test_match_rules_ask_for_load_and_unload_of_our_units_only():
    rules = [r.serialise() for r in systemd_bus.SystemdBus([RT]).match_rules()]
    assert [r for r in rules if "member='UnitNew'" in r and f"arg0='{RT}'" in r]
    assert [r for r in rules if "member='UnitRemoved'" in r and f"arg0='{RT}'" in r]
    assert any("Reloading" in r for r in rules)
    assert all("sender='org.freedesktop.systemd1'" in r for r in rules)


def test_a_daemon_reload_that_unloads_and_reloads_a_unit_does_not_count_its_restarts_again(rig):
    monitor, bus, _ = rig
    watchdog_kill(bus, restarts_after=1)
    monitor.listen(0)
    for _ in range(2):   # drill + undrill: two daemon-reloads, each UnitRemoved + UnitNew + Reloading(false)
        bus.pending.extend([(RT, systemd_bus.UNLOADED), (RT, systemd_bus.RESEED),
                            (systemd_bus.ALL_UNITS, systemd_bus.RESEED)])
        monitor.listen(0)
    assert value(scrape(monitor.refresh()), "systemd_unit_restart_total", name=RT) == 1


class WireBus:
    """The far end of a socketpair playing dbus-daemon: answers Gets out of order, a signal in between."""

    def __init__(self, values, error_for=()):
        import socket as socket_mod
        from jeepney.io.blocking import DBusConnectionBase
        from jeepney.io.blocking import timeout_to_deadline

        class Conn(DBusConnectionBase):   # jeepney's connection without the Hello a real bus needs
            def receive(self, *, timeout=None):
                return self._receive(timeout_to_deadline(timeout))
        ours, self.theirs = socket_mod.socketpair()
        self.conn = Conn(ours)
        self.values, self.error_for = values, error_for
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        from jeepney import new_error, new_method_return
        from jeepney.low_level import Parser
        parser, calls = Parser(), []
        while len(calls) < len(self.values):
            parser.add_data(self.theirs.recv(4096))
            while (msg := parser.get_next_message()) is not None:
                calls.append(msg)
        out = [signal_message(systemd_bus.unit_path(RT), systemd_bus.PROPERTIES_IFACE, "PropertiesChanged",
                              "sa{sv}as", (systemd_bus.UNIT_IFACE, {"ActiveState": ("s", "failed")}, []))
               .serialise(serial=500)]
        for n, call in enumerate(reversed(calls)):
            name = call.body[1]
            reply = (new_error(call, "org.freedesktop.DBus.Error.UnknownProperty") if name in self.error_for
                     else new_method_return(call, "v", (("t", self.values[name]),)))
            out.append(reply.serialise(serial=600 + n))
        self.theirs.sendall(b"".join(out))


def test_gets_go_out_together_and_replies_are_matched_by_serial():
    wire = WireBus({"WatchdogTimestampMonotonic": 11, "WatchdogUSec": 22, "NRestarts": 33})
    bus = systemd_bus.SystemdBus([RT])
    bus.conn = wire.conn
    wanted = [(RT, systemd_bus.SERVICE_IFACE, name) for name in ("WatchdogTimestampMonotonic", "WatchdogUSec",
                                                                  "NRestarts")]
    assert bus.get_many(wanted) == [11, 22, 33]
    assert len(bus.signals) == 1   # the signal that came first waits for wait(), as jeepney's filter would
    wire.thread.join(5)


def test_an_error_reply_in_a_batch_raises_connection_error():
    wire = WireBus({"WatchdogUSec": 22, "Nope": 0}, error_for=("Nope",))
    bus = systemd_bus.SystemdBus([RT])
    bus.conn = wire.conn
    with pytest.raises(ConnectionError):
        bus.get_many([(RT, systemd_bus.SERVICE_IFACE, name) for name in ("WatchdogUSec", "Nope")])
