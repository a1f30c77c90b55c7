"""Acceptance for the foundation on a real systemd: install, start, order, RT placement, sandbox, purge.

trixie (systemd 257, kernel 6.12), 4 vCPUs and NO isolcpus= (the case a new user meets), over two
boots of one disk: the install and the runtime RT isolation of #10 (after apt install + start
nothing but mxrc-rt may run on CPUs 2-3, its threads cannot leave them, interrupts and workqueues
are moved off; doctor judges the missing isolcpus= by the runtime partition and names a foreign
task and an IRQ put on an RT CPU; isolation.mode = off puts back what was there), then a second
boot for the boot-time ordering, the autopkgtests, the case of no MXRC program and a purge that
leaves the system as it was before the install. bookworm (systemd 252, kernel 6.1, isolcpus=2-3),
one boot: the install path, the same runtime isolation layers, and a purge that restores them.
One trixie VM serves both: each apt install under emulation costs minutes (#13).
"""

import json
import re

import pytest
import testbed
from scenarios import (AUTOPKGTEST, DOCTOR, INSTALL, INTRUDER, MOVE_IRQ, NO_CONTROLLER, PURGE, SERVICES,
                       WAIT_SERVICES, checks_of, rc_of)

from mxrc_install.showparse import parse_show

RT_MACHINE = testbed.Machine(cpus=4, memory_mib=2048, append="isolcpus=2-3")
NO_ISOLCPUS = testbed.Machine(cpus=4, memory_mib=2048, append="")

SNAPSHOT = ("{ echo wq=$(cat /sys/devices/virtual/workqueue/cpumask); "
            "echo pid1=$(taskset -cp 1 | sed 's/.*: //'); "
            "echo default_irq=$(cat /proc/irq/default_smp_affinity); "
            "for f in /proc/irq/[0-9]*/smp_affinity_list; do echo \"$f=$(cat $f)\"; done; "
            "for c in 0 1 2 3; do echo qos$c=$(cat "
            "/sys/devices/system/cpu/cpu$c/power/pm_qos_resume_latency_us 2>/dev/null); done; "
            "echo runner=$(taskset -cp $$ | sed 's/.*: //'); }")   # this shell runs in system.slice
SNAPSHOT_FROM_A_NEW_SERVICE = (f"cat > /root/snapshot.sh <<'EOF'\n{SNAPSHOT}\nEOF\n"
                               "systemd-run --wait --pipe --quiet /bin/sh /root/snapshot.sh")
# Every task that may run on CPU 2 or 3 but is neither mxrc-rt's nor a kernel thread.
FOREIGN = ("python3 - <<'PY'\n"
           "import os\n"
           "rt = open('/sys/fs/cgroup/mxrc.slice/mxrc-rt.service/cgroup.threads').read().split()\n"
           "for pid in os.listdir('/proc'):\n"
           "    if not pid.isdigit() or pid in rt:\n"
           "        continue\n"
           "    try:\n"
           "        stat = open(f'/proc/{pid}/stat').read(); allowed = os.sched_getaffinity(int(pid))\n"
           "    except OSError:\n"
           "        continue\n"
           "    if int(stat.rpartition(')')[2].split()[6]) & 0x00200000:\n"
           "        continue\n"
           "    if allowed & {2, 3}:\n"
           "        print('foreign', pid, stat.split(')')[0].split('(', 1)[1], sorted(allowed))\n"
           "print('checked')\n"
           "PY")

