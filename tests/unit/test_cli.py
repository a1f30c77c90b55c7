import pytest

from mxrc_install import cli


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("configure", "steps", "failover"):
        assert command in out


def test_bad_root_is_named_with_the_fix(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert cli.main(["--root", str(missing), "steps"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert str(missing) in err and "--root" in err


def test_steps_lists_from_root(tmp_path, capsys):
    step = tmp_path / "usr/share/mxrc-systemd/postinst.d/10-x"
    step.parent.mkdir(parents=True)
    step.write_text("#!/bin/sh\n")
    step.chmod(0o755)
    assert cli.main(["--root", str(tmp_path), "steps"]) == 0
    assert "10-x" in capsys.readouterr().out
