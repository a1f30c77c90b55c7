"""doctor's RT isolation checks (issue #10 item 5) on fake robots: a healthy one, then each layer broken."""

import dataclasses
import shutil

import pytest
from isolation_facts_helpers import checks_of, facts_of, placement_of
from isolation_sysroots import (FULL_CMDLINE, RT_CGROUP, robot, write_cpuset, write_idle, write_irq,
                                write_kthread, write_task)
from sysroots import write

from mxrc_install.cpulist import parse_mask
from mxrc_install.ops import doctor, isolation, isolation_facts, operations
from mxrc_install.ops.doctor import FAIL, PASS, WARN
from mxrc_install.pipeline.commands import current_plan
from mxrc_install.sysroot import SysRoot


def test_a_robot_with_every_layer_in_place_passes_every_check(tmp_path):
    checks = checks_of(robot(tmp_path))
    assert {c.id: c.status for c in checks if c.status != PASS} == {}
    assert {c.id for c in checks} == {
        "isolation:cmdline", "isolation:kernel", "isolation:rt-cpuset", "isolation:rt-partition",
        "isolation:cpuset:system.slice", "isolation:cpuset:user.slice",
        "isolation:tasks", "isolation:kthreads", "isolation:irqs", "isolation:irq-default",
        "isolation:irqbalance", "isolation:workqueue", "isolation:cstates", "isolation:throttling",
        "isolation:rt-threads", "isolation:rt-memlock"}
    by_id = {c.id: c for c in checks}
    assert "2 per-CPU kernel threads" in by_id["isolation:kthreads"].evidence
    assert "2 threads (1 fifo 80, 1 other 0)" in by_id["isolation:rt-threads"].evidence
    assert "65536 kB" in by_id["isolation:rt-memlock"].evidence


# -- tasks -------------------------------------------------------------------------

def test_a_process_pinned_to_an_rt_cpu_fails_naming_pid_comm_and_unit(tmp_path):
    root = robot(tmp_path)
    write_task(root, 4242, "yes", {2}, "/user.slice/user-0.slice/session-3.scope")
    check = checks_of(root, "isolation:tasks")
    assert check.status == FAIL
    assert "PID 4242 (yes, session-3.scope, CPUs 2)" in check.evidence
    assert "taskset -apc 0-1 PID" in check.fix


@pytest.mark.parametrize("mode", ["kernel-only", "off"])
def test_outside_mode_auto_a_foreign_task_only_warns(tmp_path, mode):
    root = robot(tmp_path)
    write_task(root, 4242, "yes", {2}, "/user.slice/user-0.slice/session-3.scope")
    check = checks_of(root, "isolation:tasks", mode=mode)
    assert check.status == WARN and "PID 4242 (yes" in check.evidence and "isolcpus=" in check.fix


def test_threads_of_one_process_are_named_once_with_their_union(tmp_path):
    root = robot(tmp_path)
    write_task(root, 700, "worker", {0, 2}, "/system.slice/app.service")
    write_task(root, 700, "worker-rt", {3}, "/system.slice/app.service", tid=701)
    write_task(root, 700, "worker-io", {0, 1}, "/system.slice/app.service", tid=702)
    check = checks_of(root, "isolation:tasks")
    assert "1 process(es)" in check.evidence
    assert "PID 700 (worker, app.service, CPUs 0,2-3, 2 threads)" in check.evidence


def test_many_offenders_are_counted_beyond_the_listed_ones(tmp_path):
    root = robot(tmp_path)
    for pid in range(2000, 2015):
        write_task(root, pid, "sleep", {0, 1, 2, 3}, "/system.slice/x.service")
    check = checks_of(root, "isolation:tasks")
    assert "15 process(es)" in check.evidence and "and 5 more" in check.evidence


def test_mxrc_rt_and_the_jitter_unit_belong_on_the_rt_cpus(tmp_path):
    root = robot(tmp_path)
    write_task(root, 3000, "cyclictest", {2, 3}, "/system.slice/mxrc-jitter-77.service")
    assert checks_of(root, "isolation:tasks").status == PASS


def test_doctor_leaves_itself_out(tmp_path):
    root = robot(tmp_path)
    write_task(root, 5000, "mxrc-systemd", {0, 1, 2, 3}, "/user.slice/user-0.slice/session-1.scope")
    facts = isolation_facts.without_pids(facts_of(root), {5000})
    assert isolation.check_tasks(facts, placement_of(root), "auto")[0].status == PASS