# #10 after the install: the runtime isolation, layer by layer, then isolation.mode off and back.
ISOLATION = [
    ("iso-start", "systemctl start mxrc.target && "
                  "systemctl is-active mxrc-rt.service mxrc-isolation.service"),
    ("properties", "systemctl show -p AllowedCPUs -p Slice mxrc-rt.service; "
                   "for s in mxrc.slice system.slice user.slice; do "
                   "echo $s=$(systemctl show -p AllowedCPUs --value $s); done"),
    ("cpusets", "for g in mxrc.slice system.slice user.slice init.scope; do "
                "echo $g=$(cat /sys/fs/cgroup/$g/cpuset.cpus.effective); done; "
                "echo partition=$(cat /sys/fs/cgroup/mxrc.slice/cpuset.cpus.partition)"),
    ("pid1", "taskset -cp 1"),
    # The reviewer's test: a root shell asks for an RT CPU.
    ("foreign-shell", "taskset -c 2 sh -c 'echo ran on $(taskset -cp $$)'; echo rc=$?"),
    ("foreign-scope", "systemd-run --wait --quiet -p CPUAffinity=2 sh -c 'taskset -cp $$'; echo rc=$?"),
    ("rt-threads", "pid=$(systemctl show -p MainPID --value mxrc-rt.service); "
                   "for t in /proc/$pid/task/*; do awk '/Cpus_allowed_list/{print \"thread\", $2}' "
                   "$t/status; done; taskset -cp 0-3 $pid; taskset -cp $pid"),
    ("foreign-tasks", FOREIGN),
    ("isolated", f"{SNAPSHOT}; journalctl -b -o cat --no-pager -u mxrc-isolation.service"),
    # doctor on this machine without isolcpus=, then with a foreign task and an IRQ on an RT CPU
    ("no-isolcpus", WAIT_SERVICES + "; " + DOCTOR),
    ("intruder", INTRUDER + "; " + MOVE_IRQ + "; " + DOCTOR + "; kill $pid 2>/dev/null; true"),
    ("mode-off", "mxrc-systemd config isolation.mode=off && mxrc-systemd apply; systemctl restart "
                 f"mxrc.target; {SNAPSHOT} > /root/off; diff /root/before /root/off && echo same-as-before"),
    ("mode-auto", "mxrc-systemd config isolation.mode=auto && mxrc-systemd apply; systemctl restart "
                  "mxrc.target; taskset -cp 1; cat /sys/fs/cgroup/system.slice/cpuset.cpus.effective"),
]


@pytest.fixture(scope="module")
def trixie(trixie_image, guest_files, source_tar):

    def scenario():
        with testbed.VM(trixie_image, NO_ISOLCPUS, {**guest_files, source_tar.name: source_tar}) as vm:
            first = vm.boot([("before", f"{SNAPSHOT} > /root/before; cat /root/before"),
                             *INSTALL, *ISOLATION])
            second = vm.boot([
                ("active-at-boot", f"systemctl is-active {SERVICES} mxrc.target"),
                ("critical-chain", "systemd-analyze critical-chain --no-pager mxrc-rt.service"),
                ("order-at-boot", "systemctl show -p Id -p InactiveExitTimestampMonotonic "
                                  "-p ActiveEnterTimestampMonotonic "
                                  "mxrc-nonrt.service mxrc-isolation.service mxrc-rt.service"),
                *AUTOPKGTEST,
                *NO_CONTROLLER,
                *PURGE,
                # the boot before the install, as it was: every value the isolation moved is back.
                # Taken by a new service: this boot's runner was started under the package's
                # CPUAffinity= for PID 1 and keeps that mask whatever the purge puts back.
                ("after-purge", f"{SNAPSHOT_FROM_A_NEW_SERVICE} > /root/after; "
                                "diff /root/before /root/after && echo same-as-before; "
                                "ls /etc/systemd/system.conf.d /etc/systemd/system/system.slice.d 2>&1"),
            ])
        return first, second
    return testbed.run_scenario(scenario)


@pytest.fixture(scope="module")
def bookworm(bookworm_image, guest_files):
    # systemd 252 and kernel 6.1 take the same runtime isolation, with isolcpus=: one boot
    # (the settings change that needs mode-off/auto's restarts is trixie's).
    steps = [("before", f"{SNAPSHOT} > /root/before; cat /root/before"), *INSTALL,
             *[step for step in ISOLATION if step[0] in BOOKWORM_ISOLATION], *PURGE,
             ("after-purge", f"{SNAPSHOT_FROM_A_NEW_SERVICE} > /root/after; "
                             "cat /root/before; echo ---; cat /root/after")]
    return testbed.run_scenario(lambda: testbed.run_steps(bookworm_image, RT_MACHINE, steps, guest_files))


BOOKWORM_ISOLATION = ("iso-start", "properties", "cpusets", "pid1", "foreign-shell", "foreign-scope",
                      "rt-threads", "foreign-tasks", "isolated")


