"""jitter --tool timerlat: rtla's summary and auto-analysis parsed into a size and a cause.

The outputs in rtla_output/ are laid out with rtla 6.12's own printf formats
(timerlat_top.c, timerlat_aa.c): a quiet run that passes, a thread-context
spike dominated by a device IRQ, an IRQ-context spike from an idle exit; irq-stop-*
are copies of what trixie's rtla printed in the test VM.
"""

import json
from pathlib import Path

import pytest
from sysroots import Hardware, build, write

from mxrc_install import cli
from mxrc_install.ops import jitter, timerlat
from mxrc_install.pipeline import plan, probe
from mxrc_install.sysroot import SysRoot

OUTPUT = Path(__file__).parent / "rtla_output"


@pytest.fixture
def placement(tmp_path):
    root = build(tmp_path / "robot",
                 Hardware(cpus=4, cmdline="isolcpus=managed_irq,domain,2-3", preempt_rt=True))
    return plan.make_plan(probe.read_facts(SysRoot(root))).placement


def result(name, placement, trace="/tmp/t/timerlat_trace.txt"):
    return timerlat.result_from((OUTPUT / name).read_text(), placement, 10, False, trace)


def test_a_quiet_run_gives_the_max_per_cpu_and_passes(placement):
    r = result("quiet-pass.txt", placement, trace=None)
    assert r.irq_max_us == {2: 9, 3: 12} and r.thread_max_us == {2: 21, 3: 27}
    assert r.spikes == () and r.max_us == 27 and r.passed
    text = timerlat.result_text(r)
    assert "CPU 3: IRQ max 12 us, thread max 27 us" in text and "PASS: max 27 us <= 50 us (SC-001)" in text


def test_a_thread_spike_names_the_interrupt_that_caused_it(placement):
    r = result("thread-spike-irq-interference.txt", placement)
    [spike] = r.spikes
    assert (spike.cpu, spike.context, spike.total_us) == (3, "Thread", 78.10)
    assert spike.cause.label == "IRQ interference" and spike.cause.percent == 67.70
    assert spike.cause.sources == ("virtio1-req.2:35 (52.87 us)",)
    blocking = next(p for p in spike.parts if p.label == "Blocking thread")
    assert blocking.sources == ("yes:4242 (9.31 us)",)
    assert not r.passed and r.max_us == 78.10
    text = timerlat.result_text(r)
    assert "spike on CPU 3: thread latency 78.10 us" in text
    assert "cause: IRQ interference 52.87 us (67.7 %): virtio1-req.2:35 (52.87 us)" in text
    assert "doctor: isolation:irqs" in text and "trace: /tmp/t/timerlat_trace.txt" in text
    assert "FAIL: max 78.1 us > 50 us (SC-001)" in text


def test_an_irq_spike_from_an_idle_exit_points_at_c_states(placement):
    [spike] = result("irq-spike-idle-exit.txt", placement).spikes
    assert (spike.cpu, spike.context, spike.total_us) == (2, "IRQ", 64.14)
    assert spike.cause.label == "IRQ handler delay" and spike.cause.idle_exit
    assert next(p for p in spike.parts if p.label == "Blocking thread").sources == ("swapper/2:0",)
    assert "isolation:cstates" in timerlat.HINTS[spike.cause.label]
    assert ("    Blocking thread: swapper/2:0\n"
            in timerlat.result_text(result("irq-spike-idle-exit.txt", placement)))


def test_an_irq_stop_without_table_or_closing_total_fails_with_that_latency(placement):
    """Laid out as trixie's rtla printed it in the VM (session 5): no summary table, an IRQ latency
    line without "(100%)". It once came out as "PASS: max 0 us"."""
    r = result("irq-stop-without-table.txt", placement)
    [spike] = r.spikes
    assert (spike.cpu, spike.context, spike.total_us) == (3, "IRQ", 5587.64)
    assert not r.passed and r.max_us == 5587.64
    assert "FAIL: max 5587.64 us > 50 us (SC-001)" in timerlat.result_text(r)


