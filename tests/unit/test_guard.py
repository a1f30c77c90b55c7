import subprocess

import pytest


def test_reading_host_proc_is_refused():
    with pytest.raises(RuntimeError, match="SysRoot"):
        open("/proc/cmdline").read()


def test_spawning_unasked_is_refused():
    with pytest.raises(RuntimeError, match="spawns"):
        subprocess.run(["true"])
