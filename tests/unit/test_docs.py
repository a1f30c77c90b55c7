"""The docs say what the code does: each class of mismatch found in #13 has a check here.

- every finding id of the registry (mxrc_install/findings.py) is in docs/installer.md, and no other;
- every command and option of the CLI is in man/mxrc-systemd.8 under its own command, and every
  command in docs/installer.md's table;
- no control characters in the man pages (a raw form feed shows as "(B...R)");
- what the user guide and the README say the units, the packaging and debconf do, they do
  (settings every service has, the failover hook sandbox, debconf priorities, the shipped units);
- the man page advises the sandbox relaxations the user guide explains, and no other;
- what the docs say about --root is what the commands do;
- every figure with a unit (ms, s, µs, x, %) in the docs is a setting or spec target, or sits in a section
  marked with its source, and a figure from a bench/results/*.json source is in that file;
- sample output in the docs is spelled as the code prints it.
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pytest
from sysroots import Hardware, build

from mxrc_install import cli, findings

REPO = Path(__file__).resolve().parents[2]
MAN = REPO / "man/mxrc-systemd.8"
INSTALLER = REPO / "docs/installer.md"


# --- finding ids -------------------------------------------------------------------------------

def section(text: str, heading: str) -> str:
    """The markdown section under the heading starting with HEADING, to the next heading as high."""
    match = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.M)
    assert match, f"no section {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


def documented_finding_ids() -> set[str]:
    table = section(INSTALLER.read_text(), "6. Finding")
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M))


def test_every_finding_id_is_documented_and_no_other():
    code, docs = set(findings.REGISTRY), documented_finding_ids()
    assert sorted(code - docs) == [], "findings missing from docs/installer.md section 6"
    assert sorted(docs - code) == [], "docs/installer.md documents findings the registry does not have"


# --- the CLI in the man page -------------------------------------------------------------------

def man_text(raw: str) -> str:
    """Man source as the reader sees the words: fonts and escapes removed, requests dropped."""
    text = re.sub(r"\\f(?:\[[^]]*\]|\(..|.)", "", raw)
    text = text.replace("\\-", "-").replace("\\(*m", "µ").replace("\\ ", " ")
    return re.sub(r"^\.(?:B|I|BR|BI|RB|IR|RI|IB)\s+", "", text, flags=re.M).replace('"', "")


def man_sections(raw: str) -> dict[str, str]:
    parts = re.split(r"^\.SH\s+(.*)$", raw, flags=re.M)
    return {name.strip('"'): body for name, body in zip(parts[1::2], parts[2::2])}


def man_items(body: str) -> dict[str, str]:
    """COMMAND -> its .TP item (title and text) in a section of the man page."""
    items = {}
    for item in re.split(r"^\.TP\s*$", body, flags=re.M)[1:]:
        words = man_text(item).split()
        if words:
            items[words[0]] = man_text(item)
    return items


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings
            if opt.startswith("--") and opt != "--help"}


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_every_command_has_its_man_page_item():
    items = man_items(man_sections(MAN.read_text())["COMMANDS"])
    assert set(items) == set(subcommands(cli.build_parser()))


@pytest.mark.parametrize("command", sorted(subcommands(cli.build_parser())))
def test_every_option_is_in_its_command_man_page_item(command):
    item = man_items(man_sections(MAN.read_text())["COMMANDS"])[command]
    sub = subcommands(cli.build_parser())[command]
    missing = [opt for opt in long_options(sub) if not mentions(item, opt)]
    for name, nested in subcommands(sub).items():
        missing += [name] if not mentions(item, name) else []
        missing += [f"{name} {opt}" for opt in long_options(nested) if not mentions(item, opt)]
    assert missing == [], f"man/mxrc-systemd.8, item {command}"


def test_every_command_is_in_the_installer_command_table():
    table = section(INSTALLER.read_text(), "1. 명령")
    listed = set(re.findall(r"^\| `mxrc-systemd ([a-z-]+)", table, re.M))
    assert listed == set(subcommands(cli.build_parser()))


def test_every_global_option_is_in_the_man_page_options():
    options = man_text(man_sections(MAN.read_text())["OPTIONS"])
    parser = cli.build_parser()
    wanted = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
    assert [o for o in sorted(wanted) if not mentions(options, o)] == []


# --- control characters --------------------------------------------------------------------------

@pytest.mark.parametrize("page", sorted((REPO / "man").glob("*.[1-8]")), ids=lambda p: p.name)
def test_man_pages_have_no_control_characters(page):
    # split("\n"), not splitlines(): that also splits at a form feed and would hide it.
    bad = [(n, line) for n, line in enumerate(page.read_text().split("\n"), 1)
           if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line)]
    assert bad == [], "write troff escapes (\\fB, \\fR) as backslash sequences, not control bytes"


# --- claims about the units and the packaging ------------------------------------------------

USER_GUIDE = REPO / "docs/user-guide.md"
SERVICES = ("mxrc-rt.service", "mxrc-nonrt.service", "mxrc-monitor.service")


def paragraph_after(text: str, opening: str) -> str:
    match = re.search(rf"^{re.escape(opening)}(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    assert match, f"no paragraph opening with {opening!r}"
    return match.group(1)


def settings_claimed(paragraph: str) -> list[str]:
    """The `Key=value` settings a paragraph names (a bare `Key=` names no value)."""
    return [s for s in re.findall(r"`([A-Z][A-Za-z]+=[^`]+)`", paragraph)]


def unit_lines(unit: str) -> set[str]:
    return {line.strip() for line in (REPO / "units" / unit).read_text().splitlines()}


@pytest.mark.parametrize("opening, units", [
    ("세 service 공통:", SERVICES),
    ("컨트롤러 두 service (`mxrc-rt`, `mxrc-nonrt`) 만:", SERVICES[:2])],
                         ids=["all-services", "controllers"])
def test_what_the_user_guide_says_every_service_has_they_have(opening, units):
    claimed = settings_claimed(paragraph_after(USER_GUIDE.read_text(), opening))
    assert len(claimed) >= 2
    missing = {unit: [c for c in claimed if c not in unit_lines(unit)] for unit in units}
    assert missing == {unit: [] for unit in units}


def test_the_readme_package_table_names_every_shipped_unit():
    table = section((REPO / "README.md").read_text(), "패키지 구성")
    units = [u.name for u in (REPO / "units").iterdir() if u.suffix in (".service", ".target", ".slice")]
    assert units and sorted(u for u in units if f"`{u}`" not in table) == []


@pytest.mark.parametrize("readme, heading", [("README.md", "문서"), ("README.en.md", "Where to read more")])
def test_the_readmes_link_every_document(readme, heading):
    links = section((REPO / readme).read_text(), heading)
    assert sorted(d.name for d in REPO.glob("docs/*.md") if f"(docs/{d.name})" not in links) == []


def test_the_user_guide_names_every_debconf_priority_the_config_uses():
    config = (REPO / "debian/mxrc-systemd.config").read_text()
    used = set(re.findall(r"db_input (low|medium|high|critical)", config))
    install = section(USER_GUIDE.read_text(), "1. 설치")
    assert used and sorted(p for p in used if f"`{p}`" not in install) == []


def test_the_man_page_relaxes_the_sandbox_as_the_user_guide_does():
    # The user guide's table is where each relaxation is explained; the man page must not advise others.
    table = section(USER_GUIDE.read_text(), "4. Sandbox")
    desc = man_text(man_sections(MAN.read_text())["DESCRIPTION"])
    advised = set(re.findall(r"\b([A-Z][A-Za-z]+=)", desc.partition("drop-in")[2]))
    assert advised and sorted(d for d in advised if d not in table) == []


def test_the_failover_hook_contract_is_the_failover_unit():
    unit = unit_lines("mxrc-failover@.service")
    contract = section(USER_GUIDE.read_text(), "Hook 이 할 수 있는 것과 없는 것")
    state = next(line.partition("=")[2] for line in unit if line.startswith("StateDirectory="))
    claims = {"User=mxrc": "User=mxrc" in unit,
              "ProtectSystem=strict": "ProtectSystem=strict" in unit,
              "NoNewPrivileges=yes": "NoNewPrivileges=yes" in unit,
              "PrivateDevices=yes": "PrivateDevices=yes" in unit,
              "ProtectProc=invisible": "ProtectProc=invisible" in unit,
              "MemoryDenyWriteExecute=yes": "MemoryDenyWriteExecute=yes" in unit,
              f"/var/lib/{state}": True}
    claims |= {t: t in unit for t in re.findall(r"`(TimeoutStartSec=\S+?)`", contract)}
    assert {c: c in contract and holds for c, holds in claims.items()} == {c: True for c in claims}
    assert any(c.startswith("TimeoutStartSec=") for c in claims)


# --- --root ----------------------------------------------------------------------------------------

def leaf_commands() -> list[list[str]]:
    """Every command as argv, boot-time's actions one by one; failover is run by systemd (tested below)."""
    parser = cli.build_parser()
    leaves = []
    for name, sub in subcommands(parser).items():
        nested = subcommands(sub)
        leaves += [[name, action] for action in nested] if nested else [[name]]
    return [argv for argv in leaves if argv != ["failover"]]


