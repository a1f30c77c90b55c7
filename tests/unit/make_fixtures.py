"""Regenerate the committed fake machines in tests/unit/fixtures from HARDWARE below.

    python3 tests/unit/make_fixtures.py            # the machines' root/ trees
    python3 tests/unit/make_fixtures.py --golden   # and every fixture's golden plan from the current code

Each fixture is root/ (the files the probes read) plus expected.json and
dropins/ (the golden plan). A real machine captured with
`mxrc-systemd capture` is added the same way: its tree as root/, and the
expected files written once with --golden and reviewed.
"""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from sysroots import Hardware, build, write_golden  # noqa: E402

HARDWARE = {
    "01-one-cpu": Hardware(cpus=1, memory_gib=1),
    "02-two-cpus": Hardware(cpus=2, memory_gib=2),
    "03-three-cpus": Hardware(cpus=3),
    "04-spec-robot": Hardware(cpus=4, cmdline="BOOT_IMAGE=/vmlinuz ro isolcpus=2-3", preempt_rt=True),
    "05-no-isolcpus-generic-kernel": Hardware(cpus=4),
    "06-eight-cpus-smt": Hardware(cpus=8, smt=True, preempt_rt=True,
                                  cmdline="isolcpus=nohz,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3"),
    "07-two-numa-nodes": Hardware(cpus=8, numa_nodes=2, preempt_rt=True,
                                  cmdline="isolcpus=managed_irq,domain,6-7 irqaffinity=0-5"),
    "08-rt-spans-numa": Hardware(cpus=8, numa_nodes=2, preempt_rt=True, cmdline="isolcpus=3-4"),
    "09-64-cpus-4-nodes-2-sockets": Hardware(cpus=64, numa_nodes=4, sockets=2, memory_gib=256,
                                             preempt_rt=True, cmdline="isolcpus=managed_irq,domain,60-N"),
    "10-offline-cpu": Hardware(cpus=8, offline=(5,), preempt_rt=True, cmdline="isolcpus=2-3"),
    "11-cgroup-v1": Hardware(cpus=4, cgroup_v2=False, preempt_rt=True, cmdline="isolcpus=2-3"),
    "12-rt-group-sched": Hardware(cpus=4, rt_group_sched=True, preempt_rt=True, cmdline="isolcpus=2-3"),
    "13-old-systemd": Hardware(cpus=4, systemd=247, preempt_rt=True, cmdline="isolcpus=2-3"),
    "14-all-cpus-isolated": Hardware(cpus=4, preempt_rt=True, cmdline="isolcpus=0-3"),
    "15-quoted-cmdline-stride": Hardware(cpus=16, preempt_rt=True,
                                         cmdline='root=UUID=1 quiet "acpi_osi=Linux x" isolcpus=8-15:2/4'),
    # The spec's minimum: 4 GiB installed, MemTotal 3.8 GiB after firmware and kernel reservations.
    "16-four-gib-robot": Hardware(cpus=4, memory_gib=3.8, preempt_rt=True, cmdline="isolcpus=2-3"),
    # A typo in the kernel command line: reported, and the spec's CPUs used.
    "17-unparsable-cmdline": Hardware(cpus=4, preempt_rt=True, cmdline="ro quiet isolcpus=2-x"),
    # isolcpus= given twice (the kernel uses the first), with an unknown flag and without domain.
    "18-isolcpus-quirks": Hardware(cpus=4, preempt_rt=True, cmdline="isolcpus=nohz,bogus,2-3 isolcpus=2-3"),
}


def main():
    fixtures = HERE / "fixtures"
    for name, hw in HARDWARE.items():
        target = fixtures / name / "root"
        shutil.rmtree(target, ignore_errors=True)
        build(target, hw)
        print(f"{target.relative_to(HERE.parents[1])}")
    if "--golden" in sys.argv[1:]:
        for machine in sorted(p for p in fixtures.iterdir() if (p / "root").is_dir()):
            write_golden(machine)
            print(f"{machine.relative_to(HERE.parents[1])}: expected.json, dropins/")


if __name__ == "__main__":
    main()