def run_for(request, trixie_boot: int):
    """The boot of the parametrised suite: trixie spreads the scenario over two boots."""
    if request.param == "trixie":
        return request.getfixturevalue("trixie")[trixie_boot]
    return request.getfixturevalue("bookworm")


@pytest.fixture(params=["trixie", "bookworm"])
def install_run(request):
    return run_for(request, 0)


def test_apt_install_succeeds_and_creates_the_user(install_run):
    assert install_run["install"].ok, install_run["install"].output
    assert install_run["user"].ok and "(mxrc)" in install_run["user"].output


def test_reference_processes_fill_the_documented_paths(install_run):
    out = install_run["alternatives"].output
    assert "Value: /usr/libexec/mxrc-reference/mxrc-rt" in out
    assert "Value: /usr/libexec/mxrc-reference/mxrc-nonrt" in out


def test_target_and_services_enabled(install_run):
    assert install_run["enabled"].output.split() == ["enabled"] * 4


def test_journald_caps_installed(install_run):
    out = install_run["journald-config"].output
    assert "SystemMaxUse=1G" in out and "RuntimeMaxUse=512M" in out


def test_start_target_brings_every_service_up(install_run):
    assert install_run["start"].ok, install_run["start"].output
    assert install_run["active"].output.split() == ["active"] * 4, install_run["active"].output


def test_nonrt_is_active_before_rt_starts(install_run):
    nonrt, rt = parse_show(install_run["order"].output)
    assert (nonrt["Id"], rt["Id"]) == ("mxrc-nonrt.service", "mxrc-rt.service")
    assert int(nonrt["ActiveEnterTimestampMonotonic"]) <= int(rt["InactiveExitTimestampMonotonic"])


def test_rt_unit_properties(install_run):
    (props,) = parse_show(install_run["show-rt"].output)
    assert props["CPUSchedulingPolicy"] == "1"  # SCHED_FIFO
    assert props["CPUSchedulingPriority"] == "80"
    assert props["CPUAffinity"] == "2-3"
    assert props["NUMAPolicy"] == "bind" and props["NUMAMask"] == "0"
    assert props["User"] == "mxrc" and props["WatchdogUSec"] == "30s"


def test_status_shows_fifo_80_on_cpus_2_3(install_run):
    status = install_run["status-rt"].output
    assert "active (running)" in status
    assert "SCHED_FIFO priority=80 cpus=2,3" in status, status


def test_running_process_really_is_fifo_80_on_2_3(install_run):
    assert re.search(r"current scheduling policy: SCHED_FIFO\b", install_run["chrt"].output)
    assert "current scheduling priority: 80" in install_run["chrt"].output
    assert install_run["taskset"].output.strip().endswith("current affinity list: 2,3")


def test_sandbox_keeps_rt_syscalls_working(install_run):
    journal = install_run["rt-journal"].output
    for call in ("mlockall", "sched_setaffinity", "sched_setscheduler"):
        assert f"{call}=ok" in journal, journal


def test_security_gate_on_installed_units(install_run):
    out = install_run["security"].output
    assert install_run["security"].ok, out
    levels = [float(x) for x in re.findall(r"Overall exposure level for \S+: (\d+\.\d+)", out)]
    assert len(levels) == 4 and max(levels) <= 2.0, out


def test_exporter_serves_unit_metrics(install_run):
    metrics = install_run["metrics"].output
    from prometheus_client.parser import text_string_to_metric_families
    # Label order differs between prometheus_client versions: compare parsed samples.
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics) for s in f.samples}
    for unit in ("mxrc-rt.service", "mxrc-nonrt.service"):
        assert ("systemd_unit_cpu_seconds_total",
                (("mode", "user"), ("name", unit), ("type", "service"))) in samples, metrics
        assert ("systemd_unit_memory_bytes", (("name", unit),)) in samples, metrics
        # States come over the system bus: the exporter's user can connect (systemd 252 and 257).
        assert samples.get(("systemd_unit_state",
                            (("name", unit), ("state", "active"), ("type", "service")))) == 1.0, metrics
    assert "mxrc_monitor_dbus_connected 1.0" in metrics


