"""The operator tools on a real systemd (issue 6): doctor, boot-time before/after, deps, jitter, SC-003.

One trixie VM from an image with the packages installed at build (installed_image: the postinst
on a running system is foundation's and the installer's), booted four times like a robot being
commissioned:
1. its first boot, optimised as the package ships (boot.optimize=yes, recorded by
   mxrc-boot-time.service as the "after"): deps; then boot.optimize=no; time
   "systemctl start mxrc.target" (SC-003); doctor;
2. a boot with the unoptimised units (the "before"): boot-time compare -- one reboot, as
   docs/operations.md tells an operator whose robot already runs optimised; an admin drop-in that
   strips the sandbox -> doctor FAILs; an A/B updater's mark-good unit is installed (#12); the
   optimisation switched on again;
3. the PREEMPT_RT kernel: the boot health gate passes and the mark-good unit runs; jitter
   (cyclictest; timerlat where rtla and the tracer exist) and a doctor with nothing to warn about
   but what this emulated machine cannot give; then a broken update (mxrc-rt cannot start) is
   installed;
4. that boot (the standard kernel again): the gate fails, boot-complete.target is not reached,
   nothing is marked good.

Every boot uses the kernel command line doctor recommends for RT CPUs 2-3. Doctor on a machine
without isolcpus=, with a foreign task and an IRQ on an RT CPU (#10), is test_foundation's.
"""

import re

import pytest
import testbed

from scenarios import DOCTOR, WAIT_SERVICES, checks_of, json_of, rc_of

from mxrc_install.showparse import parse_show

UNOPTIMISED = "mxrc-systemd config boot.optimize=no >/dev/null && mxrc-systemd apply >/dev/null; echo rc=$?"
TIME_START = ("t0=$(date +%s%N); systemctl start mxrc.target; t1=$(date +%s%N); "
              "echo start_ms=$(( (t1 - t0) / 1000000 )); "
              "systemctl is-active mxrc-nonrt.service mxrc-rt.service mxrc-monitor.service; "
              # where the time went, unit by unit (monotonic microseconds)
              "systemctl show -p Id,InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic "
              "mxrc-isolation.service mxrc-nonrt.service mxrc-rt.service mxrc-monitor.service")
# mxrc-boot-time.service runs once the MXRC services are up; the test runner may be faster.
WAIT_RECORDED = ("for i in $(seq 240); do "
                 "[ \"$(systemctl show -p ActiveState --value mxrc-boot-time.service)\" = active ] && break; "
                 "sleep 0.5; done; systemctl show -p ActiveState,Result mxrc-boot-time.service")
ORDERING = "systemctl show -p Id,After mxrc-nonrt.service mxrc-rt.service mxrc-monitor.service"
STRIP_SANDBOX = ("mkdir -p /etc/systemd/system/mxrc-rt.service.d && "
                 "printf '%s\\n' '[Service]' ProtectSystem=no "
                 "PrivateTmp=no NoNewPrivileges=no SystemCallFilter= CapabilityBoundingSet= ProtectHome=no "
                 "ProtectKernelTunables=no ProtectKernelModules=no RestrictNamespaces=no PrivateDevices=no "
                 "'CapabilityBoundingSet=~' > /etc/systemd/system/mxrc-rt.service.d/override.conf && "
                 "systemctl daemon-reload && " + DOCTOR
                 + "; rm -r /etc/systemd/system/mxrc-rt.service.d/override.conf"
                 " && systemctl daemon-reload")

# The isolation the plan asks of the kernel command line for RT CPUs 2-3 (doctor's isolation:cmdline).
ISOLATED = "isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3 irqaffinity=0-1"
# The package enables the gate (RequiredBy=boot-complete.target); nothing after may disable it.
GATE_ENABLED = ("echo gate=$(systemctl is-enabled mxrc-boot-health.service); "
                "ls -l /etc/systemd/system/boot-complete.target.requires/")
