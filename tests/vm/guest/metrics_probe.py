"""Runs inside the test VM: reads mxrc-monitor and Prometheus' HTTP API for the acceptance tests.

  metrics_probe.py wait-target JOB SECONDS   until Prometheus scraped JOB successfully
  metrics_probe.py query EXPR                Prometheus instant query -> JSON [{metric, value}]
  metrics_probe.py react UNIT                SIGKILL UNIT, time until /metrics counts it
"""
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

PROMETHEUS = "http://127.0.0.1:9090"
EXPORTER = "http://127.0.0.1:9558/metrics"


def query(expr):
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.load(resp)
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["data"]["result"]]


def wait_target(job, seconds):
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            if [r for r in query(f'up{{job="{job}"}}') if r["value"] == 1]:
                print(f"target_up=1 after_s={float(seconds) - (deadline - time.monotonic()):.1f}")
                return 0
        except OSError:
            pass
        time.sleep(1)
    print("target_up=0")
    return 1


def sample(metric, **labels):
    with urllib.request.urlopen(EXPORTER, timeout=5) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if m and m.group(1) == metric and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return None


def react(unit):
    """A failure must show on /metrics within the 1 s refresh (SC-004)."""
    before = sample("systemd_unit_failures_total", name=unit, result="signal") or 0.0
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", "--kill-whom=main", unit], check=True)
    killed = time.monotonic()
    while time.monotonic() - killed < 10:
        now = sample("systemd_unit_failures_total", name=unit, result="signal") or 0.0
        if now > before:
            print(f"react_ms={(time.monotonic() - killed) * 1000:.0f}")
            return 0
        time.sleep(0.05)
    print("react_ms=timeout")
    return 1


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "query":
        print(json.dumps(query(args[0])))
    else:
        sys.exit({"wait-target": wait_target, "react": react}[cmd](*args))
