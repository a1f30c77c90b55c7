"""boot-time records and comparison, dependency analysis, cyclictest parsing: the pure parts."""

import json
import re

import pytest
from sysroots import Hardware, build

from mxrc_install.ops import boottime, deps, jitter

from mxrc_install import names

from mxrc_install.pipeline import plan, probe
from mxrc_install.sysroot import SysRoot

# -- boot-time ----------------------------------------------------------------

MANAGER = {"UserspaceTimestampMonotonic": "2000000", "FinishTimestampMonotonic": "9000000"}


def shown(**starts_and_readies):
    return {u: {"InactiveExitTimestampMonotonic": str(s), "ActiveEnterTimestampMonotonic": str(r)}
            for u, (s, r) in starts_and_readies.items()}


AT_BOOT = shown(**{names.NONRT: (3_000_000, 3_500_000), names.RT: (3_600_000, 4_100_000),
                   names.MONITOR: (3_000_000, 4_400_000)})


def record(boot_id, ready, optimized, label="boot", units=None):
    return boottime.BootRecord(boot_id, label, optimized, "2026-11-26T00:00:00+00:00",
                               units or {names.RT: 0.5}, ready, 7.0)


BASIC = {"ActiveEnterTimestampMonotonic": "3300000"}


def test_measure_per_unit_and_ready_after_userspace():
    m = boottime.measure(AT_BOOT, MANAGER, BASIC)
    assert m["units"] == {names.NONRT: 0.5, names.RT: 0.5, names.MONITOR: 1.4}
    assert m["started"] == {names.NONRT: 1.0, names.RT: 1.6, names.MONITOR: 1.0}
    assert m["ready_seconds"] == 2.4 and m["userspace_seconds"] == 7.0 and m["basic_target_seconds"] == 1.3


def test_started_before_basic_target_is_what_the_optimisation_changes():
    r = boottime.BootRecord("b", "boot", True, "2026-11-26T00:00:00+00:00",
                            **boottime.measure(AT_BOOT, MANAGER, BASIC))
    assert r.started_before_basic(names.NONRT) is True
    assert r.started_before_basic(names.RT) is False   # it waits for mxrc-nonrt
    assert boottime.BootRecord("b", "boot", True, "x", {}, None, None).started_before_basic(names.RT) is None


def test_a_unit_restarted_after_boot_gives_no_ready_time():
    units = dict(AT_BOOT)
    units[names.RT] = {"InactiveExitTimestampMonotonic": "60000000",
                       "ActiveEnterTimestampMonotonic": "60500000"}
    m = boottime.measure(units, MANAGER)
    assert names.RT not in m["units"] and names.RT not in m["started"] and m["ready_seconds"] is None


def test_boot_still_in_progress_counts_as_at_boot():
    m = boottime.measure(AT_BOOT, {"UserspaceTimestampMonotonic": "2000000", "FinishTimestampMonotonic": "0"})
    assert m["ready_seconds"] == 2.4 and m["userspace_seconds"] is None and m["basic_target_seconds"] is None


def test_records_roundtrip_replace_same_boot_and_skip_torn_lines():
    a, b = record("aaa", 5.0, False, "before"), record("bbb", 3.0, True)
    text = boottime.render_records([a, b]) + '{"torn": \n'
    parsed = boottime.parse_records(text)
    assert parsed == [a, b]
    again = boottime.with_record(parsed, record("bbb", 2.0, True))
    assert [r.ready_seconds for r in again] == [5.0, 2.0]


def test_records_written_before_start_times_were_kept_still_parse():
    old = ('{"boot_id": "aaa", "label": "before", "optimized": false, "ready_seconds": 5.0, '
           '"recorded_at": "2026-11-26T00:00:00+00:00", "units": {}, "userspace_seconds": null}\n')
    [r] = boottime.parse_records(old)
    assert r.started == {} and r.basic_target_seconds is None