def refuses_root(tmp_path, argv, capsys) -> bool:
    root = build(tmp_path / "root", Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))
    # The commands' required arguments; a new one fails here until it is given an example.
    extra = {"capture": [str(tmp_path / "captured")], "isolate": ["stop"]}.get(argv[0], [])
    try:
        rc = cli.main(["--root", str(root), *argv, *extra])
    except SystemExit:
        pytest.fail(f"{' '.join(argv)}: add an example of its required arguments in refuses_root()")
    err = capsys.readouterr().err
    return rc == 1 and "not with --root" in err


def refusing_commands(tmp_path_factory, capsys) -> set[str]:
    return {" ".join(argv) for argv in leaf_commands()
            if refuses_root(tmp_path_factory.mktemp("root"), argv, capsys)}


def sentences_about(text: str, phrase: str) -> list[str]:
    """The sentences that say PHRASE (spaces match any whitespace, as text is wrapped)."""
    pattern = re.compile(r"\s+".join(map(re.escape, phrase.split())))
    return [s for s in re.split(r"[.;。]\s", text) if pattern.search(s)]


def named_commands(sentence: str) -> set[str]:
    names = sorted({" ".join(argv) for argv in leaf_commands()} | {"failover"}, key=len, reverse=True)
    found = set()
    for name in names:
        if mentions(sentence, name):
            found.add(name)
            sentence = sentence.replace(name, "")
    return found


