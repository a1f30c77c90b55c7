import pytest

from mxrc_install.pipeline.cmdline import parse_cmdline
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
    ("isolcpus=1 isolcpus=2-3", {2, 3}, {"domain"}),   # last one wins, as in the kernel
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
