"""The process seam: a failure is a clear result, never a traceback."""

import pytest

from mxrc_install import process


@pytest.mark.spawns
def test_a_failure_carries_the_command_and_its_stderr():
    done = process.run(["sh", "-c", "echo out; echo 'bad thing' >&2; exit 3"])
    assert (done.rc, done.stdout, done.ok) == (3, "out\n", False)
    assert done.failure() == "sh -c echo out; echo 'bad thing' >&2; exit 3 failed (exit 3): bad thing"
    with pytest.raises(process.CommandFailed, match="failed \\(exit 3\\): bad thing"):
        process.run(["sh", "-c", "echo 'bad thing' >&2; exit 3"], check=True)


@pytest.mark.spawns
def test_a_missing_program_and_a_timeout_are_results():
    missing = process.run(["mxrc-no-such-program"])
    assert missing.rc == process.NOT_FOUND and "command not found" in missing.stderr
    slow = process.run(["sleep", "5"], timeout=0.2)
    assert slow.rc == process.TIMED_OUT and "0.2 s" in slow.stderr
