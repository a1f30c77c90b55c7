#!/bin/sh
# Runs inside the test VM as root, started by mxrc-testbed-runner.service from
# the host's share.  Writes "started" first so the host can tell a boot that
# died early (retry) from a test that ran (never retried).
out=/mnt/host/out
: > "$out/started"
systemctl is-system-running --wait > "$out/system-state" 2>&1
# The guest's uptime as its first step begins: where a boot's minutes go (the suite's boot report).
cut -d' ' -f1 /proc/uptime > "$out/ready"
python3 /mnt/host/steps.py /mnt/host/steps.json "$out/results.json"
echo $? > "$out/rc.tmp"
journalctl -b --no-pager -o short-monotonic > "$out/journal.txt" 2>&1
sync
mv "$out/rc.tmp" "$out/rc"
