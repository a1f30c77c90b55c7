"""The native benchmark scripts still run against the code they measure.

bench/ is run by hand, so an API change in mxrc_monitor can leave a script
broken until someone wants a figure (scrape_latency.py imported a function
that serve.py no longer had). A short run here keeps them honest.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def test_scrape_latency_runs_and_reports_both_servers():
    out = subprocess.run([sys.executable, str(BENCH / "scrape_latency.py"), "20"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for server in ("mxrc-monitor (rendered once per snapshot)",
                   "prometheus_client handler (rendered per request)"):
        assert result[server]["scrapes"] == 20
        assert result[server]["response_bytes"] > 1000, result[server]


def test_every_bench_script_imports(tmp_path):
    # Imported as modules (argv without arguments), as the VM copies and runs them: a name that went
    # away in mxrc_monitor fails here, not after a 25-minute VM run.
    for script in sorted(BENCH.glob("*.py")):
        code = (f"import sys; sys.argv = ['x']; sys.path[:0] = [{str(BENCH)!r}, {str(REPO)!r}]; "
                f"import {script.stem}")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert out.returncode == 0, f"{script.name}: {out.stderr}"
