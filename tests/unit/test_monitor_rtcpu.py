"""Intrusions on the RT CPUs: from fake /proc/interrupts, /proc/softirqs, a cgroup tree and affinities."""

import pytest
from test_monitor import RUNNING, Clock, FakeBus, scrape, value

from mxrc_monitor import rtcpu
from mxrc_monitor.monitor import Monitor

RT = "mxrc-rt.service"
INTERRUPTS = """\
           CPU0       CPU1       CPU2       CPU3
  0:         44          0          0          0   IO-APIC   2-edge      timer
 24:        100          7          5          0   PCI-MSI 512000-edge      virtio0-config
 25:          0          0        120          3   PCI-MSI 512001-edge      virtio0-req.0
NMI:          0          0          0          0   Non-maskable interrupts
LOC:       5000       4000       3000       2000   Local timer interrupts
ERR:          0
"""
SOFTIRQS = """\
                    CPU0       CPU1       CPU2       CPU3
          HI:          0          0          1          0
       TIMER:        500        400        300        200
      NET_RX:         10          0          4          0
"""
# Threads by cgroup; their allowed CPUs.
TREE = {
    # kthreadd (movable), kworker/2, kworker/0, unbound
    "": {2: {0, 1, 2, 3}, 20: {2}, 21: {0}, 30: {0, 1}},
    "init.scope": {1: {0, 1}},
    "system.slice/mxrc-rt.service": {500: {2, 3}, 501: {2, 3}, 502: {0, 1, 2, 3}},   # 502 strayed
    "system.slice/mxrc-nonrt.service": {600: {0, 1}},
    "user.slice/user-0.slice/session-1.scope": {700: {2}},  # taskset -c 2 yes
}


def build_tree(root):
    affinity = {}
    for path, threads in TREE.items():
        group = root / path if path else root
        group.mkdir(parents=True, exist_ok=True)
        (group / "cgroup.threads").write_text("".join(f"{t}\n" for t in threads))
        affinity.update(threads)
    return lambda tid: set(affinity[tid])


@pytest.fixture
def rt_rig(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "interrupts").write_text(INTERRUPTS)
    (proc / "softirqs").write_text(SOFTIRQS)
    cgroups = tmp_path / "cgroup"
    affinity = build_tree(cgroups)
    bus = FakeBus({RT: {**RUNNING, "CPUAffinity": bytes([0b1100]), "AllowedCPUs": b""}})
    monitor = Monitor([RT], bus, cgroup_root=cgroups, clock=Clock(), proc_root=proc, affinity=affinity)
    assert monitor.connect()
    return monitor, bus


def test_cpu_masks_are_read_as_systemd_writes_them():
    assert rtcpu.cpus_from_mask(bytes([0b1100])) == (2, 3)
    assert rtcpu.cpus_from_mask(bytes([0, 0b1])) == (8,)
    assert rtcpu.cpus_from_mask(b"") == ()


def test_device_interrupts_per_rt_cpu_leave_out_the_architecture_rows():
    assert rtcpu.parse_interrupts(INTERRUPTS, (2, 3)) == {2: 125, 3: 3}


def test_columns_follow_the_header_not_the_position():
    text = "           CPU0       CPU3\n 24:   9   4   PCI-MSI x\n"   # CPUs 1-2 offline
    assert rtcpu.parse_interrupts(text, (2, 3)) == {3: 4}


def test_rt_metrics_on_metrics(rt_rig):
    monitor, _ = rt_rig
    s = scrape(monitor.refresh())
    assert value(s, "mxrc_rt_cpu_interrupts_total", cpu="2") == 125
    assert value(s, "mxrc_rt_cpu_interrupts_total", cpu="0") is None        # not an RT CPU
    assert value(s, "mxrc_rt_cpu_softirqs_total", cpu="2", type="NET_RX") == 4
    assert value(s, "mxrc_rt_cpu_softirqs_total", cpu="3", type="TIMER") == 200
    # CPU 2: kthreadd (movable) and the session's "yes"; CPU 3: kthreadd only.
    assert value(s, "mxrc_rt_cpu_foreign_tasks", cpu="2") == 2
    assert value(s, "mxrc_rt_cpu_foreign_tasks", cpu="3") == 1
    assert value(s, "mxrc_rt_threads_outside_rt_cpus") == 1


