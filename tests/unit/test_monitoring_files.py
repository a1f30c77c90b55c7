"""The dashboard and the Prometheus rules only use metrics the exporter serves (promtool: tests/package)."""

import json
import re

import pytest

from mxrc_monitor.cgroup import CgroupSample
from mxrc_monitor.collector import Snapshot, SnapshotCollector
from mxrc_monitor.rtcpu import RtSample
from mxrc_monitor.unitstate import UnitState

METRIC = re.compile(r"\b((?:systemd|mxrc_monitor|mxrc_rt)_[a-z_]+)\b")


def exported_names():
    """Every sample name the exporter can produce, from a snapshot with every field filled."""
    unit = UnitState("mxrc-rt.service", load_state="loaded", active_state="active", watchdog_usec=1)
    snap = Snapshot(units=(unit,),
                    cgroups={"mxrc-rt.service": CgroupSample({"user": 1.0, "system": 1.0}, 2, 3, 4)},
                    watchdog_ages={"mxrc-rt.service": 0.5},
                    rt=RtSample((2,), {2: 1}, {(2, "NET_RX"): 1}, {2: 0}, 0))
    names = set()
    for family, samples in SnapshotCollector.families_of(snap):
        names.update(family.sample_name for _ in samples)
    return names


def used_names(text):
    return set(METRIC.findall(text)) - {"systemd_unit"}


@pytest.fixture
def dashboard(repo):
    return json.loads((repo / "monitoring/mxrc-dashboard.json").read_text())


def test_dashboard_queries_only_exported_metrics(dashboard):
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = set().union(*(used_names(e) for e in exprs))
    assert used and used <= exported_names(), used - exported_names()


def test_dashboard_shows_what_the_issue_asks(dashboard):
    text = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in ("systemd_unit_state", "systemd_unit_cpu_seconds_total", "systemd_unit_memory_bytes",
                   "systemd_unit_restart_total", 'result="watchdog"', "mxrc_rt_cpu_interrupts_total",
                   "mxrc_rt_cpu_softirqs_total", "mxrc_rt_cpu_foreign_tasks",
                   "mxrc_rt_threads_outside_rt_cpus"):
        assert needed in text
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_rules_use_only_exported_metrics(repo):
    text = (repo / "monitoring/mxrc.rules.yml").read_text()
    used = used_names("\n".join(line for line in text.splitlines()
                                  if "expr:" in line or line.startswith("          ")))
    assert used and used <= exported_names(), used - exported_names()


def test_fleet_targets_name_each_robot_and_the_config_makes_it_the_instance(repo):
    """The file_sd example: every target group has a robot label, and the fleet config turns it
    into `instance`, which the dashboard's Robot selector and the alerts' summaries show."""
    import yaml

    groups = yaml.safe_load((repo / "monitoring/mxrc-robots.example.yml").read_text())
    assert groups and all(g["labels"].get("robot") and g["targets"] for g in groups)
    assert all(t.endswith(":9558") for g in groups for t in g["targets"])
    config = yaml.safe_load((repo / "monitoring/prometheus-fleet.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mxrc" and job["file_sd_configs"]
    assert {"source_labels": ["robot"], "regex": "(.+)", "target_label": "instance"} in job["relabel_configs"]