# An A/B updater's "mark this slot good" unit, as docs/fleet.md shows it for RAUC; the boot ID
# stands in for `rauc status mark-good` (#12 item 3).
MARK_GOOD = ("printf '%s\\n' '[Unit]' After=boot-complete.target Requires=boot-complete.target "
             "'[Service]' Type=oneshot "
             "\"ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >> /var/lib/mark-good'\" "
             "'[Install]' WantedBy=multi-user.target > /etc/systemd/system/mark-good.service && "
             "systemctl daemon-reload && systemctl enable mark-good.service 2>&1; " + GATE_ENABLED)
# What boot-complete.target came to in this boot, and why.
GATE = ("for i in $(seq 120); do s=$(systemctl show -p ActiveState --value mxrc-boot-health.service); "
        "[ \"$s\" = active ] || [ \"$s\" = failed ] && break; sleep 1; done; "
        "systemctl show -p Id,ActiveState,Result mxrc-boot-health.service boot-complete.target "
        "mark-good.service; echo marked_good=$(grep -c \"$(cat /proc/sys/kernel/random/boot_id)\" "
        "/var/lib/mark-good 2>/dev/null); systemctl status --no-pager -l mxrc-boot-health.service | tail -8")
# A broken update: mxrc-rt can no longer start. Restarted every second instead of every 5 s, it
# reaches its start limit (and the gate its verdict) ~20 s sooner; the verdict is the same.
BREAK_RT = ("mkdir -p /etc/systemd/system/mxrc-rt.service.d && printf '[Service]\\nExecStart=\\n"
            "ExecStart=/bin/false\\nRestartSec=1s\\n' "
            "> /etc/systemd/system/mxrc-rt.service.d/broken-update.conf")
TIMERLAT = ("grep -qw timerlat /sys/kernel/tracing/available_tracers "
            "&& echo tracer=timerlat || echo tracer=none; "
            "command -v rtla >/dev/null && echo rtla=yes || echo rtla=no; "
            # (rtla's own output, for the parser's fixtures, is in tests/unit/rtla_output: a second
            # tracer run here cost ~80 s of emulated time and another round of kernel text patching)
            "mxrc-systemd jitter --tool timerlat --cycles 2000; echo rc=$?")

BOOTS = [
    (testbed.Machine(cpus=4, memory_mib=4608, append=ISOLATED), [
        ("recorded-after", WAIT_RECORDED),
        ("ordering-after", ORDERING),
        ("deps", "mxrc-systemd deps --json; echo rc=$?"),
        ("unoptimised", UNOPTIMISED),
        ("gate-enabled", GATE_ENABLED),
        ("start", TIME_START),
        ("doctor", WAIT_SERVICES + "; " + DOCTOR),
    ]),
    (testbed.Machine(cpus=4, memory_mib=4608, append=ISOLATED), [
        ("recorded-before", WAIT_RECORDED),
        ("ordering-before", ORDERING),
        ("compare", "mxrc-systemd boot-time compare --json; echo rc=$?; mxrc-systemd boot-time compare"),
        ("stripped", WAIT_SERVICES + "; " + STRIP_SANDBOX),
        ("mark-good", MARK_GOOD),
        ("optimize", "mxrc-systemd config boot.optimize=yes >/dev/null && mxrc-systemd apply; echo rc=$?"),
    ]),
    (testbed.Machine(cpus=4, memory_mib=4608, kernel="rt", append=ISOLATED), [
        ("gate-healthy", GATE),
        # doctor before the measurements: under emulation their load (busy loops on every CPU,
        # the tracer's text patching) once stalled mxrc-nonrt's loop past its 5 s budget (run F
        # of session 9: its stall watchdog restarted it, as it should, and doctor counted that)
        ("doctor-rt", WAIT_SERVICES + "; " + DOCTOR),
        ("jitter", "mxrc-systemd jitter --cycles 10000 --json; echo rc=$?"),
        ("jitter-text", "mxrc-systemd jitter --cycles 1000 --load; echo rc=$?"),
        ("timerlat", TIMERLAT),
        ("stalls", "journalctl -b -o short-monotonic --no-pager -u mxrc-rt.service -u mxrc-nonrt.service "
                   "| grep -E 'stalled|Watchdog|watchdog' | tail -5; true"),
        ("break", BREAK_RT),
    ]),
    # The standard kernel: the gate's verdict does not depend on PREEMPT_RT (doctor only WARNs
    # without it), and under TCG the RT kernel took 91 s to the first step against ~55 s, with
    # more early deaths (suite time, #13).
    (testbed.Machine(cpus=4, memory_mib=4608, append=ISOLATED), [
        ("gate-broken", GATE),
    ]),
]


