"""The exporter's own metrics come from what the sandbox shows: /proc/self, times(2), CLOCK_BOOTTIME."""

from prometheus_client import CollectorRegistry, generate_latest

from mxrc_monitor import selfmetrics
from mxrc_monitor.serve import Stats

STAT = "4242 (mxrc-monitor) S 1 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 500 9 10 11\n"


def fake_proc_self(tmp_path):
    (tmp_path / "stat").write_text(STAT)            # starttime (field 22) = 500 ticks
    (tmp_path / "statm").write_text("1000 250 10 1 0 100 0\n")
    (tmp_path / "fd").mkdir()
    for fd in ("0", "1", "2"):
        (tmp_path / "fd" / fd).write_text("")
    return tmp_path


def samples(families):
    return {family.sample_name: value for family, found in families for _, value in found}


def test_process_metrics_without_proc_stat(tmp_path):
    got = samples(selfmetrics.process_families(fake_proc_self(tmp_path), now=lambda: 10_000.0,
                                               boottime=lambda: 100.0))
    assert got["process_resident_memory_bytes"] == 250 * selfmetrics.PAGE_SIZE
    assert got["process_virtual_memory_bytes"] == 1000 * selfmetrics.PAGE_SIZE
    assert got["process_open_fds"] == 3
    assert got["process_start_time_seconds"] == 10_000.0 - 100.0 + 500 / selfmetrics.TICKS
    assert got["process_cpu_seconds_total"] >= 0 and got["process_max_fds"] > 0


def test_unreadable_proc_self_leaves_out_only_what_it_hides(tmp_path):
    got = samples(selfmetrics.process_families(tmp_path / "hidden"))
    assert "process_cpu_seconds_total" in got and "process_resident_memory_bytes" not in got


def test_build_info_and_http_counters_are_served(tmp_path):
    stats = Stats()
    stats.count("/metrics", 200)
    stats.reject("max_requests")
    registry = CollectorRegistry()
    registry.register(selfmetrics.SelfCollector(lambda: stats, fake_proc_self(tmp_path)))
    text = generate_latest(registry).decode()
    assert f'mxrc_monitor_build_info{{version="{selfmetrics.__version__}"}} 1.0' in text
    assert 'mxrc_monitor_http_requests_total{code="200",path="/metrics"} 1.0' in text
    assert 'mxrc_monitor_http_rejected_total{reason="max_requests"} 1.0' in text
    assert 'mxrc_monitor_http_rejected_total{reason="evicted_idle"} 0.0' in text