def test_compare_picks_baseline_and_newest_optimised_boot():
    records = [record("aaa", 5.0, False, "before"), record("bbb", 4.0, False), record("ccc", 3.0, True),
               record("ddd", 3.2, True), record("eee", None, True)]
    before, after = boottime.choose_pair(records)
    assert (before.boot_id, after.boot_id) == ("aaa", "ddd")
    c = boottime.comparison(before, after)
    assert c["ready"]["change_percent"] == -36.0 and c["sc006_met"]
    assert "SC-006 (-30% or better): met" in boottime.comparison_text(c)
    assert boottime.choose_pair(records, before_id="bb", after_id="cc")[0].boot_id == "bbb"


def test_compare_takes_an_optimised_boot_that_came_first():
    """docs/operations.md: one reboot with boot.optimize=no on a robot that booted optimised."""
    records = [record("aaa", None, False, "before"), record("bbb", 3.0, True), record("ccc", 5.0, False)]
    before, after = boottime.choose_pair(records)
    assert (before.boot_id, after.boot_id) == ("ccc", "bbb")
    assert boottime.comparison(before, after)["ready"]["change_percent"] == -40.0


def test_compare_shows_which_services_no_longer_wait_for_basic_target():
    def booted(boot_id, optimized, nonrt_start):
        units = shown(**{names.NONRT: (nonrt_start, nonrt_start + 500_000), names.RT: (5_000_000, 5_500_000),
                         names.MONITOR: (5_000_000, 5_400_000)})
        return boottime.BootRecord(boot_id, "boot", optimized, "2026-11-26T00:00:00+00:00",
                                   **boottime.measure(units, MANAGER,
                                                      {"ActiveEnterTimestampMonotonic": "4000000"}))
    c = boottime.comparison(booted("a", False, 4_100_000), booted("b", True, 2_500_000))
    assert c["units"][names.NONRT]["started_before_basic_target"] == {"before": False, "after": True}
    assert c["units"][names.NONRT]["started"] == {"before": 2.1, "after": 0.5}
    assert c["basic_target"] == {"before": 2.0, "after": 2.0}
    text = boottime.comparison_text(c)
    assert re.search(r"mxrc-nonrt\.service .* 2\.100 s  +0\.500 s\*", text), text
    assert "basic.target reached" in text


def test_show_lists_each_boot_with_start_times():
    r = boottime.BootRecord("0123456789abcdef", "boot", True, "2026-11-26T00:00:00+00:00",
                            **boottime.measure(AT_BOOT, MANAGER, BASIC))
    baseline = boottime.BootRecord("fedcba9876543210", "before", False, "2026-11-26T00:00:00+00:00", {}, None,
                                   None)
    lines = boottime.records_text([baseline, r]).splitlines()
    assert lines[1].split()[:4] == ["fedcba987654", "before", "no", "-"] and "not started at boot" in lines[1]
    assert lines[2].split()[:5] == ["0123456789ab", "boot", "yes", "2.400", "s"], lines[2]
    assert "1.300 s" in lines[2] and "mxrc-rt 0.500 @1.6" in lines[2]


def test_show_without_records_says_how_to_make_one():
    assert "mxrc-boot-time.service records every boot" in boottime.records_text([])


def test_compare_without_an_optimised_boot_finds_no_pair():
    assert boottime.choose_pair([record("aaa", 5.0, False, "before")])[1] is None


def test_small_gain_does_not_meet_sc006():
    c = boottime.comparison(record("a", 5.0, False), record("b", 4.0, True))
    assert c["ready"]["change_percent"] == -20.0 and not c["sc006_met"]


# -- deps ---------------------------------------------------------------------

def test_shipped_units_start_in_waves_with_the_rt_chain(machine):
    a = deps.analyse(SysRoot(machine))
    assert a.waves[0] == [names.HARDWARE_CHECK]
    assert a.waves[1] == sorted([names.NONRT, names.MONITOR])   # in parallel
    assert a.waves[2] == [names.RT] and a.waves[3] == [names.TARGET]
    assert a.critical_chain == [names.HARDWARE_CHECK, names.NONRT, names.RT, names.TARGET]
    assert "local-fs.target" in a.waits_for[names.RT]
    assert not any(a.default_dependencies[u] for u in names.SERVICES)
    assert a.cycles == []