@pytest.fixture(scope="module")
def run(installed_image):
    def scenario():
        results = {}
        with testbed.VM(installed_image, BOOTS[0][0]) as vm:
            for machine, steps in BOOTS:
                results.update(vm.boot(steps, machine=machine, timeout=900).steps)
        return results
    return testbed.run_scenario(scenario)


def statuses(output: str) -> dict:
    return {i: c["status"] for i, c in checks_of(output).items()}


def test_the_unoptimised_units_apply(run):
    # 2: applied, with the warning that this kernel is not PREEMPT_RT.
    assert rc_of(run["unoptimised"].output) in (0, 2), run["unoptimised"].output


def test_target_starts_every_service(run):
    """SC-003 (all services active within 10 s) is a figure of real hardware: under TCG the
    emulated CPUs are many times slower, so the time is printed unit by unit, not asserted."""
    out = run["start"].output
    ms = int(re.search(r"start_ms=(\d+)", out).group(1))
    units = {u["Id"]: u for u in parse_show(out) if "Id" in u}
    print(f"SC-003: systemctl start mxrc.target -> all active in {ms} ms (TCG)")
    assert re.findall(r"^(active|inactive|failed|activating)$", out, re.M) == ["active"] * 3, out
    t0 = min(int(u["InactiveExitTimestampMonotonic"]) for u in units.values())
    for name, u in sorted(units.items()):
        print(f"  {name}: {(int(u['InactiveExitTimestampMonotonic']) - t0) / 1000:.0f} ms -> "
              f"{(int(u['ActiveEnterTimestampMonotonic']) - t0) / 1000:.0f} ms")
    # the RT isolation is in place before the RT process starts (0: it never got there, e.g. timed out)
    assert (0 < int(units["mxrc-isolation.service"]["ActiveEnterTimestampMonotonic"])
            <= int(units["mxrc-rt.service"]["InactiveExitTimestampMonotonic"])), out


# What this emulated machine cannot give, whatever the package does: a WARN naming only these
# (check id -> how its evidence names an offender, which names) is accepted.
VM_LIMITS = {
    # virtio-blk has a queue (a managed IRQ) per CPU: the kernel keeps an RT CPU's own queue there, and
    # trixie's kernel has no IRQ debugfs to say "managed" (seen: IRQ 27 virtio1-req.2 on CPU 2).
    "isolation:irqs": (r"IRQ \d+ \(([^,]+),", re.compile(r"virtio\d+-req\.\d+")),
}


def explained(check: dict) -> bool:
    """A WARN whose every named offender is one VM_LIMITS expects."""
    if check["status"] != "WARN" or check["id"] not in VM_LIMITS:
        return False
    finder, pattern = VM_LIMITS[check["id"]]
    named = re.findall(finder, check["evidence"])
    return bool(named) and all(map(pattern.fullmatch, named))


def beyond_vm_limits(output: str) -> dict:
    """The checks that did not pass, less the WARNs VM_LIMITS explains
    (printed, so the log says what was seen)."""
    out = {}
    for c in json_of(output)["checks"]:
        if explained(c):
            print(f"accepted on this VM: {c['id']}: {c['evidence']}")
        elif c["status"] != "PASS":
            out[c["id"]] = c["status"]
    return out


