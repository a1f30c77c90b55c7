import pytest

from sysroots import Hardware, build

from mxrc_install.pipeline.cmdline import parse_cmdline
from mxrc_install.pipeline.plan import make_plan
from mxrc_install.pipeline.probe import read_facts
from mxrc_install.sysroot import SysRoot
from mxrc_install.cpulist import CpuListError, format_cpulist, parse_cpulist


@pytest.mark.parametrize("text,expected", [
    ("0-3", {0, 1, 2, 3}),
    ("0,2,4-5", {0, 2, 4, 5}),
    ("0-7:2/4", {0, 1, 4, 5}),
    ("2-N", {2, 3, 4, 5}),
    ("", set()),
    ("3\n", {3}),
])
def test_parse_cpulist(text, expected):
    assert parse_cpulist(text, last_cpu=5) == expected


@pytest.mark.parametrize("text,message", [
    ("3-1", "runs backwards"),
    ("a-b", "'a' is not a CPU number"),
    ("1,,2", "empty element"),
    ("0-7:5/4", "bad group stride"),
    ("N", "needs the CPU count"),
])
def test_bad_cpulist_names_the_part(text, message):
    with pytest.raises(CpuListError, match=message):
        parse_cpulist(text)


def test_format_roundtrip():
    assert format_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_cpulist(format_cpulist({0, 1, 2, 5, 7, 8})) == {0, 1, 2, 5, 7, 8}


@pytest.mark.parametrize("cmdline,cpus,flags", [
    ("ro isolcpus=2-3 quiet", {2, 3}, {"domain"}),
    ("isolcpus=managed_irq,domain,2-3", {2, 3}, {"managed_irq", "domain"}),
    ("isolcpus=nohz,domain,2,3,6-7", {2, 3, 6, 7}, {"nohz", "domain"}),
    ("isolcpus=2-3 isolcpus=1", {2, 3}, {"domain"}),   # the first one wins, as in the kernel
    ('foo="a b" isolcpus=4-N', {4, 5, 6, 7}, {"domain"}),
])
def test_isolcpus_forms(cmdline, cpus, flags):
    parsed = parse_cmdline(cmdline, last_cpu=7)
    assert parsed.isolcpus == cpus and parsed.isolcpus_flags == flags and not parsed.errors


def test_other_isolation_parameters():
    parsed = parse_cmdline("nohz_full=2-3 rcu_nocbs=2-3 irqaffinity=0-1 -- isolcpus=9")
    assert parsed.nohz_full == {2, 3} and parsed.rcu_nocbs == {2, 3} and parsed.irqaffinity == {0, 1}
    assert parsed.isolcpus is None  # after "--" the words belong to init


@pytest.mark.parametrize("cmdline,message", [
    ("isolcpus=domain", "flags but no CPU list"),
    ("isolcpus=2-x", "not a CPU number"),
    ("nohz_full=7-2", "nohz_full"),
])
def test_bad_cmdline_is_reported_not_raised(cmdline, message):
    parsed = parse_cmdline(cmdline)
    assert any(message in e for e in parsed.errors), parsed.errors


@pytest.mark.parametrize("text", ["0-4294967295", "8192", "²", "1-²", "٣", "0-3:1/99999999", "１"])
def test_cpulist_rejects_huge_and_non_ascii_numbers(text):
    with pytest.raises(CpuListError):
        parse_cpulist(text)


def test_cpulist_accepts_the_last_cpu_the_kernel_allows():
    assert parse_cpulist("8191") == {8191}


@pytest.mark.parametrize("cmdline, finding", [
    ("isolcpus=2-3 isolcpus=1", "isolcpus-duplicate"),
    ("isolcpus=foo,domain,2-3", "isolcpus-unknown-flag"),
    ("isolcpus=nohz,2-3", "isolcpus-no-domain"),
    ("isolcpus=managed_irq,2-3", "isolcpus-no-domain"),
])
def test_isolcpus_read_like_the_kernel_gives_findings(tmp_path, cmdline, finding):
    facts = read_facts(SysRoot(build(tmp_path, Hardware(cpus=4, cmdline=cmdline, preempt_rt=True))))
    found = {f.id: f for f in make_plan(facts).findings}
    assert finding in found
    assert "managed_irq,domain,2-3" in found[finding].fix


def test_isolcpus_unknown_flag_is_skipped_like_the_kernel():
    cmd = parse_cmdline("isolcpus=foo,nohz,2-3")
    assert cmd.isolcpus == {2, 3} and cmd.isolcpus_flags == {"nohz"}
    assert cmd.isolcpus_unknown_flags == ("foo",)


def test_isolcpus_with_domain_has_no_syntax_finding(tmp_path):
    hw = Hardware(cpus=4, cmdline="isolcpus=managed_irq,domain,2-3", preempt_rt=True)
    facts = read_facts(SysRoot(build(tmp_path, hw)))
    ids = {f.id for f in make_plan(facts).findings}
    assert not ids & {"isolcpus-duplicate", "isolcpus-unknown-flag", "isolcpus-no-domain"}
