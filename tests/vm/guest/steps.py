"""Runs inside the test VM: each step in order, recording output and exit code.

A step that fails does not stop the next: the host-side tests decide what a
failure means, and one boot serves many checks.
"""
import json
import subprocess
import sys
import time

# A step's own limit, under the boot's: dpkg-reconfigure of both packages took 317 s beside
# another emulated machine and 600 s (the old limit) beside three.
STEP_TIMEOUT = 1200


def run(step):
    started = time.monotonic()
    try:
        proc = subprocess.run(["/bin/bash", "-c", step["command"]], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=step.get("timeout", STEP_TIMEOUT))
        rc, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        rc, output = 124, (exc.stdout or b"") + b"\n[step timed out]\n"
    return {"name": step["name"], "command": step["command"], "rc": rc,
            "output": output.decode(errors="replace"),
            "seconds": round(time.monotonic() - started, 2)}


def main(steps_path, results_path):
    with open(steps_path) as f:
        steps = json.load(f)
    results = []
    for step in steps:
        results.append(run(step))
        # Written after every step so a run that dies half-way still reports.
        with open(results_path, "w") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