def test_doctor_on_a_correct_install_warns_only_about_the_kernel(run):
    out = run["doctor"].output
    assert beyond_vm_limits(out) == {"machine:kernel-not-rt": "WARN"}, out
    assert rc_of(out) == 2
    ids = statuses(out)
    for check in ("rt:scheduling", "exposure:mxrc-rt.service", "exposure:mxrc-monitor.service",
                  "journald:size-cap", "exporter:reachable", "watchdog:mxrc-rt.service",
                  "properties:mxrc-rt.service", "dependencies:cycles",
                  # every RT isolation layer (issue #10): the recommended command line and isolation.mode=auto
                  "isolation:service", "isolation:kthreads",
                  "isolation:cmdline", "isolation:rt-cpuset", "isolation:cpuset:system.slice",
                  "isolation:tasks", "isolation:irq-default", "isolation:workqueue",
                  "isolation:cstates", "isolation:rt-threads", "isolation:rt-memlock"):
        assert ids[check] == "PASS", out
    assert ids["isolation:rt-partition"] in ("PASS", "WARN"), out   # WARN: the kernel said why it refused


def test_doctor_fails_a_stripped_sandbox(run):
    out = run["stripped"].output
    checks = checks_of(out)
    assert checks["exposure:mxrc-rt.service"]["status"] == "FAIL", out
    assert "override.conf" in checks["exposure:mxrc-rt.service"]["evidence"]
    assert rc_of(out) == 1


def test_doctor_on_the_rt_kernel_passes_everything(run):
    out = run["doctor-rt"].output
    assert beyond_vm_limits(out) == {}, out
    assert rc_of(out) in (0, 2), out   # 2: only what VM_LIMITS explains


def test_timerlat_measures_or_says_what_is_missing(run):
    out = run["timerlat"].output
    tracer, rtla = "tracer=timerlat" in out, "rtla=yes" in out
    print(f"trixie's RT kernel timerlat tracer: {'yes' if tracer else 'no'}; rtla in the image: {rtla}")
    print("stall and watchdog lines of mxrc-rt/mxrc-nonrt after the measurements:\n" + run["stalls"].output)
    if not tracer:
        assert "no timerlat tracer" in out and rc_of(out) == 1, out
    elif not rtla:
        assert "apt install rtla" in out and rc_of(out) == 1, out
    else:
        assert re.search(r"^(PASS|FAIL): max [\d.]+ us", out, re.M), out
        # a verdict that agrees with the latencies it printed (it once said PASS beside 5587 us)
        worst = max((float(x) for x in re.findall(r"latency ([\d.]+) us", out)), default=0.0)
        assert ("PASS" in out) == (worst <= 50), out
        # every figure read (once "IRQ max ? us") and every spike explained or said to be unexplained
        assert "?" not in re.findall(r"IRQ max (\S+) us", out), out
        assert out.count("spike on CPU") == out.count("  cause: "), out
    print(out[-3000:])


def test_every_boot_is_recorded(run):
    for step in ("recorded-before", "recorded-after"):
        assert ("ActiveState=active" in run[step].output
                and "Result=success" in run[step].output), run[step].output


def test_boot_time_compare_measures_before_and_after(run):
    out = run["compare"].output
    c = json_of(out)
    before, after = c["ready"]["before"], c["ready"]["after"]
    print(f"SC-006: MXRC ready after userspace start {before:.2f} s -> {after:.2f} s "
          f"({c['ready']['change_percent']:+.1f}%), per unit: {c['units']}")
    assert c["before"]["optimized"] is False and c["after"]["optimized"] is True
    assert set(c["units"]) == {"mxrc-nonrt.service", "mxrc-rt.service", "mxrc-monitor.service"}
    print(out)
    assert "MXRC ready after userspace" in out and "SC-006" in out
    assert rc_of(out) == (0 if c["sc006_met"] else 2)


