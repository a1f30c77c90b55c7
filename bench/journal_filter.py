#!/usr/bin/python3
"""SC-007: filter 100,000 journal entries by level in under a second.

Runs inside a test VM (see run_in_vm): writes N entries for one unit through
mxrc_runtime's JournalHandler (every tenth at ERROR, with trace ids), then
times `journalctl -u UNIT -p err` several times and prints JSON.
"""
import json
import logging
import statistics
import subprocess
import sys
import time

UNIT = "mxrc-journal-bench.service"


def write(count: int) -> None:
    from mxrc_runtime.journal import JournalHandler
    log = logging.getLogger("bench")
    log.addHandler(JournalHandler("mxrc-journal-bench"))
    log.setLevel(logging.INFO)
    for i in range(count):
        level = logging.ERROR if i % 10 == 0 else logging.INFO
        log.log(level, "bench entry %d", i, extra={"trace.id": f"{i:032x}", "span.id": f"{i:016x}"})


def timed(cmd: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return time.perf_counter() - started, out.count(b"\n")


def main(count: int = 100_000, runs: int = 5) -> int:
    if sys.argv[1:2] == ["write"]:
        write(count)
        return 0
    started = time.perf_counter()
    # LogRateLimitIntervalSec=0: journald would otherwise keep 10,000 of every 30 s burst.
    subprocess.run(["systemd-run", "--wait", "--quiet", f"--unit={UNIT}", "-p", "Type=oneshot",
                    "-p", "LogRateLimitIntervalSec=0",
                    "-E", "PYTHONDONTWRITEBYTECODE=1", sys.executable, __file__, "write"], check=True)
    write_seconds = time.perf_counter() - started
    subprocess.run(["journalctl", "--sync"], check=True)
    total = timed(["journalctl", "-u", UNIT, "-o", "cat"])[1]
    cases = {
        "-p err, text": ["journalctl", "--no-pager", "-u", UNIT, "-p", "err", "-o", "cat"],
        "-p err, json": ["journalctl", "--no-pager", "-u", UNIT, "-p", "err", "-o", "json"],
        "TRACE_ID=, json": ["journalctl", "--no-pager", "-u", UNIT, f"TRACE_ID={50_000:032x}", "-o", "json"],
    }
    results = {}
    for name, cmd in cases.items():
        samples = [timed(cmd) for _ in range(runs)]
        seconds = sorted(s for s, _ in samples)
        results[name] = {"lines": samples[0][1], "median_s": round(statistics.median(seconds), 3),
                         "max_s": round(seconds[-1], 3)}
    print(json.dumps({"entries_in_journal": total, "write_seconds": round(write_seconds, 1),
                      "runs": runs, "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
