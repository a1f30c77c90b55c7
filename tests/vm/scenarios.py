"""Shell steps that several VM tests share, as (name, command) pairs, and how to read their output."""

import json
import re
from pathlib import Path

SERVICES = "mxrc-nonrt.service mxrc-rt.service mxrc-monitor.service"

# Every path on the root filesystem except the ones that change by themselves.
FILE_LIST = ("find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp"
             " -o -path /var/tmp -o -path /mnt -o -path /root -o -path /var/log/journal"
             " -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg"
             " -o -path /var/log/apt -o -path /var/log/dpkg.log -o -path /var/log/alternatives.log"
             " -o -path /var/lib/systemd/timers -o -path /var/lib/systemd/random-seed"
             " -o -path /var/lib/systemd/catalog -o -path /usr/share/autopkgtest \\) -prune -o -print | sort")


# The image-builder hook the package ships (#12 item 4): an image built with it is an integrator's
# image build, chroot install and first boot on the robot included.
IMAGE_HOOK = Path(__file__).resolve().parents[2] / "image" / "mmdebstrap-customize"


def hook_install(packages: str, preseed: bool = False) -> str:
    """An ImageSpec.host_script: IMAGE_HOOK installs `packages` from the .deb files given as
    ImageSpec.files (and preseed.txt among them when `preseed`)."""
    env = f'MXRC_DEBS="$1/tmp/image-files" MXRC_PACKAGES="{packages}"'
    if preseed:
        env += ' MXRC_PRESEED="$1/tmp/image-files/preseed.txt"'
    return f'{env} sh "$1/tmp/image-files/{IMAGE_HOOK.name}" "$1"'


def rt_pid() -> str:
    return "$(systemctl show -p MainPID --value mxrc-rt.service)"