def test_the_optimisation_drops_the_wait_for_basic_target(run):
    """US8 scenario 2: with DefaultDependencies=no the services are not ordered after sysinit/basic.target.

    Whether they then start before basic.target depends on what else they wait
    for (here mxrc-systemd-hardware.service, a Python process that an emulated
    CPU runs slowly), so the ordering is asserted and the timing reported.
    """
    def after(step):
        return {d["Id"]: set(d["After"].split()) for d in parse_show(run[step].output)}
    for unit, deps in after("ordering-before").items():
        assert {"basic.target", "sysinit.target"} <= deps, (unit, deps)
    for unit, deps in after("ordering-after").items():
        assert not {"basic.target", "sysinit.target"} & deps, (unit, deps)
    c = json_of(run["compare"].output)
    # Without the optimisation systemd held every service until basic.target.
    assert all(u["started_before_basic_target"]["before"] is False for u in c["units"].values()), c["units"]
    assert c["basic_target"]["after"] is not None


def test_deps_lists_parallel_waves_and_the_chain(run):
    a = json_of(run["deps"].output)
    assert ["mxrc-monitor.service", "mxrc-nonrt.service"] in a["waves"]
    # Weighted by the recorded boot: whichever service was slowest to get ready leads.
    chain = a["critical_chain"]
    assert chain[0] == "mxrc-systemd-hardware.service" and chain[-1] == "mxrc.target", chain
    assert a["chain_seconds"] is not None
    assert a["cycles"] == [] and rc_of(run["deps"].output) == 0


def test_jitter_reports_on_the_rt_kernel(run):
    out = run["jitter"].output
    r = json_of(out)
    print(f"SC-001 on TCG (not a real robot): min {r['min_us']} avg {r['avg_us']} p99 {r['p99_us']} "
          f"max {r['max_us']} us")
    # cyclictest's own per-thread count (Total + overflows); exact counting is unit-tested.
    assert 0 < r["cycles"] <= 10000 and r["cpus"] == [2, 3] and r["priority"] == 80
    assert r["preempt_rt"] is True and sum(r["histogram"].values()) + r["overflows"] == r["samples"]
    assert r["min_us"] <= r["p99_us"] <= r["max_us"]
    assert rc_of(out) == (0 if r["passed"] else 1)


def test_jitter_text_under_load(run):
    out = run["jitter-text"].output
    assert "under load" in out and re.search(r"^(PASS|FAIL): max \d+ us", out, re.M), out


def gate(output: str) -> dict:
    return {u["Id"]: u for u in parse_show(output) if "Id" in u}


def test_the_package_enables_the_gate_and_it_stays_enabled(run):
    for step in ("gate-enabled", "mark-good"):
        assert re.search(r"^gate=enabled$", run[step].output, re.M), (step, run[step].output)


def test_a_healthy_boot_reaches_boot_complete_and_is_marked_good(run):
    out = run["gate-healthy"].output
    units = gate(out)
    assert units["mxrc-boot-health.service"]["ActiveState"] == "active", out
    assert units["boot-complete.target"]["ActiveState"] == "active", out
    assert units["mark-good.service"]["Result"] == "success" and "marked_good=1" in out, out
    assert "the controller is healthy: boot good" in out, out


def test_a_broken_update_is_not_marked_good_and_says_why(run):
    out = run["gate-broken"].output
    units = gate(out)
    assert units["mxrc-boot-health.service"]["ActiveState"] == "failed", out
    assert units["boot-complete.target"]["ActiveState"] != "active", out
    assert "marked_good=0" in out, out
    # "failed" once systemd gave up; "activating" (auto-restart) when each attempt is slower than the
    # start limit's window (seen beside two other emulated machines): the gate then waits its timeout
    assert re.search(r"health gate: mxrc-rt\.service is (failed|activating)$", out, re.M), out
    assert "FAILED: this boot is not marked good" in out, out
