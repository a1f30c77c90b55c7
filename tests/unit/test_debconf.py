"""debconf: one validator (config.KEYS) for the answers, the settings file and `config KEY=VALUE`."""

import os
import re
import subprocess
import sys

import pytest

from mxrc_install import cli
from mxrc_install.pipeline import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN = os.path.join(REPO, "debian")


def read(name):
    with open(os.path.join(DEBIAN, name), encoding="utf-8") as f:
        return f.read()


def templates(name):
    return dict(re.findall(r"^Template: (\S+)\nType: (\S+)", read(name), re.M))


def shell_pairs(text, start):
    """The question:setting words after `start` up to the next line not continuing it."""
    block = text[text.index(start) + len(start):]
    block = re.split(r'"\n|; do', block, maxsplit=1)[0]
    return [tuple(w.split(":")) for w in block.replace("\\\n", " ").split() if ":" in w]


def test_mxrc_systemd_asks_exactly_its_own_settings():
    names = templates("mxrc-systemd.templates")
    assert set(names) == {f"mxrc-systemd/{q}" for q in config.DEBCONF_QUESTIONS} | {"mxrc-systemd/invalid"}
    assert all(s.split(".")[0] != "monitor" for s in config.DEBCONF_QUESTIONS.values())
    assert names["mxrc-systemd/isolation_mode"] == "select"
    assert names["mxrc-systemd/boot_cmdline"] == "boolean"


def test_mxrc_monitor_asks_the_monitor_settings():
    names = templates("mxrc-monitor.templates")
    assert set(names) == ({f"mxrc-monitor/{q}" for q in config.MONITOR_DEBCONF_QUESTIONS}
                          | {"mxrc-monitor/invalid"})


@pytest.mark.parametrize("script, start, table", [
    ("mxrc-systemd.config", 'QUESTIONS="', config.DEBCONF_QUESTIONS),
    ("mxrc-systemd.postinst", "for pair in", config.DEBCONF_QUESTIONS),
    ("mxrc-monitor.config", 'QUESTIONS="', config.MONITOR_DEBCONF_QUESTIONS),
])
def test_scripts_spell_the_table(script, start, table):
    assert shell_pairs(read(script), start) == list(table.items())
    assert set(table.values()) <= set(config.KEYS)


def shared_part(name):
    text = read(name)
    return text[text.index("# --- shared"):text.index("# --- end of the shared part")].split("\n", 1)[1]


def test_both_config_scripts_share_one_implementation():
    assert shared_part("mxrc-systemd.config") == shared_part("mxrc-monitor.config")


def test_error_template_shows_no_key_name_nor_english_hint():
    for name in ("mxrc-systemd.templates", "mxrc-monitor.templates"):
        error = read(name).split("/invalid\n", 1)[1]
        assert "${key}" not in error and "${hint}" not in error and "${question}" in error
    assert "db_capb backup" in read("mxrc-systemd.config") and "db_capb backup" in read("mxrc-monitor.config")


def test_korean_translation_is_complete():
    po = read("po/ko.po")
    assert "#, fuzzy" not in po and "\n#~" not in po
    entries = [e for e in po.split("\n\n") if "\nmsgid " in "\n" + e
               and 'msgid ""\nmsgstr ""\n"Project' not in e]
    assert entries
    for entry in entries:
        msgstr = entry[entry.index("msgstr "):]
        assert re.search(r'"[^"]', msgstr), entry


# The corpus every validator runs on: (setting, value). Values with '#' are
# comments in the file, so they are left to the KEY=VALUE path.
CORPUS = [(k, v) for k in ("rt.cpus",) for v in ("auto", "2-3", "2,3", "3-2", "0-4294967295", "²", "", "a-b",
                                                  "0-7:2/4", " 2-3 ")] + \
    [("rt.priority", v) for v in ("80", "0", "99", "100", "8O", "٨٠", "-1", "1e2")] + \
    [("rt.watchdog_sec", v) for v in ("30", "0", "3600", "3601", "30s")] + \
    [("rt.memory_max", v) for v in ("auto", "2G", "512M", "32M", "0", "2 G", "2GiB", "1" * 40, "-1G")] + \
    [("rt.cpu_quota", v) for v in ("auto", "200", "200%", "9", "100001", "x")] + \
    [("isolation.mode", v) for v in ("auto", "kernel-only", "off", "on", "")] + \
    [("isolation.boot_cmdline", v) for v in ("yes", "no", "true", "false", "maybe")] + \
    [("boot.optimize", v) for v in ("yes", "0", "2")] + \
    [("monitor.listen", v) for v in ("0.0.0.0", "127.0.0.1", "::1", "300.1.1.1", "999.999.999.999",
                                      "1.2.3.4 --x", "fe80::1%eth0", "fe80::1%a b", "localhost")] + \
    [("monitor.port", v) for v in ("9558", "0", "65535", "65536", "http")]