# -- kernel threads ----------------------------------------------------------------------

def test_a_movable_kernel_thread_on_rt_cpus_is_named_per_cpu_ones_are_expected(tmp_path):
    root = robot(tmp_path)
    write_kthread(root, 2, "kthreadd", {0, 1, 2, 3})
    write_kthread(root, 32, "kworker/3:1", {3}, per_cpu=True)
    check = checks_of(root, "isolation:kthreads")
    assert check.status == WARN and "PID 2 (kthreadd, CPUs 0-3)" in check.evidence
    assert "kworker" not in check.evidence


def test_a_per_cpu_kernel_thread_is_never_a_foreign_task(tmp_path):
    root = robot(tmp_path)
    write_kthread(root, 40, "migration/2", {2}, per_cpu=True)
    assert checks_of(root, "isolation:tasks").status == PASS


# -- interrupts ------------------------------------------------------------------------------

def test_a_movable_irq_on_an_rt_cpu_fails_naming_number_and_device(tmp_path):
    root = robot(tmp_path)
    write_irq(root, 24, "virtio0-config", {2}, managed=False)
    check = checks_of(root, "isolation:irqs")
    assert check.status == FAIL and "IRQ 24 (virtio0-config, movable) on CPU 2" in check.evidence
    assert "smp_affinity_list" in check.fix


def test_a_managed_irq_only_warns_and_says_it_cannot_move(tmp_path):
    root = robot(tmp_path)
    write_irq(root, 26, "virtio1-req.2", {2}, managed=True)
    check = checks_of(root, "isolation:irqs")
    assert check.status == WARN and "IRQ 26 (virtio1-req.2, managed)" in check.evidence
    assert "managed_irq" in check.fix


def test_without_irq_debugfs_the_kind_is_not_guessed(tmp_path):
    root = robot(tmp_path)
    write_irq(root, 27, "eth0", {3}, managed=None)
    check = checks_of(root, "isolation:irqs")
    assert check.status == WARN and "IRQ 27 (eth0, movable or managed) on CPU 3" in check.evidence


def test_an_irq_asked_off_the_rt_cpus_waits_for_its_next_interrupt_and_is_not_an_offender(tmp_path):
    root = robot(tmp_path)
    write_irq(root, 1, "i8042", {3}, managed=None, requested={0, 1})   # x86 moves it when it next fires
    check = checks_of(root, "isolation:irqs")
    assert check.status == PASS and "1 asked off them move at their next interrupt (IRQ 1)" in check.evidence
    write_irq(root, 10, "eth0", {2}, managed=False)
    check = checks_of(root, "isolation:irqs")
    assert check.status == FAIL and "IRQ 10 (eth0" in check.evidence and "IRQ 1 (" not in check.evidence


def test_an_irq_not_started_has_no_effective_cpu_and_is_skipped(tmp_path):
    root = robot(tmp_path)
    write(root, "/proc/irq/40/effective_affinity_list", "\n")
    assert all(i.number != 40 for i in facts_of(root).irqs)


def test_default_irq_affinity_on_rt_cpus_fails_with_the_hex_mask_to_write(tmp_path):
    root = robot(tmp_path)
    write(root, "/proc/irq/default_smp_affinity", "f\n")
    check = checks_of(root, "isolation:irq-default")
    assert check.status == FAIL and "echo 00000003 > /proc/irq/default_smp_affinity" in check.fix


@pytest.mark.parametrize("files, status", [
    ({}, FAIL),
    ({"/etc/default/irqbalance": 'IRQBALANCE_BANNED_CPULIST="2-3"\n'}, PASS),
    ({"/etc/systemd/system/irqbalance.service.d/50-mxrc-hardware.conf":
      "[Service]\nEnvironment=IRQBALANCE_BANNED_CPULIST=2-3\n"}, PASS),
    ({"/etc/systemd/system/irqbalance.service.d/50-mxrc-hardware.conf":
      "[Service]\nEnvironment=IRQBALANCE_BANNED_CPULIST=2-3\n",
      "/etc/default/irqbalance": "IRQBALANCE_BANNED_CPULIST=3\n"}, FAIL),   # EnvironmentFile= wins
    ({"/etc/default/irqbalance": "IRQBALANCE_BANNED_CPUS=0000000c\n"}, PASS),
    ({"/etc/default/irqbalance": 'IRQBALANCE_BANNED_CPULIST="3"\n'}, FAIL),
])
def test_irqbalance_must_keep_off_the_rt_cpus(tmp_path, files, status):
    root = robot(tmp_path, cmdline="quiet")
    write(root, "/sys/devices/system/cpu/isolated", "\n")
    write(root, "/usr/sbin/irqbalance", "")
    for path, text in files.items():
        write(root, path, text)
    check = checks_of(root, "isolation:irqbalance")
    assert check.status == status, check
    if status == FAIL:
        assert "irqbalance.service.d/50-mxrc-hardware.conf" in check.fix