def test_rt_cpus_are_refused_to_other_processes(install_run):
    """#10 on both systemd versions (252, 257): the slices' cpusets, not only isolcpus=."""
    out = install_run["foreign-taskset"].output
    words = out.split()   # taskset's own error (stderr) comes first
    assert "refused" in words and "allowed" not in words, out
    assert words[-3:] == ["0-1", "2-3", "2-3"], out


def test_stopping_nonrt_stops_rt(install_run):
    # SC-009: Requires= propagates the stop.
    states = install_run["stop-nonrt"].output.split()
    assert states[:2] == ["inactive", "inactive"], states


def test_critical_chain_at_boot_has_nonrt_before_rt(trixie):
    _, second = trixie
    assert second["active-at-boot"].output.split() == ["active"] * 4
    chain = second["critical-chain"].output
    lines = [line for line in chain.splitlines() if "mxrc-" in line]
    # The chain shows the longest of mxrc-rt's waits: mxrc-nonrt or mxrc-isolation.service.
    assert lines and "mxrc-rt.service" in lines[0], chain
    assert any("mxrc-nonrt.service" in x or "mxrc-isolation.service" in x for x in lines[1:]), chain
    nonrt, isolation, rt = parse_show(second["order-at-boot"].output)
    assert (nonrt["Id"], isolation["Id"], rt["Id"]) == (
        "mxrc-nonrt.service", "mxrc-isolation.service", "mxrc-rt.service")
    started = int(rt["InactiveExitTimestampMonotonic"])
    assert 0 < int(nonrt["ActiveEnterTimestampMonotonic"]) <= started, second["order-at-boot"].output
    assert 0 < int(isolation["ActiveEnterTimestampMonotonic"]) <= started, second["order-at-boot"].output


@pytest.fixture(params=["trixie", "bookworm"])
def purge_run(request):
    return run_for(request, 1)


def test_controller_autopkgtest_passes_on_a_booted_systemd(trixie):
    """The one autopkgtest that needs a booted machine; the others run natively in a trixie chroot
    (tests/package/test_trixie_chroot.py), many times faster than under emulation."""
    _, second = trixie
    out = second["autopkgtest"].output
    results = dict(line.split()[:2] for line in out.rpartition("### summary")[2].splitlines() if line.strip())
    assert results == {"controller": "PASS"}, out[-3000:]
    assert second["autopkgtest"].ok, out[-3000:]


def test_without_a_controller_the_services_are_skipped_not_failed(trixie):
    _, second = trixie
    assert second["remove-controller"].ok, second["remove-controller"].output
    assert "no MXRC program at /usr/libexec/mxrc/mxrc-rt" in second["reconfigure-without-controller"].output
    out = second["start-without-controller"].output
    for unit in parse_show(out)[:2]:
        state = (unit["ActiveState"], unit["ConditionResult"], unit["NRestarts"])
        assert state == ("inactive", "no", "0"), out
    assert "\nactive\n" in out and out.rstrip().endswith("failover: 0"), out


def test_removing_the_package_stops_the_controller(purge_run):
    assert purge_run["start-before-purge"].ok, purge_run["start-before-purge"].output
    assert purge_run["active-after-purge"].output.split() == ["inactive", "inactive"], \
        purge_run["active-after-purge"].output


def test_purge_leaves_nothing_behind(purge_run):
    assert purge_run["purge"].ok, purge_run["purge"].output
    leftovers = [p for p in purge_run["files-after"].output.splitlines() if p]
    assert leftovers == [], leftovers


def test_install_adapts_units_and_prints_findings(install_run):
    out = install_run["install"].output
    # A noninteractive install succeeds and says what the machine lacks, with the fix.
    assert "[kernel-not-rt]" in out and "fix: apt install linux-image-rt-amd64" in out, out
    # mxrc-reference comes in the same apt run: no false "no MXRC program" note.
    assert "no MXRC program" not in out, out
    plan = json.loads(install_run["plan"].output)
    assert plan["placement"]["rt_cpus"] == [2, 3] and plan["placement"]["nonrt_cpus"] == [0, 1]
    assert not any(d["changed"] for d in plan["dropins"].values())  # apply already did it
    assert install_run["verify"].ok, install_run["verify"].output
    assert "FAIL" not in install_run["verify"].output