def accepts(parse, *args):
    try:
        parse(*args)
        return True
    except config.ConfigError:
        return False


@pytest.mark.parametrize("key, value", CORPUS)
def test_file_and_assignment_accept_the_same(key, value):
    section, name = key.split(".")
    by_assignment = accepts(config.parse_assignment, f"{key}={value}")
    by_file = accepts(config.parse_config, f"[{section}]\n{name} = {value}\n", "test.conf")
    assert by_assignment == by_file


@pytest.mark.parametrize("key, value", CORPUS)
def test_check_command_is_the_validator(key, value, capsys):
    code = cli.main(["config", "--check", f"{key}={value}"])
    assert (code == 0) == accepts(config.parse_assignment, f"{key}={value}")
    if code:
        err = capsys.readouterr().err
        assert err.startswith("mxrc-systemd: ") and key in err and "Traceback" not in err


@pytest.mark.spawns
def test_config_script_validates_with_the_same_table(tmp_path):
    """The config script's `valid` on the corpus, with mxrc-systemd from this tree."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "mxrc-systemd"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m mxrc_install \"$@\"\n")
    wrapper.chmod(0o755)
    script = shared_part("mxrc-systemd.config") + (
        'BOOLEANS="boot_cmdline"\n'
        'while IFS="	" read -r key value; do\n'
        '  if valid q "$key" "$value"; then echo "ok $key=$value"; else echo "bad $key=$value"; fi\n'
        'done\n')
    sample = [(k, v) for k, v in CORPUS if "\t" not in v][::2]
    result = subprocess.run(["sh", "-c", script], input="".join(f"{k}\t{v}\n" for k, v in sample),
                            env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"},
                            capture_output=True, text=True, check=True)
    got = [line.split(" ", 1)[0] == "ok" for line in result.stdout.splitlines()]
    assert got == [accepts(config.parse_assignment, f"{k}={v}") for k, v in sample]


def debconf_home(tmp_path):
    """A private debconf database, the templates as po2debconf builds them, mxrc-systemd on PATH."""
    (tmp_path / "debconf.conf").write_text(
        "Config: configdb\nTemplates: templatedb\n\n"
        f"Name: configdb\nDriver: File\nFilename: {tmp_path}/config.dat\n\n"
        f"Name: templatedb\nDriver: File\nMode: 644\nFilename: {tmp_path}/templates.dat\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mxrc-systemd").write_text("#!/bin/sh\n"
                                         f"echo \"$*\" >> {tmp_path}/calls\n"
                                         f"PYTHONPATH={REPO} exec {sys.executable} -m mxrc_install \"$@\"\n")
    (bindir / "mxrc-systemd").chmod(0o755)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("mxrc-systemd", "mxrc-monitor"):
        templates = subprocess.run(["po2debconf", os.path.join(DEBIAN, f"{name}.templates")], check=True,
                                   capture_output=True, text=True, cwd=DEBIAN).stdout
        (pkg / f"{name}.templates").write_text(templates)
        script = read(f"{name}.config").replace("CONF=/etc/mxrc/mxrc-systemd.conf", f"CONF={tmp_path}/conf")
        (pkg / f"{name}.config").write_text(script)
        (pkg / f"{name}.config").chmod(0o755)
    return {**os.environ, "DEBCONF_SYSTEMRC": str(tmp_path / "debconf.conf"),
            "DEBIAN_FRONTEND": "noninteractive", "PATH": f"{bindir}:{os.environ['PATH']}"}, pkg


def run_config(env, pkg, name):
    return subprocess.run(["/usr/share/debconf/frontend", str(pkg / f"{name}.config"), "configure"],
                          env=env, capture_output=True, text=True)


def answers(tmp_path):
    values, name = {}, None
    for line in (tmp_path / "config.dat").read_text().splitlines():
        if line.startswith("Name: "):
            name = line[6:]
        elif line.startswith("Value: "):
            values[name] = line[7:]
    return values


@pytest.mark.spawns
@pytest.mark.skipif(not os.path.exists("/usr/share/debconf/frontend"), reason="needs debconf")
def test_bad_preseed_and_bad_file_value_fall_back_with_their_origin(tmp_path):
    env, pkg = debconf_home(tmp_path)
    (tmp_path / "conf").write_text("[rt]\npriority = 0\ncpus = 2-3\n")
    run_config(env, pkg, "mxrc-systemd")   # registers the questions
    preseed = ("mxrc-systemd mxrc-systemd/watchdog_sec string 30s\n"
               "mxrc-systemd mxrc-systemd/boot_cmdline boolean maybe\n"
               "mxrc-monitor mxrc-monitor/port string 0\n")
    subprocess.run(["debconf-set-selections"], input=preseed, env=env, check=True, text=True)
    result = run_config(env, pkg, "mxrc-systemd")
    assert result.returncode == 0, result.stderr
    assert f"rt.priority in {tmp_path}/conf = '0' is invalid" in result.stderr
    assert "preseeded mxrc-systemd/watchdog_sec = '30s' is invalid" in result.stderr
    assert "preseeded mxrc-systemd/boot_cmdline = 'maybe' is invalid" in result.stderr
    assert "preseeded mxrc-systemd/rt_priority" not in result.stderr
    monitor = run_config(env, pkg, "mxrc-monitor")
    assert monitor.returncode == 0 and "preseeded mxrc-monitor/port = '0' is invalid" in monitor.stderr
    got = answers(tmp_path)
    assert got["mxrc-systemd/rt_priority"] == "80" and got["mxrc-systemd/rt_cpus"] == "2-3"
    assert got["mxrc-systemd/watchdog_sec"] == "30" and got["mxrc-systemd/boot_cmdline"] == "false"
    assert got["mxrc-monitor/port"] == "9558"


@pytest.mark.spawns
@pytest.mark.skipif(not os.path.exists("/usr/share/debconf/frontend"), reason="needs debconf")
def test_valid_answers_cost_one_mxrc_systemd_run(tmp_path):
    """Each run is a Python start (~3 s under emulation, ~0.2 s on a PC): an install with good answers
    checks them all in one run; a bad one is then found by checking each alone."""
    env, pkg = debconf_home(tmp_path)
    for name in ("mxrc-systemd", "mxrc-monitor"):
        (tmp_path / "calls").unlink(missing_ok=True)
        assert run_config(env, pkg, name).returncode == 0
        calls = (tmp_path / "calls").read_text().splitlines()
        assert len(calls) == 1 and calls[0].startswith("config --check "), calls
    subprocess.run(["debconf-set-selections"], input="mxrc-monitor mxrc-monitor/port string 0\n", env=env,
                   check=True, text=True)
    (tmp_path / "calls").unlink()
    result = run_config(env, pkg, "mxrc-monitor")
    assert "preseeded mxrc-monitor/port = '0' is invalid" in result.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 4   # all, the probe, then each alone


@pytest.mark.spawns
@pytest.mark.skipif(not os.path.exists("/usr/share/debconf/frontend"), reason="needs debconf")
def test_monitor_postinst_writes_and_applies_in_one_run(tmp_path):
    """Each run is a Python start: the monitor's postinst once read the settings before and after
    (what `config --apply` does in that one run: test_apply.py)."""
    env, pkg = debconf_home(tmp_path)
    assert run_config(env, pkg, "mxrc-monitor").returncode == 0
    (pkg / "mxrc-monitor.postinst").write_text(read("mxrc-monitor.postinst"))
    (pkg / "mxrc-monitor.postinst").chmod(0o755)
    bindir = tmp_path / "bin"   # only the calls: the postinst's root is / (debconf reads DPKG_ROOT too)
    (bindir / "mxrc-systemd").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/calls\nexit ${{RC:-0}}\n")
    for rc, warned in (("0", False), ("2", False), ("1", True)):
        (tmp_path / "calls").unlink()
        result = subprocess.run(["/usr/share/debconf/frontend", str(pkg / "mxrc-monitor.postinst"),
                                 "configure"], env={**env, "RC": rc}, capture_output=True, text=True)
        assert result.returncode == 0 and ("warning" in result.stderr) == warned, (rc, result.stderr)
        # (the frontend runs the config script first: its one `config --check`)
        calls = [c for c in (tmp_path / "calls").read_text().splitlines()
                 if not c.startswith("config --check")]
        assert calls == ["--root / config --apply monitor.listen=0.0.0.0 monitor.port=9558"], calls


def test_monitor_postinst_applies_before_debhelper_restarts_the_monitor():
    """dpkg-reconfigure mxrc-monitor: debhelper's part restarts the service, which must find the new
    drop-in (the VM's fleet scenario reads the running process's arguments)."""
    script = read("mxrc-monitor.postinst")
    assert script.index("config --apply") < script.index("\n#DEBHELPER#")