INSTALL = [
    ("files-before", f"{FILE_LIST} > /root/files-before"),
    ("install", "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                "/mnt/host/files/*.deb"),
    # MXRC itself is not installed here: mxrc-reference provides the programs
    # at the units' documented paths (as alternatives).
    ("alternatives", "update-alternatives --query mxrc-rt; update-alternatives --query mxrc-nonrt"),
    ("user", "id mxrc"),
    ("enabled", f"systemctl is-enabled mxrc.target {SERVICES}"),
    ("journald-config",
     "systemd-analyze cat-config systemd/journald.conf | grep -E '^(SystemMaxUse|RuntimeMaxUse)='"),
    ("start", "start=$(date +%s%N); systemctl start mxrc.target; rc=$?; "
              "echo elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 )); exit $rc"),
    ("active", f"systemctl is-active {SERVICES} mxrc.target"),
    ("order", "systemctl show -p Id -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic "
              "mxrc-nonrt.service mxrc-rt.service"),
    ("show-rt", "systemctl show mxrc-rt.service -p CPUSchedulingPolicy -p CPUSchedulingPriority "
                "-p CPUAffinity -p NUMAPolicy -p NUMAMask -p User -p WatchdogUSec -p StatusText"),
    ("status-rt", "systemctl status --no-pager -l mxrc-rt.service"),
    ("chrt", f"chrt -p {rt_pid()}"),
    ("taskset", f"taskset -cp {rt_pid()}"),
    ("rt-journal", "journalctl -b --no-pager -o cat -u mxrc-rt.service"),
    ("security", "rc=0; for u in mxrc-rt.service mxrc-nonrt.service mxrc-monitor.service; do "
                 "systemd-analyze security --no-pager --threshold=20 $u | tail -1 || rc=1; done; "
                 "systemd-analyze security --no-pager --offline=true --threshold=20 "
                 "mxrc-failover@check.service | tail -1 || rc=1; exit $rc"),
    ("metrics", "python3 -c \"import urllib.request as u; "
                "print(u.urlopen('http://127.0.0.1:9558/metrics', timeout=5).read().decode())\""),
    ("plan", "mxrc-systemd plan --json"),
    ("baseline", "mxrc-systemd boot-time show --json"),
    ("verify", "mxrc-systemd verify"),
    # #10: with isolation.mode = auto (the default) an RT CPU is refused to everyone else.
    ("foreign-taskset", "taskset -c 2 true && echo allowed || echo refused; "
                        "systemctl show -p AllowedCPUs --value system.slice mxrc.slice mxrc-rt.service"),
    ("stop-nonrt", f"systemctl stop mxrc-nonrt.service; sleep 1; systemctl is-active {SERVICES}; true"),
]

PURGE = [
    # Removing the package stops a running controller (its units go with it).
    ("start-before-purge", "systemctl start mxrc.target"),
    ("purge", "DEBIAN_FRONTEND=noninteractive apt-get purge -y mxrc-systemd mxrc-monitor mxrc-reference "
              "mxrc-systemd-dev"),
    ("active-after-purge", "systemctl is-active mxrc-rt.service mxrc-nonrt.service; true"),
    ("debconf-after-purge", "debconf-show mxrc-systemd"),
    ("files-after", f"{FILE_LIST} > /root/files-after; comm -13 /root/files-before /root/files-after"),
]

# Shell functions for the drill steps: a runtime drop-in per drill, undone after it.
PRELUDE = r"""
drill() { u=$1; shift; mkdir -p /run/systemd/system/$u.d
          printf '%s\n' '[Service]' "$@" > /run/systemd/system/$u.d/drill.conf
          systemctl daemon-reload; systemctl reset-failed $u; }
undrill() { rm -rf /run/systemd/system/$1.d; systemctl daemon-reload; systemctl reset-failed $1; }
prop() { systemctl show -p "$2" --value "$1"; }
# wait_new_invocation UNIT OLD_ID SECONDS: until a new invocation is active
wait_new_invocation() {
  for i in $(seq 1 $(( $3 * 2 ))); do
    [ "$(prop $1 InvocationID)" != "$2" ] && [ "$(prop $1 ActiveState)" = active ] && return 0
    sleep 0.5
  done; return 1; }
"""


def values(output: str) -> dict[str, str]:
    """KEY=value words from the lines the step echoed itself (not from logs or JSON it printed)."""
    return dict(word.split("=", 1) for line in output.splitlines() if re.match(r"[a-z_]+=", line)
                for word in line.split() if "=" in word)


# debian/tests' `controller` (the one that needs a booted systemd: isolation-machine)
# against the installed packages (-B: nothing built, nothing installed); autopkgtest
# itself is in the image (testbed.AUTOPKGTEST_PACKAGES). The null runner runs in
# the guest, a throwaway VM: it is the isolated machine that trixie's null runner
# no longer claims to be (and its --fake-capability=isolation-machine trips an
# assertion in autopkgtest 5.49).
AUTOPKGTEST = [
    ("autopkgtest", "rm -rf /tmp/src && mkdir /tmp/src && "
                    "tar -C /tmp/src -xf /mnt/host/files/mxrc-systemd-source.tar"
                    " && autopkgtest --no-built-binaries --ignore-restrictions=isolation-machine"
                    " --test-name=controller"
                    " --summary-file=/tmp/autopkgtest.summary /tmp/src -- null;"
                    " rc=$?; echo '### summary'; cat /tmp/autopkgtest.summary; exit $rc"),
]

# No MXRC program (no mxrc-controller package): the services are skipped, not
# failed into failover, and configuring the package says so.
NO_CONTROLLER = [
    ("remove-controller", "DEBIAN_FRONTEND=noninteractive apt-get remove -y mxrc-reference && "
                          "systemctl stop mxrc.target mxrc-rt.service mxrc-nonrt.service"),
    ("reconfigure-without-controller", "DEBIAN_FRONTEND=noninteractive dpkg-reconfigure mxrc-systemd 2>&1"),
    # Failover units of earlier steps (the autopkgtests, the removal) are not counted: only new ones.
    ("start-without-controller", "count() { systemctl list-units --all --no-legend --plain 'mxrc-failover@*' "
                                 "| wc -l; }; before=$(count); systemctl start mxrc.target; sleep 3; "
                                 "systemctl show -p ActiveState -p ConditionResult -p NRestarts -p Result "
                                 "mxrc-nonrt.service mxrc-rt.service; systemctl is-active mxrc.target; "
                                 "echo failover: $(( $(count) - before ))"),
]


# Waits until mxrc-monitor answers, so doctor does not catch it starting.
WAIT_SERVICES = ("systemctl start mxrc.target; for i in $(seq 120); do python3 -c 'import urllib.request; "
                 "urllib.request.urlopen(\"http://127.0.0.1:9558/metrics\")' 2>/dev/null && break; "
                 "sleep 0.5; done")
DOCTOR = "mxrc-systemd doctor --json; echo rc=$?"

# A foreign process asks for RT CPU 2 from a root shell: the RT isolation refuses it (the shell's
# slice may not use CPU 2), or, without that layer, it runs and doctor must name it.
INTRUDER = ("taskset -c 2 yes >/dev/null 2>/tmp/taskset.err & pid=$!; sleep 2; "
            "if kill -0 $pid 2>/dev/null; then echo intruder=running pid=$pid; "
            "else wait $pid; echo intruder=refused rc=$?; cat /tmp/taskset.err; fi")
# Moves the first movable IRQ (a managed one refuses with EIO) onto RT CPU 2.
MOVE_IRQ = ("for d in /proc/irq/[0-9]*; do n=${d##*/}; [ \"$n\" = 0 ] && continue; "
            "old=$(cat $d/smp_affinity_list); echo 2 > $d/smp_affinity_list 2>/dev/null || continue; "
            "sleep 0.2; if [ \"$(cat $d/effective_affinity_list)\" = 2 ]; then echo moved_irq=$n; break; fi; "
            "echo $old > $d/smp_affinity_list; done")


def json_of(output: str):
    """The JSON document a step printed (progress lines before it, "rc=" after it are skipped)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    end = next((i for i, line in enumerate(lines) if i > start and line.startswith("rc=")), len(lines))
    return json.loads("\n".join(lines[start:end]))


def rc_of(output: str) -> int:
    return int(re.findall(r"^rc=(\d+)$", output, re.M)[-1])


def checks_of(output: str) -> dict:
    """doctor --json's checks by id, from a step's output."""
    return {c["id"]: c for c in json_of(output)["checks"]}
