from prometheus_client import CollectorRegistry, generate_latest

from mxrc_monitor import cgroup
from mxrc_monitor.collector import SnapshotCollector

CPU_STAT = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"


def fake_unit(root, unit, cpu=CPU_STAT, memory="1048576\n", procs="10\n11\n"):
    group = root / "system.slice" / unit
    group.mkdir(parents=True)
    (group / "cpu.stat").write_text(cpu)
    (group / "memory.current").write_text(memory)
    (group / "cgroup.procs").write_text(procs)


def test_parse_cpu_stat():
    assert cgroup.parse_cpu_stat(CPU_STAT) == 2.5
    assert cgroup.parse_cpu_stat("user_usec 1\n") is None


def test_sample_absent_unit_is_none(tmp_path):
    assert cgroup.sample("mxrc-rt.service", tmp_path) is None


def test_snapshot_served_in_prometheus_format(tmp_path):
    fake_unit(tmp_path, "mxrc-rt.service")
    collector = SnapshotCollector(["mxrc-rt.service", "mxrc-nonrt.service"], tmp_path)
    collector.refresh()
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'systemd_unit_cpu_seconds_total{name="mxrc-rt.service"} 2.5' in text
    assert 'systemd_unit_memory_bytes{name="mxrc-rt.service"} 1.048576e+06' in text
    assert 'systemd_unit_tasks_current{name="mxrc-rt.service"} 2.0' in text
    assert "mxrc-nonrt.service" not in text  # not running: absent, not zero


def test_scrape_does_not_read_the_system(tmp_path):
    fake_unit(tmp_path, "mxrc-rt.service")
    collector = SnapshotCollector(["mxrc-rt.service"], tmp_path)
    collector.refresh()
    (tmp_path / "system.slice/mxrc-rt.service/memory.current").write_text("5\n")
    registry = CollectorRegistry()
    registry.register(collector)
    assert 'memory_bytes{name="mxrc-rt.service"} 1.048576e+06' in generate_latest(registry).decode()
