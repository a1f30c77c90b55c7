"""Settings: the file, --set and debconf share one validated table."""

import pytest

from mxrc_install import cli

from mxrc_install.pipeline import config


def test_defaults_file_parses_to_defaults():
    assert config.parse_config(config.DEFAULT_FILE) == config.Config()


# Bad input -> the message must name the value and say what to use instead.
BAD = [
    ("[rt]\ncpus = 2-x\n", ["rt.cpus = '2-x'", "CPU list such as 2-3"]),
    ("[rt]\ncpus = 3-1\n", ["runs backwards"]),
    ("[rt]\npriority = 0\n", ["rt.priority = '0'", "1 to 99"]),
    ("[rt]\npriority = high\n", ["rt.priority = 'high'"]),
    ("[rt]\nwatchdog_sec = -5\n", ["rt.watchdog_sec = '-5'", "30 recommended"]),
    ("[rt]\nmemory_max = lots\n", ["rt.memory_max = 'lots'", "2G"]),
    ("[rt]\nmemory_max = 1M\n", ["below 64M"]),
    ("[rt]\ncpu_quota = 5%\n", ["rt.cpu_quota = '5'", "10 to 100000"]),
    ("[monitor]\nlisten = localhost:9558\n", ["monitor.listen = 'localhost:9558'", "0.0.0.0"]),
    ("[monitor]\nport = 70000\n", ["monitor.port = '70000'", "1 to 65535"]),
    ("[boot]\noptimize = maybe\n", ["boot.optimize = 'maybe'", "yes or no"]),
    ("[rt]\ncpu = 2\n", ["unknown setting rt.cpu", "rt.cpus"]),
    ("cpus = 2\n", ["File contains no section headers"]),
]


@pytest.mark.parametrize("text,messages", BAD, ids=[b[0].strip().replace("\n", " ") for b in BAD])
def test_bad_values_are_named_with_the_fix(text, messages):
    with pytest.raises(config.ConfigError) as exc:
        config.parse_config(text)
    for message in messages:
        assert message in str(exc.value)


@pytest.mark.parametrize("text,field,value", [
    ("[rt]\ncpus = 4-5\n", "rt_cpus", {4, 5}),
    ("[rt]\ncpus = AUTO\n", "rt_cpus", None),
    ("[rt]\nmemory_max = 512M\n", "memory_max", 512 * 1024**2),
    ("[rt]\nmemory_max = 3GiB\n", "memory_max", 3 * 1024**3),
    ("[rt]\ncpu_quota = 150%\n", "cpu_quota", 150),
    ("[monitor]\nlisten = ::\n", "monitor_listen", "::"),
    ("[boot]\noptimize = off  # comment\n", "boot_optimize", False),
])
def test_good_values(text, field, value):
    assert getattr(config.parse_config(text), field) == value


def test_set_keeps_admin_comments_and_layout():
    text = "# my robot\n[rt]\n# fast\npriority = 80\n\n[monitor]\nport = 9558\n"
    new = config.set_values(text, {"rt.priority": "70", "monitor.listen": "127.0.0.1", "boot.optimize": "no"})
    assert new.startswith("# my robot\n[rt]\n# fast\npriority = 70\n")
    parsed = config.parse_config(new)
    assert (parsed.rt_priority, parsed.monitor_listen, parsed.boot_optimize) == (70, "127.0.0.1", False)


def test_cli_config_set_validates_and_writes_nothing_on_error(tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "config", "rt.cpus=2-3", "monitor.port=9600"]) == 0
    path = tmp_path / "etc/mxrc/mxrc-systemd.conf"
    assert "cpus = 2-3" in path.read_text() and "port = 9600" in path.read_text()
    before = path.read_text()
    assert cli.main(["--root", str(tmp_path), "config", "rt.priority=999"]) == 1
    assert "rt.priority = '999'" in capsys.readouterr().err
    assert path.read_text() == before
    assert cli.main(["--root", str(tmp_path), "config", "nonsense"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["--root", str(tmp_path), "config"]) == 0
    assert "rt.cpus = 2-3" in capsys.readouterr().out


def test_cli_config_shows_values_as_the_file_spells_them(tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "config", "boot.optimize=no", "rt.cpus=2-3"]) == 0
    capsys.readouterr()
    assert cli.main(["--root", str(tmp_path), "config"]) == 0
    shown = dict(line.split(" = ", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["boot.optimize"] == "no" and shown["boot.reapply_on_hardware_change"] == "yes"
    assert shown["rt.cpus"] == "2-3" and shown["rt.memory_max"] == "auto"
    # Every line given back as KEY=VALUE keeps the same settings.
    before = (tmp_path / "etc/mxrc/mxrc-systemd.conf").read_text()
    assert cli.main(["--root", str(tmp_path), "config", *(f"{k}={v}" for k, v in shown.items())]) == 0
    after = (tmp_path / "etc/mxrc/mxrc-systemd.conf").read_text()
    assert config.parse_config(after) == config.parse_config(before)