def test_irqbalance_leaves_isolated_cpus_alone(tmp_path):
    root = robot(tmp_path)
    write(root, "/usr/sbin/irqbalance", "")
    assert "isolated CPUs" in checks_of(root, "isolation:irqbalance").evidence


# -- cgroups --------------------------------------------------------------------------------

def test_slices_without_allowed_cpus_fail_in_auto_and_are_reported_otherwise(tmp_path):
    root = robot(tmp_path)
    write_cpuset(root, "system.slice", {0, 1, 2, 3})
    (root / "sys/fs/cgroup/user.slice/cpuset.cpus.effective").unlink()   # no cpuset controller: every CPU
    auto = {c.id: c for c in isolation.run_checks(facts_of(root), placement_of(root), "auto")}
    assert auto["isolation:cpuset:system.slice"].status == FAIL
    assert "AllowedCPUs=0-1" in auto["isolation:cpuset:system.slice"].fix
    assert auto["isolation:cpuset:user.slice"].status == FAIL
    assert checks_of(root, "isolation:cpuset:system.slice", mode="off").status == PASS


def test_rt_cgroup_wider_than_the_rt_cpus_fails(tmp_path):
    root = robot(tmp_path)
    write_cpuset(root, "mxrc.slice", {0, 1, 2, 3}, "member")
    check = checks_of(root, "isolation:rt-cpuset", mode="kernel-only")
    assert check.status == FAIL and "mxrc.slice may use CPUs 0-3" in check.evidence


def test_an_invalid_partition_warns_with_the_kernels_reason(tmp_path):
    root = robot(tmp_path)
    write(root, "/sys/devices/system/cpu/isolated", "\n")   # no isolcpus=: only the partition isolates
    write_cpuset(root, "mxrc.slice", {2, 3}, "isolated invalid (Cpu list in cpuset.cpus not exclusive)")
    check = checks_of(root, "isolation:rt-partition")
    assert check.status == WARN and "not exclusive" in check.evidence


def test_a_partition_refused_because_isolcpus_already_isolates_passes(tmp_path):
    """Seen on kernel 6.12 with isolcpus=managed_irq,domain,2-3: the kernel refuses the isolated
    partition ("conflicts with housekeeping setup"); the CPUs are out of load balancing anyway."""
    root = robot(tmp_path)
    write_cpuset(root, "mxrc.slice", {2, 3},
                 "isolated invalid (partition config conflicts with housekeeping setup)")
    check = checks_of(root, "isolation:rt-partition")
    assert check.status == PASS and "isolcpus=domain" in check.evidence


def test_mxrc_rt_outside_its_slice_fails_in_auto_only(tmp_path):
    root = robot(tmp_path)
    shutil.rmtree(root / "sys/fs/cgroup/mxrc.slice")
    write_cpuset(root, "system.slice/mxrc-rt.service", {2, 3}, "member")
    write(root, "/proc/900/cgroup", "0::/system.slice/mxrc-rt.service\n")
    by_id = {c.id: c for c in checks_of(root)}
    assert by_id["isolation:rt-cpuset"].status == PASS
    assert by_id["isolation:rt-partition"].status == FAIL
    assert "system.slice/mxrc-rt.service" in by_id["isolation:rt-partition"].evidence
    assert "isolation:rt-partition" not in {c.id for c in checks_of(root, mode="kernel-only")}


# -- workqueues, idle, throttling ------------------------------------------------------------

def test_workqueue_cpumask_on_rt_cpus_fails(tmp_path):
    root = robot(tmp_path)
    write(root, "/sys/devices/virtual/workqueue/cpumask", "0000000f\n")
    check = checks_of(root, "isolation:workqueue")
    assert check.status == FAIL and "RT CPUs 2-3 (cpumask 0-3)" in check.evidence
    assert "echo 00000003 > /sys/devices/virtual/workqueue/cpumask" in check.fix