def test_root_claims_match_the_commands(tmp_path_factory, capsys):
    refusing = refusing_commands(tmp_path_factory, capsys)
    # the docs must name them
    assert refusing == {"doctor", "jitter", "health-gate", "report", "boot-time record"}
    installer = INSTALLER.read_text()
    options = man_text(man_sections(MAN.read_text())["OPTIONS"])
    for doc, refuse, ignore in ((installer, "`--root` 를 거부", "`--root` 를 무시"),
                                (options, "refuse --root", "ignores --root")):
        said = [named_commands(s) for s in sentences_about(doc, refuse)]
        assert said == [refusing], f"the sentence saying which commands refuse --root: {said}"
        assert [named_commands(s) for s in sentences_about(doc, ignore)] == [{"failover"}]


def test_failover_ignores_root(tmp_path, monkeypatch):
    from mxrc_install.ops import failover
    calls = []
    monkeypatch.setattr(failover, "handle", lambda *args: calls.append(args) or 0)
    assert cli.main(["--root", str(tmp_path), "failover", "mxrc-rt.service"]) == 0
    assert calls == [("mxrc-rt.service",)]


def test_no_doc_claims_every_command_takes_root():
    docs = [*REPO.glob("docs/*.md"), REPO / "README.md", REPO / "README.en.md", MAN]
    claims = [p.name for p in docs if re.search(r"(모든 명령|every command|all commands).{0,30}--root",
                                                 man_text(p.read_text()), re.S)]
    assert claims == []


# --- figures ---------------------------------------------------------------------------------------

FIGURE_DOCS = sorted([*REPO.glob("docs/*.md"), REPO / "bench/README.md",
                      REPO / "README.md", REPO / "README.en.md"])