def test_rt_cpus_fall_back_to_allowed_cpus_and_without_a_mask_there_are_no_rt_metrics(rt_rig):
    monitor, bus = rt_rig
    bus.props[RT].update(CPUAffinity=b"", AllowedCPUs=bytes([0b1000]))
    bus.emit(RT, ActiveState="inactive")
    bus.emit(RT, ActiveState="active")          # a start re-reads the masks
    monitor.listen(0)
    assert monitor.rt_cpus() == (3,)
    bus.props[RT].update(AllowedCPUs=b"")
    bus.emit(RT, ActiveState="inactive")
    bus.emit(RT, ActiveState="active")
    monitor.listen(0)
    s = scrape(monitor.refresh())
    assert not [k for k in s if k[0].startswith("mxrc_rt_")]


def test_a_thread_that_exited_during_the_scan_is_skipped(tmp_path):
    affinity = build_tree(tmp_path)

    def racing(tid):
        if tid == 700:
            raise ProcessLookupError(tid)
        return affinity(tid)

    foreign, outside = rtcpu.classify(rtcpu.walk_threads(tmp_path), "/system.slice/mxrc-rt.service",
                                      (2, 3), racing)
    assert foreign == {2: 1, 3: 1} and outside == 1


def test_without_mxrc_rt_running_there_is_no_outside_count(tmp_path):
    affinity = build_tree(tmp_path)
    foreign, outside = rtcpu.classify(rtcpu.walk_threads(tmp_path), None, (2,), affinity)
    assert outside is None
    assert foreign == {2: 5}   # kthreadd, the three threads in mxrc-rt's old cgroup, "yes"


def test_an_unreadable_interrupts_file_is_a_counted_error(rt_rig, tmp_path):
    monitor, _ = rt_rig
    (tmp_path / "proc" / "interrupts").unlink()
    s = scrape(monitor.refresh())
    assert value(s, "mxrc_monitor_collection_errors_total") == 1
    assert value(s, "mxrc_rt_cpu_foreign_tasks", cpu="2") is None


def test_cgroups_whose_cpuset_leaves_out_the_rt_cpus_are_not_walked(tmp_path):
    affinity = build_tree(tmp_path)
    (tmp_path / "user.slice" / "cpuset.cpus.effective").write_text("0-1\n")   # AllowedCPUs=0-1 on the slice
    (tmp_path / "system.slice" / "cpuset.cpus.effective").write_text("0-3\n")
    walked = [path for path, _ in rtcpu.walk_threads(tmp_path, (2, 3))]
    assert "/user.slice/user-0.slice/session-1.scope" not in walked and "/user.slice" not in walked
    assert "/system.slice/mxrc-rt.service" in walked
    foreign, _ = rtcpu.scan_tasks((2, 3), "/system.slice/mxrc-rt.service", tmp_path, affinity)
    assert foreign == {2: 1, 3: 1}   # the session's "yes" cannot run on CPU 2: its cpuset says so


def test_cpulist_format():
    assert rtcpu.parse_cpulist("0-1,4\n") == {0, 1, 4} and rtcpu.parse_cpulist("\n") == set()


def test_the_task_scan_paces_itself_and_the_counters_do_not(rt_rig, tmp_path, monkeypatch):
    import mxrc_monitor.monitor as monitor_mod
    monitor, _ = rt_rig
    scans = []
    real = rtcpu.scan_tasks
    monkeypatch.setattr(monitor_mod.rtcpu, "scan_tasks", lambda *a: scans.append(1) or real(*a))
    monkeypatch.setattr(monitor_mod, "TASK_SCAN_FACTOR", 1e9)   # as if a scan took very long
    monitor.refresh()
    (tmp_path / "proc" / "interrupts").write_text(INTERRUPTS.replace("120", "220"))
    s = scrape(monitor.refresh())
    assert len(scans) == 1                                              # paced
    assert value(s, "mxrc_rt_cpu_interrupts_total", cpu="2") == 225     # fresh
    assert value(s, "mxrc_rt_cpu_foreign_tasks", cpu="2") == 2          # kept from the scan


def test_a_quick_task_scan_still_waits_its_interval(rt_rig, monkeypatch):
    import mxrc_monitor.monitor as monitor_mod
    monitor, _ = rt_rig
    scans = []
    real = rtcpu.scan_tasks
    monkeypatch.setattr(monitor_mod.rtcpu, "scan_tasks", lambda *a: scans.append(monitor.clock()) or real(*a))
    for _ in range(25):   # 25 one-second ticks
        monitor.refresh()
        monitor.clock.now += 1.0
    start = scans[0]
    every = monitor_mod.TASK_SCAN_SECONDS
    assert [t - start for t in scans] == [0.0, every, 2 * every]
