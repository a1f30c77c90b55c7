"""Metric families declared once, written as Prometheus text or OpenMetrics.

prometheus_client's generate_latest() builds a Metric and a Sample for every
value and formats every label set again at every render; profiled in the VM
that was the largest part of a scrape. A Family here keeps its header lines
and each label set's sample prefix, and formats a value with
prometheus_client's own floatToGoString, so the text is byte for byte what
generate_latest() writes for the same family (tests/unit/test_families.py
compares them). metric() gives the prometheus_client object, for the
registry's collect().
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.utils import floatToGoString

# kind -> (its samples' name suffix, its TYPE in the text format (no info there), prometheus_client's class)
KINDS = {"counter": ("_total", "counter", CounterMetricFamily),
         "gauge": ("", "gauge", GaugeMetricFamily),
         "info": ("_info", "gauge", InfoMetricFamily)}
MAX_CACHED_PREFIXES = 4096   # label sets kept per family; more are formatted and not kept


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Family:
    """One metric family: name, kind (counter, gauge, info), help text and label names.

    A sample is (label values in the order of `labels`, value); an info
    family's value is always 1.
    """

    __slots__ = ("name", "kind", "doc", "labels", "sample_name", "text_head", "openmetrics_head",
                 "_order", "_prefixes")

    def __init__(self, name: str, kind: str, doc: str, labels: tuple[str, ...] = ()):
        self.name, self.kind, self.doc, self.labels = name, kind, doc, tuple(labels)
        suffix, text_type, _ = KINDS[kind]
        self.sample_name = name + suffix
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")   # the text format names the samples
        sample = self.sample_name
        self.text_head = f"# HELP {sample} {text_doc}\n# TYPE {sample} {text_type}\n"
        self.openmetrics_head = f"# HELP {name} {_escape_label(doc)}\n# TYPE {name} {kind}\n"
        self._order = sorted(range(len(self.labels)), key=self.labels.__getitem__)  # written sorted by name
        self._prefixes: dict[tuple, str] = {}

    def prefix(self, values: tuple) -> str:
        """'name{label="value",...} ' for these label values."""
        found = self._prefixes.get(values)
        if found is None:
            if not self.labels:
                found = self.sample_name + " "
            else:
                pairs = ",".join(f'{self.labels[i]}="{_escape_label(values[i])}"' for i in self._order)
                found = f"{self.sample_name}{{{pairs}}} "
            if len(self._prefixes) < MAX_CACHED_PREFIXES:
                self._prefixes[values] = found
        return found

    def text(self, samples, openmetrics: bool = False) -> str:
        prefix = self.prefix
        lines = [f"{prefix(values)}{floatToGoString(value)}\n" for values, value in samples]
        return (self.openmetrics_head if openmetrics else self.text_head) + "".join(lines)

    def metric(self, samples):
        """The prometheus_client family with these samples."""
        info = self.kind == "info"   # an info family's labels are in its value, a dict
        family = KINDS[self.kind][2](self.name, self.doc, labels=[] if info else list(self.labels))
        for values, value in samples:
            if info:
                family.add_metric([], dict(zip(self.labels, values)))
            else:
                family.add_metric(list(values), value)
        return family


def metrics(declared):
    """[(Family, samples)] as prometheus_client families: a collector's collect()."""
    return (family.metric(samples) for family, samples in declared)


def render(families, openmetrics: bool = False) -> str:
    """[(Family, samples)] as text (OpenMetrics without its final # EOF)."""
    return "".join(family.text(samples, openmetrics) for family, samples in families)