def test_postinst_records_the_baseline_boot(install_run):
    """SC-006's "before": the boot the package was installed in, recorded by its postinst."""
    records = json.loads(install_run["baseline"].output)
    assert [r["label"] for r in records] == ["before"], records
    # Installed after this boot started: nothing of MXRC ran at boot yet.
    assert records[0]["ready_seconds"] is None and records[0]["userspace_seconds"] > 0


def test_purge_forgets_debconf_answers(purge_run):
    assert purge_run["debconf-after-purge"].output.strip() == ""


# --- #10: the runtime isolation on trixie without isolcpus= (the first boot; the purge in the second)


@pytest.fixture
def trixie_boots(trixie):
    """Both trixie boots' steps by name (their names do not overlap)."""
    first, second = trixie
    assert not first.steps.keys() & second.steps.keys()
    return {**first.steps, **second.steps}


@pytest.fixture(params=["trixie", "bookworm"])
def isolated_run(request):
    """The runtime isolation's steps: trixie without isolcpus=, bookworm with it."""
    if request.param == "trixie":
        return request.getfixturevalue("trixie_boots")
    return request.getfixturevalue("bookworm")


def test_install_and_start(isolated_run):
    assert isolated_run["install"].ok, isolated_run["install"].output
    assert isolated_run["iso-start"].ok, isolated_run["iso-start"].output


def test_mxrc_rt_alone_in_its_slice_on_the_rt_cpus(isolated_run):
    out = isolated_run["properties"].output
    assert "AllowedCPUs=2-3" in out and "Slice=mxrc.slice" in out, out
    assert "mxrc.slice=2-3" in out and "system.slice=0-1" in out and "user.slice=0-1" in out, out


def test_other_cgroups_hold_only_the_housekeeping_cpus(isolated_run):
    out = isolated_run["cpusets"].output
    assert "system.slice=0-1" in out and "user.slice=0-1" in out and "mxrc.slice=2-3" in out, out
    print(out)   # the partition state (isolated where the kernel takes it) is reported, checked by doctor


def test_pid1_runs_on_the_housekeeping_cpus_after_reexec(isolated_run):
    out = isolated_run["pid1"].output
    assert out.strip().endswith("current affinity list: 0,1"), out


def test_a_foreign_process_cannot_get_an_rt_cpu(isolated_run):
    out = isolated_run["foreign-shell"].output
    assert "ran on" not in out and "rc=0" not in out, out      # refused: the cpuset has no CPU 2
    scope = isolated_run["foreign-scope"].output
    assert not re.search(r"current affinity list: .*[23]", scope), scope


def test_every_thread_of_mxrc_rt_stays_on_the_rt_cpus(isolated_run):
    out = isolated_run["rt-threads"].output
    threads = re.findall(r"^thread (\S+)$", out, re.M)
    assert threads and set(threads) == {"2-3"}, out
    assert out.strip().endswith("current affinity list: 2,3"), out   # asking for 0-3 gives 2-3


def test_no_foreign_task_may_run_on_an_rt_cpu(isolated_run):
    out = isolated_run["foreign-tasks"].output
    assert out.strip().endswith("checked") and "foreign" not in out, out


def test_interrupts_workqueues_and_idle_states_moved(isolated_run):
    out = isolated_run["isolated"].output
    assert "wq=00000003" in out or "wq=3" in out, out
    irqs = re.findall(r"^/proc/irq/(\d+)/smp_affinity_list=(\S+)$", out, re.M)
    assert irqs, out
    on_rt = [(irq, cpus) for irq, cpus in irqs if cpus not in ("0-1", "0", "1")]
    refused = re.findall(r"left on the RT CPUs \(the kernel refused\): irq (\d+)", out)
    assert {irq for irq, _ in on_rt} <= set(refused), out   # what stayed was refused by the kernel and named
    assert "qos2=10" in out and "qos3=10" in out, out


def test_mode_off_restores_the_system(trixie_boots):
    assert "same-as-before" in trixie_boots["mode-off"].output, trixie_boots["mode-off"].output