def test_rt_cpus_without_a_resume_latency_limit_may_sleep_deeply(tmp_path):
    root = robot(tmp_path)
    write_idle(root, 3, "0")
    check = checks_of(root, "isolation:cstates")
    assert check.status == FAIL and "CPU 3 (pm_qos_resume_latency_us=0, may enter C6)" in check.evidence
    assert "CPU 2" not in check.evidence


def test_a_limit_above_the_deep_states_latency_does_not_protect(tmp_path):
    root = robot(tmp_path)
    write_idle(root, 2, "200")
    assert "CPU 2" in checks_of(root, "isolation:cstates").evidence
    write_idle(root, 2, "5")
    assert checks_of(root, "isolation:cstates").status == PASS


def test_deep_idle_is_fine_while_mxrc_rt_is_stopped(tmp_path):
    root = robot(tmp_path)
    write_idle(root, 3, "0")
    shutil.rmtree(root / "proc/900")
    assert checks_of(root, "isolation:cstates").status == PASS


def test_default_throttling_is_explained_not_judged(tmp_path):
    check = checks_of(robot(tmp_path), "isolation:throttling")
    assert check.status == PASS
    assert "950000 of every 1000000 us" in check.evidence and "fair server" in check.evidence


def test_throttling_off_without_fair_server_warns_with_the_sysctl(tmp_path):
    root = robot(tmp_path)
    write(root, "/proc/sys/kernel/sched_rt_runtime_us", "-1\n")
    for c in range(4):
        write(root, f"/sys/kernel/debug/sched/fair_server/cpu{c}/runtime", "0\n")
    check = checks_of(root, "isolation:throttling")
    assert check.status == WARN and "sched_rt_runtime_us" in check.fix


def test_rt_group_sched_is_mentioned(tmp_path):
    root = robot(tmp_path)
    facts = dataclasses.replace(facts_of(root), rt_group_sched=True)
    assert ("CONFIG_RT_GROUP_SCHED=y"
            in isolation.check_throttling(facts, placement_of(root), "auto")[0].evidence)


# -- mxrc-rt itself -----------------------------------------------------------------------------

def test_a_thread_of_mxrc_rt_outside_the_rt_cpus_fails_naming_it(tmp_path):
    root = robot(tmp_path)
    write_task(root, 900, "burn", {0, 1, 2, 3}, RT_CGROUP, tid=905, policy="fifo", priority=80)
    check = checks_of(root, "isolation:rt-threads", mode="off")
    assert check.status == FAIL and "TID 905 (burn, fifo 80, CPUs 0-3)" in check.evidence
    assert "1 of 3" in check.evidence


def test_mxrc_rt_without_locked_memory_warns(tmp_path):
    root = robot(tmp_path)
    write_task(root, 900, "mxrc-rt", {2, 3}, RT_CGROUP, policy="fifo", priority=80, vmlck_kb=0)
    check = checks_of(root, "isolation:rt-memlock")
    assert check.status == WARN and "mlockall" in check.fix


# -- kernel command line -------------------------------------------------------------------------

def test_isolcpus_alone_warns_about_each_missing_parameter(tmp_path):
    root = robot(tmp_path, cmdline="root=/dev/vda isolcpus=2-3")
    check = checks_of(root, "isolation:cmdline")
    assert check.status == WARN
    for missing in ("lacks managed_irq", "no nohz_full=2-3", "no rcu_nocbs=2-3", "no irqaffinity=0-1"):
        assert missing in check.evidence
    assert "isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3 irqaffinity=0-1" in check.fix
    assert "isolation.boot_cmdline=yes" in check.fix


def test_wrong_values_name_what_is_wanted(tmp_path):
    root = robot(tmp_path, cmdline=FULL_CMDLINE.replace("irqaffinity=0-1", "irqaffinity=0-3"))
    assert "irqaffinity=0-3 (want 0-1)" in checks_of(root, "isolation:cmdline").evidence


def test_a_kernel_without_no_hz_full_is_named(tmp_path):
    root = robot(tmp_path)
    (root / "sys/devices/system/cpu/nohz_full").unlink()
    check = checks_of(root, "isolation:kernel")
    assert check.status == WARN and "CONFIG_NO_HZ_FULL" in check.evidence


def test_a_kernel_that_isolated_other_cpus_is_named(tmp_path):
    root = robot(tmp_path)
    write(root, "/sys/devices/system/cpu/isolated", "3\n")
    assert "the kernel isolated 3" in checks_of(root, "isolation:kernel").evidence