UNITS = {"ms": "ms", "µs": "us", "us": "us", "s": "s", "초": "s", "분": "min", "%": "%", "x": "x", "배": "x"}
# A number with a unit; the unit may run into a Korean particle ("30초마다") but not into a word.
FIGURE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(ms|µs|us|s|x|%|초|분|배)(?![A-Za-z0-9])")
# Values chosen by the spec or a setting, not measured: they need no recorded result.
SPEC_AND_SETTINGS = {
    (50, "us"): "SC-001 jitter limit",
    (30, "s"): "WatchdogSec=30s (FR-004), SC-002",
    (5, "s"): "RestartSec=5s (FR-024)",
    (60, "s"): "StartLimitIntervalSec=60s (FR-025)",
    (90, "s"): "TimeoutStartSec=90s of mxrc-failover@.service",
    (300, "s"): "TimeoutStartSec=300s of mxrc-isolation.service",
    (10, "s"): "rt.watchdog_sec sane range start (plan.SANE_WATCHDOG); jitter's default 10000 cycles",
    (120, "s"): "rt.watchdog_sec sane range end (plan.SANE_WATCHDOG)",
    (5, "min"): "the spec's edge case: a 5 min watchdog leaves a hang unnoticed",
    (10, "min"): "jitter --cycles 600000 at 1 kHz",
    (1, "s"): "SC-004 refresh, SC-007 filter limit",
    (200, "%"): "CPUQuota=200% (FR-007, SC-008)",
    (100, "%"): "CPUQuota per RT CPU (rt.cpu_quota auto)",
    (30, "%"): "SC-006 boot-time reduction",
    (5, "ms"): "issue 5: scrape p99 < 5 ms",
    (0.3, "x"): "issue 5: exporter CPU <= 0.3x node_exporter's",
    (0.15, "x"): "issue 14: exporter CPU <= 0.15x node_exporter's",
    (0.5, "s"): "bench: a scrape every 0.5 s during the connection flood (bench/exporter_cost.py)",
    (20, "s"): "bench: run-serving-host scrapes for 20 s during the flood",
    (50, "x"): "mxrc_monitor.rtcpu: the RT task scan runs at most every 50x its last duration",
    (90, "%"): "MxrcMemoryNearMax threshold (monitoring/mxrc.rules.yml)",
    (2, "min"): "MxrcMemoryNearMax 'for: 2m' (monitoring/mxrc.rules.yml)",
    (1, "min"): "MxrcMonitorDisconnected 'for: 1m' (monitoring/mxrc.rules.yml)",
    (15, "min"): "MxrcFleetRestartWave's window (monitoring/mxrc.rules.yml)",
    (20, "min"): "issue #13: the suite's time goal on 2 cores",
    (10, "%"): "MxrcFleetUnreachable's threshold (monitoring/mxrc.rules.yml)",
    (2, "%"): "the RT task scan's bound on a slow machine: 1/TASK_SCAN_FACTOR of a CPU (monitor.py)",
    (10, "us"): "the RT CPUs' idle wake-up latency limit (isolate.RT_WAKEUP_LATENCY_US)",
    (1, "ms"): "the reference RT loop's period (1 kHz)",
    (7.5, "s"): "the watchdog helper pings every WatchdogSec/4 (30 s / 4)",
    (37.5, "s"): "a stopped loop is killed by 1.25 x WatchdogSec=30s at the latest",
    (100, "ms"): "an example stall budget: 100 cycles of a 1 kHz loop",
    (3, "s"): "the drills' short WatchdogSec=3s (tests/vm/test_drills.py)",
    (12, "s"): "the healthy-ping drill's length (tests/vm/test_drills.py)",
    (8, "s"): "the wrapper drill's TimeoutStartSec=8s (tests/vm/test_drills.py)",
    (0.95, "s"): "kernel.sched_rt_runtime_us default: 950000 of every 1000000 us",
    (15, "s"): "a common Prometheus scrape_interval, the docs' example of scrapes far apart",
    (2, "s"): "mxrc_monitor.demand.WAIT_SECONDS: how long a scrape waits for a refresh",
}
SOURCE = re.compile(r"<!--\s*source:\s*(\S+)\s*-->")


def figures(text: str):
    """(number text, canonical unit, line number) of every figure outside HTML comments."""
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for n, line in enumerate(text.splitlines(), 1):
        for number, unit in FIGURE.findall(line):
            yield number, UNITS[unit], n


def sections(text: str):
    """(first line number, text) of each part of a markdown file between headings."""
    starts = [0] + [m.start() for m in re.finditer(r"^#", text, re.M)]
    for a, b in zip(starts, starts[1:] + [len(text)]):
        yield text.count("\n", 0, a) + 1, text[a:b]


def json_numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [n for v in value for n in json_numbers(v)]
    return []


def in_recorded(number: str, numbers: list[float]) -> bool:
    """NUMBER as shown (its decimals) is some recorded value, in the same or a 1000x unit."""
    decimals = len(number.partition(".")[2])
    shown = float(number)
    return any(math.isclose(round(v * scale, decimals), shown, abs_tol=10 ** -decimals / 2)
               for v in numbers for scale in (1, 1000, 0.001))


