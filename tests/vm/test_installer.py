"""The hardware-probing installer on real machines: placement per hardware, image builds, reconfigure.

Each VM ends by reading the live unit properties from systemd, the running
RT process's scheduling, and the installer's own report.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
import scenarios
import testbed
from mxrc_install.showparse import parse_show

LIVE = ("systemctl show mxrc-rt.service mxrc-nonrt.service -p Id -p CPUAffinity -p NUMAMask "
        "-p CPUSchedulingPriority -p WatchdogUSec -p MemoryMax")
RT_SCHED = "chrt -p $(systemctl show -p MainPID --value mxrc-rt.service)"
# Answers for the medium-priority questions, in the order each config script asks.
RECONFIGURE_ANSWERS = ["auto", "60", "25", "512M", "auto", "auto", "no"]
RECONFIGURE_MONITOR_ANSWERS = ["127.0.0.1", "9559"]
# A bad preseeded answer for every question: the install must succeed with the
# defaults and a warning for each (issue #11).
BAD_PRESEED = {
    "mxrc-systemd/rt_cpus": ("string", "3-2"),
    "mxrc-systemd/rt_priority": ("string", "0"),
    "mxrc-systemd/watchdog_sec": ("string", "30s"),
    "mxrc-systemd/memory_max": ("string", "32M"),
    "mxrc-systemd/cpu_quota": ("string", "9"),
    "mxrc-systemd/isolation_mode": ("select", "bogus"),
    "mxrc-systemd/boot_cmdline": ("boolean", "maybe"),
    "mxrc-systemd/boot_optimize": ("boolean", "maybe"),
    "mxrc-systemd/reapply_on_hardware_change": ("boolean", "maybe"),
    "mxrc-monitor/listen": ("string", "999.999.999.999"),
    "mxrc-monitor/port": ("string", "0"),
}
PRESEED_BAD = "printf '%s\\n' " + " ".join(
    f"'{q.split('/')[0]} {q} {t} {v}'" for q, (t, v) in BAD_PRESEED.items()) + " | debconf-set-selections"


def live(result, step="live"):
    return {u["Id"]: u for u in parse_show(result[step].output)}


INVOCATIONS = "systemctl show -p InvocationID --value mxrc-nonrt.service mxrc-rt.service"
ADMIN_DROPIN = "/etc/systemd/system/mxrc-rt.service.d/60-local.conf"


# The robot's only apt source is the fleet's signed repository (#12 item 1), as docs/fleet.md sets
# it up; /srv/mxrc-repo is where the fleet server publishes (a link here: N, then N+1, then N again).
SOURCES = ("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*; "
           "install -m 644 /mnt/host/files/repo-1/mxrc-archive-keyring.gpg /usr/share/keyrings/; "
           "echo 'deb [signed-by=/usr/share/keyrings/mxrc-archive-keyring.gpg] "
           "file:/srv/mxrc-repo trixie main' > /etc/apt/sources.list.d/mxrc.list")


def publish(repo: str) -> str:
    return f"ln -sfn /mnt/host/files/{repo} /srv/mxrc-repo && apt-get update 2>&1 | tail -3"


# needrestart after a library that mxrc-rt maps was replaced (as an upgrade of it does): it must
# list mxrc-rt and, even told to restart automatically, leave it running.
NEEDRESTART = (f"{INVOCATIONS}; lib=$(readlink -f /usr/lib/x86_64-linux-gnu/libstdc++.so.6); "
               "cp -p $lib $lib.new && mv $lib.new $lib; "
               "needrestart -b -r l 2>&1 | grep -E '^NEEDRESTART-SVC'; echo ---; "
               f"needrestart -r a 2>&1 | tail -12; echo ---; {INVOCATIONS}")


def rollback_pin(version: str) -> str:
    packages = "mxrc-systemd mxrc-monitor mxrc-reference mxrc-systemd-dev"
    return (f"printf 'Package: {packages}\\nPin: version {version}\\nPin-Priority: 1001\\n' "
            "> /etc/apt/preferences.d/mxrc-rollback")


def deb_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def two_cpus(fleet_image, repositories, debs):
    """A 2-vCPU robot of a fleet, too small for the spec: install from the fleet's repository,
    dpkg-reconfigure with new answers, upgrade to N+1 from it, needrestart, roll back to N."""
    answers = "\\n".join(RECONFIGURE_ANSWERS)
    monitor_answers = "\\n".join(RECONFIGURE_MONITOR_ANSWERS)
    version = deb_version(debs["mxrc-systemd"])

    def scenario():
        with testbed.VM(fleet_image, testbed.Machine(cpus=2, memory_mib=1536), repositories) as vm:
            return vm.boot([
                ("preseed-bad", PRESEED_BAD),
                ("sources", SOURCES),
                # Literally what a robot's integrator types (Recommends: the monitor and, without
                # MXRC's own packages, the reference programs).
                ("install", f"{publish('repo-1')} && DEBIAN_FRONTEND=noninteractive "
                            "apt-get install -y mxrc-systemd 2>&1"),
                ("installed", "dpkg -l mxrc-systemd mxrc-monitor; cat /etc/mxrc/mxrc-systemd.conf"),
                ("start", "systemctl start mxrc.target"),
                ("live", LIVE),
                ("plan", "mxrc-systemd plan; echo rc=$?"),
                # A terminal program answered at its prompts, as an operator would.
                ("reconfigure", f"printf '{answers}\\n' | script -qec "
                                "'dpkg-reconfigure -freadline -pmedium mxrc-systemd' /dev/null; "
                                f"printf '{monitor_answers}\\n' | script -qec "
                                "'dpkg-reconfigure -freadline -pmedium mxrc-monitor' /dev/null"),
                ("config", "cat /etc/mxrc/mxrc-systemd.conf"),
                # dpkg-reconfigure mxrc-monitor restarted the exporter: with the new address already
                ("monitor-reconfigured", "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value "
                                         "mxrc-monitor.service)/cmdline"),
                # Settings that act at exec time (priority, watchdog) need a restart,
                # which reconfigure leaves to the operator: it interrupts the robot.
                ("restart", "systemctl restart mxrc.target"),
                ("live-after", LIVE),
                ("rt-sched-after", RT_SCHED),
                ("monitor-after", "systemctl show -p ExecStart mxrc-monitor.service"),
                # An operator's own touches, then an upgrade to a newer version.
                ("before-upgrade", f"{INVOCATIONS}; echo '# site note' >> /etc/mxrc/mxrc-systemd.conf; "
                                   f"mkdir -p $(dirname {ADMIN_DROPIN}); "
                                   f"printf '[Service]\\nNice=-5\\n' > {ADMIN_DROPIN}"),
                # The fleet publishes N+1; needrestart's apt hook runs after the upgrade.
                ("upgrade", f"{publish('repo-2')} && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y 2>&1"),
                ("after-upgrade", f"{INVOCATIONS}; dpkg-query -W -f='${{Version}}\\n' mxrc-systemd"),
                ("kept", f"cat /etc/mxrc/mxrc-systemd.conf; cat {ADMIN_DROPIN}; mxrc-systemd verify"),
                ("needrestart", NEEDRESTART),
                # N+1 was bad: the fleet publishes N again and the robot pins it. (Going back to
                # the first repository state did nothing -- "0 upgraded" -- most likely apt keeping
                # the newer Release file it had; the pin makes N the candidate, an install takes it.)
                ("rollback", f"{publish('repo-3')} && {rollback_pin(version)} && apt-cache policy "
                             "mxrc-systemd && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                             "--allow-downgrades mxrc-systemd mxrc-monitor mxrc-reference 2>&1"),
                ("after-rollback", f"{INVOCATIONS}; dpkg-query -W -f='${{Version}}\\n' mxrc-systemd "
                                   f"mxrc-monitor; cat /etc/mxrc/mxrc-systemd.conf; cat {ADMIN_DROPIN}; "
                                   "mxrc-systemd verify"),
            # A commissioning day in one boot: under TCG beside another VM it took 11 min to the
            # upgrade (dpkg-reconfigure twice: 5 min).
            ], timeout=2700)
    return testbed.run_scenario(scenario)


def test_bad_preseed_for_every_question_installs_with_defaults(two_cpus):
    install = two_cpus["install"]
    assert install.ok, install.output
    for question, (kind, value) in BAD_PRESEED.items():
        if kind != "select":   # debconf itself puts a select outside its choices back to the default
            assert f"preseeded {question} = '{value}' is invalid" in install.output, question
    installed = two_cpus["installed"].output
    for package in ("mxrc-systemd", "mxrc-monitor"):
        assert re.search(rf"^ii\s+{package}\s", installed, re.M), installed
    for default in ("cpus = auto", "priority = 80", "watchdog_sec = 30", "memory_max = auto",
                    "cpu_quota = auto", "mode = auto", "boot_cmdline = no", "listen = 0.0.0.0",
                    "port = 9558"):
        assert default in installed, default


def test_two_cpus_rt_on_the_last_cpu(two_cpus):
    assert two_cpus["install"].ok, two_cpus["install"].output
    units = live(two_cpus)
    assert units["mxrc-rt.service"]["CPUAffinity"] == "1"
    assert units["mxrc-nonrt.service"]["CPUAffinity"] == "0"


def test_two_cpus_findings_name_the_fix(two_cpus):
    out = two_cpus["plan"].output
    for finding in ("[rt-cpus-fallback]", "[few-cpus]", "[isolcpus-missing]", "[low-memory]"):
        assert finding in out, out
    assert 'GRUB_CMDLINE_LINUX="isolcpus=managed_irq,domain,1' in out
    assert out.rstrip().endswith("rc=2")  # warnings


def test_dpkg_reconfigure_changes_the_live_units(two_cpus):
    assert two_cpus["reconfigure"].ok, two_cpus["reconfigure"].output
    config = two_cpus["config"].output
    assert "priority = 60" in config and "watchdog_sec = 25" in config and "port = 9559" in config
    units = live(two_cpus, "live-after")
    assert units["mxrc-rt.service"]["CPUSchedulingPriority"] == "60"
    assert units["mxrc-rt.service"]["WatchdogUSec"] == "25s"
    assert units["mxrc-rt.service"]["MemoryMax"] == str(512 * 1024**2)
    assert "current scheduling priority: 60" in two_cpus["rt-sched-after"].output
    assert "restart mxrc.target" in two_cpus["reconfigure"].output
    assert "--listen 127.0.0.1 --port 9559" in two_cpus["monitor-after"].output
    assert "--listen 127.0.0.1 --port 9559" in two_cpus["monitor-reconfigured"].output


def test_installed_from_the_signed_repository_with_its_recommends(two_cpus):
    out = two_cpus["install"].output
    assert two_cpus["install"].ok and "NO_PUBKEY" not in out, out
    installed = two_cpus["installed"].output
    for package in ("mxrc-systemd", "mxrc-monitor"):
        assert re.search(rf"^ii\s+{package}\s", installed, re.M), installed
    assert "mxrc-reference" in out, out   # the first alternative of Recommends: mxrc-controller


def test_needrestart_lists_mxrc_rt_and_never_restarts_it(two_cpus):
    out = two_cpus["needrestart"].output
    listed, _restarted, after = out.split("---\n")
    assert "NEEDRESTART-SVC: mxrc-rt.service" in listed, out
    before = listed.split()[:2]
    assert before == after.split()[:2] and all(len(i) == 32 for i in before), out


def test_rollback_to_n_by_pinning_says_what_it_did_and_keeps_everything(two_cpus):
    out = two_cpus["rollback"].output
    assert two_cpus["rollback"].ok, out
    assert "The following packages will be DOWNGRADED" in out and "mxrc-systemd" in out, out
    before = two_cpus["before-upgrade"].output.split()
    after = two_cpus["after-rollback"].output
    words = after.split()
    assert words[:2] == before[:2], after   # still the same mxrc-nonrt and mxrc-rt invocations
    assert not words[2].endswith("+upgrade1") and words[2] == words[3], after
    assert "# site note" in after and "priority = 60" in after and "Nice=-5" in after, after
    assert "FAIL" not in after, after


def test_upgrade_keeps_running_controller_config_and_admin_dropins(two_cpus):
    assert two_cpus["upgrade"].ok, two_cpus["upgrade"].output
    before = two_cpus["before-upgrade"].output.split()
    after = two_cpus["after-upgrade"].output.split()
    assert after[2].endswith("+upgrade1")
    # Same invocations: neither mxrc-nonrt nor mxrc-rt was restarted.
    assert before[:2] == after[:2] and all(len(i) == 32 for i in before[:2])
    kept = two_cpus["kept"].output
    assert "# site note" in kept and "priority = 60" in kept and "Nice=-5" in kept
    assert "FAIL" not in kept, kept


PRESEED = ("mxrc-systemd mxrc-systemd/rt_priority string 70\n"
           "mxrc-systemd mxrc-systemd/watchdog_sec string 20\n")
# Built with the customize hook the package ships (#12 item 4).
IMAGE_BUILD = scenarios.hook_install("mxrc-systemd mxrc-monitor mxrc-reference", preseed=True)


GRUB_PACKAGES = ("grub-common", "grub2-common")
LINUX_LINE = r"grep -m1 -E '^\s+linux\s' /boot/grub/grub.cfg"
GRUB_STEPS = [
    # the opt-in kernel command line: apply writes the drop-in and runs update-grub (GRUB is the boot
    # loader once grub.cfg exists), so the next boot's kernel line carries the isolation. The test bed
    # boots with -kernel: a stand-in for the grub.cfg that grub-install leaves saves the step one of its
    # two grub-mkconfig runs (the step took 166 s under emulation); update-grub writes the real one.
    ("grub", "mkdir -p /boot/grub && echo '# grub-install was here' > /boot/grub/grub.cfg; echo made=$?; "
             "mxrc-systemd config isolation.boot_cmdline=yes >/dev/null && mxrc-systemd apply; "
             f"echo rc=$?; {LINUX_LINE}"),
    # purge takes it out of grub.cfg again, not only out of /etc/default/grub.d
    ("grub-purge", "DEBIAN_FRONTEND=noninteractive apt-get purge -y mxrc-systemd mxrc-monitor mxrc-reference "
                   f">/dev/null 2>&1; echo rc=$?; ls /etc/default/grub.d/ 2>&1; {LINUX_LINE}"),
]


@pytest.fixture(scope="module")
def image_build(debs, guest_files, tmp_path_factory):
    """A preseeded noninteractive install into a chroot-built image, then boots on two machines."""
    preseed = tmp_path_factory.mktemp("preseed") / "preseed.txt"
    preseed.write_text(PRESEED)
    # GRUB's tools (not a boot loader install: the test bed boots with -kernel) for the kernel
    # command-line drop-in's way into grub.cfg (#10 item 7)
    spec = testbed.ImageSpec(suite="trixie", files=(*debs.values(), preseed, scenarios.IMAGE_HOOK),
                             host_script=IMAGE_BUILD,
                             packages=testbed.ImageSpec().packages + GRUB_PACKAGES)
    image = testbed.build_image(spec)
    numa_rt = testbed.Machine(cpus=8, memory_mib=2048, numa_nodes=2, kernel="rt", append="isolcpus=6-7")
    small = testbed.Machine(cpus=4, memory_mib=2048, append="isolcpus=2-3")
    boot_steps = [
        ("active", "systemctl is-active mxrc-nonrt.service mxrc-rt.service mxrc-monitor.service"),
        ("hardware-journal", "journalctl -b -o cat --no-pager -u mxrc-systemd-hardware.service"),
        ("live", LIVE),
        ("rt-sched", RT_SCHED),
        ("numa", "numactl --hardware | head -1"),
        ("probe", "mxrc-systemd probe --json"),
        ("order", "systemctl show -p ActiveEnterTimestampMonotonic mxrc-systemd-hardware.service; "
                  "systemctl show -p InactiveExitTimestampMonotonic mxrc-nonrt.service"),
    ]

    def scenario():
        with testbed.VM(image, numa_rt) as vm:
            first = vm.boot(boot_steps)
            moved = vm.boot(boot_steps + GRUB_STEPS, machine=small)
        return first, moved
    return testbed.run_scenario(scenario)


def test_image_build_did_not_probe_the_build_host(image_build):
    first, _ = image_build
    assert "first boot after an image build" in first["hardware-journal"].output


def test_first_boot_on_two_numa_nodes_with_rt_kernel(image_build):
    first, _ = image_build
    assert first["active"].output.split() == ["active"] * 3, first["hardware-journal"].output
    assert "available: 2 nodes" in first["numa"].output
    facts = json.loads(first["probe"].output)
    assert facts["preempt_rt"] is True and facts["cmdline"]["isolcpus"] == [6, 7]
    # The live-only adapters (py-cpuinfo, pyudev) answered on the robot itself.
    assert facts["cpu_rt_flags"] is not None and facts["cpu_model"] and facts["cpu_dma_latency"] is True
    units = live(first)
    rt = units["mxrc-rt.service"]
    assert (rt["CPUAffinity"], rt["NUMAMask"]) == ("6-7", "1")
    assert units["mxrc-nonrt.service"]["CPUAffinity"] == "0-5"
    # The preseeded answers, in the live unit and in the running process.
    assert rt["CPUSchedulingPriority"] == "70" and rt["WatchdogUSec"] == "20s"
    assert "current scheduling priority: 70" in first["rt-sched"].output


def test_hardware_check_runs_before_the_services(image_build):
    first, _ = image_build
    values = [int(line.split("=")[1]) for line in first["order"].output.split()]
    assert values[0] <= values[1], first["order"].output


def test_moved_to_other_hardware_is_detected_and_reapplied(image_build):
    _, moved = image_build
    journal = moved["hardware-journal"].output
    assert "the hardware changed since the last apply" in journal and "isolcpus: '6-7' -> '2-3'" in journal
    units = live(moved)
    assert (units["mxrc-rt.service"]["CPUAffinity"], units["mxrc-rt.service"]["NUMAMask"]) == ("2-3", "0")
    assert units["mxrc-nonrt.service"]["CPUAffinity"] == "0-1"
    assert moved["active"].output.split() == ["active"] * 3


def test_the_kernel_command_line_reaches_grub_cfg_and_leaves_with_purge(image_build):
    _, moved = image_build
    wanted = "isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3 irqaffinity=0-1"
    grub = moved["grub"].output
    # exit 2: applied, with this small machine's warnings (no RT kernel, little memory)
    assert "made=0" in grub and re.search(r"^rc=[02]$", grub, re.M), grub
    assert "update-grub ran" in grub and wanted in grub.splitlines()[-1], grub
    purged = moved["grub-purge"].output
    assert "rc=0" in purged and "60-mxrc.cfg" not in purged, purged
    assert re.search(r"^\s+linux\s", purged, re.M) and "isolcpus" not in purged, purged