def test_purge_restores_the_system(trixie_boots):
    mode_auto = trixie_boots["mode-auto"].output
    assert "pid 1's current affinity list: 0,1\n" in mode_auto, mode_auto
    assert trixie_boots["purge"].ok, trixie_boots["purge"].output
    out = trixie_boots["after-purge"].output
    assert "same-as-before" in out, out
    assert "No such file or directory" in out, out


def snapshot_values(text: str) -> dict:
    """SNAPSHOT's lines as key -> value (keys are paths and names with digits: not scenarios.values())."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def bookworm_snapshots(bookworm) -> tuple[dict, dict]:
    assert bookworm["purge"].ok, bookworm["purge"].output
    out = bookworm["after-purge"].output
    before, after = (snapshot_values(part) for part in out.split("---\n"))
    assert before.keys() - after.keys() == set(), out
    return before, after


def test_purge_restores_the_system_on_bookworm(bookworm):
    """Every value the isolation moved is back. An IRQ requested after the first snapshot is
    not compared; PID 1's mask (and so a new service's, the runner's) is the next test's."""
    before, after = bookworm_snapshots(bookworm)
    common = (before.keys() & after.keys()) - {"pid1", "runner"}
    assert {k: after[k] for k in common} == {k: before[k] for k in common}, (before, after)


def test_purge_gives_pid1_the_boots_mask_on_bookworm(bookworm):
    """isolcpus=2-3: the kernel starts init on 0,1. Kernel 6.1 gives every task all CPUs when systemd
    turns the cpuset controller off after the unit files go: the postrm gives PID 1 its mask again."""
    before, after = bookworm_snapshots(bookworm)
    assert before["pid1"] == "0,1"
    assert (after["pid1"], after["runner"]) == (before["pid1"], before["runner"])


def test_doctor_without_isolcpus_judges_it_with_the_runtime_partition(trixie_boots):
    """No isolcpus=: a FAIL, unless mxrc.slice's isolated cpuset partition (trixie's 6.12 makes
    one) already keeps other tasks off the RT CPUs: then a WARN naming what only the command line
    gives, detailed by isolation:cmdline."""
    out = trixie_boots["no-isolcpus"].output
    checks = checks_of(out)
    partitioned = "cpuset partition isolated" in checks["isolation:rt-partition"]["evidence"]
    missing = checks["machine:isolcpus-missing"]
    assert missing["status"] == ("WARN" if partitioned else "FAIL"), out
    cmdline = checks["isolation:cmdline"]
    assert cmdline["status"] == "WARN" and "nohz_full=2-3" in cmdline["evidence"], out
    assert rc_of(out) in ((1, 2) if partitioned else (1,)), out


def test_a_foreign_task_on_an_rt_cpu_is_refused_or_named_by_doctor(trixie_boots):
    """Issue #10: `taskset -c 2 yes` on a machine without isolcpus= is refused, or doctor FAILs naming it."""
    out = trixie_boots["intruder"].output
    checks = checks_of(out)
    tasks = checks["isolation:tasks"]
    if "intruder=refused" in out:
        print("taskset -c 2 yes: REFUSED by the RT isolation (the shell's slice may not use CPU 2)")
        assert "Invalid argument" in out, out
        assert "(yes," not in tasks["evidence"], out
    else:
        pid = re.search(r"intruder=running pid=(\d+)", out).group(1)
        print(f"taskset -c 2 yes: RAN; doctor says: {tasks['status']} {tasks['evidence']}")
        assert tasks["status"] == "FAIL" and f"PID {pid} (yes," in tasks["evidence"], out
        assert rc_of(out) == 1


def test_an_irq_moved_onto_an_rt_cpu_is_named_by_doctor(trixie_boots):
    out = trixie_boots["intruder"].output
    irq = re.search(r"^moved_irq=(\d+)$", out, re.M)
    assert irq, f"no movable IRQ could be moved to CPU 2: {out}"
    check = checks_of(out)["isolation:irqs"]
    print(f"IRQ {irq.group(1)} moved to CPU 2; doctor says: {check['status']} {check['evidence']}")
    assert re.search(rf"IRQ {irq.group(1)} \([^)]*\) on CPU 2", check["evidence"]), out
    # movable, or (without IRQ debugfs) not known to be managed: never called managed
    assert f"IRQ {irq.group(1)} (" in check["evidence"] and check["status"] in ("FAIL", "WARN"), out