def unsourced_figures(doc: Path) -> list[str]:
    problems = []
    for first, text in sections(doc.read_text()):
        sources = [REPO / s for s in SOURCE.findall(text)]
        problems += [f"{doc.relative_to(REPO)}: source {s.relative_to(REPO)} does not exist"
                     for s in sources if not s.exists()]
        recorded = [n for s in sources if s.suffix == ".json" and s.exists()
                    for n in json_numbers(json.loads(s.read_text()))]
        for number, unit, n in figures(text):
            where = f"{doc.relative_to(REPO)}:{first + n - 1}: {number} {unit}"
            if (float(number), unit) in SPEC_AND_SETTINGS:
                continue
            if not sources:  # a setting or spec target belongs in SPEC_AND_SETTINGS instead
                problems.append(f"{where}: no <!-- source: ... --> in its section")
            elif recorded and not in_recorded(number, recorded):
                problems.append(f"{where}: not in {', '.join(s.name for s in sources)}")
    return problems


@pytest.mark.parametrize("doc", FIGURE_DOCS,
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_figure_has_a_source(doc):
    """A measured figure: mark its section <!-- source: bench/results/X.json --> (or the test that records
    it). A setting or spec target: add it to SPEC_AND_SETTINGS with the reason."""
    assert unsourced_figures(doc) == []


def test_the_figure_check_catches_an_unsourced_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "r.json").write_text('{"p99_ms": 1.806}')
    doc = tmp_path / "d.md"
    doc.write_text("# a\nmax 19 us\n# b\n<!-- source: r.json -->\np99 1.8 ms, p50 0.9 ms\n# c\nlimit 50 µs\n")
    assert unsourced_figures(doc) == ["d.md:2: 19 us: no <!-- source: ... --> in its section",
                                      "d.md:5: 0.9 ms: not in r.json"]


# --- spec references -------------------------------------------------------------------------------

@pytest.mark.parametrize("journald", [{}, {"SystemMaxUse": "1G"}], ids=["missing", "in-force"])
def test_journald_check_cites_the_spec_part_it_checks(journald):
    from mxrc_install.ops import doctor
    live = doctor.LiveState(properties={}, scheduling={}, exposure={}, journald=journald,
                            exporter_metrics=None)
    assert all("FR-016" not in c.spec for c in doctor.check_journald(live))


# --- sample outputs ---------------------------------------------------------------------------------

def test_doctor_summaries_in_the_docs_are_printed_as_doctor_prints_them():
    from mxrc_install.ops import doctor

    def summary(warnings: int, failed: int) -> str:
        checks = [doctor.Check(f"w:{n}", doctor.WARN, "e", "f") for n in range(warnings)]
        checks += [doctor.Check(f"f:{n}", doctor.FAIL, "e", "f") for n in range(failed)]
        return doctor.render_text(checks).splitlines()[-1].partition("passed, ")[2]

    pattern = re.compile(r"\b\w+ passed, ((\d+) \w+, (\d+) failed)")
    docs = [*REPO.glob("docs/*.md"), REPO / "README.md"]
    shown = [m for doc in docs for m in pattern.finditer(doc.read_text())]
    assert shown, "no doctor summary in the docs: drop this test or point it at the new place"
    assert [m.group(1) for m in shown] == [summary(int(m.group(2)), int(m.group(3))) for m in shown]


def test_every_alert_rule_is_in_the_monitoring_alert_table():
    alerts = re.findall(r"^\s*- alert: (\w+)$", (REPO / "monitoring/mxrc.rules.yml").read_text(), re.M)
    table = (REPO / "docs/monitoring.md").read_text()
    assert alerts and [a for a in alerts if f"| `{a}` |" not in table] == []


def test_the_monitoring_doc_tells_the_refresh_rules_of_the_code():
    from mxrc_monitor import demand
    text = " ".join((REPO / "docs" / "monitoring.md").read_text().split())
    assert (demand.MAX_AGE, demand.WAIT_SECONDS, demand.IDLE_REFRESH_SECONDS) == (1.0, 2.0, 10.0)
    for claim in ("마지막으로 읽은 지 1초가 넘었으면", "최대 2초 기다린", "10초마다 읽습니다"):
        assert claim in text, claim