def test_measured_durations_weight_the_chain(machine):
    a = deps.analyse(SysRoot(machine), {names.HARDWARE_CHECK: 1.0, names.NONRT: 0.2, names.RT: 0.1,
                                        names.MONITOR: 5.0})
    assert a.critical_chain == [names.HARDWARE_CHECK, names.MONITOR, names.TARGET]
    assert a.chain_seconds == 6.0


def test_unoptimised_dropin_shows_default_dependencies(machine):
    d = machine / "etc/systemd/system" / f"{names.RT}.d"
    d.mkdir(parents=True)
    (d / "50-mxrc-hardware.conf").write_text("[Unit]\nDefaultDependencies=yes\n")
    assert deps.analyse(SysRoot(machine)).default_dependencies[names.RT] is True


def test_requires_wants_loop_is_listed_with_its_line(machine):
    d = machine / "etc/systemd/system" / f"{names.NONRT}.d"
    d.mkdir(parents=True)
    (d / "override.conf").write_text("[Unit]\nAfter=mxrc-rt.service\nWants=mxrc-rt.service\n")
    a = deps.analyse(SysRoot(machine))
    assert a.cycles and "override.conf:2" in " ".join(a.cycles)
    assert "Dependency loops" in deps.analysis_text(a)


# -- jitter -------------------------------------------------------------------

CYCLICTEST = """\
# /dev/cpu_dma_latency set to 0us
000000 000000\t000000
000003 000500\t000400
000004 000480\t000590
000005 000010\t000008
000042 000000\t000002
# Total: 000000990 000001000
# Min Latencies: 00003 00003
# Avg Latencies: 00004 00004
# Max Latencies: 00005 00042
# Histogram Overflows: 00000 00000
# Histogram Overflow at cycle number:
# Thread 0:
# Thread 1:
"""


@pytest.fixture
def placement(tmp_path):
    hw = Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True, memory_gib=8)
    return plan.make_plan(probe.read_facts(SysRoot(build(tmp_path, hw)))).placement


def test_cyclictest_runs_inside_mxrc_rts_limits(placement):
    cmd = jitter.command(placement, 10_000, "mxrc-jitter-1")
    assert cmd[:3] == ["systemd-run", "--unit=mxrc-jitter-1", "--slice=mxrc.slice"] and "--wait" in cmd
    props = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-p"]
    assert "CPUAffinity=2 3" in props and "CPUSchedulingPriority=80" in props
    assert "CPUQuota=200%" in props and "LimitMEMLOCK=infinity" in props
    assert "--loops=10000" in cmd and "--affinity=2-3" in cmd and "--threads=2" in cmd


def test_parse_and_summarise(placement):
    r = jitter.result_from(jitter.parse_cyclictest(CYCLICTEST), placement, False, True)
    assert (r.min_us, r.max_us, r.avg_us, r.cycles, r.samples) == (3, 42, 4.0, 1000, 1990)
    assert r.p99_us == 5 and r.p999_us == 42 and r.passed
    text = jitter.result_text(r)
    assert "PASS: max 42 us <= 50 us" in text and "p99 5 us" in text
    data = json.loads(jitter.result_json(r))
    assert data["histogram"]["4"] == 1070 and data["passed"]


def test_overflows_count_as_cycles(placement):
    text = (CYCLICTEST.replace("# Total: 000000990 000001000", "# Total: 000000900 000000940")
            .replace("# Histogram Overflows: 00000 00000", "# Histogram Overflows: 00100 00060"))
    r = jitter.result_from(jitter.parse_cyclictest(text), placement, False, False)
    assert r.cycles == 1000 and r.overflows == 160


def test_over_the_bar_fails_and_generic_kernel_is_named(placement):
    text = CYCLICTEST.replace("# Max Latencies: 00005 00042", "# Max Latencies: 00005 00120")
    r = jitter.result_from(jitter.parse_cyclictest(text), placement, True, False)
    out = jitter.result_text(r)
    assert (not r.passed and "FAIL: max 120 us > 50 us" in out and "not PREEMPT_RT" in out
            and "under load" in out)


def test_truncated_output_is_an_error():
    with pytest.raises(jitter.JitterError, match="no summary; it said: 000001 000010"):
        jitter.parse_cyclictest("000001 000010\n")