def test_json_carries_the_cause_and_its_hint(placement):
    data = json.loads(timerlat.result_json(result("thread-spike-irq-interference.txt", placement)))
    assert data["tool"] == "timerlat" and data["passed"] is False and data["limit_us"] == 50
    assert data["spikes"][0]["cause"]["label"] == "IRQ interference"
    assert "isolation:irqs" in data["spikes"][0]["hint"] and data["thread_max_us"]["3"] == 78


def test_rows_with_the_user_thread_columns_parse_too():
    row = "  2 #1000      |        1         0         1         9 |" \
          "        3         2         4        21 |" \
          "        5         3         5        30\n"
    assert timerlat.parse_top(row) == ({2: 9}, {2: 21})


def test_output_without_a_summary_is_a_clear_error(placement):
    with pytest.raises(jitter.JitterError,
                       match="rtla timerlat printed no summary; it said: Failed to enable"):
        timerlat.result_from("Failed to enable the tracer timerlat\n", placement, 10, False, None)


def test_the_command_stops_at_sc001_on_the_rt_cpus_with_kernel_threads_when_known(placement):
    old = timerlat.command(placement, 10, frozenset())
    assert old == ["rtla", "timerlat", "top", "-q", "-c", "2-3", "-P", "f:80", "-d", "10s", "-a", "50"]
    new = timerlat.command(placement, 10, timerlat.known_options("  -k/--kernel-threads: ...\n"
                                                                 "  -H/--house-keeping cpus: ...\n"))
    assert new[-3:] == ["-k", "-H", "0-1"]


@pytest.mark.parametrize("tracers, rtla, message", [
    ("hwlat blk function nop\n", "/usr/bin/rtla", "no timerlat tracer"),
    (None, "/usr/bin/rtla", "cannot read /sys/kernel/tracing/available_tracers"),
    ("timerlat osnoise nop\n", None, "apt install rtla"),
])
def test_missing_tracer_or_rtla_is_a_clear_error(tmp_path, tracers, rtla, message):
    if tracers is not None:
        write(tmp_path, "/sys/kernel/tracing/available_tracers", tracers)
    with pytest.raises(jitter.JitterError, match=message):
        timerlat.require_timerlat(SysRoot(tmp_path), rtla)


def test_tracer_found_in_the_older_debugfs_place(tmp_path):
    write(tmp_path, "/sys/kernel/debug/tracing/available_tracers", "timerlat nop\n")
    timerlat.require_timerlat(SysRoot(tmp_path), "/usr/bin/rtla")


def test_the_cli_offers_the_tool():
    args = cli.build_parser().parse_args(["jitter", "--tool", "timerlat", "--cycles", "2000"])
    assert args.tool == "timerlat" and args.cycles == 2000
    assert cli.build_parser().parse_args(["jitter"]).tool == "cyclictest"


def test_an_irq_stop_on_an_idle_cpu_that_rtla_could_not_split_is_an_idle_exit(placement):
    """As trixie's rtla 6.12 printed it in the VM (session 6, `-k -H 0-1`): thread columns "-",
    every part 0 us, the idle task with an empty name, and only the closing "from idle" line
    saying where the 917 us went. It came out as "cause: IRQ handler delay 0.00 us (0 %)"."""
    r = result("irq-stop-from-idle-blank-thread.txt", placement)
    assert r.irq_max_us == {2: 917} and r.thread_max_us == {}
    [spike] = r.spikes
    assert (spike.cpu, spike.context, spike.total_us, spike.from_idle) == (2, "IRQ", 917.97, True)
    assert spike.cause.label == timerlat.IDLE_EXIT and spike.cause.us == 917.97
    assert next(p for p in spike.parts if p.label == "Blocking thread").sources == ("idle:0",)
    text = timerlat.result_text(r)
    assert "  CPU 2: IRQ max 917 us, thread max - us\n" in text
    assert "  cause: Exit from idle 917.97 us\n" in text
    assert "isolation:cstates" in text and "FAIL: max 917.97 us > 50 us (SC-001)" in text


def test_a_stop_without_a_weighing_part_or_idle_says_rtla_did_not_split_it(placement):
    r = result("irq-stop-without-table.txt", placement)
    assert r.spikes[0].cause is None
    assert "cause: rtla's analysis did not split it: see the trace file" in timerlat.result_text(r)