def test_a_machine_whose_rt_cpus_are_all_cpus_has_nothing_to_isolate(tmp_path):
    root = robot(tmp_path)
    p = dataclasses.replace(placement_of(root), rt_cpus=frozenset({0, 1, 2, 3}))
    assert [c.id for c in isolation.run_checks(facts_of(root), p, "auto")] == ["isolation:plan"]


# -- reading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("00000000,0000000f\n", {0, 1, 2, 3}), ("3", {0, 1}), ("", None), ("zz", None), (None, None)])
def test_parse_mask(text, expected):
    assert parse_mask(text) == (None if expected is None else frozenset(expected))


def test_parse_stat_survives_a_comm_with_spaces_and_parentheses():
    from isolation_sysroots import stat_line
    assert isolation_facts.parse_stat(stat_line(7, "a) (b", 0x4, 80, 1)) == ("a) (b", 0x4, 80, 1)


@pytest.mark.parametrize("text, unit", [
    ("0::/system.slice/ssh.service\n", "ssh.service"),
    ("0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope"),
    ("12:cpuset:/\n0::/init.scope\n", "init.scope"),
    ("0::/\n", "/"), ("", "/")])
def test_unit_of(text, unit):
    assert isolation_facts.unit_of(text) == unit


def test_a_task_that_exits_while_read_is_skipped(tmp_path):
    root = robot(tmp_path)
    (root / "proc/640/task/640/status").unlink()
    assert all(t.pid != 640 for t in facts_of(root).tasks)


def test_operations_reads_the_mode_from_the_config_file(tmp_path):
    root = robot(tmp_path)
    write_task(root, 4242, "yes", {2}, "/user.slice/user-0.slice/session-3.scope")
    write(root, "/etc/mxrc/mxrc-systemd.conf", "[isolation]\nmode = kernel-only\n")
    facts, result = current_plan(SysRoot(root))
    assert result.placement.isolation == "kernel-only"
    found = operations.isolation_facts_of(SysRoot(root), facts, result)
    checks = isolation.run_checks(found, result.placement, result.placement.isolation)
    assert {c.id: c.status for c in checks}["isolation:tasks"] == WARN


def missing_isolcpus_check(root):
    """machine:isolcpus-missing as doctor reports it, judged with the runtime layers."""
    facts, result = current_plan(SysRoot(root))
    hardware = doctor.check_hardware(result)
    return {c.id: c for c in isolation.settle_isolcpus(hardware, facts_of(root))}["machine:isolcpus-missing"]


def test_without_isolcpus_an_isolated_partition_makes_it_a_warning(tmp_path):
    """The product call of #10: the partition does isolcpus=domain's job at run time, so what is
    missing is the tick, RCU and managed IRQs (a warning), not the RT CPUs' exclusivity."""
    root = robot(tmp_path, cmdline="BOOT_IMAGE=/vmlinuz root=/dev/vda ro")
    write(root, "/sys/devices/system/cpu/isolated", "\n")
    check = missing_isolcpus_check(root)
    assert check.status == WARN and "isolated cpuset partition" in check.evidence
    assert "isolation:cmdline" in check.evidence and "GRUB_CMDLINE_LINUX" in check.fix


@pytest.mark.parametrize("partition", ["member", "isolated invalid (Cpu list in cpuset.cpus not exclusive)"])
def test_without_isolcpus_or_an_isolated_partition_it_stays_a_failure(tmp_path, partition):
    root = robot(tmp_path, cmdline="BOOT_IMAGE=/vmlinuz root=/dev/vda ro")
    write(root, "/sys/devices/system/cpu/isolated", "\n")
    write_cpuset(root, "mxrc.slice", {2, 3}, partition)
    check = missing_isolcpus_check(root)
    assert check.status == FAIL and "other tasks may run on the RT CPUs 2-3" in check.evidence


def test_every_isolation_check_is_explained_in_the_operations_manual(tmp_path, repo):
    manual = (repo / "docs/operations.md").read_text()
    ids = {c.id for c in checks_of(robot(tmp_path))} | {"isolation:plan"}
    for cid in sorted(ids):
        documented = "isolation:cpuset:<slice>" if cid.startswith("isolation:cpuset:") else cid
        assert f"`{documented}`" in manual, f"{cid} is not explained in docs/operations.md"
